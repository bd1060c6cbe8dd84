"""Preprocessing inside the model, in core Keras: the contract, and a model.keras that loads without tlkit.

A saved model.keras must load with plain `keras.models.load_model` in a process that never imports tlkit and
predict the same probabilities (max |diff| <= 1e-6). The child process runs in isolated mode (`python -I`: no
PYTHONPATH, no script folder or cwd on sys.path) and, because the editable install makes tlkit importable from
site-packages anyway, a meta-path finder that raises on any `import tlkit`; it checks at the end that no tlkit
module was loaded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tlkit
from tlkit.backbones import all_specs, get_spec
from tlkit.config import BackboneConfig, HeadConfig
from tlkit.model.preprocessing import ImagePreprocessing, preprocess_mode_of, preprocessing_model
from tlkit.preprocessing_modes import BACKBONE_MODES, INPUT_RANGES, MODE_NAMES, MODES

SIZE = 32
SPECS = all_specs()

# The child: tlkit cannot be imported, the models load with keras alone, the probabilities go to a file.
CHILD = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoTlkit(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tlkit" or name.startswith("tlkit."):
                raise ImportError("tlkit must not be imported here: " + name)
            return None

    sys.meta_path.insert(0, NoTlkit())
    import keras
    import numpy as np

    jobs = json.loads(sys.argv[1])
    images = np.load(jobs["images"])
    out = {}
    for name, path in jobs["models"].items():
        out[name] = np.asarray(keras.models.load_model(path).predict(images, verbose=0))
    np.savez(jobs["output"], **out)
    loaded = sorted(m for m in sys.modules if m == "tlkit" or m.startswith("tlkit."))
    assert not loaded, loaded
    print("TLKIT_FREE", "tlkit" not in sys.modules)
""")


def _load_without_tlkit(models: dict, images: np.ndarray, tmp_path) -> dict:
    np.save(tmp_path / "images.npy", images)
    jobs = {"images": str(tmp_path / "images.npy"), "output": str(tmp_path / "child.npz"),
            "models": {name: str(path) for name, path in models.items()}}
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run([sys.executable, "-I", "-c", CHILD, json.dumps(jobs)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TLKIT_FREE True" in result.stdout
    with np.load(tmp_path / "child.npz") as child:
        return {name: child[name] for name in child.files}


def _images(n=6, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


# --- the one table --------------------------------------------------------------------------


def test_every_place_derives_its_modes_from_the_table():
    from tlkit.backbones.spec import PREPROCESS_MODES
    from tlkit.config.schema import Preprocess
    from tlkit.model.preprocessing import MODES as LAYER_MODES

    assert PREPROCESS_MODES == BACKBONE_MODES == ("caffe", "tf", "torch", "none")
    assert LAYER_MODES == MODE_NAMES == tuple(MODES)
    assert [p.value for p in Preprocess] == ["auto", *MODE_NAMES]
    assert set(INPUT_RANGES) == set(MODE_NAMES)
    assert {spec.preprocess for spec in SPECS} <= set(BACKBONE_MODES)


# --- the contract: exactly what the family's preprocess_input computes ---------------------


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_preprocessing_model_matches_keras_preprocess_input(spec):
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 5, 7, 3)).astype("float32")
    expected = getattr(keras.applications, spec.family).preprocess_input(images.copy())
    ours = keras.ops.convert_to_numpy(preprocessing_model(spec.preprocess)(images))
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_preprocessing_model_is_the_old_layer_and_weightless(mode):
    images = np.random.default_rng(1).uniform(0, 255, size=(2, 5, 7, 3)).astype("float32")
    model = preprocessing_model(mode)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)),
                               keras.ops.convert_to_numpy(ImagePreprocessing(mode)(images)), atol=1e-5, rtol=0)
    assert model.weights == [] and preprocess_mode_of(model) == mode
    assert model.compute_dtype == "float32"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="expected one of"):
        preprocessing_model("imagenet")


# --- model.keras without tlkit -----------------------------------------------------------------


def _served(mode: str):
    from tlkit.model.build import build_model, with_probabilities
    from tlkit.training.stages import reestimate_batchnorm

    spec = get_spec("mobilenet_v2")
    model = build_model(spec, BackboneConfig(name=spec.name, weights=None, preprocess=mode), HeadConfig(),
                        num_classes=3, image_size=SIZE)
    # Random BatchNorm statistics saturate MobileNetV2 (every image the same features): re-estimated on images,
    # the features, so the probabilities, depend on the preprocessing.
    reestimate_batchnorm(model, [(_images(16, seed=9), None)])
    dense = model.get_layer("head").get_layer("logits")
    kernel, bias = dense.get_weights()  # zero-initialised: give the head weights so each image differs
    rng = np.random.default_rng(len(mode))
    dense.set_weights([rng.normal(scale=0.01, size=kernel.shape).astype("float32"),  # logits of order 1: no
                       rng.normal(size=bias.shape).astype("float32")])                # saturated softmax
    return with_probabilities(model)


def test_each_mode_saves_a_model_keras_loads_without_tlkit(tmp_path):
    images = _images()
    paths, expected = {}, {}
    for mode in MODE_NAMES:
        served = _served(mode)
        paths[mode] = tmp_path / f"{mode}.keras"
        served.save(paths[mode])
        reloaded = tlkit.load_model(paths[mode])
        assert reloaded.get_layer("preprocess").mode == mode
        expected[mode] = np.asarray(reloaded.predict(images, verbose=0))
        np.testing.assert_allclose(expected[mode], np.asarray(served.predict(images, verbose=0)), atol=1e-6, rtol=0)
        assert np.ptp(expected[mode], axis=0).max() > 1e-3, f"{mode}: the probabilities differ per image"
        keras.backend.clear_session()
    child = _load_without_tlkit(paths, images, tmp_path)
    for mode in MODE_NAMES:
        assert np.abs(child[mode] - expected[mode]).max() <= 1e-6, mode


def test_a_trained_run_model_keras_loads_without_tlkit(tmp_path):
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": None},  # no BatchNorm: random features that differ per image
        "data": {"source": "synthetic", "image_size": SIZE, "num_images": 40, "num_classes": 3, "batch_size": 8},
        "schedule": {"name": "full", "stages": [{"name": "all", "train": "all", "epochs": 1}]},
        "trainer": {"verbose": 0},
        "doctor": {"enabled": False},
    })
    run_dir = tmp_path / "run"
    tlkit.train(cfg, run_dir)
    images = _images(8, seed=3)
    model = tlkit.load_model(run_dir / "model.keras")
    assert model.get_layer("preprocess").mode == "caffe"
    expected = np.asarray(model.predict(images, verbose=0))
    child = _load_without_tlkit({"run": run_dir / "model.keras"}, images, tmp_path)
    assert np.abs(child["run"] - expected).max() <= 1e-6


def test_a_model_keras_saved_with_the_old_layer_still_loads_through_tlkit(tmp_path):
    """Run directories from before: their model.keras holds tlkit>ImagePreprocessing."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = ImagePreprocessing("caffe", name="preprocess", dtype="float32")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="probabilities")(x)
    old = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    old.save(path)
    images = _images(3)
    reloaded = tlkit.load_model(path)
    assert isinstance(reloaded.get_layer("preprocess"), ImagePreprocessing)
    assert reloaded.get_layer("preprocess").mode == "caffe"
    np.testing.assert_allclose(np.asarray(reloaded(images)), np.asarray(old(images)), atol=1e-6, rtol=0)
