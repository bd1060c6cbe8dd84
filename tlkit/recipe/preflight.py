"""The pre-flight check of a config: everything that can fail before TensorFlow starts, in one call.

    spec = check_config(cfg)

tlkit.config.validate checks the config alone (the schema level: values, stage targets, the
reference block); this module sits above the layers those checks cannot import, and adds what
needs them, in this order: the recipe's own options (tlkit.recipe.auto), the data (paths,
class folders, the image pre-scan, tfds metadata; tlkit.data.scan) and the backbone weights
(last: it may warn, and a warning before an error is noise). Every caller that is about to
train, or to build the data, runs this, not validate() alone: tlkit.train, the trainer, the
`tlkit doctor` / `lr-find` / `reproduce` commands.
"""
from __future__ import annotations

import logging
import os

from tlkit.recipe.auto import check_auto_config
from tlkit.backbones.hub import is_hub
from tlkit.backbones.spec import BackboneSpec
from tlkit.backbones.weights import WEIGHT_FILE_SUFFIXES
from tlkit.config.schema import TrainConfig
from tlkit.config.validate import resolved_image_size, validate
from tlkit.data.scan import DataScan, check_data_config
from tlkit.errors import ConfigError

log = logging.getLogger("tlkit.config.validate")  # the name this warning has always been logged under

_WARNED_UNCACHED: set = set()


def check_config(cfg: TrainConfig) -> BackboneSpec:
    """Check everything that can be checked without TensorFlow; return the backbone spec."""
    return check_run(cfg)[0]


def check_run(cfg: TrainConfig) -> tuple[BackboneSpec, DataScan]:
    """check_config, also returning what the data checks scanned: (the backbone spec, the DataScan), to hand on to
    the recipe (tlkit.recipe.auto.apply) and the loader (tlkit.training.run_setup.build) so the data is walked once."""
    spec = validate(cfg)
    check_auto_config(cfg)  # pure Python
    data_scan = check_data_config(cfg.data, cfg.task)  # pure Python: no TensorFlow
    check_weights(cfg, spec)  # last: it may warn, and a warning before an error is noise
    return spec, data_scan


def check_weights(cfg: TrainConfig, spec: BackboneSpec) -> None:
    weights = cfg.backbone.weights
    if is_hub(cfg.backbone.name):
        return  # the preset was found (and its weights value checked) when validate read its spec
    if weights is None or weights == "imagenet":
        if weights == "imagenet":
            from tlkit.backbones.weights import imagenet_weights_cached, imagenet_weights_path

            size = resolved_image_size(cfg, spec)
            if not imagenet_weights_cached(spec, size) and (spec.name, size) not in _WARNED_UNCACHED:
                _WARNED_UNCACHED.add((spec.name, size))  # train.py and train() both validate: say it once
                log.warning(
                    "ImageNet weights for %s are not in the Keras cache (%s); Keras will try to download them.",
                    spec.name, imagenet_weights_path(spec, size),
                )
        return
    allowed = ("imagenet, null (random init), the path of an existing .weights.h5 / .h5 / .keras file, or tlkit:TASK "
               "(pretrained here on an offline source task)")
    if weights.startswith("tlkit:"):
        from tlkit.data.tasks import PAIRS  # pure Python

        if weights[len("tlkit:"):] not in PAIRS:
            raise ConfigError("backbone.weights", weights, allowed, hint="tlkit's source tasks: " + ", ".join(
                f"tlkit:{name} ({pair.description.split(' -> ')[0]})" for name, pair in PAIRS.items()))
        return
    if not weights.endswith(WEIGHT_FILE_SUFFIXES):
        raise ConfigError("backbone.weights", weights, allowed)
    if not os.path.isfile(weights):
        raise ConfigError("backbone.weights", weights, allowed, hint=f"no file at {os.path.abspath(weights)}")
