"""A rendered multi-label data set: images with 0-3 planted shapes, each shape a label (task=multilabel demos,
tests and scripts/bench_multilabel.py). No download: NumPy draws it, Pillow writes PNGs and a label table."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {"circle": (230, 60, 50), "square": (60, 200, 80), "triangle": (70, 90, 235)}


def _mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2
    if shape == "square":
        return (np.abs(x - cx) <= radius * 0.85) & (np.abs(y - cy) <= radius * 0.85)
    return (y <= cy + radius * 0.8) & (y >= cy - radius) & (np.abs(x - cx) <= (y - (cy - radius)) * 0.6)


def render(labels: list[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [size, size, 3]: a noisy background with each shape of `labels` in its colour, placed at random."""
    image = rng.uniform(20, 90, size=3)[None, None, :] + rng.normal(0, 12, size=(size, size, 3))
    for shape in labels:
        radius = rng.uniform(0.12, 0.2) * size
        cx, cy = rng.uniform(radius, size - radius, size=2)
        colour = np.asarray(COLOURS[shape], dtype=np.float32) * rng.uniform(0.8, 1.1)
        image[_mask(shape, size, cx, cy, radius)] = colour
    return np.clip(image, 0, 255).astype(np.uint8)


def write_shapes_table(folder: str | Path, num_images: int = 120, size: int = 32, seed: int = 0,
                       split_column: bool = False) -> Path:
    """PNG images under folder/images and folder/labels.csv (image, labels as "circle;square", "" for none; with
    `split_column`, a split column: every fifth row val). Each shape appears in an image with probability 0.45."""
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_images):
        labels = [shape for shape in SHAPES if rng.random() < 0.45]
        Image.fromarray(render(labels, size, rng)).save(folder / "images" / f"{i:04d}.png")
        rows.append([f"images/{i:04d}.png", ";".join(labels)] + (["val" if i % 5 == 0 else "train"] if split_column
                                                                 else []))
    path = folder / "labels.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels"] + (["split"] if split_column else []))
        writer.writerows(rows)
    return path
