"""Offline image domains for transfer experiments: digits, glyphs, shapes and textures.

Every domain draws uint8 RGB images [N, size, size, 3] with int labels from a seed, with no
download: scikit-learn's digits, glyphs rendered from the TrueType fonts that ship inside
matplotlib, and procedural shapes and textures. A transfer *pair* is a source task (what a
backbone is pretrained on) and a target task (what it is fine-tuned to), at some distance:

    digits     handwritten digits 0-4 -> 5-9                     near: same domain, new classes
    glyphs     printed capitals A-Z -> lower case b d e p q       near; mirroring swaps b/d and p/q
    textures   shapes -> oriented stripes, checks, dots, ...     far: flat regions -> periodic patterns
    shapes     textures -> shapes on plain backgrounds           far: periodic patterns -> outlines

The quickstart (tlkit/conf/recipe/quickstart.yaml) and scripts/bench_recipes.py use them. Pure numpy
and Pillow: no TensorFlow.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 32  # every domain draws at this size; the data pipeline resizes to data.image_size
CAPITALS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
MIRROR_PAIRS = tuple("bdepq")  # b<->d and p<->q under a horizontal flip: labels a flip changes
SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "bar")
TEXTURES = ("stripes_h", "stripes_v", "stripes_diag", "stripes_antidiag", "checks", "dots")
# Text fonts of matplotlib's mpl-data (matplotlib is a tlkit dependency); symbol fonts left out.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf",
)


@dataclass(frozen=True)
class Domain:
    """A family of images: `draw(classes, count_per_class, seed)` -> (images, labels)."""

    name: str
    classes: tuple[str, ...]
    draw: Callable[[Sequence[str], int, int], tuple[np.ndarray, np.ndarray]]
    limit_per_class: int | None = None  # None: drawn on demand, as many as asked


@dataclass(frozen=True)
class TransferPair:
    name: str
    distance: str  # near | far, as designed (the benchmark measures how well source features fit)
    source: Domain
    source_classes: tuple[str, ...]
    target: Domain
    target_classes: tuple[str, ...]
    source_per_class: int  # images per class to pretrain on
    description: str


def _class_rng(seed: int, label: str, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, salt, *label.encode()])


# --------------------------------------------------------------------------- digits (scikit-learn)


@lru_cache(maxsize=1)
def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # 1,797 real 8x8 digits inside scikit-learn

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(p).resize((SIZE, SIZE), Image.BILINEAR)) for p in pixels])
    return np.repeat(big[..., None], 3, axis=-1), digits.target.astype(np.int64)


def draw_digits(classes: Sequence[str], per_class: int, seed: int):
    """Up to `per_class` real digits of each class (about 180 exist per class), in a seeded order."""
    images, targets = _digit_images()
    chosen, labels = [], []
    for label, name in enumerate(classes):
        members = np.flatnonzero(targets == int(name))
        members = members[_class_rng(seed, name, 0).permutation(len(members))][:per_class]
        chosen.extend(members)
        labels.extend([label] * len(members))
    return images[np.array(chosen)], np.array(labels, dtype=np.int64)


# --------------------------------------------------------------------------- glyphs (fonts)


def font_paths() -> list[str]:
    import matplotlib

    folder = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
    return [os.path.join(folder, f) for f in FONT_FILES if os.path.isfile(os.path.join(folder, f))]


@lru_cache(maxsize=256)
def _font(path: str, points: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, points)


def _glyph(char: str, rng: np.random.Generator, fonts: list[str]) -> np.ndarray:
    scale = 4  # drawn 4x larger, rotated, then reduced: smooth edges at 32 px
    canvas = SIZE * scale
    ink, paper = (rng.integers(0, 90), rng.integers(165, 256)) if rng.random() < 0.5 else (
        rng.integers(165, 256), rng.integers(0, 90))
    image = Image.new("L", (canvas, canvas), int(paper))
    font = _font(fonts[rng.integers(len(fonts))], int(rng.integers(17, 27)) * scale)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    x = (canvas - (right - left)) / 2 - left + rng.normal(0, 1.5) * scale
    y = (canvas - (bottom - top)) / 2 - top + rng.normal(0, 1.5) * scale
    draw.text((x, y), char, fill=int(ink), font=font)
    image = image.rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR, fillcolor=int(paper))
    gray = np.asarray(image.resize((SIZE, SIZE), Image.BOX), dtype=np.float32)
    tint = rng.uniform(0.75, 1.0, size=3)  # a slightly coloured print
    rgb = gray[..., None] * tint + rng.normal(0, 6, size=(SIZE, SIZE, 1))
    return rgb.clip(0, 255).astype(np.uint8)


def draw_glyphs(classes: Sequence[str], per_class: int, seed: int):
    """Each character in a random font of matplotlib's, size, offset, rotation (+/-10 deg) and contrast."""
    fonts = font_paths()
    if not fonts:
        raise RuntimeError("no TrueType fonts found in matplotlib's mpl-data/fonts/ttf")
    images, labels = [], []
    for label, char in enumerate(classes):
        rng = _class_rng(seed, char, 1)
        images.extend(_glyph(char, rng, fonts) for _ in range(per_class))
        labels.extend([label] * per_class)
    return np.stack(images), np.array(labels, dtype=np.int64)


# --------------------------------------------------------------------------- shapes


def _polygon(center, radius, sides, angle, star=False):
    points = []
    count = sides * (2 if star else 1)
    for k in range(count):
        r = radius * (0.45 if star and k % 2 else 1.0)
        a = angle + 2 * math.pi * k / count
        points.append((center[0] + r * math.cos(a), center[1] + r * math.sin(a)))
    return points


def _shape(kind: str, rng: np.random.Generator, clutter: bool = True) -> np.ndarray:
    scale = 4
    canvas = SIZE * scale
    if clutter:
        background = _clutter(rng, canvas)
    else:  # one colour, the shape in a clearly different one
        background = np.broadcast_to(rng.integers(0, 256, size=3).astype(np.uint8), (canvas, canvas, 3)).copy()
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    if not clutter and np.abs(np.array(colour) - background[0, 0].astype(int)).sum() < 200:
        colour = tuple(int(255 - c) for c in background[0, 0])
    radius = rng.uniform(7, 12) * scale
    cx, cy = (rng.uniform(radius, canvas - radius) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    width = int(radius * 0.3)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "ring":
        draw.ellipse(box, outline=colour, width=width)
    elif kind == "square":
        draw.polygon(_polygon((cx, cy), radius, 4, angle), fill=colour)
    elif kind == "diamond":  # a rhombus: one diagonal twice the other
        a = angle
        points = [(cx + radius * math.cos(a + k * math.pi / 2) * (1.0 if k % 2 == 0 else 0.5),
                   cy + radius * math.sin(a + k * math.pi / 2) * (1.0 if k % 2 == 0 else 0.5)) for k in range(4)]
        draw.polygon(points, fill=colour)
    elif kind == "triangle":
        draw.polygon(_polygon((cx, cy), radius, 3, angle), fill=colour)
    elif kind == "star":
        draw.polygon(_polygon((cx, cy), radius, 5, angle, star=True), fill=colour)
    elif kind in ("cross", "bar"):
        arms = (angle, angle + math.pi / 2) if kind == "cross" else (angle,)
        for a in arms:
            dx, dy = radius * math.cos(a), radius * math.sin(a)
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=colour, width=width)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    image = np.asarray(image.resize((SIZE, SIZE), Image.BOX))
    if clutter:
        return image
    return (image + rng.normal(0, 8, size=image.shape)).clip(0, 255).astype(np.uint8)


def _clutter(rng: np.random.Generator, canvas: int) -> np.ndarray:
    """A smooth two-colour background with blotches: the shape must be found, not just coloured."""
    low = rng.normal(0, 1, size=(4, 4, 1))
    field = np.asarray(Image.fromarray(((low - low.min()) / (np.ptp(low) + 1e-6) * 255).astype(np.uint8)[..., 0])
                       .resize((canvas, canvas), Image.BICUBIC), dtype=np.float32)[..., None] / 255.0
    a, b = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    return (a * field + b * (1 - field)).clip(0, 255).astype(np.uint8)


def draw_shapes(classes: Sequence[str], per_class: int, seed: int, clutter: bool = True):
    """Filled shapes (and a ring, a cross, a bar) in random colours, sizes, places and angles."""
    images, labels = [], []
    for label, kind in enumerate(classes):
        rng = _class_rng(seed, kind, 2 if clutter else 4)
        images.extend(_shape(kind, rng, clutter) for _ in range(per_class))
        labels.extend([label] * per_class)
    return np.stack(images), np.array(labels, dtype=np.int64)


# --------------------------------------------------------------------------- textures


def _texture(kind: str, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    period = rng.uniform(4.0, 9.0)
    phase = rng.uniform(0, 2 * math.pi)
    jitter = math.radians(rng.uniform(-12, 12))
    k = 2 * math.pi / period

    def wave(angle):
        return np.sin(k * (x * math.cos(angle) + y * math.sin(angle)) + phase)

    if kind == "stripes_h":
        value = wave(math.pi / 2 + jitter)
    elif kind == "stripes_v":
        value = wave(jitter)
    elif kind == "stripes_diag":  # "/" in image coordinates (y grows downwards)
        value = wave(math.pi / 4 + jitter)
    elif kind == "stripes_antidiag":  # "\": the mirror image of stripes_diag
        value = wave(-math.pi / 4 + jitter)
    elif kind == "checks":
        value = np.sign(wave(jitter)) * np.sign(wave(math.pi / 2 + jitter))
    elif kind == "dots":
        value = (wave(jitter) + wave(math.pi / 2 + jitter)) / 2
        value = np.where(value > 0.5, 1.0, -1.0)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    a, b = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    if np.abs(a.astype(int) - b.astype(int)).sum() < 150:  # keep the pattern visible
        b = 255 - a
    mix = ((value + 1) / 2)[..., None]
    image = a * mix + b * (1 - mix) + rng.normal(0, 12, size=(SIZE, SIZE, 3))
    return image.clip(0, 255).astype(np.uint8)


def draw_textures(classes: Sequence[str], per_class: int, seed: int):
    images, labels = [], []
    for label, kind in enumerate(classes):
        rng = _class_rng(seed, kind, 3)
        images.extend(_texture(kind, rng) for _ in range(per_class))
        labels.extend([label] * per_class)
    return np.stack(images), np.array(labels, dtype=np.int64)


DIGITS = Domain("digits", tuple(str(d) for d in range(10)), draw_digits, limit_per_class=174)
GLYPHS = Domain("glyphs", CAPITALS + MIRROR_PAIRS, draw_glyphs)
SHAPE_DOMAIN = Domain("shapes", SHAPES, draw_shapes)  # on clutter
PLAIN_SHAPES = Domain("plain_shapes", SHAPES, lambda classes, n, seed: draw_shapes(classes, n, seed, clutter=False))
TEXTURE_DOMAIN = Domain("textures", TEXTURES, draw_textures)

PAIRS = {
    "digits": TransferPair("digits", "near", DIGITS, tuple("01234"), DIGITS, tuple("56789"), 174,
                           "scikit-learn digits 0-4 -> 5-9"),
    "glyphs": TransferPair("glyphs", "near", GLYPHS, CAPITALS, GLYPHS, MIRROR_PAIRS, 120,
                           "printed capitals A-Z -> lower case b d e p q (21 fonts)"),
    "textures": TransferPair("textures", "far", SHAPE_DOMAIN, SHAPES, TEXTURE_DOMAIN, TEXTURES, 300,
                             "8 shapes on clutter -> 6 textures (two are mirror images)"),
    "shapes": TransferPair("shapes", "far", TEXTURE_DOMAIN, TEXTURES, PLAIN_SHAPES, SHAPES[:6], 400,
                           "6 textures -> 6 shapes on plain backgrounds"),
}


def source_images(pair: TransferPair, seed: int = 0):
    """The pretraining set of `pair` (seed 0 by default: the benchmark pretrains once per backbone)."""
    return pair.source.draw(pair.source_classes, pair.source_per_class, seed)


def target_split(pair: TransferPair, per_class: int, val_per_class: int, test_per_class: int, seed: int):
    """(train, val, test) of the target task, each (images, labels); disjoint, the same val/test for every seed
    and budget (drawn from seed 10_000), so contenders and label budgets are compared on the same images."""
    held = val_per_class + test_per_class
    if pair.target.limit_per_class is not None:  # a finite data set: one draw, split three ways
        images, labels = pair.target.draw(pair.target_classes, pair.target.limit_per_class, 10_000)
        return _split_finite(images, labels, per_class, val_per_class, test_per_class, seed)
    images, labels = pair.target.draw(pair.target_classes, held, 10_000)
    val, test = _split_held(images, labels, val_per_class)
    train = pair.target.draw(pair.target_classes, per_class, 20_000 + seed)
    return train, val, test


def _split_held(images, labels, val_per_class):
    val_rows, test_rows = [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        val_rows.extend(rows[:val_per_class])
        test_rows.extend(rows[val_per_class:])
    return (images[val_rows], labels[val_rows]), (images[test_rows], labels[test_rows])


def _split_finite(images, labels, per_class, val_per_class, test_per_class, seed):
    val, test, train = [], [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        val.extend(rows[:val_per_class])
        test.extend(rows[val_per_class:val_per_class + test_per_class])
        pool = rows[val_per_class + test_per_class:]
        if per_class > len(pool):
            raise ValueError(f"{per_class} training images per class asked, {len(pool)} left after val and test")
        train.extend(pool[np.random.default_rng([seed, int(label)]).permutation(len(pool))[:per_class]])
    pick = lambda rows: (images[np.array(rows)], labels[np.array(rows)])  # noqa: E731
    return pick(train), pick(val), pick(test)


def write_folders(root, split, class_names: Sequence[str]) -> None:
    """One PNG per image under root/CLASS/, as a user's image folder."""
    from pathlib import Path

    images, labels = split
    root = Path(root)
    for name in class_names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(root / class_names[label] / f"{index:05d}.png")
