"""Finding images on disk and checking the data config, before TensorFlow starts.

Pure Python on purpose (no TensorFlow or Keras import): a wrong path or an empty class
folder should fail in a second, not after a 10-second TensorFlow start-up. The folder
source also pre-scans every image file here (tlkit.data.prescan: cached, parallel, Pillow):
files that do not decode are dropped and reported (data.on_bad_file=skip) or stop the run
(data.on_bad_file=error), before TensorFlow starts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from tlkit.config.validate import check_augment_config  # noqa: F401  (a schema-level check; re-exported here)
from tlkit.data.table import refuse_table_keys
from tlkit.errors import ConfigError, DataError

if TYPE_CHECKING:  # typing only: keep this module importable without side effects
    from tlkit.config.schema import DataConfig
    from tlkit.data.prescan import ScanReport

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DIGITS_NUM_CLASSES = 10
SOURCES = ("digits", "folder", "synthetic", "tfds", "csv")
ON_BAD_FILE = ("skip", "error")  # data.on_bad_file: files that fail the pre-scan are skipped (reported) or stop the run
LAYOUT_HINT = "expected layout: <root>/<class_name>/<image>.jpg, one subfolder per class"


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_file(name: str) -> bool:
    return not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: str, problems: Optional["FolderProblems"] = None) -> List[str]:
    """Every image file below `folder` (nested folders included), sorted, hidden ones skipped.

    Directory symlinks are followed (class folders are often links into a dataset), but each
    real directory is walked once: a symlink loop is cut (and recorded in `problems`)
    instead of recursing until the OS gives up, which would list every file ~40 times.
    Folders that cannot be listed are recorded too, never silently skipped.
    """
    problems = problems if problems is not None else FolderProblems()
    found, seen = [], set()

    def unlistable(error: OSError) -> None:
        problems.errors.append((error.filename or folder, f"cannot list folder: {error.strerror or error}"))

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=unlistable):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            problems.warnings.append(f"{dirpath}: skipped, a symlink back to {real} (already scanned)")
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]  # prune hidden dirs in place
        for name in filenames:
            if is_image_file(name):
                found.append(os.path.join(dirpath, name))
            elif not _is_hidden(name):
                ext = os.path.splitext(name)[1].lower() or "(no extension)"
                problems.ignored[ext] = problems.ignored.get(ext, 0) + 1
    return sorted(found)


@dataclass
class FolderProblems:
    """What a folder walk met besides images: unlistable folders, cut symlink loops, other files."""

    errors: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason): data that could not be read
    warnings: List[str] = field(default_factory=list)
    ignored: Dict[str, int] = field(default_factory=dict)  # extension -> files without an image extension


def _is_dir(entry: os.DirEntry, problems: "FolderProblems") -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError as error:  # e.g. a symlink to itself: ELOOP
        problems.warnings.append(f"{entry.path}: skipped ({error.strerror or error})")
        return False


def scan_folder(root: str, problems: Optional[FolderProblems] = None) -> Dict[str, List[str]]:
    """Class name (each non-hidden subfolder of `root`, sorted) -> its sorted image paths.

    Images in nested folders inside a class folder belong to that class. Class folders
    without images map to an empty list, so callers can report them. Pass `problems` to
    collect what else the walk met (see FolderProblems).
    """
    problems = problems if problems is not None else FolderProblems()
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise DataError(f"{root!r} is not a directory; {LAYOUT_HINT}")
    try:
        entries = list(os.scandir(root))
    except OSError as error:
        raise DataError(f"cannot list {root!r}: {error.strerror or error}; {LAYOUT_HINT}") from error
    classes = sorted(entry.name for entry in entries if not _is_hidden(entry.name) and _is_dir(entry, problems))
    return {name: _images_under(os.path.join(root, name), problems) for name in classes}


# --------------------------------------------------------------------------- pre-scan of the files


@dataclass
class FolderScan:
    """One folder (data.path, train_dir, val_dir or test_dir) after the walk and the pre-scan."""

    key: str
    root: str
    found: Dict[str, List[str]]  # class -> every file with an image extension
    classes: Dict[str, List[str]]  # class -> the files that passed the pre-scan
    report: "ScanReport"
    ignored: Dict[str, int]


@dataclass
class DataScan:
    """What check_data_config found, handed on so that a run walks its image folders once: to the default recipe
    (tlkit.recipe.facts.describe_dataset) and to the loader (tlkit.data.load_data).

    folders: for the folder source, "data.path" / "data.train_dir" / "data.val_dir" / "data.test_dir" -> that
    folder's FolderScan (walked and pre-scanned); for data=csv, the table's splits in the same form (scan_table);
    empty for the other sources.
    """

    folders: Dict[str, FolderScan] = field(default_factory=dict)

    def folder(self, key: str, root) -> Optional[FolderScan]:
        """The scan of `key` when it was made of the folder `root` (the same path, ~ expanded), else None."""
        scan = self.folders.get(key)
        if scan is None or os.path.expanduser(str(scan.root)) != os.path.expanduser(str(root)):
            return None
        return scan


def scanned_folder(key: str, root, data_scan: Optional[DataScan] = None) -> FolderScan:
    """`data_scan`'s scan of folder `root` under `key` (its root as given), else a fresh walk and pre-scan."""
    from dataclasses import replace

    scan = data_scan.folder(key, root) if data_scan is not None else None
    return replace(scan, root=str(root)) if scan is not None else scan_classes(key, root)


def on_bad_file_policy(cfg) -> str:
    value = getattr(cfg, "on_bad_file", "skip")
    value = str(getattr(value, "value", value))
    if value not in ON_BAD_FILE:
        raise ConfigError("data.on_bad_file", value, " or ".join(ON_BAD_FILE),
                          hint="skip: train on the files that decode and report the others; error: stop")
    return value


def scan_classes(key: str, root: str) -> FolderScan:
    """Walk `root` and pre-scan every image file (tlkit.data.prescan: cached, parallel, no TensorFlow)."""
    from tlkit.data.prescan import BadFile, prescan

    problems = FolderProblems()
    found = scan_folder(root, problems)
    report = prescan([path for files in found.values() for path in files], root=os.path.expanduser(str(root)))
    report.warnings.extend(problems.warnings)
    report.folder_errors.extend(BadFile(path, reason) for path, reason in problems.errors)
    classes = {name: [path for path in files if report.is_good(path)] for name, files in found.items()}
    return FolderScan(key, str(root), found, classes, report, dict(problems.ignored))


def source_name(cfg) -> str:
    """cfg.source as a plain string, whether it is a DataSource enum or a str."""
    source = getattr(cfg, "source", "digits")
    return str(getattr(source, "value", source))


def has_test_split(cfg, task=None) -> bool:
    """Whether the data config (a DataConfig) gives a test split: data.test_dir (folders), data.splits.test (tfds),
    or test rows under data.split_column (data=csv: the table is read and checked)."""
    source = source_name(cfg)
    if source == "csv":
        return cfg.split_column is not None and "data.path[test]" in scan_table(cfg, is_multilabel(task))
    if source == "tfds":
        return cfg.splits.test is not None
    return cfg.test_dir is not None


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


def _check_classes(key: str, path: str, on_bad_file: str = "skip") -> FolderScan:
    """Scan and pre-scan `path`; insist on >= 2 classes, none of them empty; apply data.on_bad_file; the scan."""
    scan = scan_classes(key, path)
    bad = scan.report.bad
    if bad and on_bad_file == "error":
        raise DataError(
            f"{key}={path!r}: {len(bad)} of {len(scan.report.files)} image files cannot be used "
            f"(data.on_bad_file=error):\n{scan.report.describe_bad()}\n"
            f"Fix or remove them, or set data.on_bad_file=skip to train on the others."
        )
    classes = scan.classes
    with_images = [name for name, files in classes.items() if files]
    empty = [name for name, files in classes.items() if not files and not scan.found[name]]
    all_bad = [name for name, files in classes.items() if not files and scan.found[name]]

    def unusable_details() -> str:
        first = [str(item) for item in bad if any(item.path.startswith(os.path.join(path, n, "")) for n in all_bad)]
        return (f"class folders whose image files all failed the pre-scan: {all_bad} "
                f"(e.g. {first[0] if first else 'see the log'})")

    if len(with_images) < 2:
        loose = [f for f in os.listdir(path) if is_image_file(f)]
        details = f"found {len(with_images)} class folder(s) with images: {with_images}"
        if empty:
            details += f"; empty class folders: {[os.path.join(path, name) for name in empty]}"
        if all_bad:
            details += "; " + unusable_details()
        if loose:
            details += f"; {len(loose)} images lie directly in the folder, outside any class subfolder"
        raise DataError(
            f"{key}={path!r} needs at least 2 class folders with images ({details}). "
            f"{LAYOUT_HINT}; image extensions: {', '.join(IMAGE_EXTENSIONS)}"
        )
    if empty:
        unlistable = "".join(f"; {item}" for item in scan.report.folder_errors)
        raise DataError(
            f"{key}={path!r} has class folders without images: {empty} "
            f"({', '.join(os.path.join(path, name) for name in empty)}; classes with images: {with_images}"
            f"{unlistable}). "
            f"Add images to them or remove the folders; image extensions: {', '.join(IMAGE_EXTENSIONS)}"
        )
    if all_bad:
        raise DataError(
            f"{key}={path!r} has {unusable_details()}; classes with usable images: {with_images}. "
            f"Fix the files or remove the folders."
        )
    return scan


def _check_same_classes(reference_key: str, reference: List[str], key: str, other: List[str],
                        reference_path: Optional[str] = None, path: Optional[str] = None) -> None:
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"classes in {reference_key} but missing from {key}: {missing}")
        if extra:
            parts.append(f"classes in {key} but missing from {reference_key}: {extra}")
        where = f" ({reference_key}={reference_path!r}, {key}={path!r})" if reference_path and path else ""
        raise DataError(
            f"{reference_key} and {key} must have the same class folders{where}; " + "; ".join(parts)
            + ". Class folder names must match exactly (they are the class names)."
        )


def _check_folder_source(cfg) -> Dict[str, FolderScan]:
    """Checks the folder form; returns each folder's scan by key (data.path or data.train_dir first)."""
    path, train_dir, val_dir = cfg.path, cfg.train_dir, cfg.val_dir
    policy = on_bad_file_policy(cfg)
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
        scans = {"data.path": _check_classes("data.path", _check_directory("data.path", path), policy)}
        classes = scans["data.path"].classes
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
        scans = {key: _check_classes(key, _check_directory(key, value), policy)
                 for key, value in (("data.train_dir", train_dir), ("data.val_dir", val_dir))}
        classes = scans["data.train_dir"].classes
        _check_same_classes("data.train_dir", list(classes), "data.val_dir", list(scans["data.val_dir"].classes),
                            train_dir, val_dir)
    if cfg.test_dir is not None:
        scans["data.test_dir"] = _check_classes("data.test_dir", _check_directory("data.test_dir", cfg.test_dir), policy)
        test_classes = scans["data.test_dir"].classes
        reference_key = "data.path" if path is not None else "data.train_dir"
        _check_same_classes(reference_key, list(classes), "data.test_dir", list(test_classes),
                            path if path is not None else train_dir, cfg.test_dir)
    return scans


def scan_table(cfg, multilabel: bool = False) -> Dict[str, FolderScan]:
    """data=csv: the table's splits (tlkit.data.table: rows checked, images pre-scanned) as folder scans, by key:
    data.path (split by data.val_split), or data.path[train], data.path[val] (and data.path[test]). `multilabel`
    (task=multilabel): keyed by label set, not class (tlkit.data.multilabel_table)."""
    import tlkit.data.multilabel_table as multilabel_table
    from tlkit.data.table import check_table

    _check_fraction("data.val_split", cfg.val_split, hint="the fraction of the table held out for validation")
    hooks = (multilabel_table.label_reader(cfg), multilabel_table.check_splits) if multilabel else ()
    return {key: FolderScan(key, str(cfg.path), found, classes, report, {})
            for key, (found, classes, report) in check_table(cfg, on_bad_file_policy(cfg), *hooks).items()}


def is_multilabel(task) -> bool:
    return str(getattr(task, "value", task)) == "multilabel"


def check_data_config(cfg: "DataConfig", task=None) -> DataScan:
    """Raise ConfigError / DataError if `cfg` (a DataConfig) cannot produce a data set; else return what the checks
    scanned (DataScan: the folder source's walked and pre-scanned folders), for the loader and the recipe.

    Checks values, paths and class folders (the backbone's minimum image size is checked
    with the backbone, in tlkit.config.validate). `task`: the config's task (None: single_label).
    """
    source = source_name(cfg)
    if source not in SOURCES:
        raise ConfigError("data.source", source, f"one of {list(SOURCES)}")
    _check_int("data.batch_size", cfg.batch_size, 1, allow_none=True, hint="null: chosen by the recipe")
    _check_int("data.image_size", cfg.image_size, 1, allow_none=True, hint="null: chosen by the recipe")
    _check_int("data.max_images", cfg.max_images, 2, allow_none=True,
               hint="null uses every training image")
    on_bad_file_policy(cfg)
    import tlkit.data.tfds as tfds_source  # tensorflow_datasets' metadata only, never TensorFlow

    if source != "tfds":
        tfds_source.refuse_tfds_keys(cfg, source)
    if source != "csv":
        refuse_table_keys(cfg, source)
    folders: Dict[str, FolderScan] = {}
    if source == "tfds":
        num_classes = tfds_source.check_tfds_config(cfg)
        names = None
    elif source in ("folder", "csv"):
        folders = _check_folder_source(cfg) if source == "folder" else scan_table(cfg, is_multilabel(task))
        names = sorted(next(iter(folders.values())).classes)
        num_classes = len(names)
        if is_multilabel(task):  # the scan's keys are label sets; classes= and max_images are refused for it
            return DataScan(folders)
    elif source == "synthetic":
        _check_int("data.num_classes", cfg.num_classes, 2)
        _check_int("data.num_images", cfg.num_images, 2 * cfg.num_classes,
                   hint=f"at least 2 images per class (one train, one val) for {cfg.num_classes} classes")
        _check_fraction("data.val_split", cfg.val_split, hint="the fraction held out for validation")
        num_classes = cfg.num_classes
        names = [f"class_{i}" for i in range(cfg.num_classes)]
    else:  # digits
        _check_fraction("data.val_split", cfg.val_split, hint="the fraction held out for validation")
        num_classes = DIGITS_NUM_CLASSES
        names = [str(i) for i in range(DIGITS_NUM_CLASSES)]
    num_classes = _check_class_subset(getattr(cfg, "classes", None), names, num_classes)

    if cfg.max_images is not None and cfg.max_images < num_classes:
        raise ConfigError(
            "data.max_images", cfg.max_images, f"null or at least the number of classes ({num_classes})",
            hint="a smaller cap would leave some classes without training images",
        )
    return DataScan(folders)


def _check_class_subset(wanted, names, num_classes: int) -> int:
    """data.classes: at least two, each one of the source's classes; the number of classes trained."""
    if wanted is None:
        return num_classes
    wanted = [str(name) for name in wanted]
    allowed = f"a list of 2 or more of the data's classes{': ' + ', '.join(names) if names else ''}, or null (all)"
    if len(set(wanted)) < 2 or len(set(wanted)) != len(wanted):
        raise ConfigError("data.classes", wanted, allowed)
    unknown = [name for name in wanted if names is not None and name not in names]
    if unknown:
        raise ConfigError("data.classes", wanted, allowed, hint=f"not classes of the data: {unknown}")
    return len(wanted)
