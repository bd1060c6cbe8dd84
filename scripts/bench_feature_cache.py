"""Benchmark 2: a frozen head-stage epoch with the feature cache ÷ without (goal <= 0.05 from epoch 2 on).

    python scripts/bench_feature_cache.py [--backbone resnet50] [--size 64] [--images 600] [--epochs 4]

Both runs in one process, side by side, same data, model and seed; prints the ratios.
"""
import argparse
import json
import tempfile
import time

from bench_common import epoch_times, machine, steady

import tlkit


def run(feature_cache: str, args, run_dir: str) -> dict:
    cfg = tlkit.as_train_config({
        "backbone": {"name": args.backbone, "weights": None},
        "data": {"source": "synthetic", "image_size": args.size, "num_images": args.images, "num_classes": 5,
                 "batch_size": 32},
        "augment": {"name": "none"},
        "schedule": {"name": "frozen", "stages": [
            {"name": "head", "train": "head", "epochs": args.epochs, "patience": None}]},
        "trainer": {"verbose": 0, "save_model": False, "feature_cache": feature_cache},
        "doctor": {"enabled": False},
    })
    started = time.perf_counter()
    result = tlkit.train(cfg, run_dir)
    with open(f"{run_dir}/timings.json") as f:
        stage_s = json.load(f)["stages"]["head"]
    return {"epochs": epoch_times(run_dir), "stage_s": stage_s,
            "total_s": time.perf_counter() - started, "val_accuracy": result.metrics["val_accuracy"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        without = run("off", args, f"{tmp}/off")
        with_cache = run("on", args, f"{tmp}/on")
    per_epoch = steady(with_cache["epochs"]) / steady(without["epochs"])
    stage = with_cache["stage_s"] / without["stage_s"]
    report = {
        "benchmark": "feature cache, frozen head stage", "machine": machine(), "args": vars(args),
        "epoch_s_without": without["epochs"], "epoch_s_with": with_cache["epochs"],
        "ratio_epoch_from_2nd": round(per_epoch, 4), "ratio_stage_incl_cache_build": round(stage, 4),
        "val_accuracy": {"without": without["val_accuracy"], "with": with_cache["val_accuracy"]},
    }
    print(json.dumps(report, indent=2))
    print(f"\nhead epoch with cache / without (median of epochs 2..{args.epochs}): {per_epoch:.4f}  (goal <= 0.05)")
    print(f"whole stage incl. building the cache: {stage:.3f}")


if __name__ == "__main__":
    main()
