"""Callbacks the trainer uses in every stage."""
from __future__ import annotations

import logging
import math
import time

import keras

log = logging.getLogger("tlkit.train")


class StageContext(keras.callbacks.Callback):
    """Adds `stage` (index), `lr` (at the epoch's start) and `epoch_time_s` to the epoch logs, so CSV, TensorBoard and train.log carry them.

    Must come first in the callback list: later callbacks read the logs it extends.
    """

    def __init__(self, stage_index: int):
        super().__init__()
        self.stage_index = stage_index

    def on_epoch_begin(self, epoch, logs=None):
        # The LR the epoch starts with: at the end of a cosine stage the LR is exactly 0.
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["stage"] = self.stage_index
            logs["lr"] = self._lr
            logs["epoch_time_s"] = time.perf_counter() - self._started  # training + validation


class BestWeights(keras.callbacks.Callback):
    """Remembers the best epoch by `monitor`, stops the stage after `patience` epochs without
    improvement, and restores the best epoch's weights when the stage ends.

    Keras's EarlyStopping restores only when it stops early; a stage must end on its best
    epoch either way. Its state (state()/restore()) goes into every checkpoint, so a resumed
    stage stops and restores exactly where an uninterrupted one would.
    """

    def __init__(self, monitor: str, patience: int | None = None):
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.better = (lambda a, b: a < b) if "loss" in monitor else (lambda a, b: a > b)
        self.best_value = None
        self.best_epoch = None
        self.best_logs: dict = {}
        self.best_weights = None
        self.wait = 0  # epochs since the last improvement

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(value) and (self.best_value is None or self.better(value, self.best_value)):
            self.best_value, self.best_epoch = float(value), epoch
            self.best_logs = {k: float(v) for k, v in logs.items()}
            self.best_weights = self.model.get_weights()
            self.wait = 0
        else:
            self.wait += 1
        if self.patience is not None and self.wait >= self.patience:
            self.model.stop_training = True
            log.info("early stopping: %s has not improved for %d epoch(s)", self.monitor, self.wait)

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            self.best_weights = None  # free the copy

    def state(self) -> dict:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "best_logs": self.best_logs,
                "wait": self.wait}

    def restore(self, state: dict, best_weights) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.best_logs, self.wait = dict(state["best_logs"]), state["wait"]
        self.best_weights = list(best_weights) if best_weights else None


class EpochLog(keras.callbacks.Callback):
    """One line per epoch in train.log (progress bars only reach the console)."""

    def __init__(self, stage_name: str):
        super().__init__()
        self.stage_name = stage_name

    def on_epoch_end(self, epoch, logs=None):
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted((logs or {}).items()) if k != "stage")
        log.info("stage %s epoch %d: %s", self.stage_name, epoch + 1, shown)
