"""Pre-flight checks on the built model: one forward pass over the sample batch.

Two signals: the step-0 loss (informative only with a random head: a zero-initialised
head gives exactly log(N) whatever the backbone does) and the pooled backbone features,
which say whether the backbone separates images at all before any training.
"""
from __future__ import annotations

import math

import keras
import numpy as np

from tlkit.config.schema import BNPolicy, TrainConfig
from tlkit.data.pipeline import DataBundle
from tlkit.doctor.findings import Finding, Severity

POOL_LAYER = "pool"  # the global pooling layer's name in tlkit.model.build
# Measured on 32 px digits (weights=None): VGG16 features have mean |f| ~0.07 and an
# across-image std ~0.15x that; ResNet50 2.1 and ~0.15x; MobileNetV2 (BatchNorm in
# inference mode with random statistics) mean |f| ~1e-12. Constant input images give a
# relative std of ~1e-7 (float32 round-off). So:
FEATURES_VANISH_BELOW = 1e-6  # mean |feature|: nothing for the head to learn from (error)
SPREAD_ERROR_BELOW = 1e-4  # across-image std / mean |feature|: features identical for every image (error)
SPREAD_WARN_BELOW = 1e-3  # 100x below any healthy backbone measured: barely differ (warning)
FEATURES_HUGE_ABOVE = 1e4  # mean |feature|: inputs far outside the weights' range (warning)
# Beyond this, head gradients (features x errors) overflow float32 within a few steps:
# error. A single NaN pixel gives ~1e34 on CPU (oneDNN's ReLU/max-pool drop the NaN).
FEATURES_OVERFLOW_ABOVE = 1e10
# A random (glorot) head on healthy features starts near log(N); 3x log(N) means logits of
# tens of units: features far too large (preprocessing) or labels that do not fit.
STEP0_LOSS_FACTOR = 3.0


def diagnose_model(cfg: TrainConfig, model: keras.Model, data: DataBundle) -> list[Finding]:
    """Findings from one inference-mode forward pass of `model` on `data.sample_batch()`."""
    images, labels = data.sample_batch()
    num_classes = len(data.class_names)
    features, logits = _forward(model, images)
    findings = _feature_findings(cfg, features) if features is not None else []
    findings += _step0_loss(cfg, logits, np.asarray(labels), num_classes)
    return findings


def _forward(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(pooled backbone features or None, logits) from one inference-mode pass."""
    try:
        pool = model.get_layer(POOL_LAYER)
    except ValueError:  # not a tlkit-built model: no pooled features to look at
        return None, keras.ops.convert_to_numpy(model(images, training=False))
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a list would make Keras warn
    probe = keras.Model(inputs, [pool.output, *model.outputs])
    features, logits = probe(images, training=False)
    return keras.ops.convert_to_numpy(features).astype(np.float64), keras.ops.convert_to_numpy(logits)


def _feature_findings(cfg: TrainConfig, features: np.ndarray) -> list[Finding]:
    random_weights = cfg.backbone.weights is None
    if random_weights and cfg.schedule.bn is not None and BNPolicy(cfg.schedule.bn) == BNPolicy.train:
        # Training from random weights with BatchNorm learning: inference-mode features (random statistics)
        # say nothing about the features training will see; only NaN/Inf matters.
        return [] if np.all(np.isfinite(features)) else _non_finite(features)
    if not np.all(np.isfinite(features)):
        return _non_finite(features)
    scale = float(np.mean(np.abs(features)))
    cause = ("with random weights (backbone.weights=null), BatchNorm backbones in inference mode squash their "
             "features to ~0 (MobileNetV2 gives ~1e-12): use pretrained weights or a backbone without BatchNorm "
             "such as vgg16" if random_weights else
             f"backbone.weights={cfg.backbone.weights} may hold untrained weights (random BatchNorm backbones give "
             "~0 features) or another backbone's")
    fix = ("backbone.weights=imagenet (or backbone=vgg16 to train without pretrained weights)" if random_weights
           else "backbone.weights=imagenet (or a file of trained weights), backbone.preprocess=auto")
    if scale < FEATURES_VANISH_BELOW:
        return [Finding(
            "degenerate-features", Severity.error,
            f"the backbone's pooled features have mean |f| = {scale:.2g} on the sample batch (below "
            f"{FEATURES_VANISH_BELOW:g}): the head gets ~zero inputs and cannot learn; {cause}; or the input is "
            f"constant.",
            fix,
        )]
    if len(features) >= 2:
        spread = float(np.mean(np.std(features, axis=0)))
        relative = spread / scale
        if relative < SPREAD_WARN_BELOW:
            severity = Severity.error if relative < SPREAD_ERROR_BELOW else Severity.warning
            return [Finding(
                "degenerate-features", severity,
                f"the backbone's features do not vary between your images: across the {len(features)} sample images "
                f"their std is {relative:.2g}x their mean magnitude {scale:.2g} (healthy backbones: ~0.15), so every "
                f"image looks the same to the head; {cause}; or the input is (nearly) constant.",
                fix,
            )]
    if scale > FEATURES_HUGE_ABOVE:
        return [Finding(
            "degenerate-features", Severity.error if scale > FEATURES_OVERFLOW_ABOVE else Severity.warning,
            f"the backbone's pooled features have mean |f| = {scale:.3g} on the sample batch (above "
            f"{FEATURES_HUGE_ABOVE:g}; healthy backbones give ~0.05-5): the inputs are likely far outside the "
            f"range the weights expect (wrong preprocessing or images not in 0..255), and the head's first steps "
            f"will be huge.",
            "backbone.preprocess=auto (and feed finite RGB 0-255 images)",
        )]
    return []


def _non_finite(features: np.ndarray) -> list[Finding]:
    bad = int(np.sum(~np.isfinite(features)))
    return [Finding(
        "degenerate-features", Severity.error,
        f"{bad} of {features.size} pooled backbone features are NaN or infinite on the sample batch: every "
        f"loss and gradient would be NaN.",
        "backbone.preprocess=auto (and check the input images for NaN or extreme values)",
    )]


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN / inf logits give a NaN loss, reported as such
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-np.mean(log_softmax[np.arange(len(labels)), labels]))


def _step0_loss(cfg: TrainConfig, logits: np.ndarray, labels: np.ndarray, num_classes: int) -> list[Finding]:
    valid = (labels.ndim == 1 and len(labels) == len(logits) and logits.ndim == 2
             and logits.shape[1] == num_classes and labels.size and labels.min() >= 0 and labels.max() < num_classes)
    if not valid:
        return []  # label-format (data checks) reports this
    loss = _cross_entropy(logits, labels.astype(np.int64))
    chance = math.log(num_classes)
    if not math.isfinite(loss) or not np.all(np.isfinite(logits)):
        return [Finding(
            "step0-loss", Severity.error,
            f"the loss on the sample batch before any training is {loss} (expected log({num_classes}) = "
            f"{chance:.3f}): NaN or infinite logits, so training cannot start.",
            "backbone.preprocess=auto (and check the input images for NaN or extreme values)",
        )]
    if cfg.head.zero_init:
        return []  # zero logits: the loss is log(N) whatever the features are; degenerate-features covers them
    if loss > STEP0_LOSS_FACTOR * chance:
        return [Finding(
            "step0-loss", Severity.warning,
            f"the loss on the sample batch before any training is {loss:.3g}, {loss / chance:.3g}x the "
            f"log({num_classes}) = {chance:.3f} of a guess: the random head's logits are large, so the features "
            f"are far larger than expected (wrong preprocessing) or the labels do not match the images; the first "
            f"steps will push large random gradients into the backbone.",
            "head.zero_init=true (and backbone.preprocess=auto)",
        )]
    return []
