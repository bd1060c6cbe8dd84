"""The built-in backbones: every keras.applications family, with its input contract and blocks.

One module per family registers its specs (tlkit.backbones.registry); importing this module registers them all.
Facts in the family modules were read from keras/src/applications/*.py (Keras 3.15) and are checked by
tests/test_backbones.py against the real models:
- preprocess: what the family's `preprocess_input` does. MobileNetV3, EfficientNet, EfficientNetV2 and ConvNeXt
  rescale inside the model (their preprocess_input is the identity), so theirs is "none" and `builtin_preprocess`
  says what their own first layers do: never applied twice, and the model still takes RGB 0-255.
- min_size: the smallest input Keras accepts with include_top=False (all of them build).
- weights_file: the file name the constructor passes to keras.utils.get_file for
  weights="imagenet", include_top=False.
- blocks: the natural stages, stem first. `starts_at` names the first layer of a block on
  its main path, always a layer Keras names explicitly; layers beside the main path
  (shortcut convolutions, auto-named activations) are assigned by graph position.
- params: the backbone's parameter count, stored so that listing the registry builds nothing.
"""
from __future__ import annotations

# Each family module registers its specs when it is imported.
import tlkit.backbones.zoo_convnext  # noqa: F401
import tlkit.backbones.zoo_efficientnet  # noqa: F401
import tlkit.backbones.zoo_inception  # noqa: F401
import tlkit.backbones.zoo_mobile  # noqa: F401
import tlkit.backbones.zoo_resnet  # noqa: F401
from tlkit.backbones.registry import all_specs, get_spec, register

__all__ = ["all_specs", "get_spec", "register"]
