"""EfficientNet B0-B7 and EfficientNetV2 B0-B3/S/M/L: backbones that preprocess inside themselves.

Facts read from keras/src/applications/{efficientnet,efficientnet_v2}.py (Keras 3.15) and checked by
tests/test_backbones.py against the real models (see tlkit.backbones.zoo). Both families rescale RGB 0-255 in their
own first layers (their preprocess_input is the identity), so tlkit's preprocess layer is "none" and the input
contract stays RGB 0-255 with the preprocessing applied once.
"""
from __future__ import annotations

from tlkit.backbones.registry import register
from tlkit.backbones.spec import BackboneSpec, fixed_file, stages

# (variant, default size, features, parameters), sizes and widths from Keras's constructors, parameters counted.
_V1 = (("b0", 224, 1280, 4049571), ("b1", 240, 1280, 6575239), ("b2", 260, 1408, 7768569),
       ("b3", 300, 1536, 10783535), ("b4", 380, 1792, 17673823), ("b5", 456, 2048, 28513527),
       ("b6", 528, 2304, 40960143), ("b7", 600, 2560, 64097687))

# EfficientNet: Keras's blockNx groups; rescaling and normalization (stem) are auto-named. The Normalization's
# mean and variance are weights (ImageNet's in the imagenet file; a random build has 0 and 1).
for _variant, _size, _features, _params in _V1:
    register(BackboneSpec(
        name=f"efficientnet_{_variant}", constructor=f"EfficientNet{_variant.upper()}", family="efficientnet",
        preprocess="none", builtin_preprocess="Rescaling x / 255, then the weights' ImageNet mean/std Normalization",
        default_size=_size, min_size=32, features=_features, params=_params,
        weights_file=fixed_file(f"efficientnet{_variant}_notop.h5"),
        blocks=stages(
            ("stem", None),
            ("block1", "block1a_dwconv"),  # expansion ratio 1: no expand conv
            *((f"block{i}", f"block{i}a_expand_conv") for i in range(2, 8)),
            ("top", "top_conv"),
        ),
    ))

# (variant, default size, features, parameters, stages). B0-B3 have 6 stages, S 6, M and L 7.
_V2 = (("b0", 224, 1280, 5919312, 6), ("b1", 240, 1280, 6931124, 6), ("b2", 260, 1408, 8769374, 6),
       ("b3", 300, 1536, 12930622, 6), ("s", 384, 1280, 20331360, 6), ("m", 480, 1280, 53150388, 7),
       ("l", 480, 1280, 117746848, 7))

# EfficientNetV2 (include_preprocessing=True, Keras's default and what its imagenet weights expect): B0-B3 rescale
# to 0-1 and normalise by the ImageNet mean/std (constants, no weights); S/M/L rescale to x / 128 - 1. Both layers
# are auto-named (stem). Stage 1 is a FusedMBConv with expansion ratio 1: it opens with its project conv.
for _variant, _size, _features, _params, _stages in _V2:
    register(BackboneSpec(
        name=f"efficientnet_v2_{_variant}", constructor=f"EfficientNetV2{_variant.upper()}",
        family="efficientnet_v2", preprocess="none",
        builtin_preprocess=("Rescaling x / 255, then ImageNet mean/std Normalization (include_preprocessing)"
                            if _variant.startswith("b") else "Rescaling x / 128 - 1 (include_preprocessing)"),
        default_size=_size, min_size=32, features=_features, params=_params,
        weights_file=fixed_file(f"efficientnetv2-{_variant}_notop.h5"),
        blocks=stages(
            ("stem", None),
            ("block1", "block1a_project_conv"),
            *((f"block{i}", f"block{i}a_expand_conv") for i in range(2, _stages + 1)),
            ("top", "top_conv"),
        ),
    ))
