"""data=csv: label tables (CSV/TSV files and DataFrames) checked row by row, then loaded like folders."""
import os

import numpy as np
import pytest
from PIL import Image

import tlkit
from tlkit.config.schema import DataConfig
from tlkit.data.scan import check_data_config
from tlkit.data.table import from_dataframe
from tlkit.errors import ConfigError, DataError


def _image(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """labels.csv: cats by relative path (next to the table), dogs by absolute path elsewhere, one broken file."""
    here, elsewhere = tmp_path_factory.mktemp("table"), tmp_path_factory.mktemp("elsewhere")
    lines = ["image,label,split"]
    for i in range(5):
        _image(here / "cats" / f"{i}.png", i)
        lines.append(f"cats/{i}.png,cat,{'val' if i == 0 else 'train'}")
        lines.append(f"{_image(elsewhere / f'dog{i}.png', 10 + i)},dog,{'val' if i == 0 else 'TRAIN '}")
    (here / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + bytes(200))  # a JPEG header, then nothing
    lines.append("cats/broken.jpg,cat,train")
    (here / "labels.csv").write_text("\n".join(lines) + "\n")
    return here, elsewhere, len(lines)  # the broken row is the last line


def _cfg(path, **options):
    return DataConfig(source="csv", path=str(path), image_size=16, batch_size=4, **options)


def test_mixed_paths_load_and_the_broken_row_is_skipped_with_its_line(table):
    from tlkit.data import load_data

    here, elsewhere, broken_line = table
    cfg = _cfg(here / "labels.csv")
    data = load_data(cfg, None, 16, seed=0, data_scan=check_data_config(cfg))
    assert data.class_names == ["cat", "dog"]
    assert (data.num_train, data.num_val, data.num_test) == (8, 2, 0)  # split by val_split: 4 + 4 train, 1 + 1 val
    files = data.train_files + data.val_files
    assert sum(f.startswith(str(here)) for f in files) == 5 and sum(f.startswith(str(elsewhere)) for f in files) == 5
    assert data.bad_files["count"] == 1
    assert f"line {broken_line} of" in data.bad_files["first"][0]["reason"]
    images, labels = data.sample_batch()
    assert images.shape[1:] == (16, 16, 3) and set(labels) <= {0, 1}

    with pytest.raises(DataError, match=f"line {broken_line}: .*broken.jpg"):
        check_data_config(_cfg(here / "labels.csv", on_bad_file="error"))


def test_split_column_gives_the_rows_their_split(table):
    here, _, _ = table
    scan = check_data_config(_cfg(here / "labels.csv", split_column="split"))
    counts = {key: {name: len(files) for name, files in s.classes.items()} for key, s in scan.folders.items()}
    assert counts == {"data.path[train]": {"cat": 4, "dog": 4}, "data.path[val]": {"cat": 1, "dog": 1}}


@pytest.mark.parametrize("extra, message", [
    ("cats/missing.png,cat,train", r"line 2: cats/missing.png: no such file"),
    ("cats/1.png,,train", r"line 2: cats/1.png: empty 'label'"),
    ("cats/1.png,cat,holdout", r"line 2: cats/1.png: split='holdout' is not one of train, val, test"),
    ("cats/1.png,dog,train", r"line 2 and line 5: .*1.png is listed with two labels, 'dog' and 'cat'"),
    ("cats/1.png,cat,val", r"line 2 and line 5: .*1.png is in two splits \(val and train\)"),
    ("cats/1.png,cat;dog,train", r"line 2: cats/1.png: label 'cat;dog' holds several classes"),
])
def test_a_bad_row_is_an_error_naming_its_line(table, tmp_path, extra, message):
    here, _, _ = table
    rows = (here / "labels.csv").read_text().splitlines()
    path = here / f"bad_{abs(hash(extra))}.csv"
    path.write_text("\n".join([rows[0], extra, *rows[1:]]) + "\n")
    with pytest.raises(DataError, match=message):
        check_data_config(_cfg(path, split_column="split"))


def test_table_config_errors_name_the_key(table):
    here, _, _ = table
    with pytest.raises(ConfigError, match="data.label_column='class'.*'image', 'label', 'split'"):
        check_data_config(_cfg(here / "labels.csv", label_column="class"))
    with pytest.raises(ConfigError, match="data.path=.*a CSV or TSV file"):
        check_data_config(_cfg(here))
    with pytest.raises(ConfigError, match="data.split_column='split'.*null unless data.source=csv"):
        check_data_config(DataConfig(source="digits", split_column="split"))


def test_tsv_and_the_composed_config(table, compose, tmp_path):
    here, _, _ = table
    rows = [line.split(",") for line in (here / "labels.csv").read_text().splitlines()]
    (tmp_path / "labels.tsv").write_text("\n".join("\t".join([str(here / r[0]) if i else r[0], *r[1:]])
                                                   for i, r in enumerate(rows)) + "\n")
    cfg = tlkit.as_train_config(compose(["data=csv", f"data.path={tmp_path / 'labels.tsv'}"]))
    scan = check_data_config(cfg.data)
    assert {name: len(files) for name, files in scan.folders["data.path"].classes.items()} == {"cat": 5, "dog": 5}


class _Frame:
    """The part of pandas.DataFrame's API from_dataframe uses (pandas is not a dependency of tlkit)."""

    def __init__(self, columns: dict, index):
        self.columns, self.index, self._columns = list(columns), list(index), columns

    def __getitem__(self, name):
        values = self._columns[name]
        return type("Series", (), {"tolist": lambda self: list(values)})()


def _frames():
    frames = [_Frame]
    try:
        import pandas

        frames.append(lambda columns, index: pandas.DataFrame(columns, index=index))
    except ImportError:
        pass
    return frames


@pytest.mark.parametrize("make_frame", _frames())
def test_a_dataframe_is_checked_by_index_and_written_as_a_table(table, tmp_path, make_frame):
    here, _, _ = table
    images = [f"cats/{i}.png" for i in range(4)]
    frame = make_frame({"file": images, "kind": ["cat", "cat", "dog", "dog"]}, index=["a", "b", "c", "d"])
    cfg = from_dataframe(frame, root=str(here), image_column="file", label_column="kind", val_split=0.5)
    assert cfg.source.value == "csv" and os.path.isfile(cfg.path)
    from omegaconf import OmegaConf

    saved = OmegaConf.create(OmegaConf.to_yaml(OmegaConf.structured(cfg)))  # as config.yaml holds it
    rebuilt = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), saved))
    scan = check_data_config(rebuilt)
    assert {name: len(files) for name, files in scan.folders["data.path"].classes.items()} == {"cat": 2, "dog": 2}

    broken = make_frame({"file": images, "kind": ["cat", None, "dog", "dog"]}, index=["a", "b", "c", "d"])
    with pytest.raises(DataError, match=r"row 'b': cats/1.png: empty 'kind'"):
        from_dataframe(broken, root=str(here), image_column="file", label_column="kind")
