"""What the per-epoch checkpoints cost: the same fine-tuning with trainer.checkpoint on and off.

    python scripts/bench_checkpoint.py [--backbone resnet50] [--image-size 96] [--epochs 4] [--repeats 2]

Runs alternate (off, on, off, on, ...) so both see the same machine load; reported: the
fine-tuning stage's wall time (it includes the snapshot between epochs and the background
write overlapping the next epoch), the ratio on ÷ off, and the checkpoint's size.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from bench_common import machine  # noqa: E402  (sets TF_CPP_MIN_LOG_LEVEL first)

import tlkit  # noqa: E402


def config(backbone: str, image_size: int, epochs: int, checkpoint: bool):
    return tlkit.as_train_config({
        "backbone": {"name": backbone, "weights": None},
        "data": {"source": "digits", "image_size": image_size, "batch_size": 32, "max_images": 512},
        "schedule": {"name": "full", "stages": [{"name": "all", "train": "all", "epochs": epochs, "patience": None}]},
        "optimizer": {"lr": 1e-4},
        "trainer": {"verbose": 0, "save_model": False, "checkpoint": checkpoint},
        "doctor": {"enabled": False},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tlkit-bench-checkpoint-"))
    times = {False: [], True: []}
    costs = []
    for repeat in range(args.repeats):
        for checkpoint in (False, True):
            run_dir = root / f"{'on' if checkpoint else 'off'}-{repeat}"
            started = time.time()
            tlkit.train(config(args.backbone, args.image_size, args.epochs, checkpoint), run_dir)
            timings = json.loads((run_dir / "timings.json").read_text())
            stage = timings["stages"]["all"]
            times[checkpoint].append(stage)
            if checkpoint:
                costs.append(timings["checkpoint_s"])
            print(f"checkpoint={'on ' if checkpoint else 'off'} repeat {repeat}: stage {stage:.1f}s "
                  f"(run {time.time() - started:.1f}s) checkpoint_s {timings['checkpoint_s']}", flush=True)
    size = _checkpoint_size(args, root)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"\n{machine()}\n{args.backbone} at {args.image_size} px, {args.epochs} epochs fine-tuning all blocks, "
          f"512 digits, batch 32")
    print(f"stage wall time, median of {args.repeats}: off {off:.1f}s, on {on:.1f}s, on ÷ off {on / off:.3f}")
    print(f"checkpoint.npz: {size / 2**20:.0f} MiB per epoch")
    blocking = statistics.median((c["snapshot"] + c["waited"]) / args.epochs for c in costs)
    background = statistics.median(c["write"] / args.epochs for c in costs)
    print(f"per epoch: training blocked {blocking:.2f}s (snapshot + waiting for the previous write), "
          f"background write {background:.2f}s; blocked ÷ epoch {blocking / (on / args.epochs):.3f}")


def _checkpoint_size(args, root: Path) -> int:
    """One checkpoint's size (a completed run removes its own): the model, its Adam state, the best weights."""
    import keras

    from tlkit.training import checkpoint as ckpt
    from tlkit.backbones import get_spec

    spec = get_spec(args.backbone)
    net = getattr(keras.applications, spec.constructor)(weights=None, include_top=False, input_shape=(args.image_size, args.image_size, 3))
    optimizer = keras.optimizers.Adam()
    optimizer.build(net.trainable_variables)
    (root / "size").mkdir()
    progress = ckpt.StageProgress(0, 0, 1, False, {}, None)
    ckpt.save(root / "size", progress, [], [], net, optimizer, net.get_weights())
    return (root / "size" / ckpt.CHECKPOINT_FILE).stat().st_size


if __name__ == "__main__":
    main()
