"""metrics.json as a typed record: what a finished (or stopped) run reports, one field per key.

    RunMetrics(...).to_dict() is the file's content, key for key and in the file's order; tests, `tlkit evaluate`,
    `tlkit sweep-summary` and the benchmark scripts read those keys.
"""
from __future__ import annotations

from dataclasses import dataclass

# The keys before the final val/test numbers and after them, in metrics.json's order.
_HEAD = ("status", "backbone", "weights", "preprocess", "image_size", "class_names", "num_train", "num_val",
         "num_test", "schedule", "bn", "monitor", "precision", "stages", "best")
_TAIL = ("epochs", "doctor", "versions", "data", "model_saved", "auto_recipe", "lr_finder", "calibration")


def sweep_score(metrics: dict) -> tuple[str, float | None]:
    """(name, value) of what a sweep maximizes for a run's metrics.json dict: val_map for task=multilabel (the
    exact-match accuracy is coarse and harsh there), else val_accuracy; value None when the run has none."""
    name = "val_map" if "val_map" in metrics else "val_accuracy"
    value = metrics.get(name)
    return name, None if value is None else float(value)


@dataclass
class RunMetrics:
    status: str  # completed | stopped_by_doctor
    backbone: str  # the backbone spec's name
    weights: str | None  # backbone.weights as run (None: random)
    preprocess: str  # the preprocessing mode inside the model
    image_size: int
    class_names: list
    num_train: int
    num_val: int
    num_test: int
    schedule: str
    bn: str  # schedule.bn as run (the recipe's decision filled in)
    monitor: str  # what the best epoch is judged on (val_accuracy, val_loss)
    precision: str  # float32 | mixed_float16 | mixed_bfloat16
    stages: list  # one record per stage (tlkit.training.trainer), without wall_time_s (timings.json has the times)
    best: dict  # the stage and epoch model.keras comes from (tlkit.training.callbacks.RunBest.to_dict)
    final: dict  # {val,test}_{loss,accuracy} of the saved model: top-level keys of metrics.json
    epochs: int  # epochs trained over all stages
    doctor: dict  # {"findings": the pre-flight findings, "runtime": the runtime monitor's diagnoses}
    versions: dict  # keras and its backend
    data: dict  # {"bad_files": what the pre-scan left out, "prescan": its summary}
    model_saved: bool
    auto_recipe: dict | None  # what the default recipe chose, and why (None: auto.enabled=false)
    lr_finder: dict | None  # optimizer.lr=auto: the LR the finder picked
    # trainer.calibrate: temperature scaling (tlkit.training.calibration.Calibration.to_dict): T, ECE / NLL before and after
    calibration: dict | None = None
    scratch: dict | None = None  # trainer.compare_scratch: the same recipe from random weights

    def to_dict(self) -> dict:
        """metrics.json's content (the values are shared with this record, not copied)."""
        out = {key: getattr(self, key) for key in _HEAD}
        out.update(self.final)
        out.update({key: getattr(self, key) for key in _TAIL})
        if self.scratch is not None:
            out["scratch"] = self.scratch
        return out
