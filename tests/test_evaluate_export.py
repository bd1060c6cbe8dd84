"""Evaluate, predict and export on one tiny trained run, checked with the real clients.

One VGG16 run (random weights, 32 px, synthetic data, one head epoch) is trained once for
the module; every test reads it. The exports are compared with model.keras through the
clients people serve with: the TFLite interpreter, a reloaded SavedModel's signatures and,
when installed, onnxruntime.
"""
import csv
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

import tlkit
from tlkit import plots
from tlkit.cli.main import main as cli_main

SIZE = 32
CLASSES = ["class_0", "class_1", "class_2"]
TOL = 1e-4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "synthetic", "image_size": SIZE, "num_images": 48, "num_classes": 3, "batch_size": 16},
        "augment": {"name": "none"},
        "schedule": {"name": "frozen", "stages": [{"name": "head", "train": "head", "epochs": 1}]},
        "trainer": {"verbose": 0},
        "doctor": {"enabled": False, "monitor": False},
    })
    tlkit.train(cfg, run)
    return run


@pytest.fixture(scope="module")
def model(run_dir):
    return tlkit.load_model(run_dir / "model.keras")


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Every kind of file `tlkit predict` meets: (folder, good file names, bad file names)."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:90, 0:120]
    rgb = np.stack([(x * 2) % 256, (y * 3) % 256, (x + y) % 256], -1).astype(np.uint8)
    rgb = np.clip(rgb + rng.normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)
    base = Image.fromarray(rgb)
    rgba = np.dstack([rgb, np.where(x < 60, 255, (y * 2) % 256).astype(np.uint8)])
    _save(Image.fromarray(rgba, "RGBA"), root / "rgba.png")
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    _save(palette, root / "palette.png", transparency=0)
    _save(Image.fromarray((rng.integers(0, 65536, (70, 50))).astype(np.uint16)), root / "gray16.png")
    _save(base.convert("L"), root / "gray.jpg", quality=90)
    _save(base.convert("CMYK"), root / "cmyk.jpg", quality=90)
    _save(base, root / "image.bmp")
    frames = [base.convert("P"), Image.fromarray(255 - rgb).convert("P")]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    _save(base, root / "image.webp", quality=80)
    _save(Image.fromarray(rgba, "RGBA"), root / "alpha.webp", lossless=True)  # TF gets WebP alpha wrong: Pillow
    _save(base.convert("P"), root / "palette.bmp")  # TF reads palette BMPs as grey: Pillow
    _save(base, root / "image.tiff")  # Pillow only: TensorFlow cannot decode TIFF
    big = np.clip(rng.normal(128, 60, (1500, 2000, 3)), 0, 255).astype(np.uint8)
    _save(Image.fromarray(big), root / "big.jpg", quality=85)
    (root / "sub").mkdir()
    _save(base, root / "sub" / "nested.png")
    (root / "broken.jpg").write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    jpeg = io.BytesIO()
    base.save(jpeg, format="JPEG")
    (root / "truncated.jpg").write_bytes(jpeg.getvalue()[:200])
    (root / "notes.txt").write_text("not an image\n")
    good = ["rgba.png", "palette.png", "gray16.png", "gray.jpg", "cmyk.jpg", "image.bmp", "palette.bmp", "anim.gif",
            "image.webp", "alpha.webp", "image.tiff", "big.jpg", "sub/nested.png"]
    return root, good, ["broken.jpg", "truncated.jpg", "notes.txt"]


def _pipeline_image(path):
    """The image as the training pipeline reads and resizes a file (float32 0-255)."""
    from tlkit.data.pipeline import _resizer

    image, _ = _resizer(SIZE, True)(str(path), 0)
    return np.asarray(image, dtype=np.float32)


def _probabilities(model, images):
    from tlkit.tools.predict import model_probabilities

    return model_probabilities(model, images)


# --------------------------------------------------------------------------- evaluate


def test_training_writes_the_evaluation_report(run_dir):
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["class_names"] == CLASSES
    val = report["splits"]["val"]
    for key in ["accuracy", "top_k_accuracy", "loss", "per_class", "macro_avg", "weighted_avg", "confusion_matrix",
                "confusion_matrix_normalized", "most_confused", "confidently_wrong", "num_images", "files"]:
        assert key in val, key
    assert len(val["per_class"]) == len(CLASSES)
    assert {"precision", "recall", "f1", "support"} <= val["per_class"][0].keys()
    matrix = np.array(val["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == val["num_images"]
    np.testing.assert_allclose(np.array(val["confusion_matrix_normalized"]).sum(axis=1), 1.0, atol=1e-6)
    assert val["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert val["top_k_accuracy"]["1"] == val["accuracy"]  # top-3 of 3 classes is trivially 1: not reported
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert val["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    for name in ["training_curves.png", "val_confusion_matrix.png", "val_confidently_wrong.png"]:
        with Image.open(run_dir / "eval" / name) as image:
            assert image.format == "PNG" and min(image.size) > 100, name
    assert list((run_dir / "tensorboard" / "eval").glob("events.out.tfevents.*")), "no TensorBoard images"
    assert (run_dir / "config.yaml").is_file(), "a notebook run keeps its config for tlkit evaluate/export"


def test_evaluate_run_with_data_overrides_and_cli(run_dir, capsys):
    from tlkit.tools.evaluate import evaluate_run

    report = evaluate_run(run_dir, "val", {"data.val_split": 0.5}, output=run_dir / "eval_half")
    assert report["num_images"] == 24 and report["data_overrides"] == {"data.val_split": 0.5}
    assert (run_dir / "eval_half" / "val_confusion_matrix.png").is_file()
    assert cli_main(["evaluate", f"run={run_dir}", "data.batch_size=4", f"output={run_dir / 'eval_cli'}"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert cli_main(["evaluate", f"run={run_dir}", "split=test"]) == 2  # no test set: a message, not a traceback


def test_a_plotting_failure_never_loses_the_run(run_dir, model, monkeypatch, caplog, tmp_path):
    import tensorflow as tf

    from tlkit.tools.evaluate import evaluate_bundle, report_after_training

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "confusion_matrix_figure", broken)

    class Data:  # the DataBundle fields evaluate_bundle reads
        val = tf.data.Dataset.from_tensor_slices((np.zeros((2, SIZE, SIZE, 3), np.float32), np.array([0, 1]))).batch(2)
        test = None
        class_names, val_files = CLASSES, None

    with caplog.at_level(logging.WARNING, logger="tlkit"):
        assert report_after_training(tmp_path, evaluate_bundle(model, Data())) is None
    assert "could not write the evaluation report" in caplog.text and "no fonts" in caplog.text


def test_final_metrics_are_what_the_saved_model_gives(run_dir):
    """The trainer's final metrics reuse the calibration's logits instead of a second pass: they must equal what
    model.keras itself reports on the same split."""
    from tlkit.tools.evaluate import evaluate_run

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["calibration"]["applied"] in (True, False)  # the calibration ran: its logits were reused
    report = evaluate_run(run_dir, "val", write=False)
    assert report["loss"] == pytest.approx(metrics["val_loss"], abs=1e-5)
    assert report["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-9)


def test_the_end_of_a_run_runs_the_model_over_val_once(tmp_path, monkeypatch):
    """The calibration's logits give the final metrics and the report: the evaluation after training does not run
    the saved model over val again (only where calibration is off)."""
    import tlkit.tools.predict

    calls = []
    real = tlkit.tools.predict.model_probabilities
    monkeypatch.setattr(tlkit.tools.predict, "model_probabilities", lambda m, images: calls.append(len(images)) or real(m, images))
    config = {"backbone": {"name": "vgg16", "weights": None},
              "data": {"source": "synthetic", "image_size": SIZE, "num_images": 24, "num_classes": 3, "batch_size": 8},
              "augment": {"name": "none"}, "trainer": {"verbose": 0},
              "schedule": {"name": "frozen", "stages": [{"name": "head", "train": "head", "epochs": 1}]},
              "doctor": {"enabled": False, "monitor": False}}
    calibrated = tlkit.train(tlkit.as_train_config(config), tmp_path / "calibrated")
    assert calibrated.metrics["calibration"] is not None and calls == []
    config["trainer"]["calibrate"] = False
    tlkit.train(tlkit.as_train_config(config), tmp_path / "raw")
    assert sum(calls) == 6, "without calibration the evaluation runs the model over the 6 val images"


def test_precomputed_probabilities_are_used_only_where_they_line_up(model, monkeypatch):
    import tensorflow as tf

    import tlkit.tools.predict
    from tlkit.tools.evaluate import evaluate_split

    calls = []
    real = tlkit.tools.predict.model_probabilities
    monkeypatch.setattr(tlkit.tools.predict, "model_probabilities", lambda m, images: calls.append(len(images)) or real(m, images))
    images, labels = np.random.default_rng(0).uniform(0, 255, (6, SIZE, SIZE, 3)).astype(np.float32), np.array([0, 1, 2] * 2)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(3)
    known = np.eye(3)[labels] * 0.9 + 0.1 / 3  # right on every image, confidence 0.93
    evaluation = evaluate_split(model, dataset, CLASSES, known=(known, labels))
    assert calls == [] and evaluation.report["accuracy"] == 1.0
    evaluation = evaluate_split(model, dataset, CLASSES, known=(known, labels[::-1]))  # another order: not used
    assert calls == [6]
    np.testing.assert_allclose(evaluation.probabilities, real(model, images), atol=1e-6)


def test_confusion_matrix_stays_readable_with_120_classes(tmp_path):
    n = 120
    rng = np.random.default_rng(1)
    counts = rng.poisson(0.3, (n, n))
    counts[np.arange(n), np.arange(n)] += rng.integers(5, 40, n)
    names = [f"species_{i:03d}_" + "long_name" * (i % 4) for i in range(n)]
    layout = plots.confusion_layout(n)
    assert 6 <= layout["fontsize"] <= 11 and not layout["annotate"]
    strip_points = layout["side"] / n * 72
    assert layout["fontsize"] * 1.2 <= strip_points, "tick labels would overlap"
    figure = plots.confusion_matrix_figure(counts, names)
    width, height = figure.get_size_inches()
    assert width >= n * 0.2 and height >= n * 0.2
    path = plots.save(figure, tmp_path / "cm120.png")
    with Image.open(path) as image:
        assert min(image.size) > 2000
    small = plots.confusion_layout(3)
    assert small["annotate"] and small["figsize"][0] < 12


# --------------------------------------------------------------------------- predict


def test_predict_mixed_folder(run_dir, model, mixed_folder, tmp_path):
    from tlkit.tools.predict import load_images, predict, write_predictions

    root, good, bad = mixed_folder
    rows, failures = predict(run_dir, root, top_k=5, batch_size=4, progress=False)
    by_name = {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}
    assert sorted(r["path"] for r in rows) == sorted(str(by_name[g]) for g in good)
    assert sorted(f.path for f in failures) == sorted(str(by_name[b]) for b in bad)
    assert all("not a readable image" in f.error for f in failures)
    for row in rows:
        probs = [p["probability"] for p in row["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)  # top_k=5 of 3 classes: 3
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-5)

    # The probabilities are the model's on the same arrays ...
    paths = [r["path"] for r in rows]
    batch, read, _ = load_images(paths, SIZE, SIZE)
    np.testing.assert_allclose([r["probabilities"] for r in rows], _probabilities(model, batch), atol=1e-6)
    # ... and those arrays are what the training pipeline makes of the same files (transparent ones too).
    for name in good:
        row = rows[paths.index(str(by_name[name]))]
        expected = _probabilities(model, _pipeline_image(by_name[name])[None])[0]
        np.testing.assert_allclose(row["probabilities"], expected, atol=1e-6, err_msg=name)
    # Transparency is composited over white, whichever decoder reads the file (tlkit.data.decode).
    from tlkit.tools.predict import resize_like_training

    for name in ["rgba.png", "palette.png", "alpha.webp"]:
        rgba = np.asarray(Image.open(by_name[name]).convert("RGBA")).astype(np.float32)
        alpha = rgba[..., 3:] / 255.0
        assert alpha.min() == 0.0, f"{name} has transparent pixels"
        over_white = np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha))
        expected = _probabilities(model, resize_like_training([over_white], SIZE, SIZE))[0]
        row = rows[paths.index(str(by_name[name]))]
        np.testing.assert_allclose(row["probabilities"], expected, atol=1e-4, err_msg=name)

    csv_path = write_predictions(rows, failures, tmp_path / "preds.csv", 3, CLASSES)
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0].keys()) == ["path", "label_1", "probability_1", "label_2", "probability_2", "label_3",
                                     "probability_3", "error"]
    assert len(table) == len(good) + len(bad)
    assert sum(1 for r in table if r["error"]) == len(bad)
    json_path = write_predictions(rows, failures, tmp_path / "preds.json", 3, CLASSES)
    document = json.loads(json_path.read_text())
    assert len(document["predictions"]) == len(good) and len(document["failures"]) == len(bad)
    assert document["class_names"] == CLASSES and len(document["predictions"][0]["top_k"]) == 3


def test_predict_cli_on_a_glob(run_dir, mixed_folder, tmp_path, capsys):
    root, _, _ = mixed_folder
    out = tmp_path / "out.json"
    assert cli_main(["predict", f"run={run_dir}", f"inputs={root}/*.jpg", "top_k=2", f"output={out}"]) == 0
    document = json.loads(out.read_text())
    assert {p["path"].rsplit("/", 1)[-1] for p in document["predictions"]} == {"gray.jpg", "cmyk.jpg", "big.jpg"}
    assert len(document["predictions"][0]["top_k"]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert cli_main(["predict", f"run={run_dir}", f"inputs={root}/image.bmp"]) == 0  # CSV on stdout
    assert capsys.readouterr().out.startswith("path,label_1,probability_1")


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def real_images(mixed_folder):
    """Resized real images from the mixed folder plus their original bytes (for serve_bytes)."""
    from tlkit.tools.predict import load_images

    root, good, _ = mixed_folder
    paths = [str(root / name) for name in good]
    batch, read, _ = load_images(paths, SIZE, SIZE)
    assert len(read) == len(paths)
    return batch, paths


def _card(path):
    return json.loads(((path if path.is_dir() else path.parent) / "model_card.json").read_text())


def _check_card(card, fmt):
    assert card["format"] == fmt and card["class_names"] == CLASSES
    assert card["input"]["shape"] == [None, SIZE, SIZE, 3] and card["input"]["range"] == [0, 255]
    assert card["input"]["dtype"] == "float32" and card["input"]["channels"] == "RGB"
    assert card["output"]["name"] == "probabilities"


def test_saved_model_signatures_match_keras(run_dir, model, real_images):
    import tensorflow as tf

    from tlkit.tools.export import export
    from tlkit.tools.predict import predict

    path = export(run_dir, "saved_model")
    card = _card(path)
    _check_card(card, "saved_model")
    assert set(card["signatures"]) == {"serving_default", "serve_bytes"}
    assert card["verification"]["max_abs_diff"] <= TOL
    loaded = tf.saved_model.load(str(path))
    images, paths = real_images
    expected = _probabilities(model, images)
    got = loaded.signatures["serving_default"](image=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=TOL)
    # PNG is lossless: the bytes of the resized images give the float path's probabilities.
    png = [_encode_png(image.astype(np.uint8)) for image in images]
    from_bytes = loaded.signatures["serve_bytes"](image_bytes=tf.constant(png))["probabilities"].numpy()
    np.testing.assert_allclose(from_bytes, expected, atol=TOL)
    assert (from_bytes.argmax(1) == expected.argmax(1)).all()
    # The original files (any size and mode, in the formats TensorFlow decodes) read as `tlkit predict` reads them.
    from tlkit.data.decode import HEAD_BYTES, tf_decodes

    contents = {p: open(p, "rb").read() for p in paths}
    decodable = [p for p in paths if tf_decodes(contents[p][:HEAD_BYTES])]
    assert {p.rsplit(".", 1)[-1] for p in decodable} == {"png", "jpg", "bmp", "gif"}
    from_files = loaded.signatures["serve_bytes"](image_bytes=tf.constant([contents[p] for p in decodable]))
    rows, _ = predict(model, decodable, progress=False)
    np.testing.assert_allclose(from_files["probabilities"].numpy(), [r["probabilities"] for r in rows], atol=TOL)
    webp = [contents[p] for p in paths if p.endswith(".webp")][:1]
    with pytest.raises(tf.errors.InvalidArgumentError, match="not JPEG, PNG, GIF"):
        loaded.signatures["serve_bytes"](image_bytes=tf.constant(webp))


@pytest.mark.parametrize("client", ["litert", "tensorflow"])
def test_tflite_interpreter_matches_keras(run_dir, model, real_images, client, capfd):
    """The file in LiteRT's interpreter (ai-edge-litert, the dev and export extras) and in tf.lite.Interpreter,
    while TensorFlow still ships it."""
    if client == "litert":
        pytest.importorskip("ai_edge_litert", reason="pip install -e '.[dev]' installs ai-edge-litert")
    from tlkit.tools.export import TFLiteRunner, export

    path = export(run_dir, "tflite")
    assert path.name == "model.tflite"
    card = _card(path)
    _check_card(card, "tflite")
    images, _ = real_images
    runner = TFLiteRunner(path, client=client)
    assert runner.client.startswith("ai-edge-litert" if client == "litert" else "tf.lite.Interpreter")
    np.testing.assert_allclose(runner(images), _probabilities(model, images), atol=TOL)
    assert "XNNPACK" not in capfd.readouterr().err  # TFLite's C++ notice, kept out of the console (tlkit.console)
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        assert card["verification"]["client"].startswith("tf.lite.Interpreter")
    else:  # export's own check runs the file where people serve it
        assert card["verification"]["client"].startswith("ai-edge-litert")


@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_quantized_tflite_reports_the_accuracy_change(run_dir, model, real_images, quantize):
    from tlkit.tools.export import TFLiteRunner, export

    path = export(run_dir, "tflite", quantize=quantize)
    card = _card(path)
    _check_card(card, "tflite")
    change = card["accuracy_change"]
    assert change["split"] == "val" and change["images"] == 9
    assert change["change"] == pytest.approx(change["val_accuracy_quantized"] - change["val_accuracy_float"])
    assert np.isfinite(card["verification"]["max_abs_diff"])
    float_size = (run_dir / "model.keras").stat().st_size
    assert path.stat().st_size < float_size * (0.6 if quantize == "float16" else 0.35)
    images, _ = real_images
    np.testing.assert_allclose(TFLiteRunner(path)(images), _probabilities(model, images), atol=0.05)
    np.testing.assert_allclose(TFLiteRunner(path, client="tensorflow")(images), _probabilities(model, images),
                               atol=0.05)


def test_keras_export_and_cli(run_dir, capsys):
    assert cli_main(["export", f"run={run_dir}", "format=keras"]) == 0
    out = capsys.readouterr().out
    assert "model card" in out and "float32 RGB 0-255" in out
    card = json.loads((run_dir / "export" / "keras" / "model_card.json").read_text())
    _check_card(card, "keras")
    assert card["verification"]["max_abs_diff"] == 0.0
    assert cli_main(["export", f"run={run_dir}", "format=keras", "quantize=int8"]) == 2  # int8 is TFLite only


def test_onnx_runtime_matches_keras(run_dir, model, real_images):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from tlkit.tools.export import export, onnx_runner

    path = export(run_dir, "onnx")
    _check_card(_card(path), "onnx")
    images, _ = real_images
    np.testing.assert_allclose(onnx_runner(path)(images), _probabilities(model, images), atol=TOL)


def _encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 RGB array (lossless): what a client sends to the serve_bytes signature."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
