"""Turning loose config (YAML, dicts, Hydra's DictConfig) into a validated TrainConfig.

Hydra is not imported here: train.py hands its ConfigStore to `register_schema`, so the
library stays usable from a notebook without Hydra.
"""
from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from tlkit.config.schema import TrainConfig

SCHEMA_NAME = "tlkit_schema"  # the name conf/config.yaml puts first in its defaults list


def register_schema(config_store: Any) -> None:
    """Register the root schema in a hydra.core.config_store.ConfigStore."""
    config_store.store(name=SCHEMA_NAME, node=TrainConfig)


def as_train_config(cfg: TrainConfig | Mapping | DictConfig | None = None, **overrides: Any) -> TrainConfig:
    """Merge `cfg` (and dotted `overrides`, e.g. {"data.batch_size": 8}) onto the schema.

    Unknown keys and values of the wrong type or outside an Enum fail here, with the key
    in the message, exactly as when Hydra loads YAML.
    """
    merged = OmegaConf.structured(TrainConfig)
    if cfg is not None:
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.structured(cfg) if isinstance(cfg, TrainConfig) else OmegaConf.create(dict(cfg))
        merged = OmegaConf.merge(merged, cfg)
    for key, value in overrides.items():
        OmegaConf.update(merged, key, value, merge=True)
    return OmegaConf.to_object(merged)
