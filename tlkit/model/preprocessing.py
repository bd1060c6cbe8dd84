"""The backbone's input preprocessing inside the model.

Every tlkit model takes RGB float images in 0-255; its "preprocess" sub-model turns them into
what the backbone's weights were trained on, so nobody has to remember `preprocess_input`.

`preprocessing_model(mode)` builds it from core Keras only (Rescaling, Identity, and the
keras.ops flip and divide), bit for bit what keras.applications' `preprocess_input`
computes, so a saved model.keras loads with plain `keras.models.load_model` in a process
that never imports tlkit. Backend-neutral and weightless (its constants are not weights),
so no stage can ever train it. The modes are those of the one table,
tlkit.preprocessing_modes.

`ImagePreprocessing`, the custom layer models were built with before, stays registered
so that run directories saved with it still load through tlkit.load_model.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tlkit.preprocessing_modes import CAFFE_MEAN_BGR as _CAFFE_MEAN_BGR
from tlkit.preprocessing_modes import MODE_NAMES as MODES
from tlkit.preprocessing_modes import TORCH_MEAN as _TORCH_MEAN
from tlkit.preprocessing_modes import TORCH_STD as _TORCH_STD

PREPROCESS_LAYER = "preprocess"
_INPUT_PREFIX = "rgb_0_255_to_"  # the sub-model's input is named rgb_0_255_to_<mode>: a reloaded one says its mode


def _check(mode: str, who: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{who}(mode={mode!r}): expected one of {MODES}")


def preprocessing_model(mode: str, name: str = PREPROCESS_LAYER) -> keras.Model:
    """RGB 0-255 -> the backbone's input in `mode`, bit for bit keras.applications' `preprocess_input`; core Keras.

    The same float32 operations as `preprocess_input`, in the same order: Rescaling(scale=1, offset=c) for each
    addition (x * 1 + c is exactly x + c), keras.ops.divide for each division (a multiplication by the reciprocal
    differs in the last bit), keras.ops.flip for RGB -> BGR. Keras serialises ops as keras.src.ops classes, so
    the model loads without tlkit, and every constant is a graph constant (tf2onnx, TFLite and SavedModel fold
    them). float32 whatever the dtype policy: 0-255 values lose precision in bfloat16 before the mean
    subtraction. The model carries `.mode` (preprocess_mode_of also reads it back from a reloaded one).
    """
    _check(mode, "preprocessing_model")
    images = keras.Input(shape=(None, None, 3), dtype="float32", name=f"{_INPUT_PREFIX}{mode}")

    def add(x, offset, layer):
        return keras.layers.Rescaling(scale=1.0, offset=offset, dtype="float32", name=layer)(x)

    if mode == "caffe":
        x = add(ops.flip(images, axis=-1), [-m for m in _CAFFE_MEAN_BGR], "caffe_subtract_mean_bgr")
    elif mode == "tf":
        x = add(ops.divide(images, 127.5), -1.0, "tf_minus_1")
    elif mode == "torch":
        x = add(ops.divide(images, 255.0), [-m for m in _TORCH_MEAN], "torch_subtract_mean")
        x = ops.divide(x, np.asarray(_TORCH_STD, dtype="float32"))  # serialised as a __numpy__ constant
    elif mode == "rescale_255":
        x = ops.divide(images, 255.0)
    else:  # none
        x = keras.layers.Identity(dtype="float32", name="none_identity")(images)
    model = keras.Model(images, x, name=name)
    model.dtype_policy = "float32"  # (Functional takes no dtype argument)
    model.mode = mode
    return model


def preprocess_mode_of(layer) -> str:
    """The mode of a model's "preprocess" layer: a preprocessing_model (built or reloaded) or an ImagePreprocessing."""
    mode = getattr(layer, "mode", None)
    if mode is not None:
        return mode
    names = [getattr(tensor, "name", "") for tensor in getattr(layer, "inputs", None) or ()]
    found = [name[len(_INPUT_PREFIX):] for name in names if name.startswith(_INPUT_PREFIX)]
    if len(found) != 1 or found[0] not in MODES:
        raise ValueError(f"layer {layer.name!r} is not a tlkit preprocessing sub-model (inputs: {names})")
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
