"""Typed config objects: the structured-config schemas Hydra validates YAML against.

Closed sets of choices are Enums, so a bad value fails when the config loads, with the
key, the value and the allowed choices in the message. Cross-field rules (image size
against the backbone's minimum, block names, paths) are checked in tlkit.config.validate.
Nothing here imports Hydra: a notebook can build these dataclasses directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


class Preprocess(str, Enum):
    auto = "auto"  # the backbone's own mode (the right choice)
    caffe = "caffe"
    tf = "tf"
    torch = "torch"
    none = "none"
    rescale_255 = "rescale_255"  # x / 255: a common mistake, expressible so it can be diagnosed


class DataSource(str, Enum):
    digits = "digits"
    folder = "folder"
    synthetic = "synthetic"
    tfds = "tfds"  # TensorFlow Datasets (tlkit/data/tfds.py): data.name, data.splits.train/val/test


class ImageCache(str, Enum):
    auto = "auto"  # in memory when it fits trainer.memory_budget_gb, else in a file
    memory = "memory"
    file = "file"  # $TLKIT_CACHE_DIR (or the system temp folder), removed when the process ends
    off = "off"  # decode every image every epoch


class ClassWeight(str, Enum):
    auto = "auto"  # balanced weights from the training counts
    none = "none"


class OnBadFile(str, Enum):
    skip = "skip"  # files that fail the pre-scan are left out, counted and named in the log and metrics.json
    error = "error"  # any such file stops the run before training, naming each file and its problem


class HeadKind(str, Enum):
    linear = "linear"
    mlp = "mlp"


class Pooling(str, Enum):
    avg = "avg"
    max = "max"


class BNPolicy(str, Enum):
    frozen = "frozen"  # BatchNorm in inference mode, statistics and scale/offset fixed, in every stage
    train = "train"  # BatchNorm of unfrozen blocks updates its statistics and trains


class OptimizerName(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class Precision(str, Enum):
    auto = "auto"  # mixed_bfloat16 on GPUs with bfloat16 (compute capability >= 8), mixed_float16 on older GPUs, float32 on CPU
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"  # Keras adds loss scaling


class FeatureCacheMode(str, Enum):
    auto = "auto"  # head-only stages train on cached features when they fit trainer.memory_budget_gb
    on = "on"  # the same, and a warning when the cache does not fit
    off = "off"  # always train through the frozen backbone


class Monitor(str, Enum):
    val_loss = "val_loss"
    val_accuracy = "val_accuracy"


class StrategyName(str, Enum):
    """Where training runs (tlkit/distribute.py). data.batch_size is the global batch, split across replicas."""

    auto = "auto"  # multi_worker when TF_CONFIG lists 2+ tasks, mirrored with 2+ local GPUs, else Keras's default
    one_device = "one_device"  # tf.distribute.OneDeviceStrategy (a no-op on the JAX/torch backends)
    mirrored = "mirrored"  # every local GPU (or logical device) of this machine
    multi_worker = "multi_worker"  # MultiWorkerMirroredStrategy: the machines listed in TF_CONFIG
    tpu = "tpu"  # TPUStrategy (the local TPU, or TPU_NAME)


class RegularizerName(str, Enum):
    none = "none"
    l2sp = "l2sp"  # L2-SP (Li et al. 2018): pull trained backbone weights toward their start-of-training values


class LRScaling(str, Enum):
    none = "none"  # the same LR on any number of replicas (right when data.batch_size stays the same)
    linear = "linear"  # every stage's LR x replicas: for data.batch_size grown x replicas (Goyal et al. 2017)
    sqrt = "sqrt"  # LR x sqrt(replicas): the gentler rule, often better for Adam


@dataclass
class BackboneConfig:
    name: str = MISSING
    weights: Optional[str] = "imagenet"  # imagenet | null | path to a .h5 / .weights.h5 file
    preprocess: Preprocess = Preprocess.auto


@dataclass
class SplitsConfig:
    """data=tfds: TFDS split strings, e.g. train: "train[:40%]", val: "train[40%:50%]", test: "test"."""

    train: Optional[str] = None
    val: Optional[str] = None
    test: Optional[str] = None  # optional: adds test_* metrics


@dataclass
class DataConfig:
    source: DataSource = DataSource.digits
    path: Optional[str] = None  # folder: one subfolder per class, split by val_split
    train_dir: Optional[str] = None  # folder: explicit splits instead of path
    val_dir: Optional[str] = None
    test_dir: Optional[str] = None
    val_split: float = 0.2
    image_size: Optional[int] = None  # null: the backbone's default size
    batch_size: int = 32
    class_weight: ClassWeight = ClassWeight.none
    cache: ImageCache = ImageCache.auto  # decoded, resized uint8 images, kept after the first epoch
    max_images: Optional[int] = None  # use at most this many training images (quick runs)
    num_classes: int = 3  # synthetic only
    num_images: int = 240  # synthetic only: train + val
    on_bad_file: OnBadFile = OnBadFile.skip  # folder only: what to do with files that do not decode
    name: Optional[str] = None  # tfds only: the TensorFlow Datasets name, e.g. cats_vs_dogs
    splits: SplitsConfig = field(default_factory=SplitsConfig)  # tfds only (not val_split, a fraction)
    data_dir: Optional[str] = None  # tfds only: where prepared datasets are; null: $TFDS_DATA_DIR or ~/tensorflow_datasets
    download: bool = True  # tfds only: download and prepare a dataset missing from data_dir (needs the internet)


@dataclass
class AugmentConfig:
    name: str = "none"
    flip: bool = False  # random horizontal flip
    crop_area: float = 1.0  # random crop-and-resize keeps at least this fraction of the area (1.0: off)
    color: float = 0.0  # brightness / contrast / saturation jitter strength (0: off)
    # MixUp / CutMix on training batches (tlkit/data/mixing.py): Beta(alpha, alpha) concentration, 0 = off;
    # training labels become soft. mixup=null: chosen by recipe=auto (tlkit/auto_recipe.py).
    mixup: Optional[float] = 0.0
    cutmix: float = 0.0


@dataclass
class HeadConfig:
    kind: HeadKind = HeadKind.linear
    hidden: List[int] = field(default_factory=list)  # mlp hidden sizes
    dropout: float = 0.2
    pooling: Pooling = Pooling.avg
    zero_init: bool = True  # logits start at 0: the step-0 loss is exactly log(N)


@dataclass
class StageConfig:
    name: str = MISSING
    train: str = "head"  # head | all | top:N (the top N blocks) | from:BLOCK (BLOCK and above)
    epochs: int = 5
    lr_scale: float = 1.0  # this stage's peak LR = optimizer.lr * lr_scale
    warmup_epochs: float = 0.0
    cosine: bool = True  # cosine decay to 0 over the stage after warmup
    patience: Optional[int] = 3  # early stopping on trainer.monitor; null: off
    lr_decay: Optional[float] = None  # this stage's schedule.lr_decay; null: the schedule's
    block_lr: Dict[str, float] = field(default_factory=dict)  # this stage's schedule.block_lr; {}: the schedule's


def _staged() -> List[StageConfig]:
    """conf/schedule/staged.yaml, so a config built in Python has the same default as train.py."""
    return [
        StageConfig(name="head", train="head", epochs=5, lr_scale=1.0),
        StageConfig(name="top", train="top:2", epochs=5, lr_scale=0.1, warmup_epochs=1),
        StageConfig(name="all", train="all", epochs=5, lr_scale=0.01, warmup_epochs=1),
    ]


@dataclass
class ScheduleConfig:
    name: str = "staged"
    bn: BNPolicy = BNPolicy.frozen
    stages: List[StageConfig] = field(default_factory=_staged)
    # Discriminative LRs (tlkit/methods): the top trained block at the stage LR, each block below
    # lr_decay x the one above (null: one LR); block_lr: {BLOCK: multiplier} replaces that for a block.
    lr_decay: Optional[float] = None
    block_lr: Dict[str, float] = field(default_factory=dict)  # Hydra adds keys with +: +schedule.block_lr.conv4=0.3


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adam
    # The first stage's base LR; later stages scale it by lr_scale. A number, or "auto": the LR finder
    # (tlkit/lr_find.py) picks it before training. Any-typed because OmegaConf has no Union[float, str]:
    # as_train_config normalises it to a float or "auto" and refuses anything else (validate.normalize_lr).
    lr: Any = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    clipnorm: Optional[float] = None
    ema: bool = False  # validate, keep and save an exponential moving average of the weights
    ema_momentum: float = 0.99  # EMA: avg = m * avg + (1 - m) * w after every step


@dataclass
class RegularizerConfig:
    name: RegularizerName = RegularizerName.none
    alpha: float = 0.01  # l2sp: alpha/2 * ||w - w0||^2 over the trained backbone weights (w0: start of training)
    beta: float = 0.01  # l2sp: beta/2 * ||w||^2 over the head's kernels


@dataclass
class LossConfig:
    label_smoothing: float = 0.0  # targets (1 - eps) * label + eps / N, for int and soft (MixUp) labels


@dataclass
class TrainerConfig:
    monitor: Monitor = Monitor.val_loss  # restores each stage's best epoch by this metric
    verbose: int = 1  # Keras progress bars: 0 silent, 1 bar, 2 one line per epoch
    save_model: bool = True
    precision: Precision = Precision.auto
    jit_compile: Optional[bool] = None  # null: XLA on GPU, off on CPU (Keras "auto")
    steps_per_execution: Optional[int] = None  # null: 1 on CPU, up to 32 on an accelerator
    feature_cache: FeatureCacheMode = FeatureCacheMode.auto
    feature_cache_views: Optional[int] = None  # null: 1 without augmentation, else min(stage epochs, 4)
    memory_budget_gb: float = 4.0  # the most the image cache and the feature cache may hold in memory
    deterministic: bool = False  # TensorFlow op determinism: the same seed gives the same metrics.json (slower)
    checkpoint: bool = True  # RUN_DIR/checkpoint.npz after every epoch (atomic), what resume= continues from
    strategy: StrategyName = StrategyName.auto  # tf.distribute strategy: see tlkit/distribute.py, README "Scaling out"
    lr_scaling: LRScaling = LRScaling.none  # how the LR follows the number of replicas


@dataclass
class DoctorConfig:
    enabled: bool = True  # pre-flight checks before training (tlkit doctor runs them alone)
    strict: bool = False  # warnings count as errors
    silence: List[str] = field(default_factory=list)  # finding ids to silence, on purpose
    monitor: bool = True  # runtime monitor: stops a diverging stage and writes a diagnosis


@dataclass
class AutoRecipeConfig:
    """recipe=auto (tlkit/auto_recipe.py): settings chosen from the data set's size, BiT HyperRule style."""

    enabled: bool = False  # also choose data.image_size (when null) and label smoothing
    keep: List[str] = field(default_factory=list)  # decisions left as configured: image_size, schedule, augment, mixup, label_smoothing


class ReferenceMetric(str, Enum):
    val_accuracy = "val_accuracy"
    val_loss = "val_loss"
    test_accuracy = "test_accuracy"  # needs a test split (data.test_dir, data.splits.test)
    test_loss = "test_loss"


@dataclass
class ReferenceResult:
    metric: ReferenceMetric = MISSING
    value: float = MISSING  # accuracy as a fraction: 93.1% is 0.931
    stage: Optional[str] = None  # null: the final model; a stage name: that stage's restored (best) epoch
    tolerance: Optional[float] = None  # null: reference.tolerance


@dataclass
class ReferenceConfig:
    """A published result this recipe reproduces (`tlkit reproduce recipe=NAME`, tlkit/reproduce.py)."""

    source: str = MISSING  # where the numbers come from: paper, guide, or the command that measured them
    tolerance: float = MISSING  # absolute: a result passes when |achieved - value| <= tolerance
    results: List[ReferenceResult] = field(default_factory=list)
    notes: Optional[str] = None  # how this recipe differs from the source


@dataclass
class TrainConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    doctor: DoctorConfig = field(default_factory=DoctorConfig)
    auto: AutoRecipeConfig = field(default_factory=AutoRecipeConfig)
    seed: int = 42
    resume: Optional[str] = None  # a run directory to continue from its last completed epoch (same config)
    reference: Optional[ReferenceConfig] = None  # recipes that reproduce a published result (tlkit reproduce)
