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

from tlkit.preprocessing_modes import AUTO as PREPROCESS_AUTO
from tlkit.preprocessing_modes import MODE_NAMES as PREPROCESS_MODE_NAMES


# backbone.preprocess: auto (the backbone's own mode, the right choice) or a mode of the one table,
# tlkit.preprocessing_modes (rescale_255 is x / 255: a common mistake, expressible so it can be diagnosed).
Preprocess = Enum("Preprocess", [(name, name) for name in (PREPROCESS_AUTO, *PREPROCESS_MODE_NAMES)],
                  type=str, module=__name__, qualname="Preprocess")


class DataSource(str, Enum):
    digits = "digits"
    folder = "folder"
    synthetic = "synthetic"
    tfds = "tfds"  # TensorFlow Datasets (tlkit/data/tfds.py): data.name, data.splits.train/val/test
    csv = "csv"  # a label table (tlkit/data/table.py): data.path is a CSV/TSV file of image paths and labels


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
    adapt = "adapt"  # statistics re-estimated on the training images before training (AdaBN), then frozen
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
    val_map = "val_map"  # task=multilabel: macro mean average precision over the classes (its default monitor)


class Task(str, Enum):
    """What a label is (tlkit/model/multilabel.py for multilabel)."""

    single_label = "single_label"  # one class per image: N logits, softmax, cross-entropy
    multilabel = "multilabel"  # any set of classes per image: N sigmoid logits, binary cross-entropy, thresholds


class StrategyName(str, Enum):
    """Where training runs (tlkit/training/distribute.py). data.batch_size is the global batch, split across replicas."""

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
    # imagenet | null | path to a .weights.h5 / .h5 / .keras file (the backbone's, or a classifier's built on it:
    # tlkit.backbones.weights_file) | tlkit:TASK (pretrained here on an offline source task of tlkit.data.tasks on
    # first use, then cached: the quickstart's weights)
    weights: Optional[str] = "imagenet"
    preprocess: Preprocess = Preprocess.auto
    # The input size the weights were trained at; null: ImageNet's size for weights=imagenet, what a weights
    # file records (tlkit.backbones.weights.pretrained_size_of), else unknown (the images' own size is used).
    pretrained_size: Optional[int] = None
    # backbone=hub: a KerasHub preset (a local folder saved with save_to_preset, a kaggle:// handle in the
    # kagglehub cache, or a KerasHub preset name); named hub backbones (vit_base, ...) set their own. weights=preset
    # loads the preset's weights (tlkit/backbones/hub.py).
    preset: Optional[str] = None


@dataclass
class SplitsConfig:
    """data=tfds: TFDS split strings, e.g. train: "train[:40%]", val: "train[40%:50%]", test: "test"."""

    train: Optional[str] = None
    val: Optional[str] = None
    test: Optional[str] = None  # optional: adds test_* metrics


@dataclass
class DataConfig:
    source: DataSource = DataSource.digits
    path: Optional[str] = None  # folder: one subfolder per class, split by val_split; csv: the table file
    train_dir: Optional[str] = None  # folder: explicit splits instead of path
    val_dir: Optional[str] = None
    test_dir: Optional[str] = None
    val_split: float = 0.2
    image_size: Optional[int] = None  # null: chosen by the recipe (tlkit/recipe/auto.py) from the images and weights
    batch_size: Optional[int] = None  # null: chosen by the recipe from the training set's size (32 from 640 images)
    class_weight: ClassWeight = ClassWeight.none
    cache: ImageCache = ImageCache.auto  # decoded, resized uint8 images, kept after the first epoch
    max_images: Optional[int] = None  # use at most this many training images (quick runs)
    classes: Optional[List[str]] = None  # train on these classes only (folder names, digits "0".."9"); null: all
    num_classes: int = 3  # synthetic only
    num_images: int = 240  # synthetic only: train + val
    on_bad_file: OnBadFile = OnBadFile.skip  # folder only: what to do with files that do not decode
    name: Optional[str] = None  # tfds only: the TensorFlow Datasets name, e.g. cats_vs_dogs
    splits: SplitsConfig = field(default_factory=SplitsConfig)  # tfds only (not val_split, a fraction)
    data_dir: Optional[str] = None  # tfds only: where prepared datasets are; null: $TFDS_DATA_DIR or ~/tensorflow_datasets
    download: bool = True  # tfds only: download and prepare a dataset missing from data_dir (needs the internet)
    image_column: str = "image"  # csv only: the column of image paths (absolute, or relative to root)
    label_column: str = "label"  # csv only: the column of class names
    root: Optional[str] = None  # csv only: what relative image paths are relative to; null: the table's folder
    split_column: Optional[str] = None  # csv only: a column of train/val/test; null: split by val_split
    # csv, task=multilabel only: one 0/1 column per class (the column names are the classes) instead of
    # label_column's ";"-separated class names
    label_columns: Optional[List[str]] = None


@dataclass
class AugmentConfig:
    name: str = "auto"
    # Random horizontal flip. null: the recipe's probe decides (on when mirrored validation images keep their class).
    flip: Optional[bool] = None
    # Random crop-and-resize keeps at least this fraction of the area (1.0: off); null: chosen by the recipe.
    crop_area: Optional[float] = None
    color: float = 0.0  # brightness / contrast / saturation jitter strength (0: off)
    # MixUp / CutMix on training batches (tlkit/data/mixing.py): Beta(alpha, alpha) concentration, 0 = off;
    # training labels become soft. mixup=null: chosen by recipe=auto (tlkit/recipe/auto.py).
    mixup: Optional[float] = None
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
    """One stage. null epochs, lr_scale and warmup_epochs: sized by the recipe (tlkit/recipe/auto.py) from the data."""

    name: str = MISSING
    train: str = "head"  # head | all | top:N (the top N blocks) | from:BLOCK (BLOCK and above)
    epochs: Optional[int] = 5
    lr_scale: Optional[float] = 1.0  # this stage's peak LR = optimizer.lr * lr_scale
    warmup_epochs: Optional[float] = 0.0
    # train=head only: fit the head as a logistic regression on the frozen backbone's cached features
    # (L-BFGS, to convergence, in seconds) instead of `epochs` of the optimizer; needs head=linear.
    probe: bool = False
    cosine: bool = True  # cosine decay to 0 over the stage after warmup
    patience: Optional[int] = 3  # early stopping on trainer.monitor; null: off
    min_epochs: Optional[int] = None  # early stopping never ends the stage before this many epochs; null: any time
    lr_decay: Optional[float] = None  # this stage's schedule.lr_decay; null: the schedule's
    block_lr: Dict[str, float] = field(default_factory=dict)  # this stage's schedule.block_lr; {}: the schedule's


def _auto_stages() -> List[StageConfig]:
    """tlkit/conf/schedule/auto.yaml, so a config built in Python has the same default as train.py."""
    return [
        StageConfig(name="head", train="head", epochs=None, lr_scale=1.0, warmup_epochs=0.0, cosine=False,
                    patience=None, probe=True),
        StageConfig(name="finetune", train="all", epochs=None, lr_scale=None, warmup_epochs=None, cosine=True,
                    patience=None),
    ]


@dataclass
class ScheduleConfig:
    name: str = "auto"
    # null: the recipe decides: frozen, or adapt when the training images' statistics are far from the stored ones
    # (pretrained weights); train from random weights
    bn: Optional[BNPolicy] = None
    stages: List[StageConfig] = field(default_factory=_auto_stages)
    # Discriminative LRs (tlkit/training/methods): the top trained block at the stage LR, each block below
    # lr_decay x the one above (null: one LR); block_lr: {BLOCK: multiplier} replaces that for a block.
    lr_decay: Optional[float] = None
    block_lr: Dict[str, float] = field(default_factory=dict)  # Hydra adds keys with +: +schedule.block_lr.conv4=0.3


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adam
    # The first stage's base LR; later stages scale it by lr_scale. A number, or "auto": the LR finder
    # (tlkit/training/lr_find.py) picks it before training. Any-typed because OmegaConf has no Union[float, str]:
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
    # Targets (1 - eps) * label + eps / N, for int and soft (MixUp) labels; null: chosen by the recipe.
    label_smoothing: Optional[float] = None


@dataclass
class TrainerConfig:
    # The best epoch of each stage, and of the run (what model.keras holds), by this metric; val_accuracy breaks
    # ties by val_loss. val_accuracy, because val_loss can prefer a model that predicts every class alike.
    # task=multilabel monitors val_map (the default val_accuracy is read as val_map there).
    monitor: Monitor = Monitor.val_accuracy
    verbose: int = 1  # Keras progress bars: 0 silent, 1 bar, 2 one line per epoch
    save_model: bool = True
    precision: Precision = Precision.auto
    jit_compile: Optional[bool] = None  # null: XLA on GPU, off on CPU (Keras "auto")
    steps_per_execution: Optional[int] = None  # null: 1 on CPU, up to 32 on an accelerator
    # TensorFlow on CPU: a convolution's input gradient computed as a forward convolution, 2-12x faster than TensorFlow's
    # own kernel (tlkit/training/conv_grad.py, BENCHMARKS.md section 9). null: on when TensorFlow trains on CPU.
    fast_conv_grad: Optional[bool] = None
    feature_cache: FeatureCacheMode = FeatureCacheMode.auto
    feature_cache_views: Optional[int] = None  # null: 1 without augmentation, else min(stage epochs, 4)
    memory_budget_gb: float = 4.0  # the most the image cache and the feature cache may hold in memory
    deterministic: bool = False  # TensorFlow op determinism: the same seed gives the same metrics.json (slower)
    checkpoint: bool = True  # RUN_DIR/checkpoint.npz (atomic), what resume= continues from
    # A checkpoint after an epoch once this many seconds of training passed since the last one (0: every epoch):
    # short epochs are cheaper to redo than to save (BENCHMARKS.md section 5).
    checkpoint_every_s: float = 30.0
    strategy: StrategyName = StrategyName.auto  # tf.distribute strategy: see tlkit/training/distribute.py, README "Scaling out"
    # After the run, train the same recipe from random weights (RUN_DIR/scratch/) and log both: what transfer gave.
    compare_scratch: bool = False
    lr_scaling: LRScaling = LRScaling.none  # how the LR follows the number of replicas
    # After training: temperature scaling fitted on val (tlkit/training/calibration.py), folded into model.keras's softmax;
    # metrics.json "calibration" has ECE / NLL before and after, RUN_DIR/eval/reliability.png the diagram.
    calibrate: bool = True


@dataclass
class DoctorConfig:
    enabled: bool = True  # pre-flight checks before training (tlkit doctor runs them alone)
    strict: bool = False  # warnings count as errors
    silence: List[str] = field(default_factory=list)  # finding ids to silence, on purpose
    monitor: bool = True  # runtime monitor: stops a diverging stage and writes a diagnosis


@dataclass
class AutoRecipeConfig:
    """The default recipe (tlkit/recipe/auto.py): what the config leaves null is chosen from the data, and logged."""

    enabled: bool = True  # false: nulls take fixed values (tlkit.recipe.auto.FIXED), no probe
    keep: List[str] = field(default_factory=list)  # decisions not made: they take their fixed values instead
    finetune_steps: Optional[int] = None  # fine-tuning step budget; null: the rule (300 to 150 images, then x sqrt(n/150))


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
    """A published result this recipe reproduces (`tlkit reproduce recipe=NAME`, tlkit/cli/reproduce.py)."""

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
    # single_label | multilabel (data=csv: "cat;outdoor" labels or data.label_columns; tlkit/model/multilabel.py)
    task: Task = Task.single_label
    resume: Optional[str] = None  # a run directory to continue from its last completed epoch (same config)
    reference: Optional[ReferenceConfig] = None  # recipes that reproduce a published result (tlkit reproduce)
