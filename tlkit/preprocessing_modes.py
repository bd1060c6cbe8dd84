"""The one table of input preprocessing modes: what each turns RGB 0-255 into.

Pure Python (no Keras, no TensorFlow, no tlkit import), so every layer can read it: the
backbone specs (which modes a backbone's own `preprocess_input` can be), the config schema
(the `backbone.preprocess` choices), the in-model preprocessing (tlkit.model.preprocessing) and
the doctor (the input range each mode gives the backbone) all derive from MODES.
"""
from __future__ import annotations

from dataclasses import dataclass

# keras.applications.imagenet_utils constants.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessMode:
    name: str
    does: str  # what it does to RGB 0-255, as keras.applications' preprocess_input does it
    input_range: str  # what the backbone then sees
    backbone: bool = True  # some backbone's own preprocess_input contract (BackboneSpec.preprocess may name it)


MODES = {mode.name: mode for mode in (
    PreprocessMode("caffe", "RGB -> BGR, subtract the ImageNet mean per channel, no scaling",
                   "BGR with the ImageNet mean subtracted, about -124..152"),
    PreprocessMode("tf", "x / 127.5 - 1", "-1..1"),
    PreprocessMode("torch", "x / 255, then normalise by the ImageNet mean and std per channel",
                   "ImageNet mean/std normalised, about -2.1..2.6"),
    PreprocessMode("none", "identity (the backbone rescales inside itself)",
                   "0..255 (the backbone rescales inside itself)"),
    # Not any backbone's contract: a common mistake (rescale=1/255), expressible so it can be diagnosed.
    PreprocessMode("rescale_255", "x / 255", "0..1", backbone=False),
)}

MODE_NAMES = tuple(MODES)  # every mode a config may name (backbone.preprocess, besides auto)
BACKBONE_MODES = tuple(name for name, mode in MODES.items() if mode.backbone)  # what a BackboneSpec may declare
INPUT_RANGES = {name: mode.input_range for name, mode in MODES.items()}
AUTO = "auto"  # backbone.preprocess=auto: the backbone's own mode (the right choice)
