"""Multi-label classification (task=multilabel): N sigmoid logits, binary cross-entropy, mAP, thresholds.

    training   N logits (the same head as single-label), binary cross-entropy from logits with per-class positive
               weights (data.class_weight=auto: negatives / positives of each class in train), metrics
               `accuracy` (exact match: every label right at 0.5) and `map` (Keras's PR-AUC averaged over the
               classes, the monitor: val_map)
    saving     model.keras ends in a sigmoid per class (tlkit.model.build.with_probabilities)
    thresholds one per class, tuned on val for the best F1 (tune_thresholds), saved as RUN_DIR/thresholds.json,
               used by `tlkit predict` and the reports
    reports    average precision per class (NumPy, as scikit-learn's average_precision_score), mAP macro and micro,
               F1 at the thresholds (tlkit.tools.multilabel_report draws the PR curves)

Keras and NumPy only (no TensorFlow import).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
from keras import ops

THRESHOLDS_FILE = "thresholds.json"
DEFAULT_THRESHOLD = 0.5  # a class without positives in val keeps it
MAX_POS_WEIGHT = 100.0  # a class with 1 positive in 10,000 would otherwise dominate the loss


def is_multilabel(cfg) -> bool:
    return str(getattr(getattr(cfg, "task", None), "value", getattr(cfg, "task", None))) == "multilabel"


# --------------------------------------------------------------------------- training: loss and metrics


def positive_weights(train_labels: np.ndarray) -> list[float]:
    """Per class: negatives / positives in the training labels (multi-hot [N, classes]), within [1, MAX_POS_WEIGHT]
    for rare classes; a class with no positives (or more positives than negatives) keeps 1."""
    labels = np.asarray(train_labels, dtype=np.float64)
    positives = labels.sum(axis=0)
    negatives = len(labels) - positives
    ratio = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return [float(w) for w in np.clip(ratio, 1.0, MAX_POS_WEIGHT)]


@keras.saving.register_keras_serializable(package="tlkit")
class MultiLabelLoss(keras.losses.Loss):
    """Binary cross-entropy from logits, averaged over classes; `pos_weight` (one per class, None: 1) scales the
    positive term: loss = mean_c [w_c * y * softplus(-z) + (1 - y) * softplus(z)]."""

    def __init__(self, pos_weight: Sequence[float] | None = None, name: str = "binary_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weight = None if pos_weight is None else [float(w) for w in pos_weight]

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        target = ops.cast(y_true, "float32")
        weight = 1.0 if self.pos_weight is None else ops.convert_to_tensor(self.pos_weight, "float32")
        terms = weight * target * ops.softplus(-logits) + (1.0 - target) * ops.softplus(logits)
        return ops.mean(terms, axis=-1)

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight}


def exact_match(y_true, y_pred):
    """1 where every class is right at probability 0.5 (logit 0), else 0: the multi-label `accuracy`."""
    predicted = ops.cast(ops.greater(ops.cast(y_pred, "float32"), 0.0), "float32")
    wrong = ops.sum(ops.abs(predicted - ops.cast(y_true, "float32")), axis=-1)
    return ops.cast(ops.equal(wrong, 0.0), "float32")


@keras.saving.register_keras_serializable(package="tlkit")
class ExactMatch(keras.metrics.MeanMetricWrapper):
    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(fn=exact_match, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def training_metrics() -> list:
    """`accuracy` (exact match) and `map`: the macro PR-AUC, what trainer.monitor=val_map reads."""
    return [ExactMatch(), keras.metrics.AUC(curve="PR", multi_label=True, from_logits=True, num_thresholds=200,
                                            name="map")]


# --------------------------------------------------------------------------- reports (NumPy)


def pr_curve(scores: np.ndarray, labels: np.ndarray):
    """(precision, recall, thresholds) at every distinct score, highest first, as scikit-learn computes them."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    scores, labels = np.asarray(scores, dtype=np.float64)[order], np.asarray(labels)[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # the last index of each distinct score
    tp = np.cumsum(labels)[last].astype(np.float64)
    fp = (last + 1) - tp
    positives = tp[-1] if len(tp) else 0.0
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / positives if positives else np.zeros_like(tp)
    return precision, recall, scores[last]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP = sum over thresholds of (recall step) x precision; NaN for a class without positives."""
    if not np.any(labels):
        return float("nan")
    precision, recall, _ = pr_curve(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """{"per_class": [AP], "macro": mean over classes with positives, "micro": AP of all (image, class) pairs}."""
    per_class = [average_precision(probabilities[:, c], labels[:, c]) for c in range(labels.shape[1])]
    scored = [ap for ap in per_class if ap == ap]
    return {"per_class": per_class, "macro": float(np.mean(scored)) if scored else float("nan"),
            "micro": average_precision(probabilities.ravel(), labels.ravel())}


def tune_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per class, the probability threshold (predict >= it) with the best F1 on these (validation) images; ties go
    to the higher threshold; DEFAULT_THRESHOLD for a class without positives."""
    thresholds = []
    for c in range(labels.shape[1]):
        if not np.any(labels[:, c]):
            thresholds.append(DEFAULT_THRESHOLD)
            continue
        precision, recall, cuts = pr_curve(probabilities[:, c], labels[:, c])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        thresholds.append(float(cuts[int(np.argmax(f1))]))
    return thresholds


def f1_scores(probabilities: np.ndarray, labels: np.ndarray, thresholds: Sequence[float]) -> dict:
    """Precision, recall, F1 per class and micro / macro F1 with `predicted = probability >= threshold`."""
    predicted = probabilities >= np.asarray(thresholds)[None, :]
    labels = labels.astype(bool)
    tp, fp, fn = ((predicted & labels).sum(0), (predicted & ~labels).sum(0), (~predicted & labels).sum(0))
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / np.maximum(tp + fn, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "macro_f1": float(f1.mean()), "micro_f1": float(micro),
            "exact_match": float((predicted == labels).all(axis=1).mean()) if len(labels) else float("nan")}


def binary_cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


# --------------------------------------------------------------------------- thresholds.json


def write_thresholds(run_dir: str | Path, class_names: Sequence[str], thresholds: Sequence[float]) -> Path:
    from tlkit.fileio import atomic_write

    path = Path(run_dir) / THRESHOLDS_FILE
    text = json.dumps({"class_names": list(class_names), "thresholds": [float(t) for t in thresholds],
                       "rule": "a class is predicted when its sigmoid probability >= its threshold (tuned on val "
                               "for the best F1)"}, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), fsync=False)
    return path


def read_thresholds(run_dir: str | Path | None, class_names: Sequence[str]) -> list[float] | None:
    """The run's thresholds in class_names order; None when the run has no thresholds.json."""
    if run_dir is None or not (Path(run_dir) / THRESHOLDS_FILE).is_file():
        return None
    saved = json.loads((Path(run_dir) / THRESHOLDS_FILE).read_text())
    by_name = dict(zip(saved["class_names"], saved["thresholds"]))
    return [float(by_name.get(name, DEFAULT_THRESHOLD)) for name in class_names]
