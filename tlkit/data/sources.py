"""Where the images come from: the digits, synthetic and folder sources, and how they are split.

Each source returns its class names and, per split, (items, labels): items are file paths
(folder) or uint8 [N, h, w, 3] arrays (digits, synthetic). tlkit.data.pipeline turns them
into tf.data pipelines; nothing here imports TensorFlow.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Tuple

import numpy as np

from tlkit.data.sampling import cap_per_class, stratified_split  # noqa: F401  (cap_per_class: imported from here too)
from tlkit.data.scan import IMAGE_EXTENSIONS, DataScan, scanned_folder

BAD_FILES_LISTED = 20  # bad files named in DataBundle.bad_files (and metrics.json); the count is always exact
data_log = logging.getLogger("tlkit.data")
SYNTHETIC_BASE_SIZE = 64  # synthetic images are drawn at this size, then resized like any other


# --------------------------------------------------------------------------- splitting (stratified_split, cap_per_class: tlkit.data.sampling)


def select_classes(class_names, splits, wanted):
    """data.classes: only these classes (in class_names order), labels renumbered 0..k-1; splits may hold None."""
    if wanted is None:
        return list(class_names), splits
    keep = [name for name in class_names if name in {str(w) for w in wanted}]
    new_label = {class_names.index(name): index for index, name in enumerate(keep)}
    chosen = []
    for split in splits:
        if split is None:
            chosen.append(None)
            continue
        items, labels = split
        rows = np.flatnonzero(np.isin(labels, list(new_label)))
        chosen.append((items[rows], np.array([new_label[int(label)] for label in labels[rows]], dtype=np.int32)))
    return keep, tuple(chosen)


# --------------------------------------------------------------------------- sources
# Each source returns, per split, (items, labels): items are either file paths (folder) or
# uint8 [N, h, w, 3] arrays (digits, synthetic); `_decode_and_resize` treats both.


def _digits(cfg, seed: int):
    from sklearn.datasets import load_digits  # ships inside scikit-learn: no download

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # 0..16 -> 0..255
    images = np.repeat(pixels[..., None], 3, axis=-1)  # grayscale -> RGB
    labels = digits.target.astype(np.int32)
    train, val = stratified_split(labels, cfg.val_split, seed)
    names = [str(i) for i in range(10)]
    return names, (images[train], labels[train]), (images[val], labels[val]), None


def synthetic_images(num_images: int, num_classes: int, seed: int, size: int = SYNTHETIC_BASE_SIZE):
    """uint8 RGB images whose class sets the stripe orientation and the tint.

    Orientation and tint vary per image and overlap between neighbouring classes, and
    every image has random frequency, phase, brightness and pixel noise: learnable by a
    small CNN in a few epochs, but no single pixel or mean colour gives the answer.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(num_images) % num_classes
    rng.shuffle(labels)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    class_angle = np.pi * np.arange(num_classes) / num_classes
    class_tint = rng.uniform(0.2, 1.0, size=(num_classes, 3))
    images = np.empty((num_images, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        angle = class_angle[label] + rng.normal(0.0, 0.25 * np.pi / num_classes)
        cycles = rng.uniform(2.5, 5.0)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * (x * np.cos(angle) + y * np.sin(angle)) + phase)
        tint = 0.6 * class_tint[label] + 0.4 * rng.uniform(0.2, 1.0, size=3)
        background = rng.uniform(0.0, 0.3)
        picture = background + (1.0 - background) * stripes[..., None] * tint
        picture = picture * rng.uniform(0.7, 1.0) * 255.0 + rng.normal(0.0, 20.0, size=picture.shape)
        images[i] = np.clip(picture, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int32)


def _synthetic(cfg, seed: int):
    images, labels = synthetic_images(cfg.num_images, cfg.num_classes, seed)
    train, val = stratified_split(labels, cfg.val_split, seed)
    names = [f"class_{i}" for i in range(cfg.num_classes)]
    return names, (images[train], labels[train]), (images[val], labels[val]), None


def _files_and_labels(classes: Dict[str, List[str]], class_names: List[str]):
    """(files, labels) arrays; a class of `class_names` missing from `classes` has no files there."""
    files = [path for name in class_names for path in classes.get(name, [])]
    labels = [index for index, name in enumerate(class_names) for _ in classes.get(name, [])]
    return np.array(files, dtype=str), np.array(labels, dtype=np.int32)


def _folder(cfg, seed: int, data_scan: DataScan | None = None):
    """Class names and splits from the folders, with the files that failed the pre-scan left out; `data_scan`: the
    pre-flight's scans of these folders (tlkit.data.scan.check_data_config), None to walk them here."""
    if cfg.path is not None:
        scans = [scanned_folder("data.path", cfg.path, data_scan)]
        classes = scans[0].classes
        names = sorted(classes)
        files, labels = _files_and_labels(classes, names)
        train, val = stratified_split(labels, cfg.val_split, seed)
        train_split, val_split = (files[train], labels[train]), (files[val], labels[val])
    else:
        scans = [scanned_folder("data.train_dir", cfg.train_dir, data_scan),
                 scanned_folder("data.val_dir", cfg.val_dir, data_scan)]
        names = sorted(scans[0].classes)
        train_split = _files_and_labels(scans[0].classes, names)
        val_split = _files_and_labels(scans[1].classes, names)
    test_split = None
    if cfg.test_dir is not None:
        scans.append(scanned_folder("data.test_dir", cfg.test_dir, data_scan))
        test_split = _files_and_labels(scans[-1].classes, names)
    return names, train_split, val_split, test_split, scans


def _table(cfg, seed: int, data_scan: DataScan | None = None, multilabel: bool = False):
    """data=csv: class names and splits from the label table (tlkit.data.table), as `_folder` returns them;
    `data_scan`: the pre-flight's scan of the table, None to read it here. `multilabel`: labels are multi-hot
    [N, classes] (tlkit.data.multilabel_table)."""
    from tlkit.data.scan import scan_table

    scans = dict(data_scan.folders) if data_scan is not None else {}
    if not scans or any(scan.root != str(cfg.path) for scan in scans.values()):
        scans = scan_table(cfg, multilabel)
    if multilabel:
        from tlkit.data.multilabel_table import table_splits

        return (*table_splits(cfg, scans, seed), list(scans.values()))
    if "data.path" in scans:  # no split column: split by data.val_split, as the folder source splits data.path
        names = sorted(scans["data.path"].classes)
        files, labels = _files_and_labels(scans["data.path"].classes, names)
        train, val = stratified_split(labels, cfg.val_split, seed)
        return names, (files[train], labels[train]), (files[val], labels[val]), None, list(scans.values())
    names = sorted(scans["data.path[train]"].classes)
    train, val = (_files_and_labels(scans[f"data.path[{s}]"].classes, names) for s in ("train", "val"))
    test = _files_and_labels(scans["data.path[test]"].classes, names) if "data.path[test]" in scans else None
    return names, train, val, test, list(scans.values())


def _report_prescan(scans, policy: str) -> Tuple[dict, dict]:
    """Log what the pre-scan found (logger tlkit.data: console and train.log); (bad_files, prescan) for metrics.json."""
    from tlkit.data.prescan import ScanReport

    report, ignored, splits = ScanReport(), {}, {}
    for scan in scans:
        report = report.merge(scan.report)
        counts = {name: len(files) for name, files in scan.classes.items()}
        formats = ", ".join(f"{name} {count}" for name, count in scan.report.formats().items())
        data_log.info(
            "pre-scan %s=%s: %d usable image files (%s) in %d classes (%s); %d bad; %s",
            scan.key, scan.root, sum(counts.values()), formats or "none", len(counts),
            ", ".join(f"{name} {count}" for name, count in counts.items()), len(scan.report.bad),
            f"{scan.report.checked} decoded in {scan.report.seconds:.1f}s, the rest from the cache"
            if scan.report.checked else "all from the cache",
        )
        for ext, count in scan.ignored.items():
            ignored[ext] = ignored.get(ext, 0) + count
        splits[scan.key] = {"root": scan.root, "class_counts": counts, **scan.report.to_dict(limit=0)}
        for key in ("bad_files", "warnings", "checked", "seconds"):  # the last two differ run to run: logged above
            splits[scan.key].pop(key)
    if ignored:
        data_log.info("pre-scan: ignored %d file(s) without an image extension (%s); image extensions: %s",
                      sum(ignored.values()), ", ".join(f"{ext} {n}" for ext, n in sorted(ignored.items())),
                      ", ".join(IMAGE_EXTENSIONS))
    for warning in report.warnings:
        data_log.warning("pre-scan: %s", warning)
    bad = report.bad
    if bad:
        data_log.warning("pre-scan: %d file(s) cannot be used as images and are left out (data.on_bad_file=%s):\n%s",
                         len(bad), policy, report.describe_bad(limit=10))
    bad_files = {"count": len(bad), "policy": policy,
                 "first": [{"path": item.path, "reason": item.reason} for item in bad[:BAD_FILES_LISTED]]}
    summary = {"splits": splits, "ignored": ignored, "warnings": list(report.warnings[:BAD_FILES_LISTED]),
               "pillow_decoded": report.pillow_decoded()}
    return bad_files, summary
