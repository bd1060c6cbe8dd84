"""The data layer: scanning folders, checking the data config, tf.data pipelines, augmentation.

`tlkit.data.scan` is pure Python; the TensorFlow parts load on first use of their names,
so `from tlkit.data import check_data_config` fails fast on a bad config without starting
TensorFlow.
"""
from __future__ import annotations

import importlib

from tlkit.data.scan import check_augment_config, check_data_config, scan_folder

_LAZY = {
    "DataBundle": "tlkit.data.pipeline",
    "load_data": "tlkit.data.pipeline",
    "class_weights": "tlkit.data.pipeline",
    "synthetic_images": "tlkit.data.pipeline",
    "build_augmenter": "tlkit.data.augment",
}

__all__ = ["scan_folder", "check_data_config", "check_augment_config", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tlkit.data' has no attribute {name!r}")
