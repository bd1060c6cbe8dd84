"""Training as the entry points run it: the pre-flight checks, the trainer, then the post-training tools.

    result = train(cfg, run_dir)

tlkit.train (the facade), train.py through it, and `tlkit reproduce` call this. It sits above the trainer and
the post-training tools (tlkit.tools.evaluate, tlkit.tools.sweep) and hands those tools to the trainer (after_training()), so
the trainer imports nothing above it. The trainer and the tools import Keras: they load only after the checks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tlkit.config.store import as_train_config
from tlkit.recipe.preflight import check_run

if TYPE_CHECKING:
    from tlkit.training.run_results import AfterTraining
    from tlkit.training.trainer import TrainResult


def after_training() -> "AfterTraining":
    """The tools the trainer hands a finished run to: the final metrics and RUN_DIR/eval/ from one evaluation pass
    (tlkit.tools.evaluate), the HParams for TensorBoard (tlkit.tools.sweep)."""
    from tlkit.tools.evaluate import evaluate_bundle, report_after_training
    from tlkit.tools.sweep import log_hparams
    from tlkit.training.run_results import AfterTraining

    return AfterTraining(evaluate=evaluate_bundle, write_report=report_after_training, log_hparams=log_hparams)


def train(cfg, run_dir=None, checked=None) -> "TrainResult":
    """Check `cfg` before TensorFlow starts (tlkit.recipe.preflight.check_run), then train it (tlkit.training.trainer.train).

    cfg: a TrainConfig, or anything tlkit.config.as_train_config takes (a dict, a DictConfig); run_dir: the run
    directory (None: a dated folder, or cfg.resume's). cfg.resume = RUN_DIR continues an interrupted run.
    checked: what check_run(cfg) returned, when the caller already ran it (the data is then not scanned again).
    """
    cfg = as_train_config(cfg)
    spec, data_scan = checked or check_run(cfg)  # a bad value fails here, in a second, before any model is built
    from tlkit.training.trainer import train as train_stages

    return train_stages(cfg, run_dir, spec=spec, data_scan=data_scan, after_training=after_training())
