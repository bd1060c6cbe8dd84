"""One inference pass over images through the pretrained model: pooled features and BatchNorm input statistics.

Before anything trains, the recipe asks two things of the pretrained model (tlkit.training.run_setup): how far the training
images' BatchNorm statistics are from the stored ones (tlkit.training.stages.batchnorm_shift) and how well a linear probe on
the pooled features classifies them (tlkit.recipe.probe). Both are the same forward pass over the training images, so it
runs once. It is compiled at one batch shape (a smaller last batch is zero-padded, its padding dropped): traced once,
then each batch costs what inference costs, where an eager pass or a second shape cost a second or two more on
ResNet-50 than the whole pass over 150 images.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

from tlkit.backbones.build import batch_norm_layers
from tlkit.model.build import backbone_of
from tlkit.model.preprocessing import PREPROCESS_LAYER


@dataclass
class FrozenPass:
    features: np.ndarray  # [N, F] float64: the pooled features (what the head sees)
    labels: np.ndarray  # [N] int64 (task=multilabel: [N, classes] 0/1)
    mirrored: np.ndarray | None = None  # [N, F]: the features of the images' mirror images, when asked for
    # Per backbone BatchNorm layer: the per-channel variance of its input over each batch (batch and spatial axes),
    # averaged over the batches; None unless asked for.
    bn_variances: list | None = None
    extractor: keras.Model | None = field(default=None, repr=False)  # the compiled pass: reuse it (traced once)
    batch_size: int | None = None  # the one batch shape it was called at


def frozen_pass(model: keras.Model, batches, *, batch_norm: bool = False, mirror: bool = False,
                reuse: FrozenPass | None = None) -> FrozenPass:
    """Run `batches` (iterable of (images float32 [B, H, W, 3] in 0..255, labels)) through `model` in inference mode.

    `batch_norm`: also measure the input variances of the backbone's BatchNorm layers; `mirror`: also the features
    of the horizontally flipped images; `reuse`: an earlier pass through this same model whose compiled extractor
    (and batch shape) to reuse, so nothing is traced again.
    """
    layers = batch_norm_layers(backbone_of(model)) if batch_norm else []
    if reuse is not None and (reuse.bn_variances is not None or not layers):
        extractor, size = reuse.extractor, reuse.batch_size
    else:
        extractor, size = _extractor(model, layers), None
    features, labels, mirrored, variances = [], [], [], None
    for images, batch_labels in batches:
        images = np.asarray(images, dtype="float32")
        size = size or len(images)
        outputs = _predict_fixed(extractor, images, size)
        features.append(outputs[0])
        batch_labels = np.asarray(batch_labels)  # [B] (or [B, 1]); multi-hot [B, classes] stays 2-D
        labels.append(batch_labels if batch_labels.ndim == 2 and batch_labels.shape[1] > 1 else batch_labels.reshape(-1))
        if layers:
            batch = [_batch_variance(outputs[1 + 2 * i], outputs[2 + 2 * i]) for i in range(len(layers))]
            variances = batch if variances is None else [t + b for t, b in zip(variances, batch)]
        if mirror:
            mirrored.append(_predict_fixed(extractor, images[:, :, ::-1, :], size)[0])
    return FrozenPass(
        features=np.concatenate(features), labels=np.concatenate(labels).astype(np.int64),
        mirrored=np.concatenate(mirrored) if mirror else None,
        bn_variances=[v / len(features) for v in variances] if layers else None, extractor=extractor,
        batch_size=size)


def _extractor(model: keras.Model, layers: list) -> keras.Model:
    """image -> [pooled features, then per BatchNorm layer: its input's per-image channel means and variances]."""
    backbone = backbone_of(model)
    moments = []
    for layer in layers:
        x = layer.input
        spatial = tuple(range(1, len(x.shape) - 1))
        # Per image, so padded images can be dropped; the batch variance is put together in float64 (_batch_variance).
        moments += ([ops.mean(x, axis=spatial), ops.var(x, axis=spatial)] if spatial else [x, ops.zeros_like(x)])
    inner = keras.Model(backbone.input, [backbone.output, *moments])
    image = keras.Input(model.input.shape[1:])
    outputs = inner(model.get_layer(PREPROCESS_LAYER)(image))
    return keras.Model(image, [model.get_layer("pool")(outputs[0]), *outputs[1:]])


def _batch_variance(means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """Variance over the batch and spatial axes from per-image means and variances (equal sizes): the mean of the
    variances plus the variance of the means."""
    return variances.mean(axis=0) + means.var(axis=0)


def _predict_fixed(extractor: keras.Model, images: np.ndarray, size: int) -> list:
    """The extractor's outputs (float64) for `images`, called in chunks of exactly `size` (the last zero-padded)."""
    chunks = []
    for start in range(0, len(images), size):
        chunk = images[start:start + size]
        count = len(chunk)
        if count < size:
            chunk = np.concatenate([chunk, np.zeros((size - count, *chunk.shape[1:]), chunk.dtype)])
        outputs = extractor.predict_on_batch(chunk)
        chunks.append([np.asarray(o, dtype="float64")[:count]
                       for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])])
    return [np.concatenate(parts) for parts in zip(*chunks)]
