"""Study: each fine-tuning method of issue 9 against the staged default, on one transfer task.

    python scripts/study_methods.py [--seeds 0 1] [--size 32] [--only staged,lp_ft]

Offline, so the task is made here (tlkit.data.tasks' digits pair, tlkit.model.pretrain): ResNet50 is
trained from scratch on scikit-learn digits 0-4 and its weights saved; every contender transfers
that file to digits 5-9 (the same train/val folders, 32 px, augment=none because flips change
digits). Each contender is a real `python train.py` run with the overrides shown; the
staged default's epoch caps (5 + 5 + 5, early stopping) are the budget every method shares,
except where the method is a schedule (lp_ft) or chooses its own (recipe=auto).
Prints a Markdown table (mean over seeds; min-max in brackets) and writes study_methods.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from bench_common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "staged": [],
    "lr_decay": ["schedule.lr_decay=0.7"],
    "lp_ft": ["schedule=lp_ft"],
    "l2sp": ["regularizer=l2sp"],
    "label_smoothing": ["loss.label_smoothing=0.1"],
    "mixup": ["augment.mixup=0.2"],
    "cutmix": ["augment.cutmix=1.0"],
    "ema": ["optimizer.ema=true"],
    "lr_auto": ["optimizer.lr=auto"],
    "recipe_auto": ["recipe=auto", "data.image_size=32", "augment=none"],  # the study's size and no flips
}


def make_task(root: Path, size: int) -> Path:
    """Pretrained weights (digits 0-4, tlkit.model.pretrain) and the target folders (digits 5-9): reused when present."""
    import numpy as np

    from tlkit.backbones import get_spec
    from tlkit.data.tasks import PAIRS, write_folders
    from tlkit.model.pretrain import ensure_pretrained

    weights = ensure_pretrained(get_spec("resnet50"), "digits", root=root)
    if not (root / "target").exists():
        pair = PAIRS["digits"]
        images, labels = pair.target.draw(pair.target_classes, pair.target.limit_per_class, 0)
        val = np.random.default_rng(0).permutation(len(labels))[: len(labels) // 5]
        is_val = np.isin(np.arange(len(labels)), val)
        for split, rows in (("train", ~is_val), ("val", is_val)):
            write_folders(root / "target" / split, (images[rows], labels[rows]), pair.target_classes)
    return weights


def run(method: str, overrides: list, seed: int, weights: Path, root: Path, size: int) -> dict:
    run_dir = root / "runs" / f"{method}-{seed}"
    # The study's defaults as they were measured (BENCHMARKS 6): the staged schedule, batch 32, best epoch by val_loss.
    staged = [] if any(o.startswith(("schedule=", "recipe=")) for o in overrides) else [
        "schedule=staged", "data.batch_size=32", "trainer.monitor=val_loss"]
    command = [sys.executable, str(ROOT / "train.py"), "backbone=resnet50", f"backbone.weights={weights}",
               "data=folder", f"data.train_dir={root / 'target' / 'train'}", f"data.val_dir={root / 'target' / 'val'}",
               f"data.image_size={size}", "augment=none", "trainer.verbose=0", "trainer.save_model=false",
               f"seed={seed}", *staged, *overrides, f"hydra.run.dir={run_dir}"]
    started = time.time()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        print(f"{method} seed {seed} FAILED:\n{proc.stderr[-2000:]}", flush=True)
        return {"method": method, "seed": seed, "failed": True}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timings = json.loads((run_dir / "timings.json").read_text())
    result = {"method": method, "seed": seed, "val_accuracy": metrics["val_accuracy"], "val_loss": metrics["val_loss"],
              "epochs": metrics["epochs"], "train_wall_s": timings["wall_time_s"], "process_s": time.time() - started}
    print(json.dumps(result), flush=True)
    return result


def table(results: list, methods: list) -> str:
    rows = ["| method | overrides | val accuracy | epochs | wall time | wall ÷ staged |", "|---|---|---|---|---|---|"]
    base = statistics.mean(r["train_wall_s"] for r in results if r["method"] == "staged" and not r.get("failed"))
    for method in methods:
        done = [r for r in results if r["method"] == method and not r.get("failed")]
        if not done:
            rows.append(f"| {method} | `{' '.join(METHODS[method])}` | failed | | | |")
            continue
        acc = [r["val_accuracy"] for r in done]
        wall = statistics.mean(r["train_wall_s"] for r in done)
        rows.append(f"| {method} | `{' '.join(METHODS[method]) or '(defaults)'}` | {statistics.mean(acc):.3f} "
                    f"[{min(acc):.3f}-{max(acc):.3f}] | {statistics.mean(r['epochs'] for r in done):.0f} | "
                    f"{wall:.0f} s | {wall / base:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--only", default=",".join(METHODS))
    parser.add_argument("--root", default=None, help="work folder (kept: the pretrained weights are reused)")
    args = parser.parse_args()
    methods = ["staged", *[m for m in args.only.split(",") if m != "staged"]]
    root = Path(args.root or tempfile.mkdtemp(prefix="tlkit-study-"))
    root.mkdir(parents=True, exist_ok=True)
    weights = make_task(root, args.size)
    results = [run(m, METHODS[m], seed, weights, root, args.size) for seed in args.seeds for m in methods]
    (root / "study_methods.json").write_text(json.dumps(results, indent=1))
    print(f"\n{machine()}; digits 5-9 from ResNet50 pretrained on digits 0-4, {args.size} px, "
          f"seeds {args.seeds}\n\n{table(results, methods)}\n\nresults: {root / 'study_methods.json'}")


if __name__ == "__main__":
    main()
