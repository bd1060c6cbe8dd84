"""Cross-field checks that a schema cannot express, run before TensorFlow is imported.

Each failure is a ConfigError naming the key, echoing the value and saying what is
allowed, so a typo costs a second, not a model build.
"""
from __future__ import annotations

import logging
import os

from tlkit.backbones.spec import BackboneSpec, get_spec
from tlkit.config.schema import HeadKind, TrainConfig
from tlkit.errors import ConfigError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".h5",)  # covers .weights.h5 too
_WARNED_UNCACHED: set = set()


def resolved_image_size(cfg: TrainConfig, spec: BackboneSpec) -> int:
    return cfg.data.image_size if cfg.data.image_size is not None else spec.default_size


def parse_train_target(value: str, spec: BackboneSpec, key: str = "train") -> tuple[str, ...]:
    """The backbone blocks a stage trains (the head always trains).

    head -> (); all -> every block; top:N -> the last N blocks; from:BLOCK -> BLOCK and above.
    """
    blocks = spec.block_names
    allowed = (
        f"head, all, top:N with 1 <= N <= {len(blocks)}, or from:BLOCK with BLOCK one of "
        f"{', '.join(blocks)} ({spec.name}'s blocks, stem first)"
    )
    text = str(value).strip()
    if text == "head":
        return ()
    if text == "all":
        return blocks
    kind, _, arg = text.partition(":")
    if kind == "top" and arg.isdigit() and 1 <= int(arg) <= len(blocks):
        return blocks[len(blocks) - int(arg):]
    if kind == "from" and arg in blocks:
        return blocks[blocks.index(arg):]
    raise ConfigError(key, value, allowed)


def validate(cfg: TrainConfig) -> BackboneSpec:
    """Check everything that can be checked without TensorFlow; return the backbone spec."""
    spec = get_spec(cfg.backbone.name)
    _check_image_size(cfg, spec)
    _check_head(cfg)
    _check_schedule(cfg, spec)
    _check_optimizer(cfg)
    _check_trainer(cfg)
    from tlkit.data.scan import check_augment_config, check_data_config  # pure Python: no TensorFlow

    check_augment_config(cfg.augment)
    check_data_config(cfg.data)
    _check_weights(cfg, spec)  # last: it may warn, and a warning before an error is noise
    return spec


def _check_weights(cfg: TrainConfig, spec: BackboneSpec) -> None:
    weights = cfg.backbone.weights
    if weights is None or weights == "imagenet":
        if weights == "imagenet":
            from tlkit.backbones.weights import imagenet_weights_cached, imagenet_weights_path

            size = resolved_image_size(cfg, spec)
            if not imagenet_weights_cached(spec, size) and (spec.name, size) not in _WARNED_UNCACHED:
                _WARNED_UNCACHED.add((spec.name, size))  # train.py and train() both validate: say it once
                log.warning(
                    "ImageNet weights for %s are not in the Keras cache (%s); Keras will try to download them.",
                    spec.name, imagenet_weights_path(spec, size),
                )
        return
    allowed = "imagenet, null (random init) or the path of an existing .h5 / .weights.h5 file"
    if not weights.endswith(WEIGHT_SUFFIXES):
        raise ConfigError("backbone.weights", weights, allowed)
    if not os.path.isfile(weights):
        raise ConfigError("backbone.weights", weights, allowed, hint=f"no file at {os.path.abspath(weights)}")


def _check_image_size(cfg: TrainConfig, spec: BackboneSpec) -> None:
    size = cfg.data.image_size
    if size is not None and size < spec.min_size:
        raise ConfigError(
            "data.image_size", size,
            f"{spec.name} needs at least {spec.min_size} px (its pretrained size is {spec.default_size})",
        )


def _check_head(cfg: TrainConfig) -> None:
    head = cfg.head
    if not 0.0 <= head.dropout < 1.0:
        raise ConfigError("head.dropout", head.dropout, "a probability in [0, 1)")
    if any(h < 1 for h in head.hidden):
        raise ConfigError("head.hidden", list(head.hidden), "positive layer sizes, e.g. [512]")
    if head.kind == HeadKind.mlp and not head.hidden:
        raise ConfigError("head.hidden", [], "at least one hidden size for head=mlp, e.g. head.hidden=[512]")
    if head.kind == HeadKind.linear and head.hidden:
        raise ConfigError("head.hidden", list(head.hidden), "[] for head=linear", hint="use head=mlp for hidden layers")


def _check_schedule(cfg: TrainConfig, spec: BackboneSpec) -> None:
    stages = cfg.schedule.stages
    if not stages:
        raise ConfigError("schedule.stages", [], "at least one stage", hint="pick schedule=frozen|staged|full")
    seen = set()
    for i, stage in enumerate(stages):
        key = f"schedule.stages.{i}"
        if stage.name in seen:
            raise ConfigError(f"{key}.name", stage.name, "a name not used by another stage")
        seen.add(stage.name)
        parse_train_target(stage.train, spec, key=f"{key}.train")
        if stage.epochs < 1:
            raise ConfigError(f"{key}.epochs", stage.epochs, "an integer >= 1")
        if stage.lr_scale <= 0:
            raise ConfigError(f"{key}.lr_scale", stage.lr_scale, "a number > 0 (the stage LR is optimizer.lr * lr_scale)")
        if not 0 <= stage.warmup_epochs < stage.epochs:
            raise ConfigError(f"{key}.warmup_epochs", stage.warmup_epochs, f"a number in [0, epochs={stage.epochs})")
        if stage.patience is not None and stage.patience < 1:
            raise ConfigError(f"{key}.patience", stage.patience, "an integer >= 1, or null to turn early stopping off")


def _check_optimizer(cfg: TrainConfig) -> None:
    opt = cfg.optimizer
    if not opt.lr > 0:
        raise ConfigError("optimizer.lr", opt.lr, "a learning rate > 0")
    if opt.weight_decay < 0:
        raise ConfigError("optimizer.weight_decay", opt.weight_decay, "a number >= 0")
    if not 0 <= opt.momentum < 1:
        raise ConfigError("optimizer.momentum", opt.momentum, "a number in [0, 1)")
    if opt.clipnorm is not None and opt.clipnorm <= 0:
        raise ConfigError("optimizer.clipnorm", opt.clipnorm, "a number > 0, or null")


def _check_trainer(cfg: TrainConfig) -> None:
    if cfg.trainer.verbose not in (0, 1, 2):
        raise ConfigError("trainer.verbose", cfg.trainer.verbose, "0 (silent), 1 (progress bar) or 2 (one line per epoch)")
