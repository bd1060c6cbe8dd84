"""Multi-label tables (task=multilabel, data=csv): each row lists any number of classes for its image.

Two layouts:
    data.label_column=labels        a column of class names separated by ";": "cat;outdoor", "" for none
    data.label_columns=[cat,dog]    one column per class holding 0/1 (also true/false, yes/no)

A row's labels become one canonical label-set string (sorted names joined by ";"), which plays the part of the
"class" in tlkit.data.table's folder-like scan: the pre-scan, the duplicate checks and the recipe's counts work
unchanged (each image counted once), and `multi_hot` turns the label sets into [N, classes] 0/1 arrays for
training. Pure Python and NumPy: everything here runs before TensorFlow starts.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from tlkit.data.table import MULTI_LABEL_SEPARATOR, _is_empty
from tlkit.errors import DataError

TRUE_VALUES = ("1", "true", "yes", "1.0")
FALSE_VALUES = ("0", "false", "no", "0.0", "")


def label_reader(cfg):
    """record -> (canonical label set, problem or None) for data.label_columns (0/1 columns) or data.label_column."""
    columns = list(getattr(cfg, "label_columns", None) or [])

    def from_columns(record: dict):
        names = []
        for column in columns:
            value = "" if _is_empty(record.get(column)) else str(record.get(column)).strip().lower()
            if value not in TRUE_VALUES + FALSE_VALUES:
                return None, f"{column}={record.get(column)!r} is not 0 or 1 (data.label_columns: one 0/1 column " \
                             "per class)"
            if value in TRUE_VALUES:
                names.append(column)
        return MULTI_LABEL_SEPARATOR.join(sorted(names)), None

    def from_separated(record: dict):
        value = record.get(cfg.label_column)
        text = "" if _is_empty(value) else str(value)
        names = sorted({name.strip() for name in text.split(MULTI_LABEL_SEPARATOR) if name.strip()})
        return MULTI_LABEL_SEPARATOR.join(names), None

    return from_columns if columns else from_separated


def labels_of(label_set: str) -> List[str]:
    return [name for name in label_set.split(MULTI_LABEL_SEPARATOR) if name]


def class_names(cfg, label_sets: Sequence[str]) -> List[str]:
    """data.label_columns in their order, else every class any row names, sorted."""
    columns = getattr(cfg, "label_columns", None)
    if columns:
        return [str(c) for c in columns]
    return sorted({name for label_set in label_sets for name in labels_of(label_set)})


def multi_hot(label_sets: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """int32 [N, classes]: 1 where the row has the class."""
    index = {name: i for i, name in enumerate(names)}
    out = np.zeros((len(label_sets), len(names)), dtype=np.int32)
    for row, label_set in enumerate(label_sets):
        for name in labels_of(label_set):
            out[row, index[name]] = 1
    return out


def check_splits(cfg, splits: Dict[str, tuple], source: str) -> None:
    """>= 2 classes over the table; with a split column, val rows (classes without positives: the doctor's)."""
    sets = [label_set for found, _, _ in splits.values() for label_set in found]
    names = class_names(cfg, sets)
    if len(names) < 2:
        raise DataError(f"{source}: task=multilabel needs at least 2 classes; the rows name {names}")
    train_key = next(iter(splits))
    if train_key != "data.path" and not splits.get("data.path[val]", ({},))[0]:
        raise DataError(f"{source}: no row has {cfg.split_column}=val; the run needs validation images")
    if train_key == "data.path" and sum(len(files) for files in splits[train_key][1].values()) < 2:
        raise DataError(f"{source}: fewer than 2 usable images; a split into train and validation needs more")


def _files_and_sets(classes: Dict[str, List[str]]) -> Tuple[np.ndarray, List[str]]:
    files = [path for label_set in sorted(classes) for path in classes[label_set]]
    sets = [label_set for label_set in sorted(classes) for _ in classes[label_set]]
    return np.array(files, dtype=str), sets


def table_splits(cfg, scans: dict, seed: int):
    """(class names, train, val, test or None) from scan_table's label-set scans; each split (files, multi-hot).
    Without a split column the rows are split by data.val_split, stratified by label set."""
    from tlkit.data.sampling import stratified_split

    names = class_names(cfg, [s for scan in scans.values() for s in scan.found])
    if "data.path" in scans:
        files, sets = _files_and_sets(scans["data.path"].classes)
        strata = np.unique(np.array(sets, dtype=object), return_inverse=True)[1]
        train, val = stratified_split(strata, cfg.val_split, seed)
        if len(val) == 0:  # every label set single: hold out a seeded random share instead
            order = np.random.default_rng(seed).permutation(len(files))
            cut = max(1, int(round(cfg.val_split * len(files))))
            val, train = order[:cut], order[cut:]
        hot = multi_hot(sets, names)
        return names, (files[train], hot[train]), (files[val], hot[val]), None
    out = []
    for split in ("train", "val", "test"):
        key = f"data.path[{split}]"
        if key not in scans:
            out.append(None)
            continue
        files, sets = _files_and_sets(scans[key].classes)
        out.append((files, multi_hot(sets, names)))
    return (names, *out)
