"""Turning loose config (YAML, dicts, Hydra's DictConfig) into a validated TrainConfig.

Hydra is not imported here: train.py hands its ConfigStore to `register_schema`, so the
library stays usable from a notebook without Hydra.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, List, Mapping

from omegaconf import DictConfig, OmegaConf

from tlkit.config.schema import TrainConfig
from tlkit.errors import ConfigError

SCHEMA_NAME = "tlkit_schema"  # the name tlkit/conf/config.yaml puts first in its defaults list


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
        _refuse_unknown_keys(OmegaConf.to_container(cfg, resolve=False), TrainConfig, "")
        merged = OmegaConf.merge(merged, cfg)
    for key, value in overrides.items():
        OmegaConf.update(merged, key, value, merge=True)
    result = OmegaConf.to_object(merged)
    from tlkit.config.validate import normalize_lr  # optimizer.lr is Any in the schema: a float or "auto" from here on

    result.optimizer.lr = normalize_lr(result.optimizer.lr)
    from tlkit.config.schema import Monitor, Task

    if Task(result.task) == Task.multilabel and Monitor(result.trainer.monitor) == Monitor.val_accuracy:
        result.trainer.monitor = Monitor.val_map  # the default monitor, read for multi-label (val_map's the right one)
    return result


def _refuse_unknown_keys(node: Any, schema: type, prefix: str) -> None:
    """Keys the schema does not have fail here, with the keys it does have.

    Hydra lets `+data.batchsize=8` add a key to a composed config, and merging that config
    onto the schema would silently drop it: a typo must not train on the default instead.
    """
    if not isinstance(node, Mapping):
        return
    hints = typing.get_type_hints(schema)
    for key, value in node.items():
        path = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(
                path, value, f"a key of {prefix.rstrip('.') or 'the config'}: {', '.join(hints)}",
                hint="a leading + adds keys the schema does not know; drop it and check the spelling",
            )
        kind = hints[key]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if dataclasses.is_dataclass(kind):
            _refuse_unknown_keys(value, kind, f"{path}.")
        elif typing.get_origin(kind) in (list, List) and args and dataclasses.is_dataclass(args[0]) \
                and isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                _refuse_unknown_keys(item, args[0], f"{path}.{index}.")
