"""MobileNet v1/v2/v3 and NASNet Mobile/Large.

Facts read from keras/src/applications/{mobilenet,mobilenet_v2,mobilenet_v3,nasnet}.py (Keras 3.15) and checked by
tests/test_backbones.py against the real models (see tlkit.backbones.zoo).
"""
from __future__ import annotations

from tlkit.backbones.registry import register
from tlkit.backbones.spec import BackboneSpec, Block, fixed_file, stages


def _mobilenet_v1_file(image_size: int) -> str:
    # keras mobilenet.py: rows is the input size if it is one of these, else 224 (with a warning).
    rows = image_size if image_size in (128, 160, 192, 224) else 224
    return f"mobilenet_1_0_{rows}_tf_no_top.h5"  # alpha=1.0 -> "1_0"


def _mobilenet_v2_file(image_size: int) -> str:
    # keras mobilenet_v2.py: same rule as v1, with 96 also supported.
    rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"


register(BackboneSpec(
    name="mobilenet", constructor="MobileNet", family="mobilenet", preprocess="tf",
    default_size=224, min_size=32, features=1024, params=3228864,
    weights_file=_mobilenet_v1_file,
    # Stages by resolution; each stride-2 depthwise conv is preceded by its conv_pad_N.
    blocks=stages(
        ("stem", None),  # conv1, stride 2
        ("stage1", "conv_dw_1"),  # 1/2
        ("stage2", "conv_pad_2"),  # 1/4
        ("stage3", "conv_pad_4"),  # 1/8
        ("stage4", "conv_pad_6"),  # 1/16
        ("stage5", "conv_pad_12"),  # 1/32
    ),
))

register(BackboneSpec(
    name="mobilenet_v2", constructor="MobileNetV2", family="mobilenet_v2", preprocess="tf",
    default_size=224, min_size=32, features=1280, params=2257984,
    weights_file=_mobilenet_v2_file,
    # Stages by resolution: the stride-2 bottlenecks are block_1, 3, 6 and 13.
    blocks=stages(
        ("stem", None),  # Conv1, stride 2
        ("stage1", "expanded_conv_depthwise"),  # 1/2, the first bottleneck (no expansion)
        ("stage2", "block_1_expand"),  # 1/4: block_1-2
        ("stage3", "block_3_expand"),  # 1/8: block_3-5
        ("stage4", "block_6_expand"),  # 1/16: block_6-12
        ("stage5", "block_13_expand"),  # 1/32: block_13-16
        ("top", "Conv_1"),  # Conv_1, Conv_1_bn, out_relu
    ),
))

# MobileNetV3's activations (activation_N, re_lu_N) and its Rescaling are auto-named:
# graph-assigned. Preprocessing is inside the model (include_preprocessing=True).
_V3_INSIDE = "Rescaling x / 127.5 - 1 (include_preprocessing)"
register(BackboneSpec(
    name="mobilenet_v3_small", constructor="MobileNetV3Small", family="mobilenet_v3", preprocess="none",
    builtin_preprocess=_V3_INSIDE, default_size=224, min_size=32, features=576, params=939120,
    weights_file=fixed_file("weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    blocks=stages(
        ("stem", None),  # rescaling, conv, stride 2
        ("stage1", "expanded_conv_depthwise_pad"),  # 1/4: expanded_conv (stride 2)
        ("stage2", "expanded_conv_1_expand"),  # 1/8: expanded_conv_1-2
        ("stage3", "expanded_conv_3_expand"),  # 1/16: expanded_conv_3-7
        ("stage4", "expanded_conv_8_expand"),  # 1/32: expanded_conv_8-10
        ("top", "conv_1"),
    ),
))

register(BackboneSpec(
    name="mobilenet_v3_large", constructor="MobileNetV3Large", family="mobilenet_v3", preprocess="none",
    builtin_preprocess=_V3_INSIDE, default_size=224, min_size=32, features=960, params=2996352,
    weights_file=fixed_file("weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    blocks=stages(
        ("stem", None),
        ("stage1", "expanded_conv_depthwise"),  # 1/2: expanded_conv (stride 1)
        ("stage2", "expanded_conv_1_expand"),  # 1/4: expanded_conv_1-2
        ("stage3", "expanded_conv_3_expand"),  # 1/8: expanded_conv_3-5
        ("stage4", "expanded_conv_6_expand"),  # 1/16: expanded_conv_6-11
        ("stage5", "expanded_conv_12_expand"),  # 1/32: expanded_conv_12-14
        ("top", "conv_1"),
    ),
))


def _nasnet_blocks(cells_per_stage: int) -> tuple[Block, ...]:
    """One block per NASNet cell, as Keras numbers them (block_id): the stem (its conv and the two stem reduction
    cells), then N normal cells, reduce_N, N more, reduce_2N, N more. Each cell takes the two cells before it, so a
    cell opens with parallel, partly auto-named branches: each block ends at the concatenation that closes its
    cell (the last one also takes the final, auto-named relu)."""
    n = cells_per_stage
    blocks = [Block("stem", ends_at="reduction_concat_stem_2")]
    for stage in range(3):
        if stage:
            blocks.append(Block(f"reduce_{stage * n}", ends_at=f"reduction_concat_reduce_{stage * n}"))
        first = stage * n + (1 if stage else 0)
        blocks += [Block(f"normal_{i}", ends_at=f"normal_concat_{i}") for i in range(first, first + n)]
    last = blocks.pop()
    return (*blocks, Block(last.name))


for _variant, _size, _cells, _features, _params in (("mobile", 224, 4, 1056, 4269716),
                                                    ("large", 331, 6, 4032, 84916818)):
    register(BackboneSpec(
        name=f"nasnet_{_variant}", constructor=f"NASNet{_variant.title()}", family="nasnet", preprocess="tf",
        default_size=_size, min_size=32, features=_features, params=_params,
        # Keras caches it under this name; it downloads NASNet-<variant>-no-top.h5.
        weights_file=fixed_file(f"nasnet_{_variant}_no_top.h5"),
        blocks=_nasnet_blocks(_cells),
    ))
