"""Build a backbone: always include_top=False, no pooling (the tlkit head pools).

Keras only (no TensorFlow import): this path runs under any Keras backend.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import keras

from tlkit.backbones.spec import BackboneSpec
from tlkit.backbones.weights import WEIGHT_FILE_SUFFIXES, imagenet_weights_path
from tlkit.backbones.weights_file import loadable_weights
from tlkit.errors import ConfigError, WeightsError

log = logging.getLogger("tlkit.train")


def is_batch_norm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def batch_norm_layers(backbone: keras.Model) -> list:
    """The BatchNormalization layers of a built backbone, in layer order (BackboneSpec.has_batch_norm says whether
    there are any without building it)."""
    return [layer for layer in backbone.layers if is_batch_norm(layer)]

ALTERNATIVES = (
    "backbone.weights=null (random init) or backbone.weights=/path/to/file.h5 "
    "(the weights of keras.applications.{constructor}(include_top=False): a .weights.h5 or .keras file of it alone "
    "or of a classifier built on it, or a legacy .h5 of it alone)"
)


def build_backbone(spec: BackboneSpec, image_size: int, weights: str | None) -> keras.Model:
    """keras.applications.<spec.constructor>(include_top=False) at image_size x image_size.

    weights: None (random init), "imagenet" (the Keras cache, else a download) or the path
    of a .weights.h5 / .h5 / .keras file holding this backbone's weights (alone, or in a classifier built on it:
    tlkit.backbones.weights_file).
    """
    if not isinstance(image_size, int) or image_size < spec.min_size:
        raise ConfigError(
            "data.image_size", image_size,
            f"an integer of at least {spec.min_size}: keras.applications.{spec.constructor} rejects smaller inputs",
        )
    if weights is None:
        return _construct(spec, image_size, None)
    if weights == "imagenet":
        return _build_imagenet(spec, image_size)
    if isinstance(weights, (str, os.PathLike)):
        return _build_from_file(spec, image_size, Path(weights).expanduser())
    raise WeightsError(f"backbone.weights={weights!r}: expected 'imagenet', null or the path of a .h5 file")


def _construct(spec: BackboneSpec, image_size: int, weights: str | None) -> keras.Model:
    constructor = getattr(keras.applications, spec.constructor)
    return constructor(
        include_top=False,
        weights=weights,
        input_shape=(image_size, image_size, 3),
        **spec.builder_kwargs,
    )


def _build_imagenet(spec: BackboneSpec, image_size: int) -> keras.Model:
    expected = imagenet_weights_path(spec, image_size)
    cached = expected.is_file()
    try:
        # From the cache if the file is there (offline is fine), else Keras downloads it.
        return _construct(spec, image_size, "imagenet")
    except Exception as error:  # Keras raises a bare Exception("URL fetch failure ...")
        if cached:
            reason = (
                f"{expected} is in the Keras cache but did not load ({error}). Keras checks the file's hash "
                "and downloads it again when it differs, so a partial or different file fails offline: "
                "replace it with the official one"
            )
        else:
            reason = (
                f"Keras looked for {expected.name!r} in {expected.parent} and could not download it ({error}). "
                f"Put that file in {expected.parent} (downloaded on a machine with internet access)"
            )
        raise WeightsError(
            f"backbone {spec.name!r}: no ImageNet weights for keras.applications.{spec.constructor} at "
            f"{image_size}px. {reason}, or use " + ALTERNATIVES.format(constructor=spec.constructor)
        ) from error


def _build_from_file(spec: BackboneSpec, image_size: int, path: Path) -> keras.Model:
    if not path.name.endswith(WEIGHT_FILE_SUFFIXES):
        raise WeightsError(f"backbone.weights={str(path)!r}: expected 'imagenet', null, or the path of a "
                           ".weights.h5, .h5 or .keras file")
    if not path.is_file():
        raise WeightsError(f"backbone.weights={str(path)!r}: no file at {path.resolve()}")
    model = _construct(spec, image_size, None)
    with tempfile.TemporaryDirectory(prefix="tlkit-weights-") as workdir:
        try:
            # Keras 3: .weights.h5 loads by layer class and order; a legacy .h5 (what Keras
            # downloads) by the order of the layers that have weights. Both check shapes.
            loadable, note = loadable_weights(model, path, Path(workdir))
            model.load_weights(str(loadable))
        except Exception as error:
            raise WeightsError(
                f"backbone {spec.name!r}: the weights in {str(path)!r} do not fit "
                f"keras.applications.{spec.constructor}(include_top=False): {error}\n"
                f"  The file must hold the weights of keras.applications.{spec.constructor}(include_top=False), "
                f"alone or inside a classifier built on it, saved with model.save_weights('x.weights.h5') or "
                f"model.save('x.keras') (a legacy .h5, such as Keras's own no-top file "
                f"{spec.weights_file(image_size)!r}, must hold the backbone alone); or use backbone.weights=imagenet "
                f"or null."
            ) from error
    if note:
        log.info("%s", note)
    return model
