"""The runtime monitor: each diagnosis fires on a run that has the problem, and stays silent on a healthy one.

Real (tiny) training runs where a run can show the problem in a second or two; logs fed by hand where it
cannot (a val-loss spike needs a backbone whose BatchNorm drifts; a slow steady rise needs many epochs).
"""
import inspect
import logging
import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tlkit.doctor import monitor as monitor_module
from tlkit.doctor.findings import Severity
from tlkit.doctor.monitor import RuntimeMonitor

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def dense_model(inputs: int, classes: int) -> keras.Model:
    """A zero-initialised linear head, like tlkit's: the first loss is exactly log(classes)."""
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(classes, kernel_initializer="zeros")])


def fed(monitor: RuntimeMonitor, epochs: list[dict], start_loss: float | None = None) -> RuntimeMonitor:
    """Feed epoch logs by hand, with a tiny model attached so the monitor can set stop_training."""
    model = dense_model(2, 2)
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    monitor.set_model(model)
    monitor.on_train_begin()
    for i, logs in enumerate(epochs):
        monitor.on_epoch_begin(i)
        if i == 0 and start_loss is not None:
            monitor.on_train_batch_end(0, {"loss": start_loss})
        monitor.on_epoch_end(i, dict(logs))
        if model.stop_training:
            break
    return monitor


def ids(monitor: RuntimeMonitor) -> list[str]:
    return [f.id for f in monitor.diagnoses]


# ---- a healthy two-stage run (head, then "backbone" + head) on a real data set: no diagnosis -------------
@pytest.fixture(scope="module")
def healthy():
    digits = load_digits()
    x, y = (digits.data / 16.0).astype("float32"), digits.target
    keras.utils.set_random_seed(0)
    backbone = keras.layers.Dense(32, activation="relu", name="backbone")
    model = keras.Sequential([keras.Input((64,)), backbone, keras.layers.Dense(10, kernel_initializer="zeros")])
    runs = []
    backbone.trainable = False
    model.compile(keras.optimizers.Adam(3e-2), LOSS)
    head = RuntimeMonitor("head", 10, trains_backbone=False)
    runs.append((head, model.fit(x[:1400], y[:1400], validation_data=(x[1400:], y[1400:]), batch_size=32,
                                 epochs=3, callbacks=[head], verbose=0)))
    backbone.trainable = True
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    fine_tune = RuntimeMonitor("all", 10, trains_backbone=True,
                               reference_val_loss=min(runs[0][1].history["val_loss"]))
    runs.append((fine_tune, model.fit(x[:1400], y[:1400], validation_data=(x[1400:], y[1400:]), batch_size=32,
                                      initial_epoch=3, epochs=6, callbacks=[fine_tune], verbose=0)))
    return runs


@pytest.mark.parametrize("finding_id", ["nan-loss", "loss-diverging", "val-loss-spike", "plateau"])
def test_silent_on_a_healthy_run(healthy, finding_id):
    for monitor, history in healthy:
        assert finding_id not in ids(monitor), monitor.summary()
        assert not monitor.stopped and len(history.epoch) == 3
    head_losses = healthy[0][1].history["loss"]
    assert head_losses[-1] < 0.6 * math.log(10) and head_losses == sorted(head_losses, reverse=True)


def test_healthy_run_has_no_diagnoses_at_all(healthy):
    assert [m.summary() for m, _ in healthy] == [[], []]


# ---- nan-loss ------------------------------------------------------------------------------------------
def test_nan_in_the_images_stops_the_stage_at_once(caplog):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
    x[9, 2] = np.nan  # in the 3rd batch of 4
    model = dense_model(8, 3)
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    monitor = RuntimeMonitor("head", 3, trains_backbone=False)
    batches = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    with caplog.at_level(logging.WARNING, logger="tlkit.doctor"):
        history = model.fit(x, y, batch_size=4, epochs=3, shuffle=False, callbacks=[monitor, counter], verbose=0)
    assert ids(monitor) == ["nan-loss"] and monitor.stopped
    assert len(history.epoch) == 1 and batches == [0, 1, 2]  # not one batch more
    finding = monitor.diagnoses[0]
    assert finding.severity == Severity.error
    assert "epoch 1, batch 3" in finding.message and "NaN or Inf" in finding.message
    assert "optimizer.lr=" in finding.fix and "backbone.preprocess=auto" in finding.fix
    assert any(r.levelno == logging.ERROR and "nan-loss" in r.getMessage() for r in caplog.records)


def test_silent_on_large_but_finite_losses():
    monitor = fed(RuntimeMonitor("head", 2, trains_backbone=False), [{"loss": 0.9}, {"loss": 0.5}], start_loss=1e30)
    assert "nan-loss" not in ids(monitor)


# ---- loss-diverging ----------------------------------------------------------------------------------
def test_case1_runaway_loss_stops_the_stage():
    """FIELD_NOTES Case 1 in small: unpreprocessed large inputs, Adam lr=0.1, batch size 1."""
    rng = np.random.default_rng(0)
    x, y = (rng.normal(size=(128, 16)) * 100).astype("float32"), rng.integers(0, 4, 128)
    keras.utils.set_random_seed(0)
    model = dense_model(16, 4)
    model.compile(keras.optimizers.Adam(0.1), LOSS)
    monitor = RuntimeMonitor("head", 4, trains_backbone=False)
    history = model.fit(x, y, batch_size=1, epochs=6, callbacks=[monitor], verbose=0)
    assert ids(monitor) == ["loss-diverging"] and monitor.stopped
    assert len(history.epoch) == 2  # stopped after 2 epochs far above chance, not 6
    finding = monitor.diagnoses[0]
    assert "far above chance level" in finding.message and "learning rate 0.1" in finding.message
    assert "optimizer.lr=0.01" in finding.fix and "data.batch_size=32" in finding.fix
    assert monitor.summary()[0]["epoch"] == 2


def test_steady_rise_below_the_ceiling_stops_the_stage():
    """A fine-tune LR too high: the loss climbs from a good value, never far above chance."""
    losses = [0.31, 0.45, 0.72, 1.1, 1.5]
    monitor = fed(RuntimeMonitor("all", 10, trains_backbone=True), [{"loss": v} for v in losses], start_loss=0.3)
    assert ids(monitor) == ["loss-diverging"] and monitor.stopped and monitor.model.stop_training
    assert "rose 3 epochs in a row: 0.31 → 0.45 → 0.72 → 1.1" in monitor.diagnoses[0].message
    assert monitor.summary()[0]["epoch"] == 4


@pytest.mark.parametrize("losses, start", [
    ([1.0, 0.8, 0.81, 0.7, 0.705, 0.71, 0.6], None),  # noise: never 3 rises in a row
    ([0.0100, 0.0104, 0.0108, 0.0112, 0.0116], 0.02),  # converged: rises of 4% but 0.0004 nats
    ([1.6, 0.9, 0.5, 0.4], None),  # one epoch above 2·log 2 (an early overshoot), then falling
    # a small set's fine-tune drifting up by chance, 1.16x its lowest (MobileNetV2 glyphs, 30 per class, 5 classes)
    ([1.09, 0.77, 0.56, 0.59, 0.61, 0.65], 1.76),
    ([9.0, 7.5, 6.0, 4.0], 9.5),  # a head that starts high (random init) and comes down
    ([7.2, 3.3, 1.9, 1.2], 1.0986),  # zero-init head overshooting on large features, halving each epoch
])
def test_diverging_silent_on_noisy_or_recovering_runs(losses, start):
    monitor = fed(RuntimeMonitor("head", 2, trains_backbone=False), [{"loss": v} for v in losses], start_loss=start)
    assert "loss-diverging" not in ids(monitor) and not monitor.stopped


def test_a_rise_during_the_lr_warmup_does_not_stop_the_stage():
    """A fine-tune's loss rising while its LR warms up (the recipe's stages) is judged only once the warmup is over:
    the same losses stop a stage without a warmup, and a rise that goes on after the warmup still stops it."""
    warming = [1.15, 1.4, 1.75, 2.1, 1.2, 0.9]  # as MobileNetV2 digits did, warmup of 3.3 epochs: peak LR at epoch 4
    logs = [{"loss": v} for v in warming]
    plain = fed(RuntimeMonitor("finetune", 5, trains_backbone=True), logs, start_loss=1.1)
    assert ids(plain) == ["loss-diverging"] and plain.summary()[0]["epoch"] == 4
    warm = fed(RuntimeMonitor("finetune", 5, trains_backbone=True, warmup_epochs=3.3), logs, start_loss=1.1)
    assert not warm.stopped and ids(warm) == []
    still_rising = [{"loss": v} for v in (1.15, 1.21, 1.44, 1.58, 1.7, 1.9, 2.2)]
    late = fed(RuntimeMonitor("finetune", 5, trains_backbone=True, warmup_epochs=3.3), still_rising, start_loss=1.1)
    assert ids(late) == ["loss-diverging"] and late.summary()[0]["epoch"] == 7
    runaway = [{"loss": v} for v in (4.2, 26.6, 9.0, 8.0, 7.5)]  # far above chance after the warmup: stopped
    far = fed(RuntimeMonitor("finetune", 5, trains_backbone=True, warmup_epochs=2.5), runaway, start_loss=0.6)
    assert ids(far) == ["loss-diverging"] and far.summary()[0]["epoch"] == 5
    stuck = [{"loss": 2.1, "val_loss": 2.3, "val_accuracy": 0.2}] * 6  # at chance: counted from the warmup's end
    collapse = fed(RuntimeMonitor("finetune", 5, trains_backbone=True, reference_val_accuracy=0.86,
                                  warmup_epochs=2), stuck, 0.9)
    assert "collapsed-to-chance" in ids(collapse) and collapse.summary()[0]["epoch"] == 6


# ---- val-loss-spike ----------------------------------------------------------------------------------
def test_val_spike_is_recorded_once_and_does_not_stop():
    epochs = [{"loss": 0.40, "val_loss": 0.45}, {"loss": 0.35, "val_loss": 0.95},
              {"loss": 0.30, "val_loss": 1.30}, {"loss": 0.28, "val_loss": 0.50}]
    monitor = fed(RuntimeMonitor("all", 2, trains_backbone=True, reference_val_loss=0.5, batchnorm_trains=True),
                  epochs, start_loss=0.42)
    assert ids(monitor) == ["val-loss-spike"] and not monitor.stopped and not monitor.model.stop_training
    finding = monitor.diagnoses[0]
    assert finding.severity == Severity.warning, "BatchNorm training: drifting statistics are a likely cause"
    assert "0.95 at epoch 2" in finding.message and "0.45" in finding.message and "0.4 → 0.35" in finding.message
    assert finding.fix == "schedule.bn=frozen"
    # BatchNorm frozen (the default): a spike after unfreezing that the run recovers from, and keeps its best epoch.
    frozen = fed(RuntimeMonitor("all", 2, trains_backbone=True, reference_val_loss=0.5), epochs, start_loss=0.42)
    assert frozen.diagnoses[0].severity == Severity.info and "keeps its best epoch" in frozen.diagnoses[0].message


def test_val_spike_against_the_previous_stage_on_the_first_epoch():
    monitor = fed(RuntimeMonitor("top", 5, trains_backbone=True, reference_val_loss=0.3),
                  [{"loss": 0.25, "val_loss": 0.8}], start_loss=0.3)
    assert ids(monitor) == ["val-loss-spike"] and monitor.summary()[0]["epoch"] == 1


def test_val_loss_turning_inf_is_a_spike():
    epochs = [{"loss": 0.4, "val_loss": 0.5}, {"loss": 0.3, "val_loss": float("inf")}]
    assert ids(fed(RuntimeMonitor("all", 3, trains_backbone=True), epochs, start_loss=0.5)) == ["val-loss-spike"]


def test_val_spike_after_a_perfect_previous_stage():
    monitor = fed(RuntimeMonitor("all", 2, trains_backbone=True, reference_val_loss=0.0),
                  [{"loss": 0.1, "val_loss": 0.4}], start_loss=0.2)
    assert ids(monitor) == ["val-loss-spike"] and "inf×" in monitor.diagnoses[0].message


@pytest.mark.parametrize("trains_backbone, epochs", [
    (False, [{"loss": 0.4, "val_loss": 0.45}, {"loss": 0.35, "val_loss": 0.95}]),  # head only: not BN drift
    (True, [{"loss": 0.4, "val_loss": 0.45}, {"loss": 0.45, "val_loss": 0.95}]),  # train loss rose too
    (True, [{"loss": 0.4, "val_loss": 0.45}, {"loss": 0.35, "val_loss": 0.60}]),  # 1.33×: noise
    (True, [{"loss": 0.02, "val_loss": 0.03}, {"loss": 0.01, "val_loss": 0.07}]),  # 2.3× but only 0.04 nats
])
def test_val_spike_silent(trains_backbone, epochs):
    monitor = fed(RuntimeMonitor("all", 2, trains_backbone=trains_backbone), epochs, start_loss=0.5)
    assert ids(monitor) == []


# ---- plateau -----------------------------------------------------------------------------------------
def test_plateau_at_chance_with_a_far_too_low_lr(caplog):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(96, 8)).astype("float32"), rng.integers(0, 5, 96)  # labels unrelated to x
    model = dense_model(8, 5)
    model.compile(keras.optimizers.SGD(1e-7), LOSS)
    monitor = RuntimeMonitor("head", 5, trains_backbone=False)
    with caplog.at_level(logging.WARNING, logger="tlkit.doctor"):
        history = model.fit(x, y, batch_size=32, epochs=3, callbacks=[monitor], verbose=0)
    assert ids(monitor) == ["plateau"] and not monitor.stopped and len(history.epoch) == 3  # once, no stop
    finding = monitor.diagnoses[0]
    assert "log 5 = 1.609" in finding.message and "after 2 epochs" in finding.message
    assert "optimizer.lr=1e-3" in finding.fix
    assert [r.levelno for r in caplog.records if "plateau" in r.getMessage()] == [logging.WARNING]


def test_plateau_silent_in_the_first_epoch_and_below_chance():
    chance = math.log(10)
    first_only = fed(RuntimeMonitor("head", 10, trains_backbone=False), [{"loss": chance}], start_loss=chance)
    learning = fed(RuntimeMonitor("head", 10, trains_backbone=False),
                   [{"loss": chance * 0.99}, {"loss": chance * 0.95}, {"loss": chance * 0.9}], start_loss=chance)
    assert ids(first_only) == [] and ids(learning) == []


# ---- API ------------------------------------------------------------------------------------------------
def test_summary_and_reuse_across_fits():
    monitor = fed(RuntimeMonitor("head", 2, trains_backbone=False),
                  [{"loss": math.log(2)}, {"loss": math.log(2)}], start_loss=math.log(2))
    (entry,) = monitor.summary()
    assert set(entry) == {"id", "severity", "message", "fix", "stage", "epoch"}
    assert (entry["id"], entry["severity"], entry["stage"], entry["epoch"]) == ("plateau", "warning", "head", 2)
    monitor.on_train_begin()  # a new fit starts clean
    assert monitor.diagnoses == [] and monitor.summary() == [] and not monitor.stopped


def test_monitor_is_backend_neutral():
    assert "tensorflow" not in inspect.getsource(monitor_module)


# ---- collapsed-to-chance -------------------------------------------------------------------------------
def test_a_fine_tune_that_collapses_to_chance_is_stopped():
    """Started from a model at 0.86 (5 classes), val accuracy stuck at 0.2 for 4 epochs: an error that stops the stage
    (the recipe then retries it once, tests/test_probe.py); a dip of 3 epochs is not one."""
    stuck = [{"loss": 2.1, "accuracy": 0.9, "val_loss": 2.3, "val_accuracy": 0.2}] * 6  # training images still fit
    monitor = fed(RuntimeMonitor("finetune", 5, trains_backbone=True, reference_val_accuracy=0.86), stuck, 0.9)
    assert ids(monitor) == ["collapsed-to-chance"] and monitor.stopped and monitor.summary()[0]["epoch"] == 4
    assert monitor.diagnoses[0].severity == Severity.error and "retries" in monitor.diagnoses[0].fix
    dip = stuck[:3] + [{"loss": 0.5, "val_loss": 0.6, "val_accuracy": 0.8}] * 3
    recovering = fed(RuntimeMonitor("finetune", 5, trains_backbone=True, reference_val_accuracy=0.86), dip, 0.9)
    assert "collapsed-to-chance" not in ids(recovering)
    weak_start = fed(RuntimeMonitor("finetune", 5, trains_backbone=True, reference_val_accuracy=0.25), stuck, 0.9)
    assert "collapsed-to-chance" not in ids(weak_start), "from a model near chance there is nothing to collapse from"


def test_from_a_weak_start_a_fine_tune_at_chance_on_its_own_training_images_is_a_collapse():
    """A head only a little above chance (0.26, 5 classes; the glyphs case at 10 images per class): val accuracy at
    chance alone proves nothing, but when the training accuracy sits there too for 6 epochs after the warmup the
    fine-tune has stopped learning anything, and the stage is stopped (the recipe retries it gentler)."""
    dead = [{"loss": 1.7, "accuracy": 0.21, "val_loss": 1.7, "val_accuracy": 0.2}] * 12
    monitor = fed(RuntimeMonitor("finetune", 5, trains_backbone=True, reference_val_accuracy=0.26, warmup_epochs=5),
                  dead, 1.8)
    assert ids(monitor) == ["collapsed-to-chance"] and monitor.stopped and monitor.summary()[0]["epoch"] == 11
    assert "training accuracy 0.21" in monitor.diagnoses[0].message
    learning = [dict(logs, accuracy=0.2 + 0.05 * i) for i, logs in enumerate(dead)]  # fits its training images
    assert "collapsed-to-chance" not in ids(fed(RuntimeMonitor(
        "finetune", 5, trains_backbone=True, reference_val_accuracy=0.26, warmup_epochs=5), learning, 1.8))
    slow = dead[:10] + [dict(dead[0], accuracy=0.3)] + dead[:1]  # 5 epochs at chance after the warmup, then one off
    assert "collapsed-to-chance" not in ids(fed(RuntimeMonitor(
        "finetune", 5, trains_backbone=True, reference_val_accuracy=0.26, warmup_epochs=5), slow, 1.8))
    falling = [dict(logs, loss=1.4) for logs in dead]  # accuracy at chance, but the loss below log 5: it learns
    assert "collapsed-to-chance" not in ids(fed(RuntimeMonitor(
        "finetune", 5, trains_backbone=True, reference_val_accuracy=0.26, warmup_epochs=5), falling, 1.8))
    at_chance_start = fed(RuntimeMonitor("finetune", 5, trains_backbone=True, reference_val_accuracy=0.22,
                                         warmup_epochs=5), dead, 1.8)
    assert "collapsed-to-chance" not in ids(at_chance_start), "a head at chance has nothing to collapse from"
