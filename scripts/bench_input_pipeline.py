"""Benchmark 1: training throughput from an image folder ÷ the same model on in-memory tensors (goal >= 0.90).

    python scripts/bench_input_pipeline.py [--backbone mobilenet_v2] [--size 96] [--images 512] [--epochs 3]

Writes JPEGs of the synthetic images to a temporary folder, then trains the same model (every
block trainable, so no feature cache) on the folder and on the in-memory arrays, side by side.
"""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from bench_common import epoch_times, machine, steady
from PIL import Image

import tlkit
from tlkit.data.pipeline import synthetic_images


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, size: int) -> None:
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        # Larger than the training size: the pipeline decodes and resizes, as with real photos.
        Image.fromarray(image).resize((size * 2, size * 2)).save(folder / f"{i}.jpg", quality=90)


def run(data: dict, args, run_dir: str) -> dict:
    cfg = tlkit.as_train_config({
        "backbone": {"name": args.backbone, "weights": None},
        "data": {"image_size": args.size, "batch_size": 32, "val_split": 0.2, **data},
        "augment": {"name": "none"},
        "schedule": {"name": "full", "stages": [{"name": "all", "train": "all", "epochs": args.epochs,
                                                 "patience": None}]},
        "trainer": {"verbose": 0, "save_model": False},
        "doctor": {"enabled": False},
    })
    result = tlkit.train(cfg, run_dir)
    return {"epochs": epoch_times(run_dir), "num_train": result.metrics["num_train"],
            "num_val": result.metrics["num_val"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    images, labels = synthetic_images(args.images, 4, seed=0, size=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp) / "images", images, labels, args.size)
        in_memory = run({"source": "synthetic", "num_images": args.images, "num_classes": 4}, args, f"{tmp}/mem")
        folder = run({"source": "folder", "path": f"{tmp}/images"}, args, f"{tmp}/folder")
    rate = lambda r: (r["num_train"] + r["num_val"]) / steady(r["epochs"])  # noqa: E731  images per second
    ratio = rate(folder) / rate(in_memory)
    report = {"benchmark": "input pipeline: folder vs in-memory", "machine": machine(), "args": vars(args),
              "epoch_s_in_memory": in_memory["epochs"], "epoch_s_folder": folder["epochs"],
              "img_per_s_in_memory": round(rate(in_memory), 1), "img_per_s_folder": round(rate(folder), 1),
              "ratio": round(ratio, 4)}
    print(json.dumps(report, indent=2))
    print(f"\nfolder / in-memory throughput (median of epochs 2..{args.epochs}): {ratio:.3f}  (goal >= 0.90)")


if __name__ == "__main__":
    main()
