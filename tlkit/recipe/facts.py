"""What the default recipe (tlkit.recipe.auto) looks at, gathered without TensorFlow.

    DatasetFacts: training images (after the split and data.max_images), classes, the smallest
    class, the median side of the source images, and what the weights are (ImageNet, a file,
    random) with the input size they were trained at, when it is known.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

from tlkit.backbones.hub import PRESET_WEIGHTS
from tlkit.backbones.spec import BackboneSpec
from tlkit.config.schema import TrainConfig
from tlkit.data.sources import SYNTHETIC_BASE_SIZE  # no TensorFlow there

SIZE_SAMPLE = 2000  # files whose size (from the cached pre-scan) gives the median image side
DIGITS_SIDE = 8
UNKNOWN_SIDE = 224  # a data set that does not say its image size (tfds): taken as photographs


@dataclass(frozen=True)
class DatasetFacts:
    num_train: int
    num_classes: int
    image_side: int  # median shorter side of the source images, px
    source: str = "folder"
    weights: str = "imagenet"  # imagenet | preset (a KerasHub preset's) | file | tlkit | random
    pretrained_size: int | None = None  # the input size the weights were trained at; None: unknown
    smallest_class: int | None = None  # training images of the smallest class
    backbone_params: int | None = None  # parameters of the backbone (its spec's; None: unknown)


TLKIT_WEIGHTS = "tlkit:"  # backbone.weights=tlkit:TASK: pretrained by tlkit.model.pretrain on an offline source task


def weights_kind(cfg: TrainConfig) -> str:
    weights = cfg.backbone.weights
    if weights is None:
        return "random"
    if weights == PRESET_WEIGHTS:
        return "preset"  # a KerasHub preset's own weights (tlkit.backbones.hub), pretrained at its size
    return "imagenet" if weights == "imagenet" else "tlkit" if weights.startswith(TLKIT_WEIGHTS) else "file"


def pretrained_size(cfg: TrainConfig, spec: BackboneSpec) -> int | None:
    """backbone.pretrained_size, else ImageNet's size for imagenet weights (or Keras's own ImageNet file), else
    what a weights file records (tlkit.backbones.weights.pretrained_size_of), else None (unknown)."""
    if cfg.backbone.pretrained_size is not None:
        return int(cfg.backbone.pretrained_size)
    kind = weights_kind(cfg)
    if kind in ("imagenet", "preset"):
        return spec.default_size
    if kind == "random":
        return None
    if kind == "tlkit":
        from tlkit.data.tasks import SIZE

        return SIZE
    from tlkit.backbones.weights import pretrained_size_of

    recorded = pretrained_size_of(cfg.backbone.weights)
    if recorded is not None:
        return recorded
    if os.path.basename(cfg.backbone.weights) == spec.weights_file(spec.default_size):
        return spec.default_size  # Keras's own ImageNet no-top file, passed as a path
    return None


def describe_dataset(cfg: TrainConfig, pretrained: int | None = None, data_scan=None) -> DatasetFacts:
    """Counts the training images as the pipeline will (the split and data.max_images applied).

    cfg: the run's TrainConfig; pretrained: the weights' pretrained input size (pretrained_size), None if unknown;
    data_scan: the pre-flight's tlkit.data.scan.DataScan of cfg.data, None to walk an image folder here.
    """
    from tlkit.data.scan import DIGITS_NUM_CLASSES, scanned_folder, source_name

    data = cfg.data
    source = source_name(data)
    wanted = None if data.classes is None else {str(name) for name in data.classes}
    if source == "digits":
        from sklearn.datasets import load_digits  # ships inside scikit-learn

        counts = [_train_count(int((load_digits().target == c).sum()), data.val_split)
                  for c in range(DIGITS_NUM_CLASSES) if wanted is None or str(c) in wanted]
        side = DIGITS_SIDE
    elif source == "synthetic":
        counts = [_train_count(data.num_images // data.num_classes + (c < data.num_images % data.num_classes),
                               data.val_split) for c in range(data.num_classes)  # labels: arange(n) % classes
                  if wanted is None or f"class_{c}" in wanted]
        side = SYNTHETIC_BASE_SIZE
    elif source == "tfds":
        from tlkit.data.tfds import tfds_facts

        num_train, num_classes, side = tfds_facts(data)
        counts, side = [num_train // max(num_classes, 1)] * num_classes, side or UNKNOWN_SIDE
    elif source == "csv":  # the table's training rows (tlkit.data.table), split by data.val_split or by its column
        from tlkit.data.scan import scan_table

        scans = data_scan.folders if data_scan is not None and data_scan.folders else scan_table(data)
        scan = scans.get("data.path") or scans["data.path[train]"]
        sizes = [len(files) for name, files in scan.classes.items() if wanted is None or name in wanted]
        counts = [_train_count(n, data.val_split) for n in sizes] if "data.path" in scans else sizes
        side = _median_side(scan)
    else:
        key = "data.path" if data.path is not None else "data.train_dir"
        scan = scanned_folder(key, data.path if data.path is not None else data.train_dir, data_scan)
        sizes = [len(files) for name, files in scan.classes.items() if wanted is None or name in wanted]
        counts = [_train_count(n, data.val_split) for n in sizes] if data.path is not None else sizes
        side = _median_side(scan)
    num_train = sum(counts)
    if data.max_images is not None:
        num_train = min(num_train, data.max_images)
    return DatasetFacts(num_train=num_train, num_classes=len(counts), image_side=side, source=source,
                        weights=weights_kind(cfg), pretrained_size=pretrained,
                        smallest_class=min(counts) if counts else None)


def _train_count(n: int, val_split: float) -> int:
    """Training images of a class of n after tlkit.data.sources.stratified_split."""
    num_val = int(round(val_split * n))
    if n >= 2:
        num_val = min(max(num_val, 1), n - 1)
    return n - num_val


def _median_side(scan) -> int:
    files = [path for paths in scan.classes.values() for path in paths]
    step = max(1, len(files) // SIZE_SAMPLE)
    sides = [min(scan.report.files[p]["size"]) for p in files[::step]
             if scan.report.files.get(p, {}).get("size")]
    return int(statistics.median(sides)) if sides else UNKNOWN_SIDE
