"""MixUp and CutMix on training batches, in the tf.data pipeline (never inside the saved model).

    augment.mixup=ALPHA    MixUp (Zhang et al. 2018): image = lam*x_i + (1-lam)*x_j, label likewise
    augment.cutmix=ALPHA   CutMix (Yun et al. 2019): a box of x_j pasted into x_i, labels mixed by its area
    (0 = off; both on: each batch gets one of the two, chosen with probability 1/2, as timm does)

lam ~ Beta(alpha, alpha) per image and j a random permutation partner in the batch: the same
mixing as keras.layers.MixUp / keras.layers.CutMix (Keras 3.15). Those layers are not used: they
draw from a stateful SeedGenerator, while tlkit's training batches are a pure function of (seed,
epoch, batch index) so that a resumed run sees the batches an uninterrupted one sees
(tlkit.data.pipeline.TrainEpochs). CutMix's label weight is the exact pixel share of the pasted box.

Labels of mixed batches are soft: float32 [B, N] rows summing to 1 (the loss, tlkit.training.optim.make_loss,
takes sparse and soft labels). Validation and test batches are never mixed and stay sparse ints.
Head-only stages do not train on cached features while mixing (tlkit.training.trainer): a mix of pooled
features is not a mix of images (CutMix has no feature-space meaning), so those stages run through
the frozen backbone on mixed images.

This module imports TensorFlow only when a mixer is built or called: `mixing_enabled` serves the
pre-flight checks, which run before TensorFlow starts.
"""
from __future__ import annotations


def mixing_enabled(augment) -> bool:
    """Whether training batches get MixUp or CutMix (soft labels)."""
    return bool((getattr(augment, "mixup", 0) or 0) > 0 or (getattr(augment, "cutmix", 0) or 0) > 0)


def describe(augment) -> str:
    parts = [f"MixUp(alpha={augment.mixup:g})" if (augment.mixup or 0) > 0 else "",
             f"CutMix(alpha={augment.cutmix:g})" if (augment.cutmix or 0) > 0 else ""]
    return " or ".join(p for p in parts if p) or "off"


class BatchMixer:
    """(images [B,H,W,3] float32, sparse labels [B], seed [2]) -> (mixed images, soft labels [B, N])."""

    def __init__(self, mixup: float, cutmix: float, num_classes: int):
        self.mixup = float(mixup or 0.0)
        self.cutmix = float(cutmix or 0.0)
        self.num_classes = int(num_classes)
        if self.mixup <= 0 and self.cutmix <= 0:
            raise ValueError("BatchMixer needs augment.mixup > 0 or augment.cutmix > 0")

    def __call__(self, images, labels, seed):
        import tensorflow as tf

        images = tf.cast(images, tf.float32)
        soft = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes, dtype=tf.float32)
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
        batch = tf.shape(images)[0]
        partner = tf.argsort(tf.random.stateless_uniform([batch], seed=seeds[0]))  # a random permutation
        if self.mixup > 0 and self.cutmix > 0:
            use_cutmix = tf.random.stateless_uniform([], seed=seeds[1]) < 0.5
            return tf.cond(use_cutmix,
                           lambda: self._cutmix(images, soft, partner, seeds[2]),
                           lambda: self._mixup(images, soft, partner, seeds[3]))
        if self.cutmix > 0:
            return self._cutmix(images, soft, partner, seeds[2])
        return self._mixup(images, soft, partner, seeds[3])

    def for_epoch(self, seed: int, epoch):
        """A Dataset.map function over enumerate()d batches of one epoch: randomness from (seed, epoch, index)."""
        import tensorflow as tf

        def mix(index, batch):
            images, labels = batch
            batch_seed = tf.stack([tf.cast(seed, tf.int64) * 7_919 + 1,
                                   tf.cast(epoch, tf.int64) * 1_000_003 + tf.cast(index, tf.int64)])
            return self(images, labels, batch_seed)

        return mix

    def _mixup(self, images, soft, partner, seed):
        import tensorflow as tf

        lam = _beta(tf.shape(images)[:1], self.mixup, seed)
        images = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.gather(images, partner)
        return images, lam[:, None] * soft + (1.0 - lam[:, None]) * tf.gather(soft, partner)

    def _cutmix(self, images, soft, partner, seed):
        import tensorflow as tf

        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        seeds = tf.random.experimental.stateless_split(seed, 3)
        lam = _beta([batch], self.cutmix, seeds[0])
        side = tf.sqrt(1.0 - lam)  # the box covers 1 - lam of the image, the image's aspect ratio
        box_h = tf.cast(tf.round(side * tf.cast(height, tf.float32)), tf.int32)
        box_w = tf.cast(tf.round(side * tf.cast(width, tf.float32)), tf.int32)
        top = tf.cast(tf.random.stateless_uniform([batch], seed=seeds[1]) * tf.cast(height - box_h + 1, tf.float32),
                      tf.int32)
        left = tf.cast(tf.random.stateless_uniform([batch], seed=seeds[2]) * tf.cast(width - box_w + 1, tf.float32),
                       tf.int32)
        rows = tf.range(height)[None, :, None]
        cols = tf.range(width)[None, None, :]
        inside = ((rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
                  & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None]))
        images = tf.where(inside[..., None], tf.gather(images, partner), images)
        pasted = tf.cast(box_h * box_w, tf.float32) / tf.cast(height * width, tf.float32)  # exact pixel share
        keep = 1.0 - pasted
        return images, keep[:, None] * soft + pasted[:, None] * tf.gather(soft, partner)


def _beta(shape, alpha: float, seed):
    """Beta(alpha, alpha) samples from two stateless Gamma draws; never NaN (0/0 -> 0)."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma(shape, seed=seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma(shape, seed=seeds[1], alpha=alpha)
    return tf.clip_by_value(tf.math.divide_no_nan(a, a + b), 0.0, 1.0)


def build_mixer(augment, num_classes: int) -> BatchMixer | None:
    """The mixer for `augment` (an AugmentConfig), or None when MixUp and CutMix are off."""
    if augment is None or not mixing_enabled(augment):
        return None
    return BatchMixer(augment.mixup, augment.cutmix, num_classes)
