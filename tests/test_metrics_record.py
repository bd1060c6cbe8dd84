"""metrics.json is written from a typed record (tlkit.training.metrics_record.RunMetrics): its keys, in the file's order."""
from dataclasses import fields

from tlkit.training.metrics_record import RunMetrics

KEYS = ["status", "backbone", "weights", "preprocess", "image_size", "class_names", "num_train", "num_val",
        "num_test", "schedule", "bn", "monitor", "precision", "stages", "best", "val_loss", "val_accuracy",
        "test_loss", "test_accuracy", "epochs", "doctor", "versions", "data", "model_saved", "auto_recipe",
        "lr_finder", "calibration"]


def _record(**changes) -> RunMetrics:
    values = {f.name: f.name for f in fields(RunMetrics)}
    values.update({"final": {"val_loss": 0.5, "val_accuracy": 0.9, "test_loss": 0.6, "test_accuracy": 0.8},
                   "scratch": None, **changes})
    return RunMetrics(**values)


def test_metrics_json_keys_and_order():
    metrics = _record().to_dict()
    assert list(metrics) == KEYS
    assert metrics["val_accuracy"] == 0.9 and metrics["status"] == "status"


def test_compare_scratch_adds_its_key_last():
    metrics = _record(scratch={"val_accuracy": 0.2}).to_dict()
    assert list(metrics) == [*KEYS, "scratch"] and metrics["scratch"] == {"val_accuracy": 0.2}
