"""Training-time augmentation, applied to whole batches inside the tf.data pipeline.

Never inside the model: in-model random layers turn XLA off for the whole train step
(FIELD_NOTES), and a saved model should not carry training-only randomness.
Input and output: float32 RGB in [0, 255], shape [B, H, W, 3].
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional

import keras
import tensorflow as tf

from tlkit.data.scan import check_augment_config

ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)  # Inception-style crops


class RandomResizedCrop:
    """Inception-style crop on a batch: each image gets its own box of
    `min_area`..1.0 of the area and aspect ratio 3/4..4/3, resized back to `size`.

    Why not keras_cv.layers.RandomCropAndResize (it imports and runs with Keras 3.15 here):
    it samples boxes per image through vectorized_map, which has no converter for
    CropAndResize / RngReadAndSkip and falls back to a per-image while_loop. Measured on
    this 2-core machine, batches of 32 in tf.data: keras-cv 1.10 ms/img at 32 px and
    1.48 ms/img at 224 px; this one tf.image.crop_and_resize call on the whole batch
    0.17 and 0.47 ms/img. It also avoids importing keras-cv at all.
    """

    def __init__(self, min_area: float, size: int, seed: int):
        self.min_area = float(min_area)
        self.size = int(size)
        # A Generator advances its state on every call, so each epoch draws new boxes,
        # unlike a seeded tf.random op inside Dataset.map, which replays the same
        # numbers every epoch.
        self._rng = tf.random.Generator.from_seed(seed)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(images)[0]
        area = self._rng.uniform([batch], self.min_area, 1.0)
        log_ratio = self._rng.uniform([batch], math.log(ASPECT_RATIO_RANGE[0]), math.log(ASPECT_RATIO_RANGE[1]))
        ratio = tf.exp(log_ratio)
        # Box sides as fractions of the (square) image; clipping to 1 keeps the box inside
        # the image at the cost of a slightly larger area for near-full crops.
        width = tf.minimum(tf.sqrt(area * ratio), 1.0)
        height = tf.minimum(tf.sqrt(area / ratio), 1.0)
        x0 = self._rng.uniform([batch]) * (1.0 - width)
        y0 = self._rng.uniform([batch]) * (1.0 - height)
        boxes = tf.stack([y0, x0, y0 + height, x0 + width], axis=1)
        return tf.image.crop_and_resize(
            images, boxes, box_indices=tf.range(batch), crop_size=(self.size, self.size), method="bilinear"
        )


def _saturation_factor(strength: float) -> tuple:
    """keras.layers.RandomSaturation maps a factor f to the multiplier f / (1 - f)
    (0.5 = unchanged); this picks the range giving multipliers 1 - strength .. 1 + strength."""
    low, high = 1.0 - strength, 1.0 + strength
    return (low / (1.0 + low), high / (1.0 + high))


class BatchAugmenter:
    """Applies its steps in order to a float32 [B, H, W, 3] batch in [0, 255]; clips the result."""

    def __init__(self, steps: List[Callable[[tf.Tensor], tf.Tensor]], names: List[str]):
        self.steps = steps
        self.names = names

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        images = tf.cast(images, tf.float32)
        for step in self.steps:
            images = tf.cast(step(images), tf.float32)
        return tf.clip_by_value(images, 0.0, 255.0)

    def __repr__(self) -> str:
        return f"BatchAugmenter({', '.join(self.names)})"


def _keras_step(layer: keras.layers.Layer) -> Callable[[tf.Tensor], tf.Tensor]:
    return lambda images: layer(images, training=True)


def build_augmenter(cfg, image_size: int, seed: int) -> Optional[BatchAugmenter]:
    """The training augmentation for `cfg` (an AugmentConfig), or None when it is all off.

    Order: horizontal flip, random crop-and-resize, colour jitter (brightness, contrast,
    saturation). Runs inside tf.data.Dataset.map on batches.
    """
    check_augment_config(cfg)
    steps: List[Callable[[tf.Tensor], tf.Tensor]] = []
    names: List[str] = []
    # dtype="float32" pins the layers to float32 even under a mixed_float16 policy.
    if cfg.flip:
        steps.append(_keras_step(keras.layers.RandomFlip("horizontal", seed=seed, dtype="float32")))
        names.append("flip")
    if cfg.crop_area < 1.0:
        steps.append(RandomResizedCrop(cfg.crop_area, image_size, seed + 1))
        names.append(f"crop(area>={cfg.crop_area:g})")
    if cfg.color > 0:
        strength = float(cfg.color)
        # Keras' RandomBrightness is additive (factor * 255); half the strength gives about
        # the same change on a mid-grey pixel as a multiplicative 1 +/- strength.
        steps.append(_keras_step(keras.layers.RandomBrightness(
            strength / 2, value_range=(0, 255), seed=seed + 2, dtype="float32")))
        steps.append(_keras_step(keras.layers.RandomContrast(
            strength, value_range=(0, 255), seed=seed + 3, dtype="float32")))
        # RandomSaturation uses value_range only to clip the HSV saturation channel, which
        # lies in [0, 1] whatever the pixel range; (0, 255) there lets saturation exceed 1
        # and produced pixels down to -761 here. The final clip handles the pixel range.
        steps.append(_keras_step(keras.layers.RandomSaturation(
            _saturation_factor(strength), value_range=(0, 1), seed=seed + 4, dtype="float32")))
        names.append(f"color({strength:g})")
    if not steps:
        return None
    return BatchAugmenter(steps, names)
