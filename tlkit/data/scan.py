"""Finding images on disk and checking the data config, before TensorFlow starts.

Pure Python on purpose (no TensorFlow or Keras import): a wrong path or an empty class
folder should fail in a second, not after a 10-second TensorFlow start-up.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, List

from tlkit.errors import ConfigError, DataError

if TYPE_CHECKING:  # typing only: keep this module importable without side effects
    from tlkit.config.schema import AugmentConfig, DataConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DIGITS_NUM_CLASSES = 10
SOURCES = ("digits", "folder", "synthetic")
LAYOUT_HINT = "expected layout: <root>/<class_name>/<image>.jpg, one subfolder per class"


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_file(name: str) -> bool:
    return not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: str) -> List[str]:
    """Every image file below `folder` (nested folders included), sorted, hidden ones skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]  # prune hidden dirs in place
        found.extend(os.path.join(dirpath, f) for f in filenames if is_image_file(f))
    return sorted(found)


def scan_folder(root: str) -> Dict[str, List[str]]:
    """Class name (each non-hidden subfolder of `root`, sorted) -> its sorted image paths.

    Images in nested folders inside a class folder belong to that class. Class folders
    without images map to an empty list, so callers can report them.
    """
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise DataError(f"{root!r} is not a directory; {LAYOUT_HINT}")
    classes = sorted(
        entry.name
        for entry in os.scandir(root)
        if not _is_hidden(entry.name) and entry.is_dir(follow_symlinks=True)
    )
    return {name: _images_under(os.path.join(root, name)) for name in classes}


def source_name(cfg) -> str:
    """cfg.source as a plain string, whether it is a DataSource enum or a str."""
    source = getattr(cfg, "source", "digits")
    return str(getattr(source, "value", source))


# --------------------------------------------------------------------------- checks


def _check_int(key: str, value, minimum: int, allow_none: bool = False, hint: str = "") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if allow_none else "")
        raise ConfigError(key, value, allowed, hint)


def _check_fraction(key: str, value, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ConfigError(key, value, "a fraction strictly between 0 and 1 (e.g. 0.2)", hint)


def _check_directory(key: str, path) -> str:
    expanded = os.path.expanduser(str(path))
    if not os.path.exists(expanded):
        raise ConfigError(
            key, path, f"an existing directory; {os.path.abspath(expanded)!r} does not exist",
            hint=f"check the path (relative paths are relative to {os.getcwd()!r}); {LAYOUT_HINT}",
        )
    if not os.path.isdir(expanded):
        raise ConfigError(key, path, "a directory with one subfolder per class, not a file", LAYOUT_HINT)
    return expanded


def _check_classes(key: str, path: str) -> Dict[str, List[str]]:
    """Scan `path` and insist on >= 2 classes, none of them empty."""
    classes = scan_folder(path)
    with_images = [name for name, files in classes.items() if files]
    empty = [name for name, files in classes.items() if not files]
    if len(with_images) < 2:
        loose = [f for f in os.listdir(path) if is_image_file(f)]
        details = f"found {len(with_images)} class folder(s) with images: {with_images}"
        if empty:
            details += f"; empty class folders: {empty}"
        if loose:
            details += f"; {len(loose)} images lie directly in the folder, outside any class subfolder"
        raise DataError(
            f"{key}={path!r} needs at least 2 class folders with images ({details}). "
            f"{LAYOUT_HINT}; image extensions: {', '.join(IMAGE_EXTENSIONS)}"
        )
    if empty:
        raise DataError(
            f"{key}={path!r} has class folders without images: {empty} "
            f"(classes with images: {with_images}). Add images to them or remove the folders; "
            f"image extensions: {', '.join(IMAGE_EXTENSIONS)}"
        )
    return classes


def _check_same_classes(reference_key: str, reference: List[str], key: str, other: List[str]) -> None:
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"classes in {reference_key} but missing from {key}: {missing}")
        if extra:
            parts.append(f"classes in {key} but missing from {reference_key}: {extra}")
        raise DataError(
            f"{reference_key} and {key} must have the same class folders; " + "; ".join(parts)
            + ". Class folder names must match exactly (they are the class names)."
        )


def _check_folder_source(cfg) -> Dict[str, List[str]]:
    """Checks the folder form; returns the training class -> files mapping (path or train_dir)."""
    path, train_dir, val_dir = cfg.path, cfg.train_dir, cfg.val_dir
    split_form = "data.path=/images (split by data.val_split) or data.train_dir=/train data.val_dir=/val"
    if path is not None and (train_dir is not None or val_dir is not None):
        given = "data.train_dir" if train_dir is not None else "data.val_dir"
        raise ConfigError(
            "data.path", path, f"either data.path or data.train_dir + data.val_dir, not both ({given} is also set)",
            hint=f"set {given}=null to split data.path, or data.path=null to use the explicit folders",
        )
    if path is None and train_dir is None and val_dir is None:
        raise ConfigError(
            "data.path", None, "a folder with one subfolder per class when data.source=folder",
            hint=f"set {split_form}",
        )
    if path is not None:
        _check_fraction("data.val_split", cfg.val_split, hint="the fraction of data.path held out for validation")
        classes = _check_classes("data.path", _check_directory("data.path", path))
        too_small = [name for name, files in classes.items() if len(files) < 2]
        if too_small:
            raise DataError(
                f"data.path={path!r}: classes {too_small} have a single image; splitting into train and "
                f"validation needs at least 2 images per class. Add images or give data.train_dir/data.val_dir."
            )
    else:
        for key, value in (("data.train_dir", train_dir), ("data.val_dir", val_dir)):
            if value is None:
                raise ConfigError(key, None, "a folder with one subfolder per class (data.train_dir and "
                                  "data.val_dir go together)", hint=f"set {split_form}")
        classes = _check_classes("data.train_dir", _check_directory("data.train_dir", train_dir))
        val_classes = _check_classes("data.val_dir", _check_directory("data.val_dir", val_dir))
        _check_same_classes("data.train_dir", list(classes), "data.val_dir", list(val_classes))
    if cfg.test_dir is not None:
        test_classes = _check_classes("data.test_dir", _check_directory("data.test_dir", cfg.test_dir))
        reference_key = "data.path" if path is not None else "data.train_dir"
        _check_same_classes(reference_key, list(classes), "data.test_dir", list(test_classes))
    return classes


def check_data_config(cfg: "DataConfig") -> None:
    """Raise ConfigError / DataError if `cfg` cannot produce a data set; returns None when it can.

    Checks values, paths and class folders (the backbone's minimum image size is checked
    with the backbone, in tlkit.config.validate).
    """
    source = source_name(cfg)
    if source not in SOURCES:
        raise ConfigError("data.source", source, f"one of {list(SOURCES)}")
    _check_int("data.batch_size", cfg.batch_size, 1)
    _check_int("data.image_size", cfg.image_size, 1, allow_none=True,
               hint="null uses the backbone's default size")
    _check_int("data.max_images", cfg.max_images, 2, allow_none=True,
               hint="null uses every training image")

    if source == "folder":
        num_classes = len(_check_folder_source(cfg))
    elif source == "synthetic":
        _check_int("data.num_classes", cfg.num_classes, 2)
        _check_int("data.num_images", cfg.num_images, 2 * cfg.num_classes,
                   hint=f"at least 2 images per class (one train, one val) for {cfg.num_classes} classes")
        _check_fraction("data.val_split", cfg.val_split, hint="the fraction held out for validation")
        num_classes = cfg.num_classes
    else:  # digits
        _check_fraction("data.val_split", cfg.val_split, hint="the fraction held out for validation")
        num_classes = DIGITS_NUM_CLASSES

    if cfg.max_images is not None and cfg.max_images < num_classes:
        raise ConfigError(
            "data.max_images", cfg.max_images, f"null or at least the number of classes ({num_classes})",
            hint="a smaller cap would leave some classes without training images",
        )


def check_augment_config(cfg: "AugmentConfig") -> None:
    """Raise ConfigError for augmentation values outside their meaningful range."""
    crop_area, color = cfg.crop_area, cfg.color
    if isinstance(crop_area, bool) or not isinstance(crop_area, (int, float)) or not 0.0 < crop_area <= 1.0:
        raise ConfigError("augment.crop_area", crop_area,
                          "a fraction in (0, 1]: the smallest share of the image area a random crop keeps",
                          hint="1.0 turns random cropping off; 0.08 is Inception's (very strong) setting")
    if isinstance(color, bool) or not isinstance(color, (int, float)) or not 0.0 <= color <= 1.0:
        raise ConfigError("augment.color", color, "a strength in [0, 1] (0 turns colour jitter off)",
                          hint="0.2-0.4 is typical")
    if not isinstance(cfg.flip, bool):
        raise ConfigError("augment.flip", cfg.flip, "true or false")
