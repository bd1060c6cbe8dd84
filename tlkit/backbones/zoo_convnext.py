"""ConvNeXt Tiny, Small, Base, Large and XLarge (LayerNorm, no BatchNorm; preprocessing inside the model).

Facts read from keras/src/applications/convnext.py (Keras 3.15) and checked by tests/test_backbones.py against the
real models (see tlkit.backbones.zoo):
- include_preprocessing=True (Keras's default, what the imagenet weights expect): the model's first layer is a
  Normalization by the ImageNet mean and std on 0-255 (constants, no weights), and convnext.preprocess_input is the
  identity. So tlkit's preprocess layer is "none": the saved model takes RGB 0-255 and normalises once.
- The stem and the three downsampling layers are nested Sequential models named {name}_stem and
  {name}_downsampling_block_{i}; downsampling_block_{i} opens stage i+1. Without the top, the model ends in an
  auto-named LayerNormalization (in the last stage).
"""
from __future__ import annotations

from tlkit.backbones.registry import register
from tlkit.backbones.spec import BackboneSpec, fixed_file, stages

# (variant, features, parameters): widths from Keras's MODEL_CONFIGS, parameters counted.
_CONVNEXT = (("tiny", 768, 27820128), ("small", 768, 49454688), ("base", 1024, 87566464),
             ("large", 1536, 196230336), ("xlarge", 2048, 348147968))

for _variant, _features, _params in _CONVNEXT:
    _name = f"convnext_{_variant}"
    register(BackboneSpec(
        name=_name, constructor=f"ConvNeXt{'XLarge' if _variant == 'xlarge' else _variant.title()}",
        family="convnext", preprocess="none",
        builtin_preprocess="ImageNet mean/std Normalization on 0-255 (include_preprocessing)",
        default_size=224, min_size=32, features=_features, params=_params, has_batch_norm=False,
        weights_file=fixed_file(f"{_name}_notop.h5"),
        blocks=stages(
            ("stem", None),  # the Normalization, then {name}_stem (4x4 conv, stride 4, LayerNorm)
            ("stage0", f"{_name}_stage_0_block_0_depthwise_conv"),
            *((f"stage{i}", f"{_name}_downsampling_block_{i - 1}") for i in range(1, 4)),
        ),
    ))
