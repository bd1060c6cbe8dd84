"""Cross-field checks that a schema cannot express, run before TensorFlow is imported.

Each failure is a ConfigError naming the key, echoing the value and saying what is
allowed, so a typo costs a second, not a model build.
"""
from __future__ import annotations

import difflib
import math

from tlkit.backbones.hub import check_hub_size, hub_spec, is_hub
from tlkit.backbones.spec import BackboneSpec
from tlkit.backbones.zoo import get_spec
from tlkit.config.reference import check_reference
from tlkit.config.schema import (AugmentConfig, DataSource, DoctorConfig, HeadKind, Monitor, Pooling, RegularizerName, Task,
                                 TrainConfig)
from tlkit.doctor.catalogue import FINDING_IDS
from tlkit.errors import ConfigError


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
    """The checks of the config alone (no data, no recipe, no TensorFlow); return the backbone spec.

    tlkit.recipe.preflight.check_config runs this, then the checks that need other layers (the recipe's
    options, the data, the weights): call that one before training.
    """
    spec = backbone_spec(cfg)
    _check_image_size(cfg, spec)
    _check_head(cfg)
    _check_schedule(cfg, spec)
    _check_optimizer(cfg)
    _check_methods(cfg, spec)
    _check_trainer(cfg)
    check_reference(cfg)  # a recipe's reference block (tlkit reproduce); before the data check, which may look
    # for a download host
    check_augment_config(cfg.augment)
    _check_mixing(cfg)
    _check_task(cfg)
    check_doctor_config(cfg.doctor)
    return spec


def _check_task(cfg: TrainConfig) -> None:
    """task=multilabel: a label table, sigmoid-friendly options; the multi-label keys only with it."""
    multilabel = Task(cfg.task) == Task.multilabel
    if not multilabel:
        if cfg.data.label_columns:
            raise ConfigError("data.label_columns", list(cfg.data.label_columns), "null for task=single_label",
                              hint="one 0/1 column per class is a multi-label table: task=multilabel")
        if Monitor(cfg.trainer.monitor) == Monitor.val_map:
            raise ConfigError("trainer.monitor", "val_map", "val_accuracy or val_loss for task=single_label",
                              hint="val_map is task=multilabel's")
        return
    if DataSource(cfg.data.source) != DataSource.csv:
        raise ConfigError("task", "multilabel", f"single_label for data.source={DataSource(cfg.data.source).value}",
                          hint="multi-label data comes as a table: data=csv with \"a;b\" labels or data.label_columns")
    columns = list(cfg.data.label_columns or [])
    if columns and (len(columns) < 2 or len(set(columns)) != len(columns) or any(";" in str(c) for c in columns)):
        raise ConfigError("data.label_columns", columns, "2 or more distinct column names without ';'")
    refused = {"data.classes": cfg.data.classes, "augment.mixup": cfg.augment.mixup or None,
               "augment.cutmix": cfg.augment.cutmix or None, "loss.label_smoothing": cfg.loss.label_smoothing or None}
    for key, value in refused.items():
        if value is not None:
            raise ConfigError(key, value, f"{'null' if key == 'data.classes' else '0 or null'} for task=multilabel",
                              hint="mixing and smoothing are written for one class per image")


def backbone_spec(cfg: TrainConfig) -> BackboneSpec:
    """The spec of cfg.backbone: a registered one, or a KerasHub preset's read from its files (no keras_hub)."""
    if not is_hub(cfg.backbone.name):
        if cfg.backbone.preset is not None:
            raise ConfigError("backbone.preset", cfg.backbone.preset, "null: only backbone=hub (and the named hub "
                              "backbones) take a preset")
        return get_spec(cfg.backbone.name)
    spec = hub_spec(cfg.backbone.name, cfg.backbone.preset, cfg.backbone.weights)
    if cfg.data.image_size is not None:
        check_hub_size(spec, cfg.data.image_size)
    if Pooling(cfg.head.pooling) != Pooling.avg:
        raise ConfigError("head.pooling", Pooling(cfg.head.pooling).value, f"avg for {spec.name}: a KerasHub backbone "
                          f"pools as its preset does ({'the class token' if spec.pooling == 'cls' else 'the mean'})")
    return spec


def _check_image_size(cfg: TrainConfig, spec: BackboneSpec) -> None:
    pretrained = cfg.backbone.pretrained_size
    if pretrained is not None and (isinstance(pretrained, bool) or pretrained < 1):
        raise ConfigError("backbone.pretrained_size", pretrained, "the input size in px the weights were trained at, "
                          "or null (ImageNet's size for imagenet weights, what a weights file records, else unknown)")
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
        auto = "; null: sized by the recipe"
        if stage.epochs is not None and stage.epochs < 1:
            raise ConfigError(f"{key}.epochs", stage.epochs, "an integer >= 1" + auto)
        if stage.lr_scale is not None and stage.lr_scale <= 0:
            raise ConfigError(f"{key}.lr_scale", stage.lr_scale,
                              "a number > 0 (the stage LR is optimizer.lr * lr_scale)" + auto)
        if stage.warmup_epochs is not None and not 0 <= stage.warmup_epochs < (stage.epochs or math.inf):
            raise ConfigError(f"{key}.warmup_epochs", stage.warmup_epochs,
                              f"a number in [0, epochs={stage.epochs})" + auto)
        if stage.probe and stage.train != "head":
            raise ConfigError(f"{key}.probe", stage.probe, "false for a stage that trains backbone blocks "
                              f"(train={stage.train}): only a head is fitted as a logistic regression")
        if stage.patience is not None and stage.patience < 1:
            raise ConfigError(f"{key}.patience", stage.patience, "an integer >= 1, or null to turn early stopping off")
        if stage.min_epochs is not None and (isinstance(stage.min_epochs, bool) or stage.min_epochs < 0):
            raise ConfigError(f"{key}.min_epochs", stage.min_epochs,
                              "an integer >= 0: early stopping never ends the stage before it; null: any time")


AUTO_LR = "auto"  # optimizer.lr=auto: the LR finder (tlkit/training/lr_find.py) picks it before training
_LR_ALLOWED = "a learning rate > 0 (e.g. 1e-3), or auto (the LR finder picks it before training; see tlkit lr-find)"


def normalize_lr(value, key: str = "optimizer.lr"):
    """optimizer.lr as a float, or the string "auto"; anything else is a ConfigError naming the key.

    The schema types it Any (OmegaConf 2.3 has no Union[float, str]), so this is where a value
    like `optimizer.lr=fast` fails, when the config loads (tlkit.config.store.as_train_config).
    """
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == AUTO_LR:
            return AUTO_LR
        try:
            value = float(text)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            raise ConfigError(key, value, _LR_ALLOWED) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, value, _LR_ALLOWED)
    return float(value)


def lr_is_auto(value) -> bool:
    return isinstance(value, str) and value == AUTO_LR


def _check_optimizer(cfg: TrainConfig) -> None:
    opt = cfg.optimizer
    lr = normalize_lr(opt.lr)
    if not lr_is_auto(lr) and not lr > 0:
        raise ConfigError("optimizer.lr", opt.lr, _LR_ALLOWED)
    if opt.weight_decay < 0:
        raise ConfigError("optimizer.weight_decay", opt.weight_decay, "a number >= 0")
    if not 0 <= opt.momentum < 1:
        raise ConfigError("optimizer.momentum", opt.momentum, "a number in [0, 1)")
    if opt.clipnorm is not None and opt.clipnorm <= 0:
        raise ConfigError("optimizer.clipnorm", opt.clipnorm, "a number > 0, or null")


def _check_methods(cfg: TrainConfig, spec: BackboneSpec) -> None:
    """Fine-tuning methods (tlkit/training/methods): discriminative LRs, EMA, L2-SP, label smoothing."""
    levels = [("schedule", cfg.schedule.lr_decay, cfg.schedule.block_lr)]
    levels += [(f"schedule.stages.{i}", s.lr_decay, s.block_lr) for i, s in enumerate(cfg.schedule.stages)]
    for prefix, decay, block_lr in levels:
        if decay is not None and not 0 < decay <= 1:
            raise ConfigError(f"{prefix}.lr_decay", decay, "a factor in (0, 1] (each block below the top one gets "
                              "this times its LR), or null for one LR")
        for block, scale in (block_lr or {}).items():
            if block not in spec.block_names:
                raise ConfigError(f"{prefix}.block_lr.{block}", scale,
                                  f"a block of {spec.name}: {', '.join(spec.block_names)}")
            if not scale > 0:
                raise ConfigError(f"{prefix}.block_lr.{block}", scale, "an LR multiplier > 0")
    opt, reg = cfg.optimizer, cfg.regularizer
    if not 0 < opt.ema_momentum < 1:
        raise ConfigError("optimizer.ema_momentum", opt.ema_momentum, "a number in (0, 1), e.g. 0.99")
    for key, value in (("regularizer.alpha", reg.alpha), ("regularizer.beta", reg.beta)):
        if value < 0:
            raise ConfigError(key, value, "a number >= 0 (0 turns that part of L2-SP off)")
    if reg.name == RegularizerName.l2sp and opt.weight_decay > 0:
        raise ConfigError("optimizer.weight_decay", opt.weight_decay, "0 with regularizer=l2sp (L2-SP replaces "
                          "weight decay)", hint="add optimizer.weight_decay=0, or drop regularizer=l2sp")
    if cfg.loss.label_smoothing is not None and not 0 <= cfg.loss.label_smoothing < 1:
        raise ConfigError("loss.label_smoothing", cfg.loss.label_smoothing, "a number in [0, 1), e.g. 0.1; 0 = off")


def _check_mixing(cfg: TrainConfig) -> None:
    """augment.mixup / augment.cutmix: Beta(alpha, alpha) concentrations, 0 = off (tlkit/data/mixing.py)."""
    for key, value in (("augment.mixup", cfg.augment.mixup), ("augment.cutmix", cfg.augment.cutmix)):
        if value is None and key == "augment.mixup":
            continue  # recipe=auto chooses it (tlkit/recipe/auto.py)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(key, value, "an alpha in [0, 1], 0 = off (MixUp: 0.1-0.4 typical; CutMix: 1.0)",
                              hint="null (mixup only) lets recipe=auto choose")


def _check_trainer(cfg: TrainConfig) -> None:
    if cfg.trainer.verbose not in (0, 1, 2):
        raise ConfigError("trainer.verbose", cfg.trainer.verbose, "0 (silent), 1 (progress bar) or 2 (one line per epoch)")
    from tlkit.training.distribute import check_strategy_config  # pure Python: TF_CONFIG and the backend's name

    check_strategy_config(cfg.trainer)


def check_augment_config(cfg: AugmentConfig) -> None:
    """Raise ConfigError for augmentation values outside their meaningful range."""
    crop_area, color = cfg.crop_area, cfg.color
    if crop_area is not None and (isinstance(crop_area, bool) or not isinstance(crop_area, (int, float))
                                  or not 0.0 < crop_area <= 1.0):
        raise ConfigError("augment.crop_area", crop_area,
                          "a fraction in (0, 1]: the smallest share of the image area a random crop keeps",
                          hint="1.0 turns random cropping off; 0.08 is Inception's (very strong) setting; "
                               "null: chosen by the recipe")
    if isinstance(color, bool) or not isinstance(color, (int, float)) or not 0.0 <= color <= 1.0:
        raise ConfigError("augment.color", color, "a strength in [0, 1] (0 turns colour jitter off)",
                          hint="0.2-0.4 is typical")
    if cfg.flip is not None and not isinstance(cfg.flip, bool):
        raise ConfigError("augment.flip", cfg.flip, "true, false, or null (the recipe's probe decides)")


def check_doctor_config(cfg: DoctorConfig) -> None:
    """doctor.silence: ids the doctor can report (tlkit.doctor.catalogue), so a typo does not silence nothing."""
    for index, finding_id in enumerate(cfg.silence):
        if finding_id in FINDING_IDS:
            continue
        close = difflib.get_close_matches(str(finding_id), FINDING_IDS, n=3)
        raise ConfigError(f"doctor.silence.{index}", finding_id, "a finding id of the doctor: "
                          + (f"did you mean {' or '.join(close)}?" if close else ", ".join(FINDING_IDS)),
                          hint="tlkit doctor --list prints every id with its severity and meaning")
