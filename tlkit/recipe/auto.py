"""The default recipe: what a config leaves null is chosen from the data, and every choice is logged with its rule.

`python train.py backbone=B data=folder data.path=DIR` and `tlkit.train(cfg)` both get it; a value you
set is kept (and the log says what the rule would have picked). The rules, and the evidence for their
numbers (scripts/bench_recipes.py, BENCHMARKS.md section 7):

    decision         rule
    image_size       weights of known pretrained size P (ImageNet: the backbone's; a weights file that
                     records it; backbone.pretrained_size): P, or for source images under 96 px BiT's low
                     resolution (128 px for 224 px weights, scaled to P). Unknown P (a plain weights file,
                     random weights): the images' own median size. Never below the backbone's minimum.
    bn               pretrained weights: BatchNorm frozen (inference mode), its statistics re-estimated on the
                     training images first when they are far from the stored ones (decided once the model is
                     built: tlkit.recipe.measured). Random weights: BatchNorm trains (no statistics worth keeping)
    batch_size       enough optimizer steps per epoch on small data: 32 from 640 training images, else the
                     power of two nearest n/10, at least 8 (16 while BatchNorm trains: it needs batch statistics)
    schedule         the head (stage train=head, probe=true): a logistic regression on cached features,
                     no epochs to size. Fine-tuning stages: a step budget (FINETUNE_STEPS: 300 up to 150
                     images, then growing as sqrt(n); BiT's 10k / 20k from 20k / 500k images), as epochs
                     within [FINETUNE_MIN_EPOCHS, FINETUNE_MAX_EPOCHS];
                     peak LR optimizer.lr x FINETUNE_LR_SCALE (LARGE_BACKBONE_LR_SCALE above
                     LARGE_BACKBONE_PARAMS) after a warmup of 10% of the steps (at least 30);
                     early stopping after FINETUNE_PATIENCE epochs without improvement, not in the first half;
                     far data (BatchNorm statistics re-estimated): a longer budget (tlkit.recipe.measured)
    clipnorm         a fine-tuning stage the recipe sizes: each weight's gradient clipped to norm FINETUNE_CLIPNORM
    augment          random crops keeping >= CROP_AREA of the image; no colour jitter
    flip             decided by the probe (tlkit.recipe.probe) once the model is built (tlkit.recipe.measured)
    mixup            BiT: alpha 0.1 from 20k training images, else off
    label_smoothing  0.1 from 20k images and 10 classes, else off

`auto.enabled=false` turns the rules off (every null takes its FIXED value, no probe); `auto.keep=[NAME]`
does that for one decision. Pure Python (no TensorFlow): `apply` runs after validate() and before the
data pipeline and the model are built (tlkit.training.trainer, tlkit doctor, tlkit lr-find); the decisions that
need the built model (BatchNorm, far data's budget, flips) are tlkit.recipe.measured's.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace

from tlkit.backbones.spec import BackboneSpec
from tlkit.config.schema import BNPolicy, HeadKind, Task, TrainConfig
from tlkit.errors import ConfigError
from tlkit.recipe.facts import DatasetFacts, describe_dataset, pretrained_size

log = logging.getLogger("tlkit.train")

SMALL_BELOW, MEDIUM_BELOW = 20_000, 500_000  # BiT HyperRule's data set sizes
LOW_RES_BELOW = 96  # px, BiT: "images under 96x96" are low resolution
BIT_LOW_RES, BIT_PRETRAINED = 128, 224  # BiT fine-tunes those at 128 px from 224 px weights
BATCH_FULL_FROM, BATCH_MIN, BATCH_MAX = 640, 8, 32
FINETUNE_STEPS = {"small": 300, "medium": 10_000, "large": 20_000}
# A small set's budget grows with it: 300 steps fit 150 images (30 per class; twice that lost 9 points on glyphs over
# 2 seeds and tied on digits), but stopped glyphs at 100 per class (500 images) while it still improved (best epoch
# 19 and 20 of 20: 0.88 val) where 450 steps reached 0.92 and 600 0.95 (BENCHMARKS 7). From SMALL_STEPS_IMAGES on,
# the small budget is 300 x sqrt(n / 150): 548 steps at 500 images, 949 at 1,500.
SMALL_STEPS_IMAGES = 150
FINETUNE_MIN_EPOCHS, FINETUNE_MAX_EPOCHS = 10, 40
FINETUNE_LR_SCALE = 1.0  # Adam: every block at optimizer.lr (1e-3), BatchNorm frozen
# A large backbone fine-tuned whole at Adam 1e-3 on a small set swings far: the runtime monitor stopped and retried the
# fine-tune of ResNet50 (23.6M parameters) and VGG16 (14.7M) in 3 of 4 runs, while MobileNetV2 (2.3M) and
# EfficientNetB0 (4.0M) ran through (and MobileNetV2 lost 0 to 21 points at 0.3x, glyphs the most). At 0.3x from the
# start, ResNet50 and VGG16 ran without a retry, as accurate and faster (BENCHMARKS.md 7): above this size the peak
# LR starts at the retry's 0.3x. (Measured on those two convnets; ConvNeXt, NASNetLarge and the vision transformers
# fall under it by size alone.)
LARGE_BACKBONE_PARAMS, LARGE_BACKBONE_LR_SCALE = 10_000_000, 0.3
# Warmup of fine-tuning stages: 10% of the steps, at least 30. A 1-epoch warmup (9 steps) to Adam 1e-3 collapsed
# MobileNetV2 on glyphs to chance (0.42 kept by the probe head); 3 epochs (27 steps) gave 0.82 (BENCHMARKS 7).
WARMUP_FRACTION, WARMUP_MIN_STEPS = 0.1, 30
HEAD_EPOCHS, HEAD_PATIENCE = 100, 10  # a head stage trained by the optimizer (probe=false or no linear head)
# A fine-tuning stage ends early once its monitor has not improved for FINETUNE_PATIENCE epochs, never in its first
# half: simulated on the histories of the matrix's default runs (BENCHMARKS 7), that stops at 83% of the epochs on
# average and keeps the same best epoch in all 8 (patience 5, or from 30% of the stage, lost up to 4.7 points).
FINETUNE_PATIENCE, FINETUNE_MIN_FRACTION = 8, 0.5
# Every block at Adam 1e-3 with BatchNorm frozen is noisy on small batches: one bad batch can throw the unfrozen
# blocks far (a loss rising for epochs, a collapse to chance), and the monitor's stop-and-retry costs a second fine-tune.
# Clipping each weight's gradient to this norm kept those runs on course (BENCHMARKS.md 7).
FINETUNE_CLIPNORM = 1.0
CROP_AREA = 0.8
MIXUP_ALPHA = 0.1  # BiT, from 20k images
LABEL_SMOOTHING, SMOOTHING_MIN_CLASSES = 0.1, 10
AUTO = "auto"  # augment=auto: the recipe's crops and flips
# task=multilabel: MixUp and label smoothing are written for one class per image (the flip is decided by the probe's
# mAP on mirrored images, tlkit.training.run_setup.run_probe)
MULTILABEL_OFF = "off: task=multilabel"
DECISIONS = ("image_size", "bn", "batch_size", "schedule", "clipnorm", "augment", "flip", "mixup", "label_smoothing")
BN_TRAIN_BATCH_MIN = 16  # the doctor's bn-train-small-batch warns below this
# What a null becomes without the recipe (auto.enabled=false, or auto.keep): plain, fixed values.
FIXED = {"bn": "frozen", "batch_size": 32, "epochs": 5, "lr_scale": 1.0, "warmup_epochs": 0.0, "flip": False, "crop_area": 1.0,
         "mixup": 0.0, "label_smoothing": 0.0, "clipnorm": None}


@dataclass
class Decision:
    name: str  # one of DECISIONS
    values: dict  # config key -> value
    reason: str
    kept: bool = False  # the configured value stays (explicit setting or auto.keep)


@dataclass
class AutoRecipe:
    facts: DatasetFacts
    regime: str
    decisions: list = field(default_factory=list)
    probe: dict | None = None  # tlkit.recipe.probe.ProbeResult.to_dict(), once it ran
    bn_shift: float | None = None  # the BatchNorm statistics shift measured.apply_bn measured

    def lines(self) -> list[str]:
        f = self.facts
        head = (f"recipe: {f.num_train:,} training images, {f.num_classes} classes, source images ~{f.image_side} px, "
                f"weights {f.weights}" + (f" ({f.pretrained_size} px)" if f.pretrained_size else "")
                + f" -> regime '{self.regime}'")
        return [head] + [decision_line(d) for d in self.decisions]

    def to_dict(self) -> dict:
        return {"facts": asdict(self.facts), "regime": self.regime, "probe": self.probe, "bn_shift": self.bn_shift,
                "decisions": [asdict(d) for d in self.decisions]}


def decision_line(d: Decision) -> str:
    return f"  {d.name}: {'kept ' if d.kept else ''}{_values_text(d.values)} ({d.reason})"


def _values_text(values: dict) -> str:
    return ", ".join(f"{k}={getattr(v, 'value', v)}" for k, v in values.items())


def regime_of(num_train: int) -> str:
    return "small" if num_train < SMALL_BELOW else "medium" if num_train < MEDIUM_BELOW else "large"


def finetune_steps(num_train: int) -> tuple[int, str]:
    """The fine-tuning step budget for `num_train` training images, and its rule in words."""
    regime = regime_of(num_train)
    base = FINETUNE_STEPS[regime]
    if regime != "small" or num_train <= SMALL_STEPS_IMAGES:
        return base, f"{num_train:,} images ({regime}): {base:,} steps"
    steps = round(base * math.sqrt(num_train / SMALL_STEPS_IMAGES))
    return steps, (f"{num_train:,} images ({regime}): {base} x sqrt({num_train:,} / {SMALL_STEPS_IMAGES}) = "
                   f"{steps:,} steps")


def check_auto_config(cfg: TrainConfig) -> None:
    """Validation (tlkit.config.validate): auto.keep names, auto.finetune_steps."""
    for index, name in enumerate(cfg.auto.keep):
        if name not in DECISIONS:
            raise ConfigError(f"auto.keep.{index}", name, f"one of {', '.join(DECISIONS)}")
    steps = cfg.auto.finetune_steps
    if steps is not None and (isinstance(steps, bool) or steps < 1):
        raise ConfigError("auto.finetune_steps", steps, "a number of optimizer steps >= 1, or null (the rule's)")


# --------------------------------------------------------------------------- the rules (pure)


def choose_image_size(facts: DatasetFacts, spec: BackboneSpec) -> tuple[int, str]:
    if facts.pretrained_size is None:
        size = min(max(facts.image_side, spec.min_size), spec.default_size)
        return size, (f"the weights' pretrained size is unknown ({facts.weights}): the images' own ~{facts.image_side} "
                      f"px, within {spec.name}'s {spec.min_size}-{spec.default_size}; backbone.pretrained_size=N "
                      "says it")
    pretrained = facts.pretrained_size
    if facts.image_side < LOW_RES_BELOW and pretrained > LOW_RES_BELOW:
        size = max(spec.min_size, int(round(BIT_LOW_RES * pretrained / BIT_PRETRAINED)))
        return size, (f"source images ~{facts.image_side} px < {LOW_RES_BELOW}: BiT's low resolution, {BIT_LOW_RES} px "
                      f"for {BIT_PRETRAINED} px weights, scaled to the weights' {pretrained} px")
    return max(spec.min_size, pretrained), f"the weights' pretrained size, {pretrained} px"


def choose_bn(facts: DatasetFacts) -> tuple[str | None, str]:
    """`train` for random weights; None (measured.decide_bn, once the model is built) for pretrained ones."""
    if facts.weights == "random":
        return "train", "random weights: BatchNorm learns its statistics (there are none to keep)"
    return None, "pretrained weights: BatchNorm frozen; its statistics measured on the training images first"


def choose_batch_size(num_train: int, bn: str = "frozen") -> tuple[int, str]:
    if num_train >= BATCH_FULL_FROM:
        return BATCH_MAX, f"{num_train:,} training images >= {BATCH_FULL_FROM}: {BATCH_MAX}"
    smallest = BN_TRAIN_BATCH_MIN if bn == "train" else BATCH_MIN
    size = min(BATCH_MAX, max(smallest, 2 ** round(math.log2(max(num_train, 1) / 10))))
    return size, (f"{num_train} training images < {BATCH_FULL_FROM}: ~n/10 for {max(num_train // size, 1)} steps per "
                  f"epoch, at least {smallest}" + (" (BatchNorm trains)" if bn == "train" else ""))


def finetune_lr_scale(facts: DatasetFacts) -> tuple[float, str]:
    """The peak LR's scale of a fine-tuning stage: lower for a large backbone (facts.backbone_params)."""
    params = facts.backbone_params
    if params is not None and params > LARGE_BACKBONE_PARAMS:
        return LARGE_BACKBONE_LR_SCALE, (f"{LARGE_BACKBONE_LR_SCALE:g}: a large backbone ({params / 1e6:.1f}M "
                                         f"parameters > {LARGE_BACKBONE_PARAMS / 1e6:.0f}M) swings far at the full LR")
    return FINETUNE_LR_SCALE, f"{FINETUNE_LR_SCALE:g}"


def choose_finetune(facts: DatasetFacts, batch_size: int, budget: tuple[int, str] | None = None) -> tuple[dict, str]:
    """Epochs, peak-LR scale and warmup of a stage that trains backbone blocks.

    budget: (steps, where they come from) other than the rule's finetune_steps (auto.finetune_steps, far data)."""
    lr_scale, lr_reason = finetune_lr_scale(facts)
    steps, steps_reason = budget or finetune_steps(facts.num_train)
    per_epoch = max(facts.num_train // batch_size, 1)
    epochs = min(max(math.ceil(steps / per_epoch), FINETUNE_MIN_EPOCHS), FINETUNE_MAX_EPOCHS)
    warmup_steps = max(WARMUP_MIN_STEPS, WARMUP_FRACTION * epochs * per_epoch)
    warmup = round(min(warmup_steps / per_epoch, epochs / 2), 2)
    reason = (f"{steps_reason} of {per_epoch} per epoch at batch {batch_size} "
              f"-> {epochs} epochs (within {FINETUNE_MIN_EPOCHS}-{FINETUNE_MAX_EPOCHS}), peak LR optimizer.lr x "
              f"{lr_reason} after a warmup of {warmup:g} epochs ({WARMUP_FRACTION:.0%} of the steps, at least "
              f"{WARMUP_MIN_STEPS}), cosine to 0, the best epoch kept")
    return {"epochs": epochs, "lr_scale": lr_scale, "warmup_epochs": warmup}, reason


def choose_clipnorm(cfg: TrainConfig) -> tuple[float | None, str]:
    """FINETUNE_CLIPNORM when a stage that trains blocks is sized by the recipe (its peak LR is the recipe's), else
    None: a schedule the user wrote keeps the optimizer as configured."""
    sized = [s.name for s in cfg.schedule.stages
             if s.train != "head" and None in (s.epochs, s.lr_scale, s.warmup_epochs)]
    if not sized:
        return None, "no fine-tuning stage is sized by the recipe"
    return FINETUNE_CLIPNORM, (f"fine-tuning stage(s) {', '.join(repr(n) for n in sized)} sized by the recipe: each "
                               f"weight's gradient clipped to norm {FINETUNE_CLIPNORM:g}, so that one bad batch does "
                               "not throw the unfrozen blocks off course")


def choose_head(facts: DatasetFacts, batch_size: int) -> tuple[dict, str]:
    """A head-only stage left to the optimizer (no probe): long, stopped by early stopping."""
    return ({"epochs": HEAD_EPOCHS, "lr_scale": 1.0, "warmup_epochs": 0.0},
            f"the head trained to convergence: up to {HEAD_EPOCHS} epochs, early stopping after {HEAD_PATIENCE}")


def label_smoothing_for(facts: DatasetFacts) -> tuple[float, str]:
    regime = regime_of(facts.num_train)
    smooth = regime != "small" and facts.num_classes >= SMOOTHING_MIN_CLASSES
    if smooth:
        return LABEL_SMOOTHING, f"{facts.num_train:,} images, {facts.num_classes} classes: the ImageNet-style 0.1"
    return 0.0, (f"off (from {SMALL_BELOW // 1000}k images and {SMOOTHING_MIN_CLASSES} classes; "
                 f"{facts.num_train:,} images, {facts.num_classes} classes)")


def mixup_for(facts: DatasetFacts) -> tuple[float, str]:
    if regime_of(facts.num_train) != "small":
        return MIXUP_ALPHA, f"{facts.num_train:,} images >= {SMALL_BELOW // 1000}k: BiT's alpha {MIXUP_ALPHA:g}"
    return 0.0, f"off (BiT mixes only from {SMALL_BELOW // 1000}k images; {facts.num_train:,} here)"


# --------------------------------------------------------------------------- applying them to a config


def is_active(cfg: TrainConfig) -> bool:
    """Whether anything is left open (null) for the recipe; with auto.enabled=false nulls take FIXED values."""
    return bool(_open_fields(cfg))


def _open_fields(cfg: TrainConfig) -> list[str]:
    opened = [k for k, v in (("image_size", cfg.data.image_size), ("batch_size", cfg.data.batch_size),
                             ("bn", cfg.schedule.bn),
                             ("crop_area", cfg.augment.crop_area), ("flip", cfg.augment.flip),
                             ("mixup", cfg.augment.mixup), ("label_smoothing", cfg.loss.label_smoothing)) if v is None]
    if any(getattr(s, f) is None for s in cfg.schedule.stages for f in ("epochs", "lr_scale", "warmup_epochs")):
        opened.append("schedule")
    return opened


def apply(cfg: TrainConfig, spec: BackboneSpec, data_scan=None) -> tuple[TrainConfig, AutoRecipe | None]:
    """`cfg` with every null the recipe may fill filled in; (cfg, None) when nothing is open.

    spec: cfg's BackboneSpec; data_scan: the pre-flight's tlkit.data.scan.DataScan of cfg.data (None: an image
    folder is walked here). The flip stays null when the probe is to decide it (tlkit.training.trainer runs the probe;
    tlkit.recipe.measured.decide_flip).
    """
    if not is_active(cfg):
        return cfg, None
    facts = replace(describe_dataset(cfg, pretrained_size(cfg, spec), data_scan), backbone_params=spec.params)
    recipe = AutoRecipe(facts, regime_of(facts.num_train))
    deciding = cfg.auto.enabled
    keep = set(cfg.auto.keep)

    def decide(name: str) -> bool:
        return deciding and name not in keep

    data, augment, loss = cfg.data, cfg.augment, cfg.loss
    size, reason = choose_image_size(facts, spec)
    size = max(spec.min_size, size - size % spec.size_step)  # a transformer takes multiples of its patch size
    data, note = _fill(data, "image_size", size if decide("image_size") else spec.default_size, reason, recipe,
                       decide("image_size"), "data.image_size", "image_size")
    bn, reason = choose_bn(facts)
    schedule = cfg.schedule
    if bn is not None or not decide("bn"):  # else left open: measured.decide_bn measures the statistics once the model exists
        schedule, _ = _fill(schedule, "bn", BNPolicy(bn if decide("bn") else FIXED["bn"]), reason, recipe,
                            decide("bn"), "schedule.bn", "bn")
    elif schedule.bn is not None:
        recipe.decisions.append(Decision("bn", {"schedule.bn": schedule.bn}, "set in the config", kept=True))
    batch, reason = choose_batch_size(facts.num_train, BNPolicy(schedule.bn).value if schedule.bn else "frozen")
    data, _ = _fill(data, "batch_size", batch if decide("batch_size") else FIXED["batch_size"], reason, recipe,
                    decide("batch_size"), "data.batch_size", "batch_size")
    schedule = _fill_schedule(replace(cfg, schedule=schedule), facts, data.batch_size, recipe, decide("schedule"))
    optimizer, (clip, reason) = cfg.optimizer, choose_clipnorm(cfg)
    if clip is not None:
        optimizer, _ = _fill(optimizer, "clipnorm", clip if decide("clipnorm") else FIXED["clipnorm"], reason, recipe,
                             decide("clipnorm"), "optimizer.clipnorm", "clipnorm")
    # Crops and flips are the recipe's under augment=auto; a named preset (augment=none, light, ...) means what it
    # says: its nulls are off.
    preset = augment.name != AUTO
    augment, _ = _fill(augment, "crop_area", CROP_AREA if decide("augment") and not preset else FIXED["crop_area"],
                       f"random crops keeping >= {CROP_AREA:g} of the image", recipe, decide("augment") and not preset,
                       "augment.crop_area", "augment",
                       f"off: augment={augment.name}" if preset else "fixed value: the recipe is off for it")
    alpha, reason = mixup_for(facts) if Task(cfg.task) != Task.multilabel else (0.0, MULTILABEL_OFF)
    augment, _ = _fill(augment, "mixup", alpha if decide("mixup") else FIXED["mixup"], reason, recipe,
                       decide("mixup"), "augment.mixup", "mixup")
    smoothing, reason = label_smoothing_for(facts) if Task(cfg.task) != Task.multilabel else (0.0, MULTILABEL_OFF)
    loss, _ = _fill(loss, "label_smoothing", smoothing if decide("label_smoothing") else FIXED["label_smoothing"],
                    reason, recipe, decide("label_smoothing"), "loss.label_smoothing", "label_smoothing")
    if augment.flip is None and not (decide("flip") and probe_possible(cfg) and not preset):
        augment = replace(augment, flip=FIXED["flip"])
        why = f"augment={augment.name}" if preset else _why_no_probe(cfg, decide("flip"))
        recipe.decisions.append(Decision("flip", {"augment.flip": False}, f"off: the probe does not decide ({why})",
                                         kept=not decide("flip")))
    elif augment.flip is not None and deciding:
        recipe.decisions.append(Decision("flip", {"augment.flip": augment.flip}, "set in the config", kept=True))
    return replace(cfg, data=data, augment=augment, loss=loss, schedule=schedule, optimizer=optimizer), recipe


def _fill(section, name: str, value, reason: str, recipe: AutoRecipe, decided: bool, key: str, decision: str,
          fixed_reason: str = "fixed value: the recipe is off for it (auto.enabled / auto.keep)"):
    """Set section.name to `value` when it is null (recording the decision), else record that it was kept."""
    current = getattr(section, name)
    if current is None:
        recipe.decisions.append(Decision(decision, {key: value}, reason if decided else fixed_reason,
                                         kept=not decided))
        return replace(section, **{name: value}), True
    if recipe is not None and decided:
        recipe.decisions.append(Decision(decision, {key: current}, f"set in the config; the rule would pick "
                                         f"{value}: {reason}", kept=True))
    return section, False


def _fill_schedule(cfg: TrainConfig, facts: DatasetFacts, batch_size: int, recipe: AutoRecipe, decided: bool):
    stages = []
    for index, stage in enumerate(cfg.schedule.stages):
        key = f"schedule.stages.{index}"
        if stage.train == "head" and stage.probe and (not head_fits_by_probe(cfg) or facts.weights == "random"):
            why = (f"head={cfg.head.kind.value} is trained by the optimizer, not fitted as a logistic regression"
                   if not head_fits_by_probe(cfg) else "random features: the optimizer trains the head instead")
            stage = replace(stage, probe=False)
            recipe.decisions.append(Decision("schedule", {f"{key}.probe": False}, f"stage '{stage.name}': {why}"))
        if stage.train == "head" and stage.probe:  # fitted in one go: no epochs, LR or warmup to size
            stages.append(replace(stage, epochs=stage.epochs or 1, lr_scale=stage.lr_scale or 1.0,
                                  warmup_epochs=stage.warmup_epochs or 0.0))
            recipe.decisions.append(Decision("schedule", {f"{key}.probe": True}, f"stage '{stage.name}': the head "
                                             "fitted as a logistic regression on the frozen backbone's cached "
                                             "features (to convergence, L2 C=0.1)"))
            continue
        trains_blocks = stage.train != "head"
        user_steps = cfg.auto.finetune_steps
        budget = (user_steps, f"{user_steps:,} steps (auto.finetune_steps)") if user_steps else None
        chosen, reason = (choose_finetune(facts, batch_size, budget) if trains_blocks
                          else choose_head(facts, batch_size))
        if not decided:
            chosen, reason = {k: FIXED[k] for k in chosen}, "fixed values: the recipe is off for the schedule"
        filled = {k: v for k, v in chosen.items() if getattr(stage, k) is None}
        if trains_blocks and decided and "epochs" in filled and stage.patience is None:
            filled["patience"] = FINETUNE_PATIENCE  # the step budget's second half may end early
            if stage.min_epochs is None:
                filled["min_epochs"] = math.ceil(FINETUNE_MIN_FRACTION * filled["epochs"])
        if "patience" in filled and trains_blocks:
            reason += (f"; early stopping after {filled['patience']} epochs without improvement, not before epoch "
                       f"{filled.get('min_epochs', stage.min_epochs) or 1}")
        if filled:
            recipe.decisions.append(Decision("schedule", {f"{key}.{k}": v for k, v in filled.items()},
                                             f"stage '{stage.name}': {reason}", kept=not decided))
            if not trains_blocks and decided and "epochs" in filled and stage.patience is None:
                filled["patience"] = HEAD_PATIENCE  # a long head stage ends by early stopping
            stage = replace(stage, **filled)
        stages.append(stage)
    return replace(cfg.schedule, stages=stages)


def probe_possible(cfg: TrainConfig) -> bool:
    """The probe needs pretrained features and a validation set; it runs before the first stage."""
    return cfg.backbone.weights is not None


def _why_no_probe(cfg: TrainConfig, deciding: bool) -> str:
    if not deciding:
        return "auto.enabled=false or auto.keep"
    return "backbone.weights=null: random features say nothing about mirrored images"


def head_fits_by_probe(cfg: TrainConfig) -> bool:
    """Whether probe=true head stages can be fitted as a logistic regression (a linear head)."""
    return cfg.head.kind == HeadKind.linear


def log_recipe(recipe: AutoRecipe | None) -> None:
    if recipe is not None:
        log.info("%s", "\n".join(recipe.lines()))
