"""The data layer: what users rely on when they point tlkit at images.

Small on purpose (32 px images, a dozen files): the whole file runs in well under a minute.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlkit.config.schema import AugmentConfig, DataConfig
from tlkit.data.scan import check_augment_config, check_data_config, scan_folder
from tlkit.errors import ConfigError, DataError

SIZE = 32
ROOT = Path(__file__).resolve().parents[1]


def _write_image(path: Path, kind: str, shade: int) -> None:
    """Small non-square images in the formats people actually have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shade)
    rgb = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    rgb[..., 0] = shade  # a class-dependent red channel
    if kind == "gray":
        Image.fromarray(rgb[..., 1]).save(path)  # mode L
    elif kind == "rgba":
        rgba = np.concatenate([rgb, np.full((30, 40, 1), 128, np.uint8)], axis=-1)
        Image.fromarray(rgba, mode="RGBA").save(path)
    elif kind == "jpeg":
        Image.fromarray(rgb).save(path, quality=90)
    else:
        Image.fromarray(rgb).save(path)


def _make_class_folder(root: Path, classes: dict) -> Path:
    """classes: name -> number of images; cycles through PNG, grayscale PNG, RGBA PNG, JPEG."""
    kinds = [("png", "rgb"), ("png", "gray"), ("png", "rgba"), ("jpg", "jpeg")]
    for c, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            ext, kind = kinds[i % len(kinds)]
            _write_image(folder / f"img_{i:02d}.{ext}", kind, shade=40 + 80 * c + i)
    return root


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """3 classes x 6 images, plus things a scan must skip or include."""
    root = _make_class_folder(tmp_path_factory.mktemp("images"), {"cat": 6, "dog": 6, "fox": 6})
    _write_image(root / "cat" / "nested" / "deep.PNG", "rgb", shade=7)  # nested, upper-case extension
    (root / "cat" / "notes.txt").write_text("not an image")
    _write_image(root / "dog" / ".hidden.png", "rgb", shade=9)
    _write_image(root / ".cache" / "x.png", "rgb", shade=9)  # hidden folder: not a class
    return root


@pytest.fixture(scope="module")
def split_roots(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("splits")
    return {
        "train": _make_class_folder(base / "train", {"ant": 5, "bee": 3}),
        "val": _make_class_folder(base / "val", {"ant": 2, "bee": 2}),
        "test": _make_class_folder(base / "test", {"ant": 1, "bee": 2}),
    }


def _folder(**kwargs) -> DataConfig:
    return DataConfig(source="folder", batch_size=4, **kwargs)


def _labels(dataset) -> np.ndarray:
    return np.concatenate([labels.numpy() for _, labels in dataset])


def _images(dataset) -> np.ndarray:
    return np.concatenate([images.numpy() for images, _ in dataset])


# --------------------------------------------------------------------------- scanning and checks


def test_scan_folder_finds_classes_nested_images_and_skips_the_rest(image_root):
    classes = scan_folder(str(image_root))
    assert list(classes) == ["cat", "dog", "fox"]
    assert len(classes["cat"]) == 7 and any(p.endswith(os.path.join("nested", "deep.PNG")) for p in classes["cat"])
    assert len(classes["dog"]) == 6 and not any(".hidden" in p for p in classes["dog"])
    assert all(files == sorted(files) for files in classes.values())


def test_scan_module_does_not_import_tensorflow():
    code = ("import sys, tlkit.data, tlkit.data.scan; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_missing_path_names_the_key_and_value():
    with pytest.raises(ConfigError, match=r"data\.path='/no/such/images'.*does not exist"):
        check_data_config(_folder(path="/no/such/images"))


def test_folder_source_without_any_path_explains_both_forms():
    with pytest.raises(ConfigError, match=r"data\.path=None") as info:
        check_data_config(_folder())
    assert "data.train_dir" in str(info.value) and "data.val_dir" in str(info.value)


def test_path_and_train_dir_together_are_refused(image_root, split_roots):
    with pytest.raises(ConfigError, match="not both"):
        check_data_config(_folder(path=str(image_root), train_dir=str(split_roots["train"]),
                                  val_dir=str(split_roots["val"])))


def test_train_dir_without_val_dir_is_refused(split_roots):
    with pytest.raises(ConfigError, match=r"data\.val_dir=None"):
        check_data_config(_folder(train_dir=str(split_roots["train"])))


def test_single_class_is_refused_with_what_was_found(tmp_path):
    _make_class_folder(tmp_path, {"only": 3})
    with pytest.raises(DataError, match=r"at least 2 class folders.*\['only'\]"):
        check_data_config(_folder(path=str(tmp_path)))


def test_images_without_class_folders_are_explained(tmp_path):
    _write_image(tmp_path / "a.png", "rgb", 1)
    with pytest.raises(DataError, match="directly in the folder"):
        check_data_config(_folder(path=str(tmp_path)))


def test_empty_class_folder_is_reported(tmp_path):
    _make_class_folder(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "empty_one").mkdir()
    with pytest.raises(DataError, match=r"without images: \['empty_one'\]"):
        check_data_config(_folder(path=str(tmp_path)))


def test_train_val_class_mismatch_names_the_missing_classes(tmp_path):
    _make_class_folder(tmp_path / "train", {"a": 2, "b": 2, "c": 2})
    _make_class_folder(tmp_path / "val", {"a": 2, "b": 2, "d": 2})
    with pytest.raises(DataError) as info:
        check_data_config(_folder(train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val")))
    message = str(info.value)
    assert "missing from data.val_dir: ['c']" in message and "missing from data.train_dir: ['d']" in message


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"source": "digits", "val_split": 0.0}, "data.val_split"),
        ({"source": "digits", "val_split": 1.5}, "data.val_split"),
        ({"source": "digits", "batch_size": 0}, "data.batch_size"),
        ({"source": "digits", "image_size": 0}, "data.image_size"),
        ({"source": "digits", "max_images": 1}, "data.max_images"),
        ({"source": "digits", "max_images": 5}, "data.max_images"),  # fewer than the 10 classes
        ({"source": "synthetic", "num_classes": 1}, "data.num_classes"),
        ({"source": "synthetic", "num_classes": 4, "num_images": 7}, "data.num_images"),
    ],
)
def test_bad_values_name_key_and_value(overrides, key):
    cfg = DataConfig(**overrides)
    bad_value = overrides.get(key.split(".")[1])
    with pytest.raises(ConfigError, match=rf"{key}={bad_value!r}"):
        check_data_config(cfg)


def test_bad_augment_values_are_refused():
    with pytest.raises(ConfigError, match=r"augment\.crop_area=0"):
        check_augment_config(AugmentConfig(crop_area=0.0))
    with pytest.raises(ConfigError, match=r"augment\.color=-0\.1"):
        check_augment_config(AugmentConfig(color=-0.1))


# --------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def digits():
    from tlkit.data import load_data

    return load_data(DataConfig(source="digits", batch_size=32), AugmentConfig(), SIZE, seed=0)


def test_digits_are_rgb_float_0_255_at_the_requested_size(digits):
    assert digits.class_names == [str(i) for i in range(10)]
    images, labels = next(iter(digits.train))
    assert images.shape == (32, SIZE, SIZE, 3) and images.dtype.name == "float32"
    assert labels.dtype.name == "int32"
    images = images.numpy()
    assert images.min() >= 0 and images.max() > 200 and images.max() <= 255  # not scaled to 0..1
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grayscale replicated to RGB
    assert digits.num_train + digits.num_val == 1797 and digits.num_test == 0 and digits.test is None


def test_digits_split_is_stratified_and_deterministic(digits):
    from tlkit.data import load_data

    val_counts = np.bincount(_labels(digits.val), minlength=10)
    assert val_counts.max() - val_counts.min() <= 2  # ~36 per class: 20% of each class
    assert abs(digits.num_val - 0.2 * 1797) < 10
    assert sum(digits.train_counts) == digits.num_train

    again = load_data(DataConfig(source="digits", batch_size=32), AugmentConfig(), SIZE, seed=0)
    np.testing.assert_array_equal(_images(digits.val), _images(again.val))
    other = load_data(DataConfig(source="digits", batch_size=32), AugmentConfig(), SIZE, seed=1)
    assert not np.array_equal(_images(digits.val), _images(other.val))


def test_training_batches_all_have_the_same_shape(digits):
    shapes = {tuple(images.shape) for images, _ in digits.train}
    assert shapes == {(32, SIZE, SIZE, 3)}  # 1438 images: the last partial batch is dropped
    assert digits.steps_per_epoch == digits.num_train // 32


def test_training_data_is_reshuffled_each_epoch(digits):
    epochs = digits.train_epochs
    assert not np.array_equal(_labels(epochs.epoch(0)), _labels(epochs.epoch(1)))
    np.testing.assert_array_equal(_labels(epochs.epoch(1)), _labels(epochs.epoch(1)))  # a function of the epoch


def test_fewer_images_than_a_batch_still_give_one_step():
    from tlkit.data import load_data

    data = load_data(DataConfig(source="synthetic", num_classes=2, num_images=20, batch_size=64), None, 16, seed=0)
    assert data.num_train == 16 and data.steps_per_epoch == 1
    assert [tuple(images.shape) for images, _ in data.train] == [(16, 16, 16, 3)]


def test_max_images_caps_the_training_set_stratified():
    from tlkit.data import load_data

    cfg = DataConfig(source="digits", batch_size=8, max_images=50)
    data = load_data(cfg, None, 16, seed=0)
    assert data.num_train == 50 and sum(data.train_counts) == 50
    assert min(data.train_counts) >= 4  # every class keeps its share
    assert sum(1 for _ in data.train) == data.steps_per_epoch == 6
    assert load_data(cfg, None, 16, seed=0).train_counts == data.train_counts


def test_folder_path_form_loads_every_format_with_a_stable_split(image_root):
    from tlkit.data import load_data

    cfg = _folder(path=str(image_root), val_split=0.34)
    data = load_data(cfg, AugmentConfig(), SIZE, seed=3)
    assert data.class_names == ["cat", "dog", "fox"]
    assert data.num_train + data.num_val == 19
    assert np.bincount(_labels(data.val)).tolist() == [2, 2, 2]  # stratified: 34% of 7, 6, 6
    assert data.train_counts == [5, 4, 4]
    images = _images(data.train)  # grayscale, RGBA and JPEG all decode to 3 channels
    assert images.shape == (12, SIZE, SIZE, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 255 and images.max() > 100

    again = load_data(cfg, AugmentConfig(), SIZE, seed=3)
    np.testing.assert_array_equal(_images(data.val), _images(again.val))  # same files in val every run


def test_a_run_walks_its_image_folders_once(split_roots, monkeypatch):
    """The pre-flight's scan is handed on: the recipe's facts and the loader reuse it, with the same result."""
    import tlkit
    import tlkit.recipe.auto as auto_recipe
    import tlkit.data.scan as scan
    from tlkit.data import load_data
    from tlkit.recipe.preflight import check_run

    walked = []
    real = scan.scan_classes
    monkeypatch.setattr(scan, "scan_classes", lambda key, root: walked.append(key) or real(key, root))
    folders = {f"{split}_dir": str(split_roots[split]) for split in ("train", "val", "test")}
    cfg = tlkit.as_train_config({"backbone": {"name": "vgg16", "weights": None},
                                 "data": {"source": "folder", "image_size": SIZE, **folders}})
    spec, data_scan = check_run(cfg)
    assert walked == ["data.train_dir", "data.val_dir", "data.test_dir"]
    cfg, recipe = auto_recipe.apply(cfg, spec, data_scan)
    data = load_data(cfg.data, cfg.augment, SIZE, cfg.seed, data_scan=data_scan)
    assert walked == ["data.train_dir", "data.val_dir", "data.test_dir"], "walked again after the pre-flight"
    assert recipe.facts.num_train == data.num_train == 8
    assert data.prescan["splits"]["data.train_dir"]["root"] == folders["train_dir"]
    fresh = load_data(cfg.data, cfg.augment, SIZE, cfg.seed)  # without the scan: walks, and loads the same
    assert len(walked) == 6 and fresh.prescan == data.prescan and fresh.train_files == data.train_files


def test_folder_train_val_test_dirs(split_roots):
    from tlkit.data import class_weights, load_data

    cfg = _folder(train_dir=str(split_roots["train"]), val_dir=str(split_roots["val"]),
                  test_dir=str(split_roots["test"]), cache="off")
    data = load_data(cfg, AugmentConfig(name="light", flip=True, crop_area=0.6), SIZE, seed=0)
    assert data.class_names == ["ant", "bee"]
    assert (data.train_counts, data.num_val, data.num_test) == ([5, 3], 4, 3)
    assert _labels(data.test).tolist() == [0, 1, 1]
    assert {tuple(images.shape) for images, _ in data.train} == {(4, SIZE, SIZE, 3)}
    images, labels = data.sample_batch()
    assert images.shape == (4, SIZE, SIZE, 3) and labels.dtype == np.int32
    np.testing.assert_array_equal(images, np.round(images))  # un-augmented: uint8 values, no interpolation
    assert class_weights(data.train_counts) == pytest.approx({0: 0.8, 1: 8 / 6})


def test_a_file_that_is_not_an_image_is_skipped_and_named(tmp_path, monkeypatch):
    """The pre-scan leaves it out (data.on_bad_file=skip) or stops before training (error), naming it."""
    from tlkit.data import load_data

    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    _make_class_folder(tmp_path / "images", {"a": 2, "b": 2})
    page = tmp_path / "images" / "b" / "page.jpg"
    page.write_text("<html>saved from a browser</html>")
    data = load_data(_folder(path=str(tmp_path / "images"), val_split=0.5), None, 8, seed=0)
    assert data.num_train + data.num_val == 4 and str(page) not in data.train_files + data.val_files
    assert data.bad_files["count"] == 1 and data.bad_files["first"][0]["path"] == str(page)
    assert "not an image" in data.bad_files["first"][0]["reason"]
    assert _images(data.train).shape[0] == data.num_train  # decodes without error
    with pytest.raises(DataError, match=r"page\.jpg: not an image"):
        check_data_config(_folder(path=str(tmp_path / "images"), on_bad_file="error"))


def test_the_pillow_decoder_names_a_file_it_cannot_read(tmp_path):
    """Files outside TF's decoders go to Pillow in the pipeline; if one still fails, the error names it."""
    import tensorflow as tf

    from tlkit.data.pipeline import _read_image

    page = tmp_path / "page.jpg"
    page.write_text("<html>saved from a browser</html>")
    dataset = tf.data.Dataset.from_tensors(str(page)).map(_read_image)  # in tf.data, as in the pipeline
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"cannot decode .*page\.jpg"):
        next(iter(dataset))


def test_synthetic_data_is_deterministic_for_a_seed():
    from tlkit.data import synthetic_images

    a, labels_a = synthetic_images(12, 3, seed=5, size=16)
    b, labels_b = synthetic_images(12, 3, seed=5, size=16)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert np.bincount(labels_a).tolist() == [4, 4, 4]
    assert not np.array_equal(a, synthetic_images(12, 3, seed=6, size=16)[0])


# --------------------------------------------------------------------------- augmentation


def test_augmentation_off_is_none():
    from tlkit.data import build_augmenter

    assert build_augmenter(AugmentConfig(), SIZE) is None


def test_augmentation_keeps_shape_dtype_and_range_and_changes_images():
    import tensorflow as tf

    from tlkit.data import build_augmenter

    augmenter = build_augmenter(AugmentConfig(name="strong", flip=True, crop_area=0.3, color=0.3), SIZE)
    images = np.random.default_rng(0).uniform(0, 255, size=(8, SIZE, SIZE, 3)).astype(np.float32)

    def augmented(seed):  # as in the pipeline: on batches, in tf.data, seeded per (epoch, batch)
        return _images_of(tf.data.Dataset.from_tensors(images).map(lambda x: augmenter(x, tf.constant(seed))))

    first, again, other = augmented([0, 1]), augmented([0, 1]), augmented([0, 2])
    assert first.shape == images.shape and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 255.0
    assert not np.allclose(first, images, atol=1.0)
    np.testing.assert_array_equal(first, again)  # a pure function of the seed: resumable
    assert not np.allclose(first, other)  # another epoch or batch: new randomness


def test_training_epochs_depend_only_on_seed_and_epoch():
    """What resume relies on: epoch e is the same batches whether or not epochs before it ran here."""
    from tlkit.config.schema import DataConfig
    from tlkit.data.pipeline import load_data

    cfg = DataConfig(source="synthetic", num_images=40, num_classes=2, image_size=SIZE, batch_size=8)
    data = load_data(cfg, AugmentConfig(name="light", flip=True, crop_area=0.5), SIZE, seed=0)
    run = [_images_of(batch[0] for batch in data.train_epochs.for_epochs(0, 4))]
    resumed = _images_of(batch[0] for batch in data.train_epochs.for_epochs(2, 2))
    epochs = np.split(run[0], 4)
    np.testing.assert_array_equal(resumed, np.concatenate(epochs[2:]))
    assert not np.allclose(epochs[2], epochs[3]), "each epoch reshuffles and re-augments"


def _images_of(batches) -> np.ndarray:
    return np.concatenate([np.asarray(batch) for batch in batches])


@pytest.mark.parametrize("counts, expected", [([10, 30], {0: 2.0, 1: 40 / 60}), ([5, 5, 5], {0: 1.0, 1: 1.0, 2: 1.0})])
def test_class_weights_are_balanced(counts, expected):
    from tlkit.data import class_weights

    assert class_weights(counts) == pytest.approx(expected)


def test_class_weights_refuse_an_empty_class():
    from tlkit.data import class_weights

    with pytest.raises(DataError, match="positive count"):
        class_weights([3, 0])


# --- the decoded-image cache: memory, file or off, chosen against the memory budget (lead) ---

def test_image_cache_states_its_size_and_uses_files_over_budget(tmp_path, monkeypatch, caplog):
    import logging

    from tlkit.config.schema import DataConfig
    from tlkit.data.pipeline import image_cache, load_data

    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    caplog.set_level(logging.INFO, logger="tlkit.data")
    assert image_cache("off", 10, 32, 4.0) is None
    cfg = DataConfig(source="synthetic", num_images=40, num_classes=2, image_size=32, batch_size=8)
    in_memory = load_data(cfg, None, 32, seed=0, memory_budget_gb=4.0)
    in_files = load_data(cfg, None, 32, seed=0, memory_budget_gb=1e-9)
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("image cache")][1:]
    assert "in memory" in messages[0] and "MiB" in messages[0]
    assert "over trainer.memory_budget_gb" in messages[1] and str(tmp_path / "cache") in messages[1]
    for a, b in zip(list(in_memory.val), list(in_files.val)):  # the same images either way (each read to its end)
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert any((tmp_path / "cache").rglob("split*")), "the file cache was written"


def test_data_classes_trains_on_a_subset_with_labels_renumbered():
    """data.classes=[5,7,9] on digits: three classes, labels 0..2 in that order, the counts of those classes only."""
    from tlkit.data import load_data

    cfg = DataConfig(source="digits", classes=["5", "7", "9"], batch_size=8)
    check_data_config(cfg)
    data = load_data(cfg, None, 16, seed=0)
    assert data.class_names == ["5", "7", "9"] and len(data.train_counts) == 3
    assert sum(data.train_counts) == data.num_train and 400 < data.num_train < 460  # ~145 of each of 3 classes
    labels = np.concatenate([np.asarray(y) for _, y in data.val])
    assert sorted(set(labels.tolist())) == [0, 1, 2] and len(labels) == data.num_val
    with pytest.raises(ConfigError, match=r"(?s)data.classes.*not classes of the data: \['x'\]"):
        check_data_config(DataConfig(source="digits", classes=["5", "x"]))
    with pytest.raises(ConfigError, match="data.classes"):
        check_data_config(DataConfig(source="digits", classes=["5"]))
