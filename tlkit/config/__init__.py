"""Typed configs (schema), their registration for Hydra (store) and cross-field checks (validate)."""
from tlkit.config.schema import (
    AugmentConfig,
    BackboneConfig,
    DataConfig,
    HeadConfig,
    OptimizerConfig,
    ScheduleConfig,
    StageConfig,
    TrainConfig,
    TrainerConfig,
)
from tlkit.config.store import SCHEMA_NAME, as_train_config, register_schema

__all__ = [
    "AugmentConfig",
    "BackboneConfig",
    "DataConfig",
    "HeadConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "StageConfig",
    "TrainConfig",
    "TrainerConfig",
    "SCHEMA_NAME",
    "as_train_config",
    "register_schema",
]
