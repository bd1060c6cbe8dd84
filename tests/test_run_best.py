"""RunBest: the run's best epoch over its stages, a stopped and retried stage's first attempt included (issue 13.4)."""
import keras
import numpy as np

from tlkit.training.callbacks import RunBest


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    return model


def _set(model, value):
    model.set_weights([np.full(w.shape, value, "float32") for w in model.get_weights()])


def _record(name, accuracy, epoch):
    return {"name": name, "val_accuracy": accuracy, "val_loss": 1 - accuracy, "best_epoch": epoch}


def test_a_stopped_attempt_that_the_retry_does_not_beat_is_what_the_run_keeps():
    model, best = _model(), RunBest("val_accuracy")
    _set(model, 1.0)
    best.offer(0, _record("head", 0.30, None), model, last=False)
    _set(model, 2.0)  # the fine-tune's first attempt, at its best epoch when the monitor stopped it
    assert best.offer(1, _record("finetune", 0.69, 18), model, last=True)
    best.keep_stopped_attempt(1, model)
    _set(model, 3.0)  # the retry starts over and ends lower
    assert not best.offer(1, _record("finetune", 0.55, 46), model, last=True)
    assert best.restore_into(model, last_index=1)
    assert all(np.all(w == 2.0) for w in model.get_weights())
    assert best.to_dict()["epoch"] == 18 and best.to_dict()["stopped_attempt"] is True
    again = RunBest("val_accuracy")  # what a resumed run's checkpoint gives back
    again.restore(best.state(), best.weights)
    assert again.stopped_attempt and again.restore_into(model, last_index=1)


def test_a_retry_that_beats_the_stopped_attempt_is_kept_as_it_is():
    model, best = _model(), RunBest("val_accuracy")
    _set(model, 2.0)
    best.offer(0, _record("finetune", 0.95, 13), model, last=True)
    best.keep_stopped_attempt(0, model)
    _set(model, 3.0)
    assert best.offer(0, _record("finetune", 0.96, 30), model, last=True)
    assert not best.restore_into(model, last_index=0)  # the model holds the retry's best epoch already
    assert all(np.all(w == 3.0) for w in model.get_weights()) and "stopped_attempt" not in best.to_dict()


def test_a_stopped_stage_that_was_not_the_runs_best_keeps_the_earlier_stage():
    model, best = _model(), RunBest("val_accuracy")
    _set(model, 1.0)
    best.offer(0, _record("head", 0.80, None), model, last=False)
    _set(model, 2.0)
    assert not best.offer(1, _record("finetune", 0.40, 5), model, last=True)  # stopped below the head
    best.keep_stopped_attempt(1, model)
    _set(model, 3.0)
    best.offer(1, _record("finetune", 0.50, 20), model, last=True)
    assert best.restore_into(model, last_index=1) and best.stage == "head"
    assert all(np.all(w == 1.0) for w in model.get_weights())
