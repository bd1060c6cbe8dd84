"""Narrow twins of the biggest backbones: what CI builds in their place (tests/test_backbones.py, reduced form).

A twin is the Keras family function behind the spec's constructor with the same depth and the same layer names
(so the spec's blocks apply to it unchanged) at a fraction of the width.
"""
from __future__ import annotations


def narrow_twin(spec, size: int):
    """The Keras family function behind spec.constructor with the same depth and layer names, narrow."""
    from keras.src.applications import convnext, efficientnet, efficientnet_v2, nasnet

    common = dict(include_top=False, weights=None, input_shape=(size, size, 3))
    if spec.family == "convnext":
        depths = convnext.MODEL_CONFIGS[spec.name.split("_")[1]]["depths"]
        return convnext.ConvNeXt(depths, [8, 16, 24, 32], name=spec.name, **common)
    if spec.family == "efficientnet":  # EfficientNetB7: width 2.0, depth 3.1
        return efficientnet.EfficientNet(0.1, 3.1, spec.default_size, name=spec.name.replace("_", ""), **common)
    if spec.family == "efficientnet_v2":
        return efficientnet_v2.EfficientNetV2(0.1, 1.0, spec.default_size, name="efficientnetv2-l", **common)
    if spec.family == "nasnet":  # NASNetLarge: 4032 penultimate filters, 96 in the stem
        return nasnet.NASNet(common.pop("input_shape"), penultimate_filters=96, num_blocks=6, stem_block_filters=8,
                             skip_reduction=True, filter_multiplier=2, default_size=331, name=spec.name, **common)
    raise AssertionError(f"no narrow twin for {spec.name}")
