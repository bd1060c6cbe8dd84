"""data=tfds: TensorFlow Datasets through tlkit's pipeline, offline.

The data comes from tiny builders defined here and prepared into a temporary data_dir (no
download); the offline failures use registered datasets whose files cannot be fetched.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import tlkit  # noqa: E402
from conftest import ROOT  # noqa: E402
from tlkit.recipe.preflight import check_config as validate  # noqa: E402
from tlkit.errors import ConfigError, DataError  # noqa: E402

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}  # a class is its dominant channel


class TlkitTestShapes(tfds.core.GeneratorBasedBuilder):
    """40 train + 10 test RGB images of varying sizes; class red or blue (alternating)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        # DatasetInfo directly: dataset_info_from_configs looks for metadata in a package.
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3)),
                                                 "label": tfds.features.ClassLabel(names=list(COLOURS))}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(40, 0), "test": self._generate_examples(10, 1)}

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for index in range(count):
            label = index % 2
            height, width = rng.integers(12, 40, size=2)
            pixels = np.array(COLOURS[list(COLOURS)[label]], dtype=float) + rng.normal(0, 10, (height, width, 3))
            yield index, {"image": np.clip(pixels, 0, 255).astype(np.uint8), "label": label}


class TlkitTestGray(tfds.core.GeneratorBasedBuilder):
    """Single-channel images: tlkit's decode rule replicates grey to RGB."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 1)),
                                                 "label": tfds.features.ClassLabel(names=["dark", "light"])}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for index in range(12):
            yield index, {"image": np.full((20, 24, 1), 40 + 160 * (index % 2), np.uint8), "label": index % 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    for builder in (TlkitTestShapes, TlkitTestGray):
        builder(data_dir=str(root)).download_and_prepare()
    return root


def tfds_config(data_dir, **data):
    values = {"source": "tfds", "name": "tlkit_test_shapes", "data_dir": str(data_dir), "image_size": 32,
              "batch_size": 4, "splits": {"train": "train[:75%]", "val": "train[75%:]", "test": "test"}}
    values.update(data)
    return tlkit.as_train_config({"backbone": {"name": "vgg16", "weights": None}, "data": values,
                                  "augment": {"name": "none"}, "trainer": {"verbose": 0}})


def load(cfg, budget=4.0):
    from tlkit.data import load_data

    validate(cfg)
    return load_data(cfg.data, cfg.augment, cfg.data.image_size, cfg.seed, budget)


def all_batches(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def test_splits_load_as_rgb_0_255_with_their_labels(data_dir):
    data = load(tfds_config(data_dir))
    assert data.class_names == ["red", "blue"]
    assert (data.num_train, data.num_val, data.num_test) == (30, 10, 10)  # train[:75%] of 40, the rest, test
    assert data.train_counts == [15, 15]
    for split in (data.val, data.test):
        images, labels = all_batches(split)
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.float32
        assert images.max() > 150, "pixels stay in 0..255 (the model preprocesses)"
        dominant = images.mean(axis=(1, 2)).argmax(axis=1)  # red -> channel 0, blue -> channel 2
        np.testing.assert_array_equal(dominant, np.where(labels == 0, 0, 2))
    batch, labels = data.sample_batch()
    assert batch.shape == (4, 32, 32, 3) and set(labels) <= {0, 1}


def test_max_images_caps_training_per_class(data_dir):
    data = load(tfds_config(data_dir, max_images=10))
    assert data.num_train == 10 and data.train_counts == [5, 5]
    assert data.num_val == 10, "only the training split is capped"


def test_grey_images_are_replicated_to_rgb(data_dir):
    data = load(tfds_config(data_dir, name="tlkit_test_gray", splits={"train": "train[:6]", "val": "train[6:]"}))
    images, labels = all_batches(data.val)
    assert data.num_test == 0 and data.test is None
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), np.where(labels == 0, 40, 200), atol=1)


def test_decoded_size_over_the_memory_budget_is_refused(data_dir):
    with pytest.raises(DataError, match=r"trainer.memory_budget_gb=1e-06"):
        load(tfds_config(data_dir), budget=1e-6)


@pytest.mark.parametrize("splits,key,expected", [
    ({"val": "validation"}, "data.splits.val", "train (40), test (10)"),  # unknown split: lists the real ones
    ({"val": "train[75%"}, "data.splits.val", "TFDS split string"),  # syntax
    ({"val": "train[70%:]"}, "data.splits.val", "share 2 examples"),  # overlaps train[:75%]: leakage
    ({"train": None}, "data.splits.train", "needs a train and a val split"),
])
def test_bad_splits_name_the_key(data_dir, splits, key, expected):
    values = {"train": "train[:75%]", "val": "train[75%:]", "test": None, **splits}
    with pytest.raises(ConfigError) as info:
        validate(tfds_config(data_dir, splits=values))
    assert info.value.key == key and expected in str(info.value)


def test_unknown_or_missing_dataset_name(data_dir):
    with pytest.raises(ConfigError, match="Did you mean") as info:
        validate(tfds_config(data_dir, name="cats_vs_dog"))
    assert info.value.key == "data.name"
    with pytest.raises(ConfigError) as info:
        validate(tfds_config(data_dir, name=None))
    assert info.value.key == "data.name" and "cats_vs_dogs" in str(info.value)


def test_tfds_keys_with_another_source_are_refused():
    cfg = tlkit.as_train_config({"backbone": {"name": "vgg16", "weights": None},
                                 "data": {"source": "digits", "splits": {"val": "train[80%:]"}}})
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == "data.splits.val" and "data.val_split" in str(info.value)


def test_not_prepared_offline_names_dataset_folder_and_fix(tmp_path):
    cfg = tfds_config(tmp_path, name="cats_vs_dogs", download=False)
    with pytest.raises(DataError) as info:
        validate(cfg)
    message = str(info.value)
    assert "'cats_vs_dogs' is not prepared" in message and str(tmp_path) in message
    assert "tfds build cats_vs_dogs" in message and "data.download=false" in message


def test_offline_download_fails_fast_with_the_fix(tmp_path, monkeypatch):
    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DataError) as info:
        validate(tfds_config(tmp_path, name="cats_vs_dogs"))
    assert "download host download.microsoft.com does not resolve" in str(info.value)
    assert "tfds build cats_vs_dogs" in str(info.value)


def test_a_failing_download_becomes_one_error(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])  # the host "resolves"

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("Max retries exceeded")

    monkeypatch.setattr(type(tfds.builder("cats_vs_dogs", data_dir=str(tmp_path))), "download_and_prepare",
                        unreachable)
    with pytest.raises(DataError, match=r"could not be downloaded \(ConnectionError: Max retries exceeded\)"):
        load(tfds_config(tmp_path, name="cats_vs_dogs"))


def test_the_default_recipe_reads_a_tfds_dataset_from_its_metadata(data_dir):
    """recipe=auto with data=tfds: the facts come from the dataset's metadata, no folder is walked (there is no
    data.train_dir), and the recipe sizes the batch for 30 training images."""
    import tlkit.recipe.auto as auto_recipe
    from tlkit.recipe.preflight import check_run

    cfg = tfds_config(data_dir, image_size=None, batch_size=None)
    assert cfg.data.train_dir is None and cfg.data.path is None and cfg.auto.enabled
    spec, data_scan = check_run(cfg)
    assert data_scan.folders == {}
    resolved, recipe = auto_recipe.apply(cfg, spec, data_scan)
    facts = recipe.facts
    assert (facts.source, facts.num_train, facts.num_classes, facts.smallest_class) == ("tfds", 30, 2, 15)
    assert resolved.data.batch_size == 16 and resolved.data.image_size is not None


def test_checks_run_before_tensorflow_starts(data_dir):
    """A prepared dataset needs no builder code: a fresh process reads data_dir, without TensorFlow."""
    code = (
        "import sys, tlkit\n"
        "from tlkit.recipe.preflight import check_config as validate\n"
        "from tlkit.errors import ConfigError\n"
        f"cfg = tlkit.as_train_config({{'backbone': {{'name': 'vgg16', 'weights': None}}, 'data': {{'source': 'tfds',"
        f" 'name': 'tlkit_test_shapes', 'data_dir': {str(data_dir)!r}, 'splits': {{'train': 'train',"
        f" 'val': 'dev'}}}}}})\n"
        "try:\n    validate(cfg)\nexcept ConfigError as error:\n    print(error.key)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.stdout.split() == ["data.splits.val", "False"], result.stderr[-2000:]


def test_train_py_trains_on_a_tfds_dataset(data_dir, tmp_path):
    """data=tfds from tlkit/conf/: the split strings quoted as Hydra needs them, one head epoch."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "train.py", "data=tfds", "data.name=tlkit_test_shapes", f"data.data_dir={data_dir}",
         'data.splits.train="train[:30]"', 'data.splits.val="train[30:]"', "data.splits.test=test",
         "backbone=vgg16", "backbone.weights=null", "data.image_size=32", "data.batch_size=8", "augment=none",
         "schedule=frozen", "schedule.stages.0.epochs=1", "trainer.verbose=0", "trainer.save_model=false",
         "doctor.silence=[no-pretrained-weights,random-frozen-backbone,val-too-small,too-few-images-per-class]",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["class_names"] == ["red", "blue"]
    assert (metrics["num_train"], metrics["num_val"], metrics["num_test"]) == (30, 10, 10)
    assert "test_accuracy" in metrics
    assert os.path.isfile(run_dir / "config.yaml")
