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


def improves(monitor: str):
    """better(logs, best_logs) for `monitor`: a lower loss, or a higher accuracy with ties broken by the lower
    val_loss (a small validation set ties on accuracy often; the loss says which epoch is surer)."""
    if "loss" in monitor:
        return lambda logs, best: logs[monitor] < best[monitor]

    def better(logs, best):
        if logs[monitor] != best[monitor]:
            return logs[monitor] > best[monitor]
        loss, best_loss = logs.get("val_loss"), best.get("val_loss")
        return loss is not None and best_loss is not None and math.isfinite(loss) and loss < best_loss

    return better


class BestWeights(keras.callbacks.Callback):
    """Remembers the best epoch by `monitor`, stops the stage after `patience` epochs without
    improvement (never before `min_epochs` epochs of the stage), and restores the best epoch's weights when the
    stage ends.

    Keras's EarlyStopping restores only when it stops early; a stage must end on its best
    epoch either way. Its state (state()/restore()) goes into every checkpoint, so a resumed
    stage stops and restores exactly where an uninterrupted one would.
    """

    def __init__(self, monitor: str, patience: int | None = None, min_epochs: int | None = None):
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.min_epochs = min_epochs or 0
        self.epochs_seen = 0  # epochs of this stage so far
        self.better = improves(monitor)
        self.best_value = None
        self.best_epoch = None
        self.best_logs: dict = {}
        self.best_weights = None
        self.wait = 0  # epochs since the last improvement

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is not None and math.isfinite(value) and (self.best_value is None or self.better(logs, self.best_logs)):
            self.best_value, self.best_epoch = float(value), epoch
            self.best_logs = {k: float(v) for k, v in logs.items()}
            self.best_weights = self.model.get_weights()
            self.wait = 0
        else:
            self.wait += 1
        self.epochs_seen += 1
        if self.patience is not None and self.wait >= self.patience and self.epochs_seen >= self.min_epochs:
            self.model.stop_training = True
            log.info("early stopping: %s has not improved for %d epoch(s)", self.monitor, self.wait)

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            self.best_weights = None  # free the copy

    def state(self) -> dict:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "best_logs": self.best_logs,
                "wait": self.wait, "epochs_seen": self.epochs_seen}

    def restore(self, state: dict, best_weights) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.best_logs, self.wait = dict(state["best_logs"]), state["wait"]
        self.epochs_seen = state.get("epochs_seen", 0)
        self.best_weights = list(best_weights) if best_weights else None


class EpochLog(keras.callbacks.Callback):
    """One line per epoch in train.log (progress bars only reach the console)."""

    def __init__(self, stage_name: str):
        super().__init__()
        self.stage_name = stage_name

    def on_epoch_end(self, epoch, logs=None):
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted((logs or {}).items()) if k != "stage")
        log.info("stage %s epoch %d: %s", self.stage_name, epoch + 1, shown)


class RunBest:
    """The best epoch of the whole run by `monitor`, across stages: what model.keras holds at the end.

    A later stage can end worse than an earlier one (an unfreezing spike it never recovers from, a
    stage the runtime monitor stopped); the run then ends on the earlier stage's best epoch, as
    `ModelCheckpoint(save_best_only=True)` would. `offer` is called after each stage, once the stage
    has restored its own best epoch; the weights are copied only while a later stage may change them.
    """

    def __init__(self, monitor: str):
        self.monitor = monitor
        self.better = improves(monitor)
        self.logs: dict = {}
        self.stage: str | None = None
        self.index: int | None = None
        self.epoch: int | None = None  # 1-based, counted over the run
        self.weights: list | None = None  # None while the model itself holds the best epoch
        # The best epoch is the stopped first attempt of a stage the recipe retried (tlkit.training.trainer): the
        # retry, which started over from the stage's start, did not beat it.
        self.stopped_attempt = False

    def offer(self, index: int, record: dict, model: keras.Model, last: bool) -> bool:
        """Take stage `index`'s best epoch (its record) if it beats the run's best so far; True when it does."""
        logs = {k: record[k] for k in ("val_loss", "val_accuracy", "val_map") if record.get(k) is not None}
        value = logs.get(self.monitor)
        if value is None or not math.isfinite(value) or (self.logs and not self.better(logs, self.logs)):
            return False
        self.logs, self.stage, self.index, self.epoch = logs, record["name"], index, record.get("best_epoch")
        self.weights = None if last else model.get_weights()
        self.stopped_attempt = False
        return True

    def keep_stopped_attempt(self, index: int, model: keras.Model) -> None:
        """Stage `index` was stopped and is about to be retried from its start: if its best epoch (in `model` now)
        is the run's best, keep a copy, so that the retry competes with it instead of replacing it."""
        if self.index == index:
            self.weights = model.get_weights()
            self.stopped_attempt = True

    def restore_into(self, model: keras.Model, last_index: int) -> bool:
        """Put the run's best epoch back into `model` if a stage after it ran (up to stage `last_index`, the last
        one that ran); True when it did."""
        if self.weights is None or self.index is None or (self.index >= last_index and not self.stopped_attempt):
            return False
        model.set_weights(self.weights)
        return True

    def to_dict(self) -> dict:
        return {"stage": self.stage, "index": self.index, "epoch": self.epoch, "monitor": self.monitor,
                **({"stopped_attempt": True} if self.stopped_attempt else {}), **{k: v for k, v in self.logs.items()}}

    def state(self) -> dict:
        return {"logs": self.logs, "stage": self.stage, "index": self.index, "epoch": self.epoch,
                "stopped_attempt": self.stopped_attempt}

    def restore(self, state: dict | None, weights: list | None) -> None:
        if state:
            self.logs, self.stage, self.index, self.epoch = dict(state["logs"]), state["stage"], state["index"], state["epoch"]
            self.stopped_attempt = bool(state.get("stopped_attempt", False))
        self.weights = list(weights) if weights else None
