"""recipe=auto: image size, schedule length, augmentation, MixUp and label smoothing from the data set.

In the spirit of BiT's HyperRule (Kolesnikov et al. 2020; FIELD_NOTES.md), adapted to tlkit:

    regime      training images      steps (at data.batch_size)   MixUp alpha   label smoothing
    small       < 20,000             500                          0             0
    medium      < 500,000            10,000                       0.1           0.1 with >= 10 classes
    large       >= 500,000           20,000                       0.1           0.1 with >= 10 classes

- image size: source images under 96 px (their median shorter side) -> BiT's low resolution, 128 px for
  224 px weights, scaled to the backbone's pretrained size (and never below its minimum); larger
  images -> the backbone's pretrained size (BiT goes to 480 px; the doctor warns beyond 2.5x, and the
  compute grows with the square).
- schedule: the step budget becomes epochs (ceil(steps / steps per epoch), at least one per stage),
  shared between the stages of `schedule=auto` in proportion to their configured epochs; warmup
  keeps its share of each stage. Early stopping stays on.
- augmentation: BiT's random crop + horizontal flip: `light` (crop keeping >= 60% of the area);
  gentler crops (>= 80%) for source images under 96 px, and no flip on digits (mirrored digits
  change meaning).
- label smoothing 0.1 (Szegedy et al. 2016) for >= 20k images and >= 10 classes, where ImageNet-style
  recipes use it; short schedules on small data sets (BiT's few-shot regime) train without it.

What the rule decides, and how to keep your own value instead (explicit settings win):
    image_size        decided when data.image_size is null (recipe=auto's value); any number is kept
    schedule          decided when schedule=auto (recipe=auto's choice); any other schedule= is kept
    augment           decided when augment=auto (recipe=auto's choice); any other augment= is kept
    mixup             decided when augment.mixup is null (recipe=auto's value); any number is kept
    label_smoothing   decided unless auto.keep lists it
`auto.keep=[NAME,...]` keeps any of them as configured. Pure Python (no TensorFlow): it runs after
validate() and before the data pipeline and the model are built (tlkit.trainer, tlkit doctor, tlkit lr-find).
"""
from __future__ import annotations

import logging
import math
import statistics
from dataclasses import asdict, dataclass, field, replace

from tlkit.backbones.spec import BackboneSpec
from tlkit.config.schema import TrainConfig
from tlkit.errors import ConfigError
from tlkit.data.sources import SYNTHETIC_BASE_SIZE  # no TensorFlow there

log = logging.getLogger("tlkit.train")

SMALL_BELOW, MEDIUM_BELOW = 20_000, 500_000  # BiT HyperRule's data set sizes
SCHEDULE_STEPS = {"small": 500, "medium": 10_000, "large": 20_000}
LOW_RES_BELOW = 96  # px, BiT: "images under 96x96" are low resolution
BIT_LOW_RES, BIT_PRETRAINED = 128, 224  # BiT fine-tunes those at 128 px from 224 px weights
MIXUP_ALPHA = 0.1  # BiT, from 20k images
LABEL_SMOOTHING, SMOOTHING_MIN_CLASSES = 0.1, 10
CROP_AREA, LOW_RES_CROP_AREA = 0.6, 0.8  # `light`; gentler on small source images
NO_FLIP_SOURCES = ("digits",)
DECISIONS = ("image_size", "schedule", "augment", "mixup", "label_smoothing")
AUTO = "auto"
SIZE_SAMPLE = 2000  # files whose size (from the cached pre-scan) gives the median image side
SYNTHETIC_SIDE = SYNTHETIC_BASE_SIZE
DIGITS_SIDE = 8


@dataclass(frozen=True)
class DatasetFacts:
    """What the rule looks at: training images (after data.max_images), classes, median source side (px)."""

    num_train: int
    num_classes: int
    image_side: int
    source: str = "folder"


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

    def lines(self) -> list[str]:
        f = self.facts
        head = (f"recipe=auto: {f.num_train:,} training images, {f.num_classes} classes, source images "
                f"~{f.image_side} px -> regime '{self.regime}'")
        return [head] + [f"  {d.name}: {'kept ' if d.kept else ''}{_values_text(d.values)} ({d.reason})"
                         for d in self.decisions]

    def to_dict(self) -> dict:
        return {"facts": asdict(self.facts), "regime": self.regime,
                "decisions": [{"name": d.name, "values": d.values, "reason": d.reason, "kept": d.kept}
                              for d in self.decisions]}


def _values_text(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def regime_of(num_train: int) -> str:
    return "small" if num_train < SMALL_BELOW else "medium" if num_train < MEDIUM_BELOW else "large"


def label_smoothing_key(cfg) -> str | None:
    """The dotted key of the label-smoothing setting (tlkit.optim.make_loss reads it), or None without one."""
    for section in ("loss",):  # tlkit.config.schema.LossConfig
        if hasattr(getattr(cfg, section), "label_smoothing"):
            return f"{section}.label_smoothing"
    return None


def is_active(cfg: TrainConfig) -> bool:
    """Whether the rule has anything to decide (recipe=auto, or one of its `auto` values on its own)."""
    a = cfg.augment
    return bool(cfg.auto.enabled or a.name == AUTO or cfg.schedule.name == AUTO or a.mixup is None)


def check_auto_config(cfg: TrainConfig) -> None:
    """Validation (tlkit.config.validate): auto.keep names, and null/auto values only where the rule fills them."""
    for index, name in enumerate(cfg.auto.keep):
        if name not in DECISIONS:
            raise ConfigError(f"auto.keep.{index}", name, f"one of {', '.join(DECISIONS)}")


# --------------------------------------------------------------------------- the rule (pure)


def choose(facts: DatasetFacts, spec: BackboneSpec, batch_size: int, stage_epochs: list[int]) -> dict:
    """Every decision for `facts`: {name: (values, reason)}; `stage_epochs` are the schedule's shares."""
    regime = regime_of(facts.num_train)
    images = f"{facts.num_train:,} images"
    bound = f"< {SMALL_BELOW // 1000}k" if regime == "small" else (
        f"< {MEDIUM_BELOW // 1000}k" if regime == "medium" else f">= {MEDIUM_BELOW // 1000}k")
    low_res = facts.image_side < LOW_RES_BELOW

    if low_res:
        size = max(spec.min_size, int(round(BIT_LOW_RES * spec.default_size / BIT_PRETRAINED)))
        size_reason = (f"source images ~{facts.image_side} px < {LOW_RES_BELOW}: BiT's low resolution, "
                       f"{BIT_LOW_RES} px for {BIT_PRETRAINED} px weights, scaled to {spec.name}'s {spec.default_size}")
    else:
        size = spec.default_size
        size_reason = f"source images ~{facts.image_side} px >= {LOW_RES_BELOW}: {spec.name}'s pretrained size"

    steps = SCHEDULE_STEPS[regime]
    per_epoch = max(facts.num_train // batch_size, 1)
    epochs = split_epochs(max(math.ceil(steps / per_epoch), len(stage_epochs)), stage_epochs)
    schedule_reason = (f"{images} {bound} -> schedule '{regime}': {steps:,} steps = {sum(epochs)} epochs of "
                       f"{per_epoch} steps at batch {batch_size}")

    flip = facts.source not in NO_FLIP_SOURCES
    crop = LOW_RES_CROP_AREA if low_res else CROP_AREA
    augment_reason = (f"BiT's crop + flip: crop keeps >= {crop:g} of the area"
                      + (f" (gentler: source images < {LOW_RES_BELOW} px)" if low_res else "")
                      + ("" if flip else f"; no flip on {facts.source} (a mirrored digit is another digit)"))

    mixup = MIXUP_ALPHA if regime != "small" else 0.0
    mixup_reason = (f"{images} >= {SMALL_BELOW // 1000}k: BiT's MixUp alpha {MIXUP_ALPHA:g}" if mixup
                    else f"{images} {bound}: off (BiT uses MixUp only from {SMALL_BELOW // 1000}k images)")

    smooth = regime != "small" and facts.num_classes >= SMOOTHING_MIN_CLASSES
    smoothing_reason = (f"{images}, {facts.num_classes} classes >= {SMOOTHING_MIN_CLASSES}: the ImageNet-style 0.1"
                        if smooth else f"{images}, {facts.num_classes} classes: off (needs >= "
                        f"{SMALL_BELOW // 1000}k images and >= {SMOOTHING_MIN_CLASSES} classes)")
    return {
        "regime": regime,
        "image_size": ({"data.image_size": size}, size_reason),
        "schedule": ({"epochs": epochs, "steps": steps}, schedule_reason),
        "augment": ({"augment.flip": flip, "augment.crop_area": crop, "augment.color": 0.0}, augment_reason),
        "mixup": ({"augment.mixup": mixup}, mixup_reason),
        "label_smoothing": ({"label_smoothing": LABEL_SMOOTHING if smooth else 0.0}, smoothing_reason),
    }


def split_epochs(total: int, shares: list[int]) -> list[int]:
    """`total` epochs split in proportion to `shares` (largest remainder), at least 1 each."""
    weights = [max(s, 1) for s in shares]
    exact = [total * w / sum(weights) for w in weights]
    epochs = [max(1, math.floor(x)) for x in exact]
    for index in sorted(range(len(exact)), key=lambda i: exact[i] - math.floor(exact[i]), reverse=True):
        if sum(epochs) >= total:
            break
        epochs[index] += 1
    return epochs


# --------------------------------------------------------------------------- applying it to a config


def apply(cfg: TrainConfig, spec: BackboneSpec) -> tuple[TrainConfig, AutoRecipe | None]:
    """`cfg` with the rule's choices filled in where it may decide; (cfg, None) when nothing is automatic."""
    if not is_active(cfg):
        return cfg, None
    facts = describe_dataset(cfg)
    chosen = choose(facts, spec, cfg.data.batch_size, [s.epochs for s in cfg.schedule.stages])
    recipe = AutoRecipe(facts, chosen["regime"])
    keep, enabled, smoothing = set(cfg.auto.keep), cfg.auto.enabled, label_smoothing_key(cfg)
    may_decide = {  # name -> (the config leaves it to the rule, what it holds now)
        "image_size": (enabled and cfg.data.image_size is None, {"data.image_size": cfg.data.image_size}),
        "schedule": (cfg.schedule.name == AUTO, {"schedule": cfg.schedule.name}),
        "augment": (cfg.augment.name == AUTO, {"augment": cfg.augment.name}),
        "mixup": (cfg.augment.mixup is None, {"augment.mixup": cfg.augment.mixup}),
        "label_smoothing": (enabled and smoothing is not None,
                            {smoothing: _get(cfg, smoothing)} if smoothing else {}),
    }
    for name in DECISIONS:
        open_, current = may_decide[name]
        values, reason = chosen[name]
        if open_ and name not in keep:
            cfg, shown = _APPLY[name](cfg, values, smoothing)
            recipe.decisions.append(Decision(name, shown, reason))
        elif enabled or open_:
            why = ("auto.keep" if name in keep else "no label-smoothing setting" if name == "label_smoothing"
                   and smoothing is None else "set in the config")
            recipe.decisions.append(Decision(name, current, f"{why}; the rule would pick {_values_text(values)}: "
                                             f"{reason}", kept=True))
    if cfg.augment.mixup is None:  # null kept by auto.keep: off
        cfg = replace(cfg, augment=replace(cfg.augment, mixup=0.0))
    return cfg, recipe


def _image_size(cfg, values, _):
    return replace(cfg, data=replace(cfg.data, image_size=values["data.image_size"])), values


def _schedule(cfg, values, _):
    stages = [replace(s, epochs=e, warmup_epochs=round(s.warmup_epochs * e / max(s.epochs, 1), 2))
              for s, e in zip(cfg.schedule.stages, values["epochs"])]
    shown = {f"schedule.stages.{i}.epochs": s.epochs for i, s in enumerate(stages)}
    return replace(cfg, schedule=replace(cfg.schedule, stages=stages)), shown


def _augment(cfg, values, _):
    augment = replace(cfg.augment, flip=values["augment.flip"], crop_area=values["augment.crop_area"],
                      color=values["augment.color"])
    return replace(cfg, augment=augment), values


def _mixup(cfg, values, _):
    return replace(cfg, augment=replace(cfg.augment, mixup=values["augment.mixup"])), values


def _label_smoothing(cfg, values, key):
    value = values["label_smoothing"]
    return _set(cfg, key, value), {key: value}


_APPLY = {"image_size": _image_size, "schedule": _schedule, "augment": _augment, "mixup": _mixup,
          "label_smoothing": _label_smoothing}


def _get(cfg, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _set(cfg, key: str, value):
    section, name = key.split(".")
    return replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})


def log_recipe(recipe: AutoRecipe | None) -> None:
    if recipe is not None:
        log.info("%s", "\n".join(recipe.lines()))


# --------------------------------------------------------------------------- the data set, without TensorFlow


def describe_dataset(cfg: TrainConfig) -> DatasetFacts:
    """Counts the training images (the split and data.max_images applied) and the median source side."""
    from tlkit.data.scan import DIGITS_NUM_CLASSES, scan_classes, source_name

    data = cfg.data
    source = source_name(data)
    if source == "digits":
        from sklearn.datasets import load_digits  # ships inside scikit-learn

        counts = [int((load_digits().target == c).sum()) for c in range(DIGITS_NUM_CLASSES)]
        num_train, side = sum(_train_count(n, data.val_split) for n in counts), DIGITS_SIDE
    elif source == "synthetic":
        counts = [data.num_images // data.num_classes + (c < data.num_images % data.num_classes)
                  for c in range(data.num_classes)]  # labels are arange(num_images) % num_classes
        num_train, side = sum(_train_count(n, data.val_split) for n in counts), SYNTHETIC_SIDE
    else:
        scan = scan_classes("data.path" if data.path is not None else "data.train_dir", data.path or data.train_dir)
        counts = [len(files) for files in scan.classes.values()]
        if data.path is not None:
            num_train = sum(_train_count(n, data.val_split) for n in counts)
        else:
            num_train = sum(counts)
        side = _median_side(scan)
    if data.max_images is not None:
        num_train = min(num_train, data.max_images)
    return DatasetFacts(num_train=num_train, num_classes=len(counts), image_side=side, source=source)


def _train_count(n: int, val_split: float) -> int:
    """Training images of a class of n after tlkit.data.pipeline.stratified_split."""
    num_val = int(round(val_split * n))
    if n >= 2:
        num_val = min(max(num_val, 1), n - 1)
    return n - num_val


def _median_side(scan) -> int:
    files = [path for paths in scan.classes.values() for path in paths]
    step = max(1, len(files) // SIZE_SAMPLE)
    sides = [min(scan.report.files[p]["size"]) for p in files[::step]
             if scan.report.files.get(p, {}).get("size")]
    return int(statistics.median(sides)) if sides else LOW_RES_BELOW
