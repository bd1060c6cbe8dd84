"""Predictions on image files: `tlkit predict run=RUN_DIR inputs=PATH [top_k=5] [output=preds.csv]`.

    predict(run_dir_or_model, inputs, top_k=5, batch_size=32) -> (rows, failures)

`inputs` is a file, a folder (every non-hidden file below it) or a glob, or a list of
those. An image is read so that it gets the probabilities `tlkit evaluate` saw for it:

  * Decoding is tlkit.data.decode's, the training pipeline's and `serve_bytes`'s too:
    JPEG, PNG, GIF and uncompressed 24/32-bit BMP (by their first bytes, whatever the file
    name) through TensorFlow (Pillow's JPEG decoder differs from TensorFlow's by a few levels
    on most pixels); everything else Pillow reads (WebP, palette BMP, TIFF, ICO, PPM, ... and
    files TensorFlow refuses) through Pillow. Grayscale is replicated to RGB, 16-bit scaled
    to 8 bits (value >> 8), CMYK, YCbCr, palette and 1-bit converted, the first frame of an
    animation used.
  * **Transparency (RGBA, LA, palette with a transparent colour) is composited over white**
    (tlkit.data.decode.ALPHA_BACKGROUND) by every reader: training, predict, `serve_bytes`.
  * EXIF orientation is not applied (TensorFlow's decoders, and so training, ignore it).
  * Resize: the whole image (no crop, aspect ratio not kept) to the model's H x W, bilinear
    with antialiasing, rounded to uint8: tf.image.resize exactly as tlkit.data.pipeline.

Files that cannot be read are listed in `failures` with the reason; they never stop a run.
"""
from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

import tlkit.training.rundir as rundir
from tlkit.fileio import read_json
from tlkit.data.decode import HEAD_BYTES, decode_rgb_pillow, decode_rgb_tf, tf_decodes


@dataclass
class Failure:
    path: str
    error: str


# --------------------------------------------------------------------------- inputs


def list_inputs(inputs: Union[str, Path, Sequence[Union[str, Path]]]) -> List[str]:
    """Files named by `inputs` (files, folders searched recursively, globs), de-duplicated."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list = []
    for item in inputs:
        item = os.path.expanduser(str(item))
        if os.path.isdir(item):
            for dirpath, dirnames, filenames in os.walk(item, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
        elif os.path.isfile(item):
            found.append(item)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"inputs={item!r}: no such file or folder, and no file matches it as a glob")
            found.extend(m for m in matches if os.path.isfile(m))
    return list(dict.fromkeys(found))  # in the order given (folders and globs sorted), each file once


# --------------------------------------------------------------------------- reading images


def tf_resize_like_training(image, height: int, width: int):
    """float32 [..., H, W, 3] with uint8 values: tlkit.data.pipeline's resize, then its rounding."""
    import tensorflow as tf

    resized = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
    return tf.round(tf.clip_by_value(resized, 0.0, 255.0))


def _first_line(error: BaseException) -> str:
    """The first line of an error, without TensorFlow's {{function_node ...}} and [Op:...] wrapping."""
    import re

    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", line).strip()
    return (line or type(error).__name__)[:200]


def read_image(path: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] at the file's own size, by tlkit.data.decode's rule (as training reads
    it); ValueError (with both readers' reasons) when unreadable."""
    try:
        with open(path, "rb") as f:
            header = f.read(HEAD_BYTES)
            contents = header + f.read() if tf_decodes(header) else None  # others: Pillow reads what it needs
    except OSError as error:
        raise ValueError(f"cannot read the file: {error}") from None
    reasons = []
    if contents is not None:
        try:
            return decode_rgb_tf(contents).numpy()
        except Exception as error:  # corrupt or unsupported variant: Pillow may still read it
            reasons.append(f"TensorFlow: {_first_line(error)}")
    try:
        return decode_rgb_pillow(contents if contents is not None else path)
    except ValueError as error:
        cause = error.__cause__ or error
        reasons.append(f"Pillow: {type(cause).__name__}: {_first_line(cause)}")
    raise ValueError("not a readable image (" + "; ".join(reasons) + ")")


def resize_like_training(images: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """float32 [N, H, W, 3] in 0..255, resized as tlkit.data.pipeline resizes files."""
    out = np.empty((len(images), height, width, 3), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = tf_resize_like_training(np.asarray(image, dtype=np.float32), height, width).numpy()
    return out


def read_images(paths: Sequence[str]) -> Tuple[List[np.ndarray], List[str], List[Failure]]:
    """(each readable file as uint8 RGB at its own size, the paths read, failures) for a list of files."""
    arrays, good, failures = [], [], []
    for path in paths:
        try:
            arrays.append(read_image(path))
            good.append(path)
        except ValueError as error:
            failures.append(Failure(path, str(error)))
    return arrays, good, failures


def load_images(paths: Sequence[str], height: int, width: int) -> Tuple[np.ndarray, List[str], List[Failure]]:
    """(float32 batch, the paths read, failures) for a list of files."""
    arrays, good, failures = read_images(paths)
    batch = resize_like_training(arrays, height, width) if arrays else np.zeros((0, height, width, 3), np.float32)
    return batch, good, failures


# --------------------------------------------------------------------------- predicting


def call_model(model, images):
    """model(images) in inference mode, without Keras's warning about a list-input model fed a tensor."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        return model(images, training=False)


def model_probabilities(model, images) -> np.ndarray:
    """float64 numpy probabilities of a batch (eager: no retracing across batch sizes or models)."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(call_model(model, np.asarray(images, dtype=np.float32))),
                      dtype=np.float64)


def load_model_and_classes(run_or_model):
    """(model, class_names) from `run_or_model`: a run directory, a .keras file or a loaded model (its classes then
    named 0..N-1)."""
    from tlkit.model.load import load_model

    if not isinstance(run_or_model, (str, Path)):
        model = run_or_model
        names = [str(i) for i in range(int(model.output_shape[-1]))]
        return model, names
    path = Path(run_or_model)
    model_file = path / rundir.MODEL_FILE if path.is_dir() else path
    run_dir = model_file.parent
    model = load_model(model_file)
    names = rundir.read_metrics(run_dir).get("class_names")
    if not names:
        card = run_dir / "model_card.json"
        names = read_json(card).get("class_names")
    return model, list(names or [str(i) for i in range(int(model.output_shape[-1]))])


def predict(run_or_model, inputs, top_k: int = 5, batch_size: int = 32, class_names: Optional[Sequence[str]] = None,
            progress: bool = True, tta=None, thresholds: Optional[Sequence[float]] = None
            ) -> Tuple[List[dict], List[Failure]]:
    """Top-k classes of every readable image in `inputs`.

    Returns (rows, failures): a row is {"path", "predictions": [{"label", "index",
    "probability"}, ...] (k, most likely first), "probabilities": [...] (every class)}.
    tta: flip, crops or N (tlkit.tools.tta: mirror views only when the run's flip decision allows them; a loaded model
    has no run, so none), or a tlkit.tools.tta.TTAPlan: probabilities averaged over the views, and each row gains
    "without_tta": the top-1 label of the plain image (multi-label: its labels over the thresholds).
    thresholds: task=multilabel, one per class (None: a run directory's thresholds.json, when it has one): each row
    gains "labels", every class whose probability is >= its threshold (tlkit.model.multilabel).
    """
    from tlkit.tools.tta import TTAPlan, TTAPredictor, plan_tta

    from tlkit.model.multilabel import read_thresholds

    model, names = load_model_and_classes(run_or_model)
    names = list(class_names) if class_names is not None else names
    if thresholds is None:
        thresholds = read_thresholds(_run_dir_of(run_or_model), names)
    if len(names) != int(model.output_shape[-1]):
        raise ValueError(f"{len(names)} class names for a model with {model.output_shape[-1]} outputs")
    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    k = max(1, min(int(top_k), len(names)))
    if not isinstance(tta, TTAPlan):
        tta = plan_tta(tta, _run_dir_of(run_or_model))
    predictor = TTAPredictor(lambda images: model_probabilities(model, images), tta) if tta else None
    paths = list_inputs(inputs)
    rows, failures = [], []
    bar = _progress(len(paths), progress)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        batch, good, failed = load_images(chunk, height, width)
        failures.extend(failed)
        if len(good):
            probabilities = predictor(batch) if predictor else model_probabilities(model, batch)
            for j, (path, probs) in enumerate(zip(good, probabilities)):
                order = np.argsort(-probs, kind="stable")[:k]
                rows.append({
                    "path": path,
                    "predictions": [{"label": names[i], "index": int(i), "probability": float(probs[i])}
                                    for i in order],
                    "probabilities": [float(p) for p in probs],
                })
                if thresholds is not None:
                    rows[-1]["labels"] = [names[i] for i in range(len(names)) if probs[i] >= thresholds[i]]
                if predictor:  # multi-label: the label set at the thresholds without TTA; else the top-1 label
                    plain = predictor.plain[-1][j]
                    rows[-1]["without_tta"] = (names[int(np.argmax(plain))] if thresholds is None else
                                               [names[i] for i in range(len(names)) if plain[i] >= thresholds[i]])
        bar.update(len(chunk))
    bar.close()
    return rows, failures


def _run_dir_of(run_or_model) -> Optional[Path]:
    """The run directory of a run directory or of a model.keras inside one; None for a loaded model."""
    if not isinstance(run_or_model, (str, Path)):
        return None
    path = Path(run_or_model)
    return path if path.is_dir() else path.parent


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with TensorFlow's dependencies
        return _NoBar()
    return tqdm(total=total, unit="img", desc="predict", leave=False)


# --------------------------------------------------------------------------- writing


def to_table(rows: Sequence[dict], failures: Sequence[Failure], top_k: int) -> Tuple[List[str], List[list]]:
    """CSV columns path, label_1, probability_1, ..., label_k, probability_k, [labels,] error; `labels` (multi-label
    runs): the classes over their thresholds, separated by ";"."""
    multilabel = any("labels" in row for row in rows)
    header = (["path"] + [c for i in range(1, top_k + 1) for c in (f"label_{i}", f"probability_{i}")]
              + (["labels"] if multilabel else []) + ["error"])
    table = []
    for row in rows:
        cells = [row["path"]]
        for i in range(top_k):
            if i < len(row["predictions"]):
                p = row["predictions"][i]
                cells += [p["label"], f"{p['probability']:.6f}"]
            else:
                cells += ["", ""]
        table.append(cells + ([";".join(row.get("labels", []))] if multilabel else []) + [""])
    for failure in failures:
        table.append([failure.path] + [""] * (2 * top_k + multilabel) + [failure.error])
    return header, table


def write_predictions(rows: Sequence[dict], failures: Sequence[Failure], output: Union[str, Path, None], top_k: int,
                      class_names: Sequence[str] = (), stream=None) -> Optional[Path]:
    """CSV (default, and for *.csv) or JSON (*.json) to `output`, or CSV to `stream` when output is None."""
    if output is not None and str(output).lower().endswith(".json"):
        document = {
            "class_names": list(class_names),
            "top_k": top_k,
            "predictions": [{"path": r["path"], "top_k": r["predictions"],
                             **({"labels": r["labels"]} if "labels" in r else {})} for r in rows],
            "failures": [{"path": f.path, "error": f.error} for f in failures],
        }
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path
    header, table = to_table(rows, failures, top_k)
    if output is None:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(table)
        return None
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(table)
    return path

