"""The run directory: what a finished run leaves behind.

    RUN_DIR/
      .hydra/            the composed config and overrides (written by Hydra)
      train.log          everything logged, one line per epoch
      history.csv        per-epoch metrics, with stage index and learning rate
      tensorboard/       one TensorBoard run for all stages
      model.keras        the trained model, RGB 0-255 in, probabilities out
      metrics.json       summary: see `write_metrics`
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

LOG_FILE = "train.log"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
TENSORBOARD_DIR = "tensorboard"


def attach_log_file(run_dir: Path) -> logging.Handler | None:
    """Log to RUN_DIR/train.log unless something (Hydra) already does."""
    target = os.path.abspath(run_dir / LOG_FILE)
    for handler in logging.getLogger().handlers + logging.getLogger("tlkit").handlers:
        if isinstance(handler, logging.FileHandler) and os.path.abspath(handler.baseFilename) == target:
            return None
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logger = logging.getLogger("tlkit")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def write_metrics(run_dir: Path, metrics: dict) -> Path:
    path = run_dir / METRICS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)  # never leave a half-written metrics.json
    return path


def summary_table(stages: list[dict]) -> str:
    """A fixed-width table of the stages, for the console and train.log."""
    header = ("stage", "trains", "epochs", "best", "val_loss", "val_acc", "peak lr", "trainable", "time")
    rows = [header]
    for s in stages:
        rows.append((
            s["name"], s["train"], str(s["epochs_run"]), str(s["best_epoch"]),
            _fmt(s.get("val_loss")), _fmt(s.get("val_accuracy")), f"{s['lr']:.2g}",
            f"{s['trainable_params']:,}", f"{s['wall_time_s']:.0f}s",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
