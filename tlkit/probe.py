"""The recipe's probe: a linear classifier on the frozen backbone's features, before any stage trains.

It answers two questions the default recipe (tlkit.auto_recipe) leaves to the data:
- how well do the pretrained features fit the target? (val accuracy of a logistic regression on
  the pooled features, against chance): near transfer when high, far when barely above chance;
- does a horizontal flip keep labels? The same probe classifies the mirror images of the
  validation set: if they are recognised about as well as the originals, mirroring keeps the
  class (a cat stays a cat); if accuracy drops, it changes it (b <-> d, '/' <-> '\\', text).
The probe is scikit-learn's LogisticRegression (L2) on standardised features, the strength C
from PROBE_C: the `linear_probe` contender of scripts/bench_recipes.py (which keeps C=1), so its
accuracy is what the frozen features allow. A linear head can be set to it
(`head_weights`): a stage with `probe: true` is this fit, to convergence, in seconds. It costs one
forward pass over (a sample of) the training set and two over the validation set. Keras and NumPy
only: the image batches come from the data pipeline.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import keras
import numpy as np

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

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("kernel", "bias")}


def run_probe(model: keras.Model, train_batches, val_batches) -> ProbeResult:
    """Fit the probe on `model`'s pooled features of `train_batches` and score it on `val_batches`.

    Both are iterables of (images float32 [B, H, W, 3] in 0..255, labels) batches, unaugmented.
    """
    from sklearn.linear_model import LogisticRegression

    extractor = keras.Model(model.input, model.get_layer("pool").output)
    train_x, train_y = _features(extractor, train_batches)
    val_x, val_y, flipped_x = _features(extractor, val_batches, with_mirror=True)
    classes = int(max(train_y.max(), val_y.max())) + 1
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    fits = []
    for c in PROBE_C:
        fit = LogisticRegression(C=c, max_iter=2000).fit((train_x - mean) / std, train_y)
        kernel, bias = _raw_coordinates(fit, mean, std, classes)
        accuracy, loss = _score(val_x, val_y, kernel, bias)
        fits.append((accuracy, -loss, -PROBE_C.index(c), c, kernel, bias, loss))
    accuracy, _, _, c, kernel, bias, loss = max(fits, key=lambda f: f[:3])
    flipped, _ = _score(flipped_x, val_y, kernel, bias)
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


def _features(extractor: keras.Model, batches, with_mirror: bool = False):
    features, labels, mirrored = [], [], []
    size = None  # every call at the first batch's shape: the predict function is traced once, not per new shape
    for images, batch_labels in batches:
        images = np.asarray(images, dtype="float32")
        size = size or len(images)
        features.append(_predict_fixed(extractor, images, size))
        labels.append(np.asarray(batch_labels).reshape(-1))
        if with_mirror:
            mirrored.append(_predict_fixed(extractor, images[:, :, ::-1, :], size))
    out = [np.concatenate(features), np.concatenate(labels).astype(np.int64)]
    if with_mirror:
        out.append(np.concatenate(mirrored))
    return tuple(out)


def _predict_fixed(extractor: keras.Model, images: np.ndarray, size: int) -> np.ndarray:
    """Features of `images` (at most `size`), the batch zero-padded to `size` (a smaller last batch would retrace:
    1.2 s on ResNet-50 at 32 px, for 0.2 s of inference on 150 images)."""
    count = len(images)
    if count < size:
        images = np.concatenate([images, np.zeros((size - count, *images.shape[1:]), images.dtype)])
    return np.asarray(extractor.predict_on_batch(images), dtype="float64")[:count]
