"""A recipe's reference block (tlkit reproduce) checked against the rest of the config, before TensorFlow starts.

Schema-level (the config alone), so tlkit.config.validate runs it; tlkit.cli.reproduce compares a finished run with it.
"""
from __future__ import annotations

import math

from tlkit.errors import ConfigError

STAGE_METRICS = ("val_accuracy", "val_loss")  # what metrics.json records per stage (its restored epoch)


def _value(item):
    return getattr(item, "value", item)  # Enum -> str


def _has_test_split(data) -> bool:
    source = _value(data.source)
    if source == "folder":
        return data.test_dir is not None
    if source == "tfds":
        return getattr(data.splits, "test", None) is not None
    return False  # digits and synthetic have train and val only


def check_reference(cfg) -> None:
    """ConfigError for a reference the run could not produce or compare (before TensorFlow starts)."""
    reference = cfg.reference
    if reference is None:
        return
    if not reference.results:
        raise ConfigError("reference.results", [], "at least one {metric, value[, stage][, tolerance]}")
    _check_tolerance("reference.tolerance", reference.tolerance)
    stages = [stage.name for stage in cfg.schedule.stages]
    seen = set()
    for index, result in enumerate(reference.results):
        key, metric = f"reference.results.{index}", _value(result.metric)
        if result.tolerance is not None:
            _check_tolerance(f"{key}.tolerance", result.tolerance)
        value = result.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}.value", value, "a finite number")
        if metric.endswith("accuracy") and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}.value", value, "an accuracy between 0 and 1",
                              hint=f"accuracy is a fraction here: {value:g}% is {value / 100:g}")
        if result.stage is not None:
            if result.stage not in stages:
                raise ConfigError(f"{key}.stage", result.stage, f"null (the final model) or a stage name: {stages}")
            if metric not in STAGE_METRICS:
                raise ConfigError(f"{key}.metric", metric, f"one of {list(STAGE_METRICS)} with a stage",
                                  hint="a stage records its validation metrics; test metrics are the final model's")
        if metric.startswith("test_") and not _has_test_split(cfg.data):
            raise ConfigError(f"{key}.metric", metric, "val_accuracy or val_loss: this data has no test split",
                              hint="a test split is data.test_dir (data=folder) or data.splits.test (data=tfds)")
        if (metric, result.stage) in seen:
            raise ConfigError(f"{key}", f"{metric} stage={result.stage}", "each metric and stage once")
        seen.add((metric, result.stage))


def _check_tolerance(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ConfigError(key, value, "an absolute tolerance >= 0 in the metric's units (e.g. 0.01 = 1 point)")
