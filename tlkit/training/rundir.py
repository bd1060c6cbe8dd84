"""The run directory: what a finished run leaves behind.

    RUN_DIR/
      .hydra/            the composed config and overrides (written by Hydra)
      config.yaml        the TrainConfig as run (also for runs started from a notebook)
      train.log          everything logged, one line per epoch
      history.csv        per-epoch metrics, with stage index and learning rate
      tensorboard/       one TensorBoard run for all stages
      model.keras        the trained model, RGB 0-255 in, probabilities out
      metrics.json       summary: see `write_metrics`
      eval/              written at the end of training and by `tlkit evaluate` (tlkit.tools.evaluate):
        report.json              per split ("val", "test"): accuracy, top-k, per-class
                                 precision/recall/F1, confusion matrix, confidently wrong images
        training_curves.png      loss, accuracy and LR per epoch, stage boundaries marked
        SPLIT_confusion_matrix.png    row-normalised, class names on the axes
        SPLIT_confidently_wrong.png   the most confidently misclassified images, each with its Grad-CAM
                                      heat map for the predicted class (tlkit.tools.explain)
      export/            `tlkit export` (tlkit.tools.export): one folder per format, each with the
                         model file and model_card.json (class names, input contract)
      explain/           `tlkit explain` (tlkit.tools.explain): Grad-CAM pictures of given images, explain.json
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

from tlkit.fileio import RunDirError, atomic_write, read_json  # noqa: F401  (re-exported: tlkit.training.rundir.atomic_write)
from tlkit.fileio import describe_os_error as _describe_os_error
from tlkit.text_table import text_table

LOG_FILE = "train.log"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.npz"  # tlkit.training.checkpoint: the last completed epoch, removed when the run completes
HYDRA_CONFIG_FILE = ".hydra/config.yaml"
EVAL_DIR = "eval"
EXPORT_DIR = "export"
EXPLAIN_DIR = "explain"


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


TIMINGS_FILE = "timings.json"


def write_timings(run_dir: Path, timings: dict) -> Path:
    """Wall times live apart from metrics.json, which is identical for identical seeded runs."""
    path = Path(run_dir) / TIMINGS_FILE
    text = json.dumps(timings, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def write_metrics(run_dir: Path, metrics: dict) -> Path:
    path = Path(run_dir) / METRICS_FILE
    text = json.dumps(metrics, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))  # never a half-written metrics.json
    return path


def has_progress(run_dir) -> bool:
    """Whether `run_dir` holds a finished run (metrics.json) or an interrupted one (a checkpoint)."""
    run_dir = Path(run_dir)
    return (run_dir / CHECKPOINT_FILE).exists() or (run_dir / METRICS_FILE).exists()


def truncate_history(run_dir: Path, epochs: int) -> None:
    """Keep history.csv's header and its first `epochs` rows: a resumed run appends from there
    (the killed run may have logged an epoch its checkpoint does not hold)."""
    path = Path(run_dir) / HISTORY_FILE
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(lines[: 1 + epochs])))


def write_config(run_dir: Path, cfg) -> Path:
    """RUN_DIR/config.yaml: the TrainConfig as run, so `tlkit evaluate` can rebuild its data."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / CONFIG_FILE
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return path


def load_config(run_dir: Path, **overrides):
    """The run's TrainConfig as it ran (config.yaml: the recipe's choices filled in; else .hydra/config.yaml, what
    Hydra composed), with dotted `overrides` merged on."""
    from omegaconf import OmegaConf

    from tlkit.config.store import as_train_config
    from tlkit.errors import DataError

    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, HYDRA_CONFIG_FILE):
        if (run_dir / name).is_file():
            return as_train_config(OmegaConf.load(run_dir / name), **overrides)
    raise DataError(f"{str(run_dir)!r} has neither {HYDRA_CONFIG_FILE} nor {CONFIG_FILE}: is it a tlkit run directory?")


def read_metrics(run_dir: Path) -> dict:
    """RUN_DIR/metrics.json, or {} when the run has none (yet)."""
    return read_json(Path(run_dir) / METRICS_FILE)


def summary_table(stages: list[dict]) -> str:
    """A fixed-width table of the stage records (tlkit.training.trainer), for the console and train.log."""
    header = ("stage", "trains", "epochs", "best", "val_loss", "val_acc", "peak lr", "trainable", "time")
    rows = [(s["name"], s["train"], str(s["epochs_run"]), str(s["best_epoch"]), _fmt(s.get("val_loss")),
             _fmt(s.get("val_accuracy")), _fmt(s.get("lr"), ".2g"), f"{s['trainable_params']:,}",
             f"{s['wall_time_s']:.0f}s") for s in stages]
    return text_table(header, rows)


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


# --------------------------------------------------------------------------- robustness (issue 8)
# Atomic writes (tlkit.fileio.atomic_write, re-exported here) and an early writability check, so a full
# disk or a read-only run directory gives a clear error and never destroys the last good file. Reuse
# `atomic_write` for any file a crash must not leave half-written (checkpoints included).


def _probe_write(directory: Path) -> None:
    """Create, write and delete a small file in `directory` (what any run needs to do)."""
    probe = directory / f".tlkit-write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(probe, "wb") as handle:
        handle.write(b"ok")
    os.unlink(probe)


def check_can_create(run_dir) -> None:
    """Without creating anything: can `run_dir` be created (or written, if it exists)?

    For train.py, before Hydra creates the run directory itself (its own error would be a
    stack trace). The nearest existing ancestor must be a writable directory.
    """
    target = Path(os.path.abspath(os.path.expanduser(str(run_dir))))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"the run directory {str(target)!r} cannot be created: {str(existing)!r} is a file, "
                          f"not a directory. Choose another one (hydra.run.dir=/writable/path)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"the run directory {str(target)!r} cannot be created: {str(existing)!r} is not writable. "
                          f"Choose another one (hydra.run.dir=/writable/path)")


def ensure_writable(run_dir) -> Path:
    """Create `run_dir` and prove a file can be written there, before any training."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _probe_write(run_dir)
    except OSError as error:
        if run_dir.exists() and not run_dir.is_dir():
            problem = "is a file, not a directory"
        else:
            problem = f"is {_describe_os_error(error)} ({error.strerror or error})"
        raise RunDirError(
            f"the run directory {str(run_dir)!r} {problem}: nothing was trained. "
            f"Choose another one (python train.py hydra.run.dir=/writable/path, or tlkit.train(cfg, run_dir=...))"
        ) from error
    return run_dir
