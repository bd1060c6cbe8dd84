"""Reading and resizing images in tf.data, as training does (tlkit.data.pipeline) and as the tfds source decodes.

    read_image(path)              uint8 [H, W, 3] by tlkit.data.decode's rule
    resizer(image_size, ...)      (item, label) -> (uint8 [size, size, 3], label): read if a path, then resize

Below both tlkit.data.pipeline and tlkit.data.tfds, so that neither imports the other for it.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tlkit.data.decode import decode_rgb_pillow, decode_rgb_tf, tf_decodes_tensor

AUTOTUNE = tf.data.AUTOTUNE


def to_uint8(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 255.0)), tf.uint8)


def _pillow_decode(path) -> np.ndarray:
    """tf.numpy_function body: the file at `path` (bytes from TensorFlow) through Pillow."""
    if isinstance(path, np.ndarray):
        path = path.item()
    return decode_rgb_pillow(path.decode() if isinstance(path, bytes) else str(path))  # a path, never contents


def read_image(path: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] by tlkit.data.decode's rule, as `tlkit predict` and `serve_bytes` read it:
    transparency composited over white, grayscale replicated, first frame of an animation,
    16-bit scaled by the high byte. TensorFlow for JPEG, PNG, GIF and 24/32-bit BMP, Pillow
    (through tf.numpy_function; its errors name the file) for everything else."""
    contents = tf.io.read_file(path)

    def with_tensorflow():
        return decode_rgb_tf(contents)

    def with_pillow():
        image = tf.numpy_function(_pillow_decode, [path], tf.uint8, stateful=False)
        return tf.reshape(image, tf.stack([tf.shape(image)[0], tf.shape(image)[1], 3]))

    image = tf.cond(tf_decodes_tensor(contents), with_tensorflow, with_pillow)
    image.set_shape([None, None, 3])
    return image


def resizer(image_size: int, from_files: bool):
    def load(item, label):
        if from_files:
            image = read_image(item)
        else:
            image = item
        if not from_files and tuple(image.shape[:2]) == (image_size, image_size):
            return image, label  # already the right size (in-memory sources)
        # antialias matters only when downscaling (it is a no-op when upscaling).
        image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
        image.set_shape((image_size, image_size, 3))
        return to_uint8(image), label

    return load
