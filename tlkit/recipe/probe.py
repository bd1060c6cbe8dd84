"""The recipe's probe: a linear classifier on the frozen backbone's features, before any stage trains.

It answers two questions the default recipe (tlkit.recipe.auto) leaves to the data:
- how well do the pretrained features fit the target? (val accuracy of a logistic regression on
  the pooled features, against chance): near transfer when high, far when barely above chance;
- does a horizontal flip keep labels? The same probe classifies the mirror images of the
  validation set: if they are recognised about as well as the originals, mirroring keeps the
  class (a cat stays a cat); if accuracy drops, it changes it (b <-> d, '/' <-> '\\', text).
The probe is scikit-learn's LogisticRegression (L2) on standardised features, the strength C
from PROBE_C: the `linear_probe` contender of scripts/bench_recipes.py (which keeps C=1), so its
accuracy is what the frozen features allow. A linear head can be set to it
(`head_weights`): a stage with `probe: true` is this fit, to convergence, in seconds. It costs one
forward pass over (a sample of) the training set and two over the validation set (tlkit.recipe.frozen_pass). Keras and NumPy
only: the image batches come from the data pipeline.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import keras
import numpy as np

from tlkit.recipe.frozen_pass import frozen_pass

log = logging.getLogger("tlkit.train")
MAX_PROBE_TRAIN = 5000  # a random sample is enough to judge the features; bounds the cost on big data sets
# Inverse L2 strengths tried (the best on the validation set wins, the first on ties). One: C=0.1, a head a little
# less confident than C=1's, is the better start for fine-tuning (ResNet50 digits 0.967 vs 0.947, MobileNetV2
# digits 0.947 vs 0.920; BENCHMARKS.md section 7), and its probe accuracy is within an image or two of C=1's.
PROBE_C = (0.1,)


@dataclass(frozen=True)
class ProbeResult:
    val_accuracy: float  # the probe on the validation images
    val_loss: float  # its cross-entropy there
    flipped_val_accuracy: float  # the same probe on their mirror images
    chance: float  # 1 / classes
    num_train: int  # training images the probe was fitted on
    num_val: int
    c: float  # the L2 strength chosen (scikit-learn's C)
    # The classifier on raw pooled features: logits = features @ kernel + bias (what a linear head holds)
    kernel: np.ndarray = field(repr=False, compare=False, default=None)
    bias: np.ndarray = field(repr=False, compare=False, default=None)
    # task=multilabel (one-vs-rest): val_accuracy is the exact match at 0.5, val_loss the binary cross-entropy,
    # chance the mean share of positives (what a random score's AP is), and these the macro mAP, plain and mirrored
    val_map: float | None = None
    flipped_val_map: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("kernel", "bias")}


def run_probe(model: keras.Model, train_batches, val_batches, train_pass=None) -> ProbeResult:
    """Fit the probe on `model`'s pooled features of `train_batches` and score it on `val_batches`.

    Both are iterables of (images float32 [B, H, W, 3] in 0..255, labels) batches, unaugmented. `train_pass`: the
    training images' tlkit.recipe.frozen_pass.FrozenPass through this same model, when it was already run (train_batches
    is then not read).
    """
    from sklearn.linear_model import LogisticRegression

    train = train_pass if train_pass is not None else frozen_pass(model, train_batches)
    val = frozen_pass(model, val_batches, mirror=True, reuse=train)
    train_x, train_y, val_x, val_y = train.features, train.labels, val.features, val.labels
    if train_y.ndim == 2:  # multi-hot labels: one binary logistic regression per class
        return _one_vs_rest(train_x, train_y, val_x, val_y, val.mirrored)
    classes = int(max(train_y.max(), val_y.max())) + 1
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    fits = []
    for c in PROBE_C:
        fit = LogisticRegression(C=c, max_iter=2000).fit((train_x - mean) / std, train_y)
        kernel, bias = _raw_coordinates(fit, mean, std, classes)
        accuracy, loss = _score(val_x, val_y, kernel, bias)
        fits.append((accuracy, -loss, -PROBE_C.index(c), c, kernel, bias, loss))
    accuracy, _, _, c, kernel, bias, loss = max(fits, key=lambda f: f[:3])
    flipped, _ = _score(val.mirrored, val_y, kernel, bias)
    return ProbeResult(val_accuracy=accuracy, val_loss=loss, flipped_val_accuracy=flipped, chance=1.0 / classes,
                       num_train=len(train_y), num_val=len(val_y), c=c, kernel=kernel, bias=bias)


def _raw_coordinates(fit, mean, std, classes: int):
    """The classifier fitted on standardised features, as a kernel [F, N] and bias [N] on raw ones."""
    coef, intercept = fit.coef_, fit.intercept_
    if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes: logits (-z/2, z/2) give its softmax
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    full_coef, full_intercept = np.zeros((classes, coef.shape[1])), np.full(classes, -1e3)
    full_coef[fit.classes_], full_intercept[fit.classes_] = coef, intercept  # classes absent from train: never
    kernel = (full_coef / std).T
    bias = full_intercept - (full_coef / std) @ mean
    return kernel.astype("float32"), bias.astype("float32")


def _score(features, labels, kernel, bias) -> tuple[float, float]:
    logits = features @ kernel.astype("float64") + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float((logits.argmax(axis=1) == labels).mean()), float(-log_probs[np.arange(len(labels)), labels].mean())


def _one_vs_rest(train_x, train_y, val_x, val_y, mirrored_x) -> ProbeResult:
    """task=multilabel: per class, L2 logistic regression (C=PROBE_C[0]) on standardised features; a class that is
    always (or never) positive in train gets a constant logit."""
    from sklearn.linear_model import LogisticRegression

    from tlkit.model.multilabel import binary_cross_entropy, mean_average_precision

    c = PROBE_C[0]
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    standard = (train_x - mean) / std
    coef, intercept = np.zeros((train_y.shape[1], train_x.shape[1])), np.zeros(train_y.shape[1])
    for k in range(train_y.shape[1]):
        share = float(train_y[:, k].mean())
        if share in (0.0, 1.0):
            intercept[k] = 10.0 if share else -10.0
            continue
        fit = LogisticRegression(C=c, max_iter=2000).fit(standard, train_y[:, k])
        coef[k], intercept[k] = fit.coef_[0], fit.intercept_[0]
    kernel = (coef / std).T.astype("float32")
    bias = (intercept - (coef / std) @ mean).astype("float32")

    def probabilities(features):
        return 1.0 / (1.0 + np.exp(-(features @ kernel.astype("float64") + bias)))

    plain, flipped = probabilities(val_x), probabilities(mirrored_x)
    return ProbeResult(
        val_accuracy=float((((plain >= 0.5) == val_y.astype(bool)).all(axis=1)).mean()),
        val_loss=binary_cross_entropy(plain, val_y), flipped_val_accuracy=float(
            (((flipped >= 0.5) == val_y.astype(bool)).all(axis=1)).mean()),
        chance=float(val_y.mean()), num_train=len(train_y), num_val=len(val_y), c=c, kernel=kernel, bias=bias,
        val_map=mean_average_precision(plain, val_y)["macro"],
        flipped_val_map=mean_average_precision(flipped, val_y)["macro"])
