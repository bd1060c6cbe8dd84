"""The backbone's input preprocessing inside the model.

Every tlkit model takes RGB float images in 0-255; its "preprocess" sub-model turns them into
what the backbone's weights were trained on, so nobody has to remember `preprocess_input`.

`preprocessing_model(mode)` builds it from core Keras only (Normalization with a fixed mean
and variance, Rescaling, Identity, and keras.ops.flip for RGB -> BGR), bit for bit what
keras.applications' `preprocess_input` computes, so a saved
model.keras loads with plain `keras.models.load_model` in a process that never imports
tlkit. Backend-neutral and weightless (the means and variances are constants, not
weights), so no stage can ever train it. The modes are those of the one table,
tlkit.preprocessing_modes.

`ImagePreprocessing`, the custom layer models were built with before, stays registered
so that run directories saved with it still load through tlkit.load_model.
"""
from __future__ import annotations

import keras
from keras import ops

from tlkit.preprocessing_modes import CAFFE_MEAN_BGR as _CAFFE_MEAN_BGR
from tlkit.preprocessing_modes import MODE_NAMES as MODES
from tlkit.preprocessing_modes import TORCH_MEAN as _TORCH_MEAN
from tlkit.preprocessing_modes import TORCH_STD as _TORCH_STD

PREPROCESS_LAYER = "preprocess"

# The last layer of each mode's sub-model: its name says the mode (preprocess_mode_of reads it back).
_LAST_LAYER = {
    "caffe": "caffe_subtract_mean_bgr",
    "tf": "tf_scale_to_pm1",
    "torch": "torch_normalize",
    "none": "none_identity",
    "rescale_255": "rescale_255_scale",
}
assert set(_LAST_LAYER) == set(MODES), "every mode of tlkit.preprocessing_modes has a sub-model here"


def _check(mode: str, who: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{who}(mode={mode!r}): expected one of {MODES}")


def preprocessing_model(mode: str, name: str = PREPROCESS_LAYER) -> keras.Model:
    """RGB 0-255 -> the backbone's input in `mode` (as keras.applications' `preprocess_input`), core Keras only.

    float32 throughout whatever the dtype policy: 0-255 values lose precision in bfloat16 before the mean
    subtraction. The returned model carries `.mode` (preprocess_mode_of also reads it from a reloaded one).
    """
    _check(mode, "preprocessing_model")
    images = keras.Input(shape=(None, None, 3), dtype="float32", name=f"{name}_rgb_0_255")
    last = _LAST_LAYER[mode]
    if mode == "caffe":
        # RGB -> BGR (a Keras op: serialised as keras.src.ops.numpy.Flip, loads without tlkit), then
        # (x - mean) / sqrt(1): exactly x - mean.
        bgr = ops.flip(images, axis=-1)
        x = keras.layers.Normalization(mean=_CAFFE_MEAN_BGR, variance=(1.0, 1.0, 1.0), dtype="float32",
                                       name=last)(bgr)
    elif mode == "tf":
        # x / 127.5 (a division, as preprocess_input: sqrt(127.5 ** 2) is exactly 127.5), then - 1.
        x = keras.layers.Normalization(mean=0.0, variance=127.5 ** 2, dtype="float32", name="tf_divide_127_5")(images)
        x = keras.layers.Rescaling(scale=1.0, offset=-1.0, dtype="float32", name=last)(x)
    elif mode == "torch":
        # x / 255, then (x - mean) / std: divisions, as preprocess_input. The variance is float32(std) ** 2,
        # whose float32 square root is float32(std) exactly.
        x = keras.layers.Normalization(mean=0.0, variance=255.0 ** 2, dtype="float32", name="torch_divide_255")(images)
        x = keras.layers.Normalization(mean=_TORCH_MEAN, variance=_exact_squares(_TORCH_STD), dtype="float32",
                                       name=last)(x)
    elif mode == "rescale_255":
        x = keras.layers.Normalization(mean=0.0, variance=255.0 ** 2, dtype="float32", name=last)(images)  # x / 255
    else:  # none
        x = keras.layers.Identity(dtype="float32", name=last)(images)
    model = keras.Model(images, x, name=name)
    model.dtype_policy = "float32"  # (Functional takes no dtype argument)
    model.mode = mode
    return model


def _exact_squares(values) -> tuple:
    """float32(v) ** 2 for each v: Normalization's float32 sqrt of it gives back float32(v), bit for bit."""
    import numpy as np

    return tuple(float(np.float32(v)) ** 2 for v in values)


def preprocess_mode_of(layer) -> str:
    """The mode of a model's "preprocess" layer: a preprocessing_model (built or reloaded) or an ImagePreprocessing."""
    mode = getattr(layer, "mode", None)
    if mode is not None:
        return mode
    names = {sub.name for sub in getattr(layer, "layers", ())}
    found = [mode for mode, last in _LAST_LAYER.items() if last in names]
    if len(found) != 1:
        raise ValueError(f"layer {layer.name!r} is not a tlkit preprocessing sub-model (layers: {sorted(names)})")
    return found[0]


def label_preprocess_mode(model) -> None:
    """Sets `.mode` on a reloaded model's "preprocess" sub-model (Keras does not save attributes)."""
    try:
        layer = model.get_layer(PREPROCESS_LAYER)
    except ValueError:
        return
    if getattr(layer, "mode", None) is None:
        try:
            layer.mode = preprocess_mode_of(layer)
        except ValueError:
            pass


@keras.saving.register_keras_serializable(package="tlkit")
class ImagePreprocessing(keras.layers.Layer):
    """The custom layer models were built with before preprocessing_model (kept so old model.keras files load).

    Maps RGB 0-255 to a backbone's expected input, each mode as tlkit.preprocessing_modes describes it.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        _check(mode, "ImagePreprocessing")
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
