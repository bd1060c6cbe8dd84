"""Where Keras keeps ImageNet weights, answered without importing Keras or TensorFlow.

Config validation uses this to warn about a missing download before anything heavy starts.
The logic mirrors keras.src.backend.config (KERAS_HOME) and keras.utils.get_file (cache_dir).
"""
from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

from tlkit.backbones.spec import BackboneSpec

CACHE_SUBDIR = "models"  # what every keras.applications constructor passes to get_file


def keras_home() -> str:
    """Keras's base folder, as keras.src.backend.config computes it."""
    config = sys.modules.get("keras.src.backend.config")
    if config is not None:
        # Keras reads KERAS_HOME once, when it is imported: its value is the truth from then on.
        return config.keras_home()
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras")


def keras_cache_dir() -> Path:
    """The folder keras.utils.get_file(cache_subdir="models") reads and downloads into."""
    base = os.path.expanduser(keras_home())
    if not _writable_or_creatable(base):
        # get_file's own fallback when the Keras home is not writable (or does not exist yet).
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(base) / CACHE_SUBDIR


def _writable_or_creatable(folder: str) -> bool:
    # Importing Keras creates its home folder when it can, so a missing folder counts as
    # writable when its nearest existing parent is.
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.access(path, os.W_OK)


def imagenet_weights_path(spec: BackboneSpec, image_size: int) -> Path:
    """Where Keras looks for `spec`'s ImageNet no-top weights at this input size."""
    return keras_cache_dir() / spec.weights_file(image_size)


def imagenet_weights_cached(spec: BackboneSpec, image_size: int) -> bool:
    """True when the weights file is in the Keras cache, so weights="imagenet" works offline.

    A file with the right name but the wrong content still fails: Keras checks its hash.
    """
    return imagenet_weights_path(spec, image_size).is_file()


# --------------------------------------------------------------------------- the size weights were trained at

WEIGHT_FILE_SUFFIXES = (".h5", ".keras")  # .h5 covers .weights.h5; .keras: a whole model saved by Keras
PRETRAINED_SIZE_ATTR = "tlkit_pretrained_size"  # an attribute of a .weights.h5 file's root group


def record_pretrained_size(path: str | Path, image_size: int) -> None:
    """Write the input size a weights file was trained at into the file (read back by pretrained_size_of)."""
    import h5py  # a Keras dependency

    with h5py.File(path, "a") as file:
        file.attrs[PRETRAINED_SIZE_ATTR] = int(image_size)


def pretrained_size_of(path: str | Path) -> int | None:
    """The input size the weights in `path` were trained at, when the file says it, else None.

    Read from tlkit's attribute (tlkit.model.pretrain writes it) or from the input shape of a whole
    model saved as legacy HDF5 (`model.save("x.h5")` keeps the model's config) or as a .keras archive. A plain
    `save_weights` file of a convolutional backbone holds no size: the weights fit any input.
    """
    import json

    try:
        if str(path).endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
        else:
            import h5py

            with h5py.File(path, "r") as file:
                if PRETRAINED_SIZE_ATTR in file.attrs:
                    return int(file.attrs[PRETRAINED_SIZE_ATTR])
                config = file.attrs.get("model_config")
                if config is None:
                    return None
                config = json.loads(config if isinstance(config, str) else config.decode())
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None
    shape = _first_batch_shape(config)
    if shape and len(shape) == 4 and shape[1] and shape[1] == shape[2]:
        return int(shape[1])
    return None


def _first_batch_shape(node) -> list | None:
    """The first input layer's batch_shape in a model config (depth first: a nested model's input comes after the
    outer model's own)."""
    if isinstance(node, dict):
        shape = node.get("batch_shape") or node.get("batch_input_shape")
        if isinstance(shape, list):
            return shape
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        shape = _first_batch_shape(child)
        if shape is not None:
            return shape
    return None
