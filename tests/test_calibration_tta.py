"""Calibration (temperature scaling folded into model.keras) and test-time augmentation, on one tiny run trained
from a label table (data=csv, with a test split), shared by every test of the module."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import tlkit
from tlkit.training.calibration import expected_calibration_error, fit_temperature, negative_log_likelihood, softmax
from tlkit.errors import ConfigError
from tlkit.tools.tta import plan_tta, view_images

SIZE = 32


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run directory, TrainResult): VGG16 from random weights, 32 px, a few head steps, no flips in training."""
    folder = tmp_path_factory.mktemp("table")
    lines = ["image,label,split"]
    for i, pixels in enumerate(_colour_images(60, seed=1)[0]):
        label = i % 3
        Image.fromarray(pixels).save(folder / f"{i}.png")
        split = "test" if i % 4 == 0 else "val" if i % 4 == 1 else "train"
        lines.append(f"{i}.png,{'abc'[label]},{split}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    run_dir = tmp_path_factory.mktemp("run")
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "csv", "path": str(folder / "labels.csv"), "split_column": "split", "image_size": SIZE,
                 "batch_size": 8},
        "augment": {"name": "none"},
        "schedule": {"name": "frozen", "stages": [{"name": "head", "train": "head", "epochs": 4}]},
        "optimizer": {"lr": 1e-2},
        "trainer": {"verbose": 0},
        "doctor": {"enabled": False, "monitor": False},
    })
    return run_dir, tlkit.train(cfg, run_dir)


def _colour_images(n, seed):
    """uint8 images whose class (i % 3) is the dominant colour channel, under heavy pixel noise; labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    pixels = rng.normal(90, 45, (n, SIZE, SIZE, 3))
    pixels[np.arange(n), :, :, labels] += rng.uniform(20, 90, (n, 1, 1))
    return np.clip(pixels, 0, 255).astype(np.uint8), labels


def _overconfident(seed=0, n=3000, scale=4.0):
    """Logits whose softmax is calibrated (labels drawn from it), and the same logits x `scale`: over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (n, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    return logits * scale, labels


def test_temperature_scaling_undoes_over_confidence():
    logits, labels = _overconfident()
    before = softmax(logits)
    temperature = fit_temperature(logits, labels)
    after = softmax(logits, temperature)
    assert 3.3 < temperature < 4.8  # the 4x the logits were inflated by
    assert expected_calibration_error(after, labels) < expected_calibration_error(before, labels) / 3
    assert negative_log_likelihood(after, labels) < negative_log_likelihood(before, labels)
    assert (after.argmax(1) == before.argmax(1)).all()  # accuracy cannot change


def test_the_run_is_calibrated_and_model_keras_holds_the_temperature(run):
    import keras

    run_dir, result = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert list(metrics)[-1] == "calibration" and calibration["fitted_on"] == "val"
    assert calibration["val"]["num_images"] == metrics["num_val"]
    assert calibration["test"]["num_images"] == metrics["num_test"]
    assert calibration["val"]["nll_after"] <= calibration["val"]["nll_before"] + 1e-9
    assert calibration["temperature"] == (calibration["fitted_temperature"] if calibration["applied"] else 1.0)
    assert abs(metrics["val_loss"] - calibration["val"]["nll_after"]) < 1e-4  # the saved model is the calibrated one
    assert (run_dir / "eval" / "reliability.png").stat().st_size > 10_000
    saved = keras.models.load_model(run_dir / "model.keras")  # plain Keras, no tlkit
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(result.model(images, training=False))
    expected = softmax(logits, calibration["temperature"])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(saved(images)), expected, atol=1e-5)


def test_an_over_confident_keras_model_gets_a_lower_ece_and_saves_its_temperature(tmp_path):
    """A model that reads one pixel and is sure of it (logits in the tens, accuracy far from 100%): calibrate()
    lowers its ECE on val and on test (not fitted there), and the scaled model saves and loads with plain Keras."""
    import keras

    import tensorflow as tf

    from tlkit.training.calibration import calibrate
    from tlkit.model.build import with_probabilities

    def split(seed):
        images, labels = _colour_images(300, seed)
        return tf.data.Dataset.from_tensor_slices((images.astype("float32"), labels)).batch(100)

    data = type("Bundle", (), {"val": split(2), "test": split(3)})
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    kernel = np.zeros((SIZE * SIZE * 3, 3), "float32")
    kernel[[0, 1, 2], [0, 1, 2]] = 0.5  # the first pixel's red, green, blue: the class's channel, under noise
    dense.set_weights([kernel, np.zeros(3, "float32")])
    result = calibrate(model, data)
    measures = result.to_dict()
    assert result.applied and result.temperature > 5.0
    assert measures["val"]["ece_after"] < measures["val"]["ece_before"] - 0.1
    assert measures["test"]["ece_after"] < measures["test"]["ece_before"] - 0.1
    assert measures["test"]["nll_after"] < measures["test"]["nll_before"] / 2
    with_probabilities(model, result.temperature).save(tmp_path / "calibrated.keras")
    saved = keras.models.load_model(tmp_path / "calibrated.keras")  # plain Keras
    images, _ = next(iter(data.val))
    logits = keras.ops.convert_to_numpy(model(images))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(saved(images)), softmax(logits, result.temperature),
                               atol=1e-5)


def test_tta_views_leave_mirror_images_out_unless_flips_are_safe():
    unsafe = plan_tta("flip", flip_safe=False, flip_reason="the probe found mirroring changes the class")
    assert unsafe.views == ["identity"] and "mirroring changes the class" in unsafe.skipped["flip"]
    every = plan_tta("12", flip_safe=False)
    assert len(every.views) == 6 and not any("flip" in view for view in every.views)
    assert plan_tta("2", flip_safe=True).views == ["identity", "flip"]
    assert plan_tta("crops", flip_safe=True).views == ["identity", "center_crop", "crop_top_left", "crop_top_right",
                                                       "crop_bottom_left", "crop_bottom_right"]
    assert plan_tta("none") is None
    with pytest.raises(ConfigError, match="tta='wide'.*flip, crops, a number of views"):
        plan_tta("wide", flip_safe=True)
    images = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    np.testing.assert_array_equal(view_images(images, "flip"), images[:, :, ::-1])
    assert view_images(images, "crop_top_left").shape == images.shape


def _with_flip(run_dir, tmp_path, flip: bool):
    """A copy of the run whose config.yaml records augment.flip=`flip` (what the recipe's probe decides)."""
    from omegaconf import OmegaConf

    copy = tmp_path / f"flip_{flip}"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tensorboard", "eval"))
    config = OmegaConf.load(copy / "config.yaml")
    config.augment.flip = flip
    (copy / "config.yaml").write_text(OmegaConf.to_yaml(config))
    return copy


def test_tta_never_flips_when_the_run_judged_flips_unsafe(run, tmp_path):
    from tlkit.tools.evaluate import evaluate_run

    run_dir, _ = run
    unsafe = evaluate_run(run_dir, "test", write=False, tta="flip")  # trained with augment.flip=false
    assert unsafe["tta"]["views"] == ["identity"] and "augment.flip=false" in unsafe["tta"]["skipped"]["flip"]
    assert unsafe["tta"]["changed_predictions"] == 0 and unsafe["loss"] == unsafe["tta"]["loss_without"]
    safe = evaluate_run(_with_flip(run_dir, tmp_path, True), "test", write=False, tta="flip")
    assert safe["tta"]["views"] == ["identity", "flip"] and safe["loss"] != unsafe["loss"]  # mirrors did count here
    summary = safe["tta"]
    assert summary["accuracy_with"] == safe["accuracy"] and summary["accuracy_without"] == unsafe["accuracy"]
    assert summary["loss_without"] == pytest.approx(unsafe["loss"])
    assert summary["loss_with"] == pytest.approx(safe["loss"])


def test_predict_with_tta_says_what_it_left_out(run, tmp_path, capsys):
    from tlkit.cli.main import main as cli_main

    run_dir, _ = run
    table = json.loads((run_dir / "metrics.json").read_text())
    assert table["num_test"] > 0
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    assert cli_main(["predict", f"run={run_dir}", f"inputs={folder}", "tta=flip", "progress=false"]) == 0
    err = capsys.readouterr().err
    assert "TTA tta=flip: 1 view(s) (identity); 0 of 3 top-1 predictions changed" in err
    assert "left out flip: a mirror view: the run did not train on mirrored images" in err
    from tlkit.tools.predict import predict

    rows, _ = predict(run_dir, folder, tta="crops", progress=False)
    assert len(rows) == 3 and all(row["without_tta"] in ("a", "b", "c") for row in rows)


def test_evaluate_without_a_split_covers_the_tables_test_rows(run, tmp_path, capsys):
    """`tlkit evaluate run=RUN` evaluates every split the data gives: for data=csv the rows whose split is test."""
    from tlkit.cli.main import main as cli_main

    run_dir, _ = run
    assert cli_main(["evaluate", f"run={run_dir}", f"output={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "val: 15 images" in out and "test: 15 images" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["splits"]) == {"val", "test"}
