"""Pre-flight checks on the loaded data: one sample batch, the class counts, the split
sizes and (folder source) the files of each split.

Cheap by design: one un-augmented batch is read, and files are hashed only when their
size matches a file in another split, so a large folder costs a `stat` per file.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from tlkit.backbones.spec import BackboneSpec
from tlkit.config.schema import ClassWeight, Preprocess, TrainConfig
from tlkit.config.validate import parse_train_target, resolved_image_size
from tlkit.data.pipeline import DataBundle
from tlkit.data.scan import source_name
from tlkit.doctor.findings import Finding, Severity

if TYPE_CHECKING:
    from tlkit.training.stages import StagePlan

RAW_RANGE_FIX = ("feed raw RGB 0-255 images: remove Rescaling(1/255), preprocess_input or normalisation from your "
                 "data pipeline; tlkit preprocesses inside the model (backbone.preprocess=auto)")

# Images per class. Below 10 a single odd image moves the decision boundary and one validation
# image moves the accuracy a lot: said (info), because nothing in the config cures it. Freezing
# the backbone is not the answer the benchmark gives (BENCHMARKS.md section 7).
FEW_IMAGES_PER_CLASS = 10
# Class imbalance: at 3:1 an unweighted loss already lets the largest class dominate the
# decision for borderline images, and accuracy hides it (a 75/25 split is 75% by always
# answering the majority). Balanced class weights cost nothing when classes are even.
IMBALANCE_RATIO = 3.0
# Validation: with fewer than 50 images one image moves val accuracy by >= 2 points, and
# with fewer than 5 per class a class's accuracy moves in steps of >= 20 points; early
# stopping and each stage's best-epoch restore then follow noise.
MIN_VAL_IMAGES = 50
MIN_VAL_PER_CLASS = 5
# Per-image pixel standard deviation below this: a flat image (blank, all black, failed decode).
FLAT_IMAGE_STD = 1e-3
_HASH_CHUNK = 1 << 20


def diagnose_data(cfg: TrainConfig, spec: BackboneSpec, data: DataBundle, probe=None) -> list[Finding]:
    """Findings about the data set as loaded; `probe` (tlkit.recipe.probe.ProbeResult, when the recipe ran it) tells
    whether mirrored images keep their class."""
    images, labels = data.sample_batch()
    images, labels = np.asarray(images), np.asarray(labels)
    findings = []
    findings += _input_shape(images, resolved_image_size(cfg, spec))
    findings += _input_range(images, spec.name, _preprocess_mode(cfg, spec))
    if data.multilabel:  # multi-hot labels: their own checks; class sizes are positives per class there
        from tlkit.doctor.multilabel_checks import diagnose_multilabel

        findings += diagnose_multilabel(cfg, data)
    else:
        findings += _labels(labels, data)
    findings += _batch_vs_train_set(cfg, data)
    findings += _images_per_class(data)
    findings += _flip_keeps_labels(cfg, probe)
    findings += [] if data.multilabel else _class_imbalance(cfg, data)
    findings += _val_size(cfg, data)
    findings += _leakage(data)
    return findings


# --------------------------------------------------------------------------- the sample batch


def _preprocess_mode(cfg: TrainConfig, spec: BackboneSpec) -> str:
    chosen = Preprocess(cfg.backbone.preprocess)
    return spec.preprocess if chosen == Preprocess.auto else chosen.value


def _input_shape(images: np.ndarray, size: int) -> list[Finding]:
    expected = (size, size, 3)
    if images.ndim == 4 and tuple(images.shape[1:]) == expected:
        return []
    return [Finding(
        "input-shape", Severity.error,
        f"a training batch has shape {tuple(images.shape)}; the model takes [batch, {size}, {size}, 3] RGB images "
        f"(data.image_size={size}).",
        "feed RGB images resized to data.image_size (grayscale replicated to 3 channels)",
    )]


def _input_range(images: np.ndarray, backbone: str, mode: str) -> list[Finding]:
    if images.size == 0:
        return []
    values = images.astype(np.float64)
    if not np.all(np.isfinite(values)):
        bad = int(np.sum(~np.isfinite(values)))
        return [Finding("input-range", Severity.error,
                        f"the sample batch holds {bad} NaN or infinite pixel values: every loss would be NaN.",
                        RAW_RANGE_FIX)]
    low, high = float(values.min()), float(values.max())

    def wrong_range(looks: str, effect: str) -> list[Finding]:
        return [Finding(
            "input-range", Severity.error,
            f"the sample batch spans {low:.3g}..{high:.3g}: {looks}. tlkit models take RGB 0..255 and apply "
            f"{backbone}'s '{mode}' preprocessing themselves, so the backbone sees inputs {effect}, a "
            f"range its weights never saw; nothing crashes, accuracy silently drops (case 3: rescale=1/255 on "
            f"ResNet50).",
            RAW_RANGE_FIX,
        )]

    if low < 0:
        return wrong_range("the images look already normalised (-1..1, mean/std or preprocess_input)",
                           "preprocessed twice")
    if 0 < high <= 1.0:
        return wrong_range("the images look already scaled to 0..1 (rescale=1./255)", "255 times too small")
    if high > 255.5:
        return wrong_range("values above 255 (16-bit images, or scaled by 255 twice)", "far above 255")
    per_image_std = values.reshape(len(values), -1).std(axis=1)
    flat = int(np.sum(per_image_std < FLAT_IMAGE_STD))
    if flat:
        return [Finding(
            "constant-images", Severity.warning,
            f"{flat} of {len(values)} sample images are a single flat value (pixel std < {FLAT_IMAGE_STD:g}; "
            f"batch range {low:.3g}..{high:.3g}): blank or failed images carry no information and, if common, "
            f"the backbone's features no longer differ between images.",
            "remove blank images from the data (or check how they are decoded)",
        )]
    return []


def _labels(labels: np.ndarray, data: DataBundle) -> list[Finding]:
    num_classes = len(data.class_names)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        return [Finding(
            "label-format", Severity.error,
            f"sample labels have shape {tuple(labels.shape)} and dtype {labels.dtype}; tlkit trains with sparse "
            f"integer labels [batch] in 0..{num_classes - 1} (one-hot labels belong to a different loss).",
            "yield integer class indices, not one-hot vectors",
        )]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        return [Finding(
            "label-format", Severity.error,
            f"sample labels span {labels.min()}..{labels.max()} but there are {num_classes} classes "
            f"({data.class_names}): labels must be 0..{num_classes - 1}.",
            "map labels to class indices 0..N-1 in class_names order",
        )]
    non_empty = [name for name, count in zip(data.class_names, data.train_counts) if count > 0]
    if len(np.unique(labels)) <= 1 and len(non_empty) <= 1:
        only = non_empty[0] if non_empty else "none"
        return [Finding(
            "single-label", Severity.error,
            f"every training image has the same label (class {only!r}; train_counts={data.train_counts}): the model "
            f"learns to always answer it and accuracy means nothing.",
            "give every class training images (one subfolder of images per class)",
        )]
    return []


# --------------------------------------------------------------------------- sizes and counts


def _batch_vs_train_set(cfg: TrainConfig, data: DataBundle) -> list[Finding]:
    batch = cfg.data.batch_size
    if batch <= data.num_train:
        return []
    # tlkit.data.pipeline keeps the remainder when there are fewer images than one batch:
    # training runs, but each epoch is a single step over all images.
    suggested = max(1, min(32, data.num_train // 4))
    return [Finding(
        "batch-larger-than-train-set", Severity.warning,
        f"data.batch_size={batch} but there are only {data.num_train} training images: the pipeline uses one "
        f"smaller batch of {data.num_train}, so every epoch is a single optimizer step and "
        f"{sum(s.epochs for s in cfg.schedule.stages)} epochs are as many steps.",
        f"data.batch_size={suggested}",
    )]


def _flip_keeps_labels(cfg, probe) -> list[Finding]:
    """augment.flip=true although the probe saw mirrored validation images lose their class."""
    if probe is None or not cfg.augment.flip:
        return []
    from tlkit.recipe.measured import decide_flip

    safe, reason = decide_flip(probe.to_dict())
    if safe:
        return []
    return [Finding("flip-changes-label", Severity.warning,
                    f"augment.flip=true, but {reason}: flipping trains on images whose label is no longer true "
                    "(text, digits, classes that mirror each other).", "augment.flip=false (or augment.flip=null: "
                    "the recipe's probe decides)")]


def _images_per_class(data) -> list[Finding]:
    """Few images per class: said, not warned. Freezing the backbone is no cure (scripts/bench_recipes.py: at 10 and
    30 images per class, fine-tuning every block with BatchNorm frozen beats a linear probe on frozen features)."""
    counts = {name: count for name, count in zip(data.class_names, data.train_counts) if count > 0}
    if len(counts) < 2:
        return []
    smallest = min(counts, key=counts.get)
    fewest = counts[smallest]
    if fewest >= FEW_IMAGES_PER_CLASS:
        return []
    few = sorted(name for name, c in counts.items() if c < FEW_IMAGES_PER_CLASS)
    return [Finding(
        "too-few-images-per-class", Severity.info,
        f"class {smallest!r} has {fewest} training images (classes under {FEW_IMAGES_PER_CLASS}: {few}): the model "
        f"sees few examples of them and the validation numbers are noisy. More images help most; the default "
        f"recipe already sizes the batch and the schedule for a small data set.",
        "more training images per class",
    )]


def _class_imbalance(cfg, data) -> list[Finding]:
    counts = {name: count for name, count in zip(data.class_names, data.train_counts) if count > 0}
    if len(counts) < 2 or ClassWeight(cfg.data.class_weight) != ClassWeight.none:
        return []
    largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
    ratio = counts[largest] / counts[smallest]
    if ratio < IMBALANCE_RATIO:
        return []
    majority = counts[largest] / sum(counts.values())
    return [Finding(
        "class-imbalance", Severity.warning,
        f"class {largest!r} has {counts[largest]} training images and {smallest!r} {counts[smallest]} "
        f"({ratio:.1f}:1) with data.class_weight=none: the loss favours the large classes, and always answering "
        f"{largest!r} already scores {majority:.0%} on training-like data.",
        "data.class_weight=auto",
    )]


def _val_size(cfg, data) -> list[Finding]:
    num_classes = max(len(data.class_names), 1)
    per_class = data.num_val / num_classes
    if data.num_val >= MIN_VAL_IMAGES and per_class >= MIN_VAL_PER_CLASS:
        return []
    if data.num_val == 0:
        return [Finding("val-too-small", Severity.error,
                        "there are no validation images: early stopping and best-epoch restore have nothing to "
                        "measure.", _val_fix(cfg, data))]
    return [Finding(
        "val-too-small", Severity.warning,
        f"{data.num_val} validation images for {num_classes} classes ({per_class:.1f} per class): one image is "
        f"{100 / data.num_val:.1f} points of val accuracy, so early stopping and each stage's best-epoch restore "
        f"follow noise (wanted: >= {MIN_VAL_IMAGES} images and >= {MIN_VAL_PER_CLASS} per class).",
        _val_fix(cfg, data),
    )]


def _val_fix(cfg, data) -> str:
    if cfg.data.val_dir is not None:
        return f"add images to data.val_dir (>= {MIN_VAL_PER_CLASS} per class, >= {MIN_VAL_IMAGES} in all)"
    total = data.num_train + data.num_val
    wanted = max(MIN_VAL_IMAGES, MIN_VAL_PER_CLASS * len(data.class_names))
    if source_name(cfg.data) == "synthetic":
        return f"data.num_images={math.ceil(wanted / cfg.data.val_split)}"
    fraction = math.ceil(100 * wanted / total) / 100 if total else 1.0
    if cfg.data.val_split < fraction <= 0.3:
        return f"data.val_split={fraction:g}"
    return "collect more images (a validation split over 30% would starve training)"


# --------------------------------------------------------------------------- leakage


def _sha1(path: str) -> str | None:
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def duplicates_across_splits(splits: dict[str, list[str]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(split a, split b) -> [(file in a, identical file in b)], byte-identical content only
    (re-encoded or resized copies are not found). Files are hashed only when a file of the
    same size exists in another split."""
    by_size: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for split, files in splits.items():
        for path in files:
            try:
                by_size[os.path.getsize(path)].append((split, path))
            except OSError:
                continue
    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for group in by_size.values():
        if len({split for split, _ in group}) < 2:
            continue
        for split, path in group:
            digest = _sha1(path)
            if digest is not None:
                by_hash[digest].append((split, path))
    order = list(splits)
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for group in by_hash.values():
        first_in = {}
        for split, path in group:
            first_in.setdefault(split, path)
        present = sorted(first_in, key=order.index)
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                pairs[(a, b)].append((first_in[a], first_in[b]))
    return dict(pairs)


def _leakage(data: DataBundle) -> list[Finding]:
    splits = {name: files for name, files in
              (("train", data.train_files), ("val", data.val_files), ("test", data.test_files)) if files}
    if len(splits) < 2:
        return []  # in-memory sources (digits, synthetic) carry no files
    pairs = duplicates_across_splits(splits)
    if not pairs:
        return []
    parts = []
    for (a, b), found in pairs.items():
        same_path = sum(os.path.abspath(x) == os.path.abspath(y) for x, y in found)
        example = ", ".join(f"{y} = {x}" for x, y in found[:3])
        parts.append(f"{len(found)} {b} image(s) identical to {a} images"
                     + (f" ({same_path} are the very same file: is the {b} folder the {a} folder?)"
                        if same_path else "")
                     + f", e.g. {example}")
    return [Finding(
        "train-val-leakage", Severity.error,
        "the same image appears in two splits (sha1 of the file bytes): " + "; ".join(parts) + ". Validation then "
        "rewards memorising, so early stopping, best-epoch restore and the reported accuracy are all inflated.",
        "remove the duplicates from data.val_dir / data.test_dir (or deduplicate data.path before it is split)",
    )]
