"""Label tables (data=csv): a CSV or TSV file, or a pandas DataFrame, that lists image files and their labels.

    tlkit train data=csv data.path=labels.csv [data.root=/images] [data.image_column=image]
                [data.label_column=label] [data.split_column=split]

One row per image: the image's path (absolute, or relative to data.root; without data.root, relative to the
table's own folder) and its class. With data.split_column each row says train, val or test; without it the rows
are split by data.val_split, stratified, as the folder source splits data.path. A file ending in .tsv or .tab is
tab-separated, any other is comma-separated (UTF-8, a byte-order mark allowed).

Pure Python (no TensorFlow, no pandas import): the checks run before TensorFlow starts, and every problem names
its row (the file's line, or the DataFrame's index): a missing file, an empty label, an unknown split value, a
path listed twice with two labels or in two splits. The images then go through the folder source's pre-scan
(tlkit.data.prescan) and data.on_bad_file: files that do not decode are skipped and reported (skip) or stop the
run (error), named with their line. tlkit.data.scan wraps the result into the folder source's FolderScan, so the
loader, the recipe and the doctor's leakage check treat a table like folders.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from tlkit.errors import ConfigError, DataError

log = logging.getLogger("tlkit.data")

SPLIT_VALUES = ("train", "val", "test")  # what data.split_column may hold (case and spaces ignored)
MULTI_LABEL_SEPARATOR = ";"  # "cat;dog" is a multi-label row: not a class name (multi-label tables: issue 16 part 2)
TAB_EXTENSIONS = (".tsv", ".tab")
ERRORS_LISTED = 10  # rows named in one error message; the count is always exact


@dataclass(frozen=True)
class TableRow:
    where: str  # "line 7" of the file, or "row 'a'" of a DataFrame: what every message names
    path: str  # the image file, made absolute
    label: str
    split: Optional[str]  # train | val | test, or None without data.split_column


def split_key(split: Optional[str]) -> str:
    """The DataScan key of a table split: data.path (split by data.val_split) or data.path[train|val|test]."""
    return "data.path" if split is None else f"data.path[{split}]"


# --------------------------------------------------------------------------- reading rows


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()  # NaN: pandas


def _base_folder(cfg, table_path: Optional[str]) -> str:
    """What relative image paths are relative to: data.root, else the table's folder (else the working folder)."""
    root = getattr(cfg, "root", None)
    if root is not None:
        return os.path.abspath(os.path.expanduser(str(root)))
    return os.path.dirname(os.path.abspath(table_path)) if table_path else os.getcwd()


def _columns(cfg) -> Dict[str, Optional[str]]:
    label_columns = getattr(cfg, "label_columns", None)
    return {"data.image_column": cfg.image_column, "data.label_column": None if label_columns else cfg.label_column,
            "data.split_column": getattr(cfg, "split_column", None),
            **{f"data.label_columns.{i}": column for i, column in enumerate(label_columns or [])}}


def _check_columns(cfg, header: List[str], source: str) -> None:
    for key, column in _columns(cfg).items():
        if column is not None and column not in header:
            raise ConfigError(key, column, f"a column of {source}: {', '.join(map(repr, header)) or '(no header)'}",
                              hint="the first row of a CSV/TSV file names its columns")


def read_table(cfg, read_label=None) -> Tuple[List[TableRow], List[str]]:
    """The rows of the table at data.path, and the problems found in them ("line N: ..."), before any file is
    decoded. ConfigError when the file or one of the named columns does not exist. `read_label`: parse_rows's."""
    if cfg.path is None:
        raise ConfigError("data.path", None, "a CSV or TSV file listing images and labels (data.path=FILE)",
                          hint="data=folder takes a folder of class subfolders")
    path = os.path.expanduser(str(cfg.path))
    if not os.path.isfile(path):
        where = "a folder" if os.path.isdir(path) else f"{os.path.abspath(path)!r} does not exist"
        raise ConfigError("data.path", cfg.path, f"a CSV or TSV file listing images and labels ({where})",
                          hint="data=folder takes a folder of class subfolders")
    delimiter = "\t" if path.lower().endswith(TAB_EXTENSIONS) else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = [name.strip() for name in next(reader, [])]
            _check_columns(cfg, header, f"data.path={cfg.path!r}")
            records, names = [], []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue  # blank lines
                records.append(dict(zip(header, cells)))
                names.append(f"line {reader.line_num}")
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"data.path={cfg.path!r} cannot be read as a table: {error}") from error
    return parse_rows(cfg, records, names, _base_folder(cfg, path), read_label)


def parse_rows(cfg, records: Iterable[dict], names: Iterable[str], base: str,
               read_label=None) -> Tuple[List[TableRow], List[str]]:
    """Rows from column -> value records (`names`: where each one is), with each row's problems: an empty path or
    label, a multi-label value, an unknown split, a file that does not exist. Duplicates: `find_duplicates`.
    `read_label`: record -> (label, problem or None) instead of the single-label column (task=multilabel,
    tlkit.data.multilabel_table)."""
    columns = _columns(cfg)
    rows, problems = [], []
    for record, where in zip(records, names):
        image, label = record.get(columns["data.image_column"]), record.get(columns["data.label_column"])
        split_column = columns["data.split_column"]
        split = None if split_column is None else record.get(split_column)
        if _is_empty(image):
            problems.append(f"{where}: empty {columns['data.image_column']!r} (no image path)")
            continue
        if read_label is not None:
            label, problem = read_label(record)
            if problem:
                problems.append(f"{where}: {image}: {problem}")
                continue
        elif _is_empty(label):
            problems.append(f"{where}: {image}: empty {columns['data.label_column']!r} (every image needs a class)")
            continue
        label = str(label).strip()
        if read_label is None and MULTI_LABEL_SEPARATOR in label:
            problems.append(f"{where}: {image}: label {label!r} holds several classes ({MULTI_LABEL_SEPARATOR!r}) "
                            f"but task=single_label trains one class per image (softmax); task=multilabel trains one "
                            "sigmoid per class")
            continue
        if split_column is not None:
            split = "" if _is_empty(split) else str(split).strip().lower()
            if split not in SPLIT_VALUES:
                problems.append(f"{where}: {image}: {split_column}={record.get(split_column)!r} is not one of "
                                f"{', '.join(SPLIT_VALUES)}")
                continue
        path = os.path.normpath(os.path.join(base, os.path.expanduser(str(image).strip())))
        if not os.path.isfile(path):
            problems.append(f"{where}: {image}: no such file ({path}" + ("" if os.path.isabs(str(image).strip()) else
                            f"; relative paths are relative to {base}") + ")")
            continue
        rows.append(TableRow(where, path, label, split))
    return rows, problems


def find_duplicates(rows: List[TableRow]) -> Tuple[List[TableRow], List[str], List[str]]:
    """(rows with exact repeats dropped, problems, warnings): a path listed with two labels, or in two splits, is a
    problem naming both rows; the same path, label and split twice is a warning (the later row is dropped)."""
    first: Dict[str, TableRow] = {}
    kept, problems, warnings = [], [], []
    for row in rows:
        seen = first.get(row.path)
        if seen is None:
            first[row.path] = row
            kept.append(row)
        elif seen.label != row.label:
            problems.append(f"{seen.where} and {row.where}: {row.path} is listed with two labels, "
                            f"{seen.label!r} and {row.label!r}")
        elif seen.split != row.split:
            problems.append(f"{seen.where} and {row.where}: {row.path} is in two splits ({seen.split} and "
                            f"{row.split}): the same image would be trained on and evaluated")
        else:
            warnings.append(f"{row.where}: {row.path} repeats {seen.where}; the repeat is left out")
    return kept, problems, warnings


def raise_problems(problems: List[str], source: str) -> None:
    if problems:
        listed = "\n".join(f"  {p}" for p in problems[:ERRORS_LISTED])
        more = f"\n  ... and {len(problems) - ERRORS_LISTED} more" if len(problems) > ERRORS_LISTED else ""
        raise DataError(f"{source}: {len(problems)} row(s) cannot be used:\n{listed}{more}\nFix these rows "
                        "(or remove them) and run again.")


# --------------------------------------------------------------------------- the pre-scan and the splits


def check_table(cfg, on_bad_file: str, read_label=None, check_splits=None) -> Dict[str, tuple]:
    """Read and check data.path's table, pre-scan its images; {split key: (found, classes, report)} in the
    folder source's terms (class -> files listed, class -> files that decode, the pre-scan's ScanReport), train
    first. DataError naming the rows when any row is unusable. `read_label` (parse_rows's) and `check_splits`
    (cfg, splits, source) -> None: task=multilabel's, where the "classes" are the rows' label sets ("a;b", "" for
    none; tlkit.data.multilabel_table)."""
    from tlkit.data.prescan import prescan

    source = f"data.path={cfg.path!r}"
    rows, problems = read_table(cfg, read_label)
    rows, duplicates, warnings = find_duplicates(rows)
    raise_problems(problems + duplicates, source)
    report = prescan([row.path for row in rows], root=_base_folder(cfg, os.path.expanduser(str(cfg.path))))
    report.warnings.extend(warnings)
    bad = [row for row in rows if not report.is_good(row.path)]
    if bad and on_bad_file == "error":
        raise_problems([f"{row.where}: {row.path}: {report.files[row.path]['reason']} (data.on_bad_file=error; "
                        "skip trains on the others)" for row in bad], source)
    for row in bad:  # the pre-scan's log and metrics.json then name the row too
        entry = report.files[row.path]
        report.files[row.path] = {**entry, "reason": f"{entry['reason']} ({row.where} of {cfg.path})"}
    splits = _group(cfg, rows, report)
    (check_splits or _check_classes)(cfg, splits, source)
    return splits


def _group(cfg, rows: List[TableRow], report) -> Dict[str, tuple]:
    from tlkit.data.prescan import ScanReport

    order = [None] if getattr(cfg, "split_column", None) is None else list(SPLIT_VALUES)
    splits = {}
    for split in order:
        members = [row for row in rows if row.split == split]
        if not members and split != "val":  # no test rows: no test split; val is checked in _check_classes
            continue
        found: Dict[str, List[str]] = {}
        for row in members:
            found.setdefault(row.label, []).append(row.path)
        classes = {name: [p for p in files if report.is_good(p)] for name, files in sorted(found.items())}
        part = ScanReport(files={row.path: report.files[row.path] for row in members},
                          warnings=report.warnings if split in (None, "train") else [],
                          seconds=report.seconds if split in (None, "train") else 0.0,
                          checked=report.checked if split in (None, "train") else 0)
        splits[split_key(split)] = (dict(sorted(found.items())), classes, part)
    return splits


def _check_classes(cfg, splits: Dict[str, tuple], source: str) -> None:
    """>= 2 classes with usable images to train on; with a split column, val rows, and no class outside train."""
    train_key = next(iter(splits))
    found, classes, _ = splits[train_key]
    usable = sorted(name for name, files in classes.items() if files)
    if len(usable) < 2:
        raise DataError(f"{source}: {train_key} needs at least 2 classes with usable images; found {usable}"
                        + (f" (classes whose files all failed the pre-scan: {sorted(set(found) - set(usable))})"
                           if set(found) - set(usable) else ""))
    unusable = sorted(set(found) - set(usable))
    if unusable:
        raise DataError(f"{source}: classes {unusable} have no file that decodes (see the pre-scan's list)")
    if train_key == "data.path":
        single = [name for name, files in classes.items() if len(files) < 2]
        if single:
            raise DataError(f"{source}: classes {single} have a single usable image; splitting into train and "
                            "validation by data.val_split needs at least 2 per class (or give data.split_column)")
        return
    if not splits.get("data.path[val]", ({},))[0]:
        raise DataError(f"{source}: no row has {cfg.split_column}=val; the run needs validation images")
    for key in ("data.path[val]", "data.path[test]"):
        extra = sorted(set(splits.get(key, ({},))[0]) - set(usable))
        if extra:
            raise DataError(f"{source}: {key} has classes that no training row has: {extra}; a model cannot "
                            f"learn them (training classes: {usable})")


# --------------------------------------------------------------------------- from a DataFrame


def from_dataframe(frame, root: Optional[str] = None, image_column: str = "image", label_column: str = "label",
                   split_column: Optional[str] = None, path: Optional[str] = None, **data_options):
    """A DataConfig (data=csv) for a pandas DataFrame (or anything with .columns, .index and frame[column].tolist())
    with one row per image: its rows are checked now (problems name the DataFrame's index), then written as a CSV
    file so that the run's config.yaml names it and `tlkit evaluate` / `export` can rebuild the data.

    root: what relative paths are relative to (None: the working folder; they are then written absolute);
    image_column / label_column / split_column: the column names (split_column: train/val/test per row, None:
    split by val_split); path: where the CSV goes (None: $TLKIT_CACHE_DIR/tables/<content hash>.csv);
    data_options: any other DataConfig field (val_split, image_size, on_bad_file, ...).
    """
    from tlkit.config.schema import DataConfig, DataSource

    cfg = DataConfig(source=DataSource.csv, image_column=image_column, label_column=label_column,
                     split_column=split_column, root=None if root is None else str(root), **data_options)
    header = [str(name) for name in frame.columns]
    _check_columns(cfg, header, "the DataFrame")
    wanted = [c for c in (image_column, label_column, split_column) if c is not None]
    values = {c: list(frame[c].tolist()) for c in wanted}
    records = [{c: values[c][i] for c in wanted} for i in range(len(frame.index))]
    index = list(frame.index)
    names = [f"row {i!r}" for i in index] if len(set(index)) == len(index) else [f"row {i}" for i in range(len(index))]
    rows, problems = parse_rows(cfg, records, names, _base_folder(cfg, None))
    rows, duplicates, _ = find_duplicates(rows)
    raise_problems(problems + duplicates, "the DataFrame")
    by_where = dict(zip(names, records))
    lines = [wanted] + [[row.path if root is None else _cell(by_where[row.where][image_column])]
                        + [_cell(by_where[row.where][c]) for c in wanted[1:]] for row in rows]
    return _replace_path(cfg, _write_csv(lines, path))


def _cell(value) -> str:
    return "" if _is_empty(value) else str(value).strip()


def _write_csv(lines: List[list], path: Optional[str]) -> str:
    import io

    from tlkit.fileio import atomic_write

    buffer = io.StringIO()
    csv.writer(buffer).writerows(lines)
    text = buffer.getvalue()
    if path is None:
        from tlkit.data.prescan import cache_dir

        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        path = os.path.join(os.path.dirname(cache_dir()), "tables", f"{digest}.csv")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), fsync=False)
    return str(path)


def _replace_path(cfg, path: str):
    from dataclasses import replace

    return replace(cfg, path=path)


def refuse_table_keys(cfg, source: str) -> None:
    """data.root / data.split_column set with another source are a mistake: they would be ignored."""
    for key in ("root", "split_column", "label_columns"):
        value = getattr(cfg, key, None)
        if value is not None:
            raise ConfigError(f"data.{key}", value, f"null unless data.source=csv (data.source is {source})",
                              hint="data=csv data.path=labels.csv reads a table of image paths and labels")
