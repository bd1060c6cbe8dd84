"""The backbone's input preprocessing as a layer inside the model.

Every tlkit model takes RGB float images in 0-255; this layer turns them into what the
backbone's weights were trained on, so nobody has to remember `preprocess_input`.
Backend-neutral (keras.ops only) and weightless, so no stage can ever train it.
"""
from __future__ import annotations

import keras
from keras import ops

# keras.applications.imagenet_utils constants.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

MODES = ("caffe", "tf", "torch", "none", "rescale_255")


@keras.saving.register_keras_serializable(package="tlkit")
class ImagePreprocessing(keras.layers.Layer):
    """Maps RGB 0-255 to a backbone's expected input.

    Modes (as keras.applications' `preprocess_input` does them):
      caffe:        RGB -> BGR, subtract the ImageNet mean per channel, no scaling
      tf:           x / 127.5 - 1
      torch:        x / 255, then normalise by the ImageNet mean and std per channel
      none:         identity (the backbone rescales inside itself)
      rescale_255:  x / 255 (not any backbone's contract; kept so the mistake can be expressed)
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"ImagePreprocessing(mode={mode!r}): expected one of {MODES}")
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)  # RGB -> BGR
            return x - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "rescale_255":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
