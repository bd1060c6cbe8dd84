"""Exports for serving: `tlkit export run=RUN_DIR format=keras|saved_model|tflite|onnx [quantize=float16|int8]`.

    export(run_dir, fmt, quantize=None, output=None) -> path of the model file (or SavedModel folder)

Every export embeds the preprocessing and returns probabilities. The input contract, the
same for every format: float32 RGB images in 0-255, NHWC, the run's fixed size
[batch, H, W, 3] (batch is free), already resized to H x W (bilinear, the whole image; see
tlkit.tools.predict). The SavedModel has two signatures:

    serving_default(image: float32 [None, H, W, 3], 0-255)  -> {"probabilities": [None, N]}
    serve_bytes(image_bytes: string [None])                 -> {"probabilities": [None, N]}

`serve_bytes` takes encoded JPEG, PNG, GIF or uncompressed 24/32-bit BMP bytes of any size (the
formats training decodes with TensorFlow; other data fails with a message), decodes them with
tlkit.data.decode's TensorFlow decoder, the training pipeline's (first frame; grayscale to RGB;
transparency over white), resizes them as training did, calls the model.

Layout: RUN_DIR/export/<format>[_<quantize>]/ holds the model file and model_card.json
(class names, input and output contract, backbone, preprocessing, and a check of the export
against model.keras on validation images; for float16/int8 TFLite the val accuracy change).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

import tlkit.training.rundir as rundir
from tlkit.errors import ConfigError
from tlkit.model.load import load_model
from tlkit.model.multilabel import read_thresholds
from tlkit.tools.predict import model_probabilities
from tlkit.version import __version__

log = logging.getLogger("tlkit.export")

FORMATS = ("keras", "saved_model", "tflite", "onnx")
QUANTIZE = ("float16", "int8")
CARD_FILE = "model_card.json"
MODEL_FILES = {"keras": "model.keras", "saved_model": None, "tflite": "model.tflite", "onnx": "model.onnx"}
VERIFY_IMAGES = 64  # val images compared against model.keras for a float export
ONNX_OPSET = 17


def export(run_dir: str | Path, fmt: str, quantize: Optional[str] = None, output: str | Path | None = None,
           verify: bool = True) -> Path:
    """Export RUN_DIR/model.keras as `fmt`; returns the model file (the folder for a SavedModel)."""
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise ConfigError("format", fmt, f"one of {list(FORMATS)}")
    if quantize is not None and str(quantize).lower() in ("", "none", "null", "false"):
        quantize = None
    if quantize is not None and (fmt != "tflite" or quantize not in QUANTIZE):
        raise ConfigError("quantize", quantize, f"null, or one of {list(QUANTIZE)} with format=tflite",
                          hint="float16 halves the file; int8 (dynamic range) quarters it; both change accuracy")
    run_dir = Path(run_dir)
    model = load_model(run_dir / rundir.MODEL_FILE)
    name = fmt + (f"_{quantize}" if quantize else "")
    out = Path(output) if output is not None else run_dir / rundir.EXPORT_DIR / name
    if out.exists():
        if not (out / CARD_FILE).is_file() and any(out.iterdir()):
            raise ConfigError("output", str(out), "a new or empty folder, or an earlier export (with its "
                              f"{CARD_FILE}), which is replaced", hint="choose another output= folder")
        shutil.rmtree(out)  # an earlier export of the same kind: replaced whole
    out.mkdir(parents=True)
    started = time.time()
    if fmt == "keras":
        path = out / MODEL_FILES["keras"]
        shutil.copyfile(run_dir / rundir.MODEL_FILE, path)
    elif fmt == "saved_model":
        path = out
        write_saved_model(model, out, with_bytes=True)
    elif fmt == "tflite":
        path = out / MODEL_FILES["tflite"]
        path.write_bytes(to_tflite(model, quantize))
    else:
        path = out / MODEL_FILES["onnx"]
        to_onnx(model, path)
    card = model_card(run_dir, model, fmt, quantize, path)
    card["export_seconds"] = round(time.time() - started, 2)
    if verify:
        card.update(_verify(run_dir, model, fmt, path, quantize))
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    log.info("exported %s%s to %s", fmt, f" ({quantize})" if quantize else "", path)
    return path


# --------------------------------------------------------------------------- the serving functions


def _size(model) -> tuple:
    return int(model.input_shape[1]), int(model.input_shape[2])


def decode_for_serving(image_bytes, height: int, width: int):
    """One encoded image -> float32 [H, W, 3] in 0..255, exactly as `tlkit predict` and the training
    pipeline read a file (tlkit.data.decode.decode_rgb_tf: transparency over white)."""
    from tlkit.data.decode import decode_rgb_tf
    from tlkit.tools.predict import tf_resize_like_training

    return tf_resize_like_training(decode_rgb_tf(image_bytes, dtype="float32"), height, width)


def serving_module(model, with_bytes: bool = True):
    """(tf.Module holding the model, {signature name: tf.function}) for tf.saved_model.save.

    The module tracks the model's TensorFlow variables themselves, not the Keras model:
    model.export / keras.export.ExportArchive (Keras 3.15) save each weight twice, once as a
    Keras variable and once as the tf.Variable inside it (a 2x larger variables/ folder), and
    tracking the Keras model alone leaves the TFLite converter without the weights.
    """
    import tensorflow as tf

    from tlkit.tools.predict import call_model

    height, width = _size(model)
    module = tf.Module()
    module.model_variables = [_tf_variable(v) for v in model.variables]

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="image")])
    def serve_images(image):
        return {"probabilities": call_model(model, image)}

    module.serve_images = serve_images
    signatures = {"serving_default": serve_images}
    if with_bytes:

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(image_bytes):
            images = tf.map_fn(lambda b: decode_for_serving(b, height, width), image_bytes,
                               fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))
            return {"probabilities": call_model(model, images)}

        module.serve_bytes = serve_bytes
        signatures["serve_bytes"] = serve_bytes
    return module, signatures


def _tf_variable(variable):
    """The tf.Variable behind a Keras 3 variable (TensorFlow backend)."""
    import tensorflow as tf

    value = getattr(variable, "value", variable)
    return value if isinstance(value, tf.Variable) else variable._value


def write_saved_model(model, path: str | Path, with_bytes: bool = True) -> Path:
    import tensorflow as tf

    module, signatures = serving_module(model, with_bytes)
    tf.saved_model.save(module, str(path), signatures=signatures)
    return Path(path)


def to_tflite(model, quantize: Optional[str] = None) -> bytes:
    """TFLite flatbuffer of the float serving signature; float16 or dynamic-range int8 weights."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="tlkit_tflite_") as tmp:
        write_saved_model(model, tmp, with_bytes=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serving_default"])
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic range
            if quantize == "float16":
                converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def to_onnx(model, path: Path) -> Path:
    """ONNX through tf2onnx (the optional `onnx` extra); input "image", output "probabilities"."""
    try:
        import tf2onnx
    except ImportError as error:
        raise ConfigError("format", "onnx", "available only with tf2onnx installed",
                          hint='pip install "tlkit[onnx]" (tf2onnx, onnxruntime)') from error
    import tensorflow as tf

    from tlkit.tools.predict import call_model

    height, width = _size(model)
    signature = [tf.TensorSpec([None, height, width, 3], tf.float32, name="image")]

    @tf.function(input_signature=signature)
    def serve(image):
        return call_model(model, image)

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=ONNX_OPSET)
    _rename_onnx_output(proto, "probabilities")
    path.write_bytes(proto.SerializeToString())
    return path


def _rename_onnx_output(proto, name: str) -> None:
    old = proto.graph.output[0].name
    if old == name:
        return
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    proto.graph.output[0].name = name


# --------------------------------------------------------------------------- the clients


def tflite_interpreter(client: str = "auto"):
    """(Interpreter class, its name): LiteRT's (ai-edge-litert, the successor TensorFlow's deprecation notice points
    to) when installed or asked for (client="litert"), else TensorFlow's tf.lite.Interpreter (client="tensorflow")."""
    if client in ("auto", "litert"):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            if client == "litert":
                raise
        else:
            from importlib.metadata import PackageNotFoundError, version

            try:
                return Interpreter, f"ai-edge-litert {version('ai-edge-litert')}"
            except PackageNotFoundError:
                return Interpreter, "ai-edge-litert"
    import tensorflow as tf

    return tf.lite.Interpreter, f"tf.lite.Interpreter (TensorFlow {tf.__version__})"


class TFLiteRunner:
    """A TFLite file on batches of images, in LiteRT's interpreter when installed (see tflite_interpreter)."""

    def __init__(self, model_path: str | Path, client: str = "auto"):
        import warnings

        from tlkit.console import tflite_lines_filtered

        Interpreter, self.client = tflite_interpreter(client)
        with warnings.catch_warnings(), tflite_lines_filtered():  # "Created TensorFlow Lite XNNPACK delegate"
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT is its successor)
            self.interpreter = Interpreter(model_path=str(model_path))
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from tlkit.console import tflite_lines_filtered

        images = np.asarray(images, dtype=np.float32)
        if self.batch != len(images):
            self.interpreter.resize_tensor_input(self.input["index"], list(images.shape))
            with tflite_lines_filtered():
                self.interpreter.allocate_tensors()
            self.batch = len(images)
        self.interpreter.set_tensor(self.input["index"], images)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]))


def saved_model_runner(path: str | Path, signature: str = "serving_default"):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    function = loaded.signatures[signature]

    def run(inputs):
        argument = "image" if signature == "serving_default" else "image_bytes"
        dtype = tf.float32 if signature == "serving_default" else tf.string
        return function(**{argument: tf.constant(inputs, dtype=dtype)})["probabilities"].numpy()

    run.loaded = loaded  # keep the trackable alive
    return run


def onnx_runner(path: str | Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: np.asarray(images, dtype=np.float32)})[0]


def runner_for(fmt: str, path: Path):
    if fmt == "keras":
        model = load_model(path)
        return lambda images: model_probabilities(model, images)
    if fmt == "saved_model":
        return saved_model_runner(path)
    if fmt == "tflite":
        return TFLiteRunner(path)
    return onnx_runner(path)


# --------------------------------------------------------------------------- model card and checks


def _output_meaning(thresholds: Optional[list]) -> str:
    if thresholds is None:
        return "softmax probabilities, in class_names order (they sum to 1)"
    return ("independent sigmoid probabilities, in class_names order (multi-label: they need not sum to 1); a label "
            "applies where its probability is at least its threshold (thresholds, tuned on val)")


def model_card(run_dir: Path, model, fmt: str, quantize: Optional[str], path: Path) -> dict:
    metrics = rundir.read_metrics(run_dir)
    height, width = _size(model)
    class_names = metrics.get("class_names") or [str(i) for i in range(int(model.output_shape[-1]))]
    thresholds = read_thresholds(run_dir, class_names)  # task=multilabel: sigmoids, a threshold per class
    card = {
        "format": fmt,
        "quantize": quantize,
        "model_file": path.name if path.is_file() else ".",
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "input": {
            "name": "image", "shape": [None, height, width, 3], "dtype": "float32", "range": [0, 255],
            "channels": "RGB", "layout": "NHWC",
            "resize": f"bilinear with antialiasing, the whole image to {height}x{width} (no crop, aspect ratio not "
                      "kept), rounded to integers, as tlkit's training pipeline and `tlkit predict` do",
            "preprocessing": f"inside the model ({metrics.get('preprocess', 'see backbone')}): do not normalise",
        },
        "output": {"name": "probabilities", "shape": [None, len(class_names)], "dtype": "float32",
                   "meaning": _output_meaning(thresholds)},
        "backbone": metrics.get("backbone"),
        "preprocess": metrics.get("preprocess"),
        "image_size": height,
        "val_accuracy": metrics.get("val_accuracy"),
        "source_run": str(run_dir.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": _versions(),
    }
    if thresholds is not None:
        card["task"], card["thresholds"] = "multilabel", dict(zip(class_names, thresholds))
    if fmt == "saved_model":
        card["signatures"] = {
            "serving_default": {"inputs": {"image": f"float32 [None, {height}, {width}, 3], RGB 0-255"},
                                "outputs": {"probabilities": f"float32 [None, {len(class_names)}]"}},
            "serve_bytes": {"inputs": {"image_bytes": "string [None]: encoded JPEG, PNG, GIF or 24/32-bit BMP, "
                                                      "any size; first frame, grayscale to RGB, transparency over "
                                                      "white, resized like the training pipeline"},
                            "outputs": {"probabilities": f"float32 [None, {len(class_names)}]"}},
        }
    if fmt == "tflite":
        card["signatures"] = {"serving_default": {"inputs": ["image"], "outputs": ["probabilities"]}}
        card["quantization"] = {None: "none (float32)", "float16": "float16 weights (computed in float32 on CPU)",
                                "int8": "dynamic-range int8 weights (activations float)"}[quantize]
    return card


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"tlkit": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def _verify(run_dir: Path, model, fmt: str, path: Path, quantize: Optional[str]) -> dict:
    """Compare the export with model.keras on val images; for quantized TFLite, the val accuracy change."""
    from tlkit.tools.evaluate import load_split

    try:
        dataset, _, _ = load_split(run_dir, "val", None, int(model.input_shape[1]))
        runner = runner_for(fmt, path)
    except Exception as error:  # the run's data may have moved: the export itself is fine
        log.warning("could not check the %s export on the run's val set: %s", fmt, error)
        return {"verification": {"skipped": f"{type(error).__name__}: {error}"}}
    limit = None if quantize else VERIFY_IMAGES
    expected, got, labels = [], [], []
    for images, batch_labels in dataset:
        images = np.asarray(images, dtype=np.float32)
        if limit is not None:
            images = images[: limit - sum(len(e) for e in expected)]
            batch_labels = np.asarray(batch_labels)[: len(images)]
        if not len(images):
            break
        expected.append(model_probabilities(model, images))
        got.append(np.asarray(runner(images)))
        labels.append(np.asarray(batch_labels))
    if not expected:
        return {"verification": {"skipped": "the run's val set is empty"}}
    expected, got, labels = np.concatenate(expected), np.concatenate(got), np.concatenate(labels)
    check = {
        "images": int(len(labels)),
        "max_abs_diff": float(np.abs(expected - got).max()),
        "top1_agreement": float(np.mean(expected.argmax(1) == got.argmax(1))),
    }
    result = {"verification": {"against": "model.keras on the run's val images", **check}}
    if getattr(runner, "client", None):
        result["verification"]["client"] = runner.client  # which interpreter ran the file
    if quantize:
        before = float(np.mean(expected.argmax(1) == labels))
        after = float(np.mean(got.argmax(1) == labels))
        result["accuracy_change"] = {"split": "val", "images": int(len(labels)), "val_accuracy_float": before,
                                     "val_accuracy_quantized": after, "change": after - before}
        log.info("%s TFLite: val accuracy %.4f -> %.4f (%+.4f), top-1 agreement %.4f", quantize, before, after,
                 after - before, check["top1_agreement"])
    return result
