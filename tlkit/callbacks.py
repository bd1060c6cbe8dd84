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
    """Remembers the best epoch by `monitor` and restores its weights when the stage ends.

    Keras's EarlyStopping restores only when it stops early; a stage must end on its best
    epoch either way.
    """

    def __init__(self, monitor: str):
        super().__init__()
        self.monitor = monitor
        self.better = (lambda a, b: a < b) if "loss" in monitor else (lambda a, b: a > b)
        self.best_value = None
        self.best_epoch = None
        self.best_logs: dict = {}
        self._best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if self.best_value is None or self.better(value, self.best_value):
            self.best_value, self.best_epoch = value, epoch
            self.best_logs = {k: float(v) for k, v in logs.items()}
            self._best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
            self._best_weights = None  # free the copy


class EpochLog(keras.callbacks.Callback):
    """One line per epoch in train.log (progress bars only reach the console)."""

    def __init__(self, stage_name: str):
        super().__init__()
        self.stage_name = stage_name

    def on_epoch_end(self, epoch, logs=None):
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted((logs or {}).items()) if k != "stage")
        log.info("stage %s epoch %d: %s", self.stage_name, epoch + 1, shown)
