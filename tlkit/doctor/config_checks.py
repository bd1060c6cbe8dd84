"""Pre-flight checks on the config alone: no data read, no TensorFlow or Keras import.

Each check looks for a class of transfer-learning mistake that a config can express
(the five failure cases in FIELD_NOTES.md are the anchors) and returns Findings whose
`fix` is the Hydra override that repairs it. Values that validate() already rejects
(LR <= 0, unknown blocks, image size below the minimum) are ConfigErrors, not findings;
image-size-below-min is kept only for configs that skipped validate().
"""
from __future__ import annotations

from dataclasses import dataclass

from tlkit.backbones.spec import BackboneSpec
from tlkit.config.schema import BNPolicy, HeadKind, OptimizerName, Preprocess, TrainConfig
from tlkit.config.validate import lr_is_auto, parse_train_target, resolved_image_size
from tlkit.doctor.findings import Finding, Severity
from tlkit.doctor.hub_checks import diagnose_hub  # KerasHub transformers' own facts
from tlkit.preprocessing_modes import INPUT_RANGES  # what each mode turns RGB 0-255 into

# Peak-LR limits, as (warning above, error at or above), by optimizer family and by what
# the stage trains. For SGD they apply to the effective step lr / (1 - momentum): momentum
# 0.9 multiplies each step by 10, so SGD's 1.0 below is lr 0.1 at momentum 0.9. The
# reasoning, in plain LRs (momentum 0.9 for SGD):
# - Adam, head only: Keras' default 1e-3 (the Keras transfer-learning guide) is right;
#   1e-2 is the edge; case 1 (Adam 0.1 on a frozen ResNet50) diverged to loss 78,000.
# - Adam, backbone blocks train (pretrained): the Keras guide fine-tunes at 1e-5, common
#   recipes at 1e-4; above 1e-3 the first steps undo the pretraining; 1e-2 wrecks it.
# - SGD, head only: linear probes run at 0.01-0.1; >= 1 diverges.
# - SGD, backbone blocks train (pretrained): BiT fine-tunes everything at 0.003; case 3
#   (SGD 0.01, BatchNorm training) oscillated 70% -> 30% -> 65%: warn at 0.01, error at 0.1.
# With random weights (backbone.weights=null) there is nothing pretrained to protect: every
# stage is held to the head limits (training from scratch).
LR_LIMITS = {
    ("adam", "head"): (1e-2, 5e-2),
    ("adam", "backbone"): (1e-3, 1e-2),
    ("sgd", "head"): (1.0, 10.0),  # lr 0.1 / 1
    ("sgd", "backbone"): (0.05, 1.0),  # lr 0.005 (BiT's 0.003 passes, case 3's 0.01 warns) / 0.1
}
# Below these the stage barely moves in a few epochs (warning). Adam head 1e-5 is 100x
# below its default; Adam fine-tuning at 1e-7 is 100x below the Keras guide's 1e-5.
LR_FLOORS = {
    ("adam", "head"): 1e-5,
    ("adam", "backbone"): 1e-7,
    ("sgd", "head"): 1e-3,  # lr 1e-4 at momentum 0.9
    ("sgd", "backbone"): 1e-5,  # lr 1e-6
}
# A reasonable peak LR to suggest in a fix (effective LR for SGD).
LR_SUGGESTED = {
    ("adam", "head"): 1e-3,
    ("adam", "backbone"): 1e-4,
    ("sgd", "head"): 0.1,  # lr 0.01 at momentum 0.9
    ("sgd", "backbone"): 0.03,  # lr 0.003 at momentum 0.9: BiT's HyperRule
}

# lr / (1 - 0.9) is not exactly 10 * lr in floating point: compare with a tolerance.
_TOLERANCE = 1e-9

# BatchNorm batch statistics: Wu & He 2018 (Group Normalization) show BN's error growing
# fast below 16 images per batch; below 4 the batch mean/variance are mostly noise, and a
# single image gives a per-channel variance over one picture only.
BN_TRAIN_WARN_BELOW = 16
BN_TRAIN_ERROR_BELOW = 4
# Pretrained features are tuned to their training resolution (Touvron et al. 2019, "Fixing
# the train-test resolution discrepancy"). Below half of it objects shrink to a few feature
# pixels (at 64 px, ResNet50's last feature map is 2x2 instead of 7x7). Upwards fine-tuning adapts
# better: BiT fine-tunes 224 px weights at 480 px (2.1x) for its best results, so the upper
# limit is 2.5x, where the compute is 6x and objects outgrow the receptive fields.
SIZE_RATIO_BELOW = 0.5
SIZE_RATIO_ABOVE = 2.5
# Srivastava et al. 2014 use 0.5 as the largest dropout for hidden units; the Keras guide's
# head uses 0.2. Above 0.5 a linear head mostly learns from noise (case 4: heavy dropout).
DROPOUT_WARN_ABOVE = 0.5


@dataclass(frozen=True)
class _Stage:
    index: int
    name: str
    train: str
    blocks: tuple[str, ...]
    lr: float
    lr_scale: float
    epochs: int

    @property
    def kind(self) -> str:
        return "backbone" if self.blocks else "head"

    def label(self) -> str:
        what = "the head only" if not self.blocks else f"blocks {', '.join(self.blocks)} + head"
        return f"stage {self.index} '{self.name}' (train={self.train}: {what})"


def diagnose_config(cfg: TrainConfig, spec: BackboneSpec) -> list[Finding]:
    """Every config-level finding for `cfg` on backbone `spec`, in check order."""
    stages = _stages(cfg, spec)
    findings: list[Finding] = []
    checks = (_preprocess, _weights, _learning_rates, _first_stage,
              _batch_norm, _batch_size, _image_size, _head, _augment, _mixing)
    if lr_is_auto(cfg.optimizer.lr):  # the LR checks run once the LR finder has picked it (tlkit.training.lr_find.auto_lr)
        checks = tuple(c for c in checks if c is not _learning_rates)
    for check in checks:
        findings.extend(check(cfg, spec, stages))
    return findings + diagnose_hub(cfg, spec, any(s.blocks for s in stages))


def _stages(cfg: TrainConfig, spec: BackboneSpec) -> list[_Stage]:
    # Re-derived with parse_train_target: tlkit.training.stages imports Keras. A probe stage has no LR; values the recipe has
    # not filled yet (a config that skipped tlkit.recipe.auto.apply) are taken as 1.
    return [
        _Stage(i, s.name, s.train, parse_train_target(s.train, spec, key=f"schedule.stages.{i}.train"),
               (1.0 if lr_is_auto(cfg.optimizer.lr) else cfg.optimizer.lr) * (s.lr_scale or 1.0),
               s.lr_scale or 1.0, s.epochs)
        for i, s in enumerate(cfg.schedule.stages) if not s.probe
    ]


def _pretrained(cfg: TrainConfig) -> bool:
    return cfg.backbone.weights is not None


def _g(x: float) -> str:
    return f"{x:.3g}"


# --------------------------------------------------------------------------- preprocessing, weights


def _preprocess(cfg, spec, stages):
    chosen = Preprocess(cfg.backbone.preprocess).value
    if chosen == Preprocess.auto.value:
        return []
    if chosen == spec.preprocess:
        return [Finding(
            "preprocess-explicit", Severity.info,
            f"backbone.preprocess={chosen} is {spec.name}'s own mode; 'auto' picks it too and stays right "
            f"if you switch backbones.",
            "backbone.preprocess=auto",
        )]
    pretrained = _pretrained(cfg)
    why = ("its pretrained weights were trained on" if pretrained
           else "its architecture (and any weights you load later) expects")
    return [Finding(
        "preprocess-override", Severity.error if pretrained else Severity.warning,
        f"backbone.preprocess={chosen} feeds {spec.name} inputs in {INPUT_RANGES[chosen]}, but {why} "
        f"'{spec.preprocess}' preprocessing ({INPUT_RANGES[spec.preprocess]}). Nothing crashes: the features "
        f"are silently wrong and accuracy drops (FIELD_NOTES cases 1 and 3: no preprocess_input, rescale=1/255 "
        f"on a caffe ResNet50).",
        "backbone.preprocess=auto",
    )]


def _weights(cfg, spec, stages):
    if _pretrained(cfg):
        return []
    findings = [Finding(
        "no-pretrained-weights", Severity.info,
        f"backbone.weights=null: {spec.name} starts from random weights, so this is training from scratch, not "
        f"transfer learning; expect far lower accuracy than with pretrained weights.",
        "backbone.weights=imagenet",
    )]
    if not any(s.blocks for s in stages):
        findings.append(Finding(
            "random-frozen-backbone", Severity.warning,
            f"backbone.weights=null and no stage trains a backbone block (schedule={cfg.schedule.name}: "
            f"{', '.join(s.train for s in stages)}): the head learns from the features of a random, frozen "
            f"{spec.name}, which carry little about your classes.",
            "backbone.weights=imagenet (or a weights file), or schedule=staged to train the backbone too",
        ))
    return findings


# --------------------------------------------------------------------------- learning rates


_FAMILY_NAMES = {"adam": "Adam/AdamW", "sgd": "SGD"}


def _family(cfg) -> str:
    return "sgd" if OptimizerName(cfg.optimizer.name) == OptimizerName.sgd else "adam"


def _effective(cfg, lr: float) -> float:
    """The LR compared with the limits: SGD's momentum multiplies each step by 1 / (1 - momentum)."""
    return lr / (1.0 - cfg.optimizer.momentum) if _family(cfg) == "sgd" else lr


def _limit_key(cfg, stage: _Stage) -> tuple[str, str]:
    kind = stage.kind if _pretrained(cfg) else "head"  # from scratch: nothing pretrained to protect
    return _family(cfg), kind


def _lr_fix(cfg, stage: _Stage, target_lr: float) -> str:
    """Override that gives `stage` the peak LR `target_lr`: optimizer.lr for the first stage,
    the stage's lr_scale for later ones (so earlier stages keep theirs)."""
    if stage.index == 0:
        return f"optimizer.lr={_g(target_lr / stage.lr_scale)}"
    return f"schedule.stages.{stage.index}.lr_scale={_g(target_lr / cfg.optimizer.lr)}"


def _describe_lr(cfg, stage: _Stage) -> str:
    opt = OptimizerName(cfg.optimizer.name).value
    text = f"peak lr {_g(stage.lr)} (optimizer.lr={_g(cfg.optimizer.lr)} x lr_scale={_g(stage.lr_scale)}) with {opt}"
    if _family(cfg) == "sgd":
        text += f", momentum {_g(cfg.optimizer.momentum)}: effective step {_g(_effective(cfg, stage.lr))}"
    return text


def _to_lr(cfg, effective: float) -> float:
    return effective * (1.0 - cfg.optimizer.momentum) if _family(cfg) == "sgd" else effective


def _learning_rates(cfg, spec, stages):
    findings = []
    for stage in stages:
        key = _limit_key(cfg, stage)
        warn_above, error_from = LR_LIMITS[key]
        effective = _effective(cfg, stage.lr)
        what = ("pretrained blocks" if key[1] == "backbone" else
                "a backbone trained from scratch" if stage.blocks else "a new head")
        if effective > warn_above * (1 + _TOLERANCE):
            severity = Severity.error if effective >= error_from * (1 - _TOLERANCE) else Severity.warning
            findings.append(Finding(
                "lr-too-high", severity,
                f"{stage.label()} runs at {_describe_lr(cfg, stage)}: too high for {what} with {_FAMILY_NAMES[key[0]]} "
                f"(warning above {_g(_to_lr(cfg, warn_above))}, error from {_g(_to_lr(cfg, error_from))}). "
                + ("Expect the loss to grow or jump instead of falling (case 1: a frozen ResNet50 under Adam 0.1 "
                   "reached loss 78,000)." if key[1] == "head" else
                   "The first steps overwrite the pretrained features and validation accuracy jumps epoch to epoch "
                   "(case 3: SGD 0.01 fine-tuning ResNet50, val accuracy 70% -> 30% -> 65%)."),
                _lr_fix(cfg, stage, _to_lr(cfg, LR_SUGGESTED[key])),
            ))
        elif effective < LR_FLOORS[key] * (1 - _TOLERANCE):
            findings.append(Finding(
                "lr-too-low", Severity.warning,
                f"{stage.label()} runs at {_describe_lr(cfg, stage)}: below {_g(_to_lr(cfg, LR_FLOORS[key]))}, "
                f"{what} barely change in {stage.epochs} epoch(s), so the stage costs time and learns almost "
                f"nothing.",
                _lr_fix(cfg, stage, _to_lr(cfg, LR_SUGGESTED[key])),
            ))
    return findings


def _first_stage(cfg, spec, stages):
    # LP-FT (Kumar et al. 2022): fine-tuning the backbone under an untrained head distorts
    # the pretrained features; train the head first. A random head (glorot logits, or an
    # MLP's random hidden layers) sends large random gradients into the backbone from
    # step 0: warning. A zero-initialised linear head (tlkit's default) sends none at step 0
    # and is BiT's recipe (full fine-tuning from a zero head): info only.
    first = stages[0] if stages else None
    if first is None or not first.blocks or not _pretrained(cfg) or cfg.schedule.stages[0].probe:
        return []
    random_head = not cfg.head.zero_init or HeadKind(cfg.head.kind) == HeadKind.mlp
    head_desc = ("a randomly initialised head (head.zero_init=false)" if not cfg.head.zero_init
                 else f"an MLP head whose hidden layers {list(cfg.head.hidden)} start random" if random_head
                 else "a zero-initialised linear head (no gradient reaches the backbone at step 0)")
    return [Finding(
        "full-finetune-random-head", Severity.warning if random_head else Severity.info,
        f"the first stage, {first.label()}, fine-tunes pretrained {spec.name} blocks under {head_desc} that has "
        f"not been trained yet: the backbone adapts to an arbitrary head and its pretrained features get "
        f"distorted (LP-FT, Kumar et al. 2022; case 2: fully unfrozen ResNet50 with a new MLP head, val loss "
        f"spiking). Train the head alone first.",
        "schedule=staged (head first, then the top blocks, then all)",
    )]


# --------------------------------------------------------------------------- batch size and BatchNorm


def _batch_norm(cfg, spec, stages):
    if cfg.schedule.bn is None or BNPolicy(cfg.schedule.bn) != BNPolicy.train:  # null: frozen or adapt, the recipe's
        return []
    bn_stages = [s for s in stages if s.blocks] if spec.has_batch_norm else []  # without BatchNorm: no effect
    if not bn_stages:
        return [Finding(
            "bn-train-no-effect", Severity.info,
            "schedule.bn=train changes nothing here: "
            + (f"{spec.name} has no BatchNorm layers." if not spec.has_batch_norm
               else "no stage trains a backbone block (BatchNorm trains only in unfrozen blocks)."),
            "schedule.bn=frozen",
        )]
    batch, names = cfg.data.batch_size or BN_TRAIN_WARN_BELOW, ", ".join(f"'{s.name}'" for s in bn_stages)
    if batch < BN_TRAIN_WARN_BELOW:
        severity = Severity.error if batch < BN_TRAIN_ERROR_BELOW else Severity.warning
        return [Finding(
            "bn-train-small-batch", severity,
            f"schedule.bn=train with data.batch_size={batch}: in stage(s) {names} BatchNorm normalises with the "
            f"statistics of {batch} image(s) per step and overwrites its "
            f"{'pretrained ' if _pretrained(cfg) else ''}moving statistics with them"
            + (" (from one image the variance is over a single picture: meaningless)" if batch == 1 else "")
            + f". Below {BN_TRAIN_WARN_BELOW} images per batch BatchNorm's accuracy drops fast (Wu & He 2018); "
            f"validation runs on the drifted moving averages and jumps epoch to epoch (case 3).",
            f"schedule.bn=frozen (or data.batch_size={BN_TRAIN_WARN_BELOW * 2} if it fits in memory)",
        )]
    if _pretrained(cfg):
        return [Finding(
            "bn-train-pretrained", Severity.info,
            f"schedule.bn=train: in stage(s) {names} BatchNorm re-estimates its statistics on your data with batches "
            f"of {batch}. The Keras guide keeps BatchNorm in inference mode when fine-tuning pretrained weights; "
            f"if validation accuracy jumps between epochs (case 3), go back to frozen.",
            "schedule.bn=frozen",
        )]
    return []


def _batch_size(cfg, spec, stages):
    batch = cfg.data.batch_size or 32  # null: the recipe's, never 1
    if batch != 1:
        return []
    return [Finding(
        "small-batch", Severity.warning,
        "data.batch_size=1: every step follows the gradient of one image, so the loss is very noisy, a stable LR "
        "is much smaller, and an epoch takes one step per image (case 1: batch 1 + Adam 0.1, loss grew every epoch).",
        "data.batch_size=32 (or the largest that fits in memory)",
    )]


# --------------------------------------------------------------------------- image size, head, augmentation


def _image_size(cfg, spec, stages):
    size = resolved_image_size(cfg, spec)
    if size < spec.min_size:
        return [Finding(
            "image-size-below-min", Severity.error,
            f"data.image_size={size} is below {spec.name}'s minimum of {spec.min_size} px: the feature maps "
            f"shrink to nothing (or the model fails to build).",
            f"data.image_size={spec.default_size}",
        )]
    from tlkit.recipe.facts import pretrained_size

    pretrained = pretrained_size(cfg, spec)  # None: random weights, or a weights file that does not say
    if pretrained is None:
        return []
    ratio = size / pretrained
    if ratio < SIZE_RATIO_BELOW or ratio > SIZE_RATIO_ABOVE:
        cost = ("objects shrink to a few pixels in the feature maps and the pretrained filters see scales they "
                "never saw" if ratio < 1 else
                f"objects appear at scales the filters never saw, and each step costs {ratio ** 2:.0f}x the compute")
        return [Finding(
            "image-size-far-from-pretrained", Severity.warning,
            f"data.image_size={size} is {ratio:.2g}x the {pretrained} px the weights were trained at "
            f"(outside {SIZE_RATIO_BELOW:g}x-{SIZE_RATIO_ABOVE:g}x): {cost}, so the pretrained features degrade.",
            f"data.image_size={pretrained} (or data.image_size=null: the recipe's choice); backbone.pretrained_size=N "
            "if the weights were trained at another size",
        )]
    return []


def _head(cfg, spec, stages):
    dropout = cfg.head.dropout
    if dropout <= DROPOUT_WARN_ABOVE:
        return []
    return [Finding(
        "head-dropout-high", Severity.warning,
        f"head.dropout={_g(dropout)} drops {dropout:.0%} of the pooled features at every step: the head learns from "
        f"a small random subset and underfits, while it does not stop the overfitting of a small data set "
        f"(case 4: heavy dropout, train accuracy up, val down). Above {DROPOUT_WARN_ABOVE:g} is rarely useful.",
        "head.dropout=0.2",
    )]


def _augment(cfg, spec, stages):
    source = getattr(cfg.data.source, "value", cfg.data.source)
    if source == "digits" and cfg.augment.flip:
        return [Finding(
            "flip-changes-label", Severity.warning,
            "augment.flip=true on digits: a mirrored digit is a different (or no) digit, so flipping teaches the "
            "model wrong labels.",
            "augment.flip=false",
        )]
    return []


def _mixing(cfg, spec, stages):
    from tlkit.data.mixing import describe, mixing_enabled  # pure Python until a mixer is built

    if not mixing_enabled(cfg.augment):
        return []
    findings = []
    if cfg.data.batch_size == 1:
        findings.append(Finding(
            "mixing-no-effect", Severity.warning,
            f"{describe(cfg.augment)} with data.batch_size=1: images are mixed with a partner from the same batch, "
            f"and a batch of one has only itself, so nothing is mixed.",
            "data.batch_size=32 (or augment.mixup=0 augment.cutmix=0)",
        ))
    head_only = [s for s in stages if not s.blocks]
    mode = getattr(cfg.trainer.feature_cache, "value", cfg.trainer.feature_cache)
    if head_only and mode != "off":
        findings.append(Finding(
            "mixing-without-feature-cache", Severity.warning if mode == "on" else Severity.info,
            f"{describe(cfg.augment)} mixes images, and the features of a mixed image are not a mix of cached "
            f"features (nor is a pasted box): head-only stage(s) {', '.join(repr(s.name) for s in head_only)} train "
            f"through the frozen backbone instead of on the feature cache"
            + (" although trainer.feature_cache=on" if mode == "on" else "") + ", which is slower.",
            "trainer.feature_cache=auto (accept it), or augment.mixup=0 augment.cutmix=0 to keep the cache",
        ))
    return findings
