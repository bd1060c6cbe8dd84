"""The built-in backbones: Keras applications with their input contracts and blocks.

Facts below were read from keras/src/applications/*.py (Keras 3.15) and checked by
tests/test_backbones.py against the real models:
- preprocess: what the family's `preprocess_input` does (MobileNetV3 and EfficientNet
  rescale inside the model, so theirs is the identity).
- min_size: the smallest input Keras accepts with include_top=False (all of them build).
- weights_file: the file name the constructor passes to keras.utils.get_file for
  weights="imagenet", include_top=False.
- blocks: the natural stages, stem first. `starts_at` names the first layer of a block on
  its main path, always a layer Keras names explicitly; layers beside the main path
  (shortcut convolutions, auto-named activations) are assigned by graph position.
"""
from __future__ import annotations

from typing import Callable

from tlkit.backbones.spec import BackboneSpec, Block
from tlkit.errors import ConfigError

# --------------------------------------------------------------------------- the registry
# Here, beside the specs it holds, so that looking a backbone up never imports upwards.

_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> BackboneSpec:
    """The registered spec called `name` (every built-in one is registered when this module loads)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError("backbone.name", name, f"known backbones are {', '.join(sorted(_REGISTRY))}") from None


def all_specs() -> list[BackboneSpec]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


# --------------------------------------------------------------------------- the built-in backbones


def _fixed_file(file_name: str) -> Callable[[int], str]:
    """Most constructors ask for one file whatever the input size."""

    def weights_file(image_size: int) -> str:
        return file_name

    return weights_file


def _mobilenet_v1_file(image_size: int) -> str:
    # keras mobilenet.py: rows is the input size if it is one of these, else 224 (with a warning).
    rows = image_size if image_size in (128, 160, 192, 224) else 224
    return f"mobilenet_1_0_{rows}_tf_no_top.h5"  # alpha=1.0 -> "1_0"


def _mobilenet_v2_file(image_size: int) -> str:
    # keras mobilenet_v2.py: same rule as v1, with 96 also supported.
    rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"


def _stages(*starts: tuple[str, str | None]) -> tuple[Block, ...]:
    return tuple(Block(name, starts_at) for name, starts_at in starts)


register(BackboneSpec(
    name="resnet50", constructor="ResNet50", family="resnet50", preprocess="caffe",
    default_size=224, min_size=32, features=2048,
    weights_file=_fixed_file("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # The shortcut conv of each stage's first unit (convN_block1_0_conv) runs beside the
    # main path and lands in that stage.
    blocks=_stages(
        ("stem", None),
        ("conv2", "conv2_block1_1_conv"),
        ("conv3", "conv3_block1_1_conv"),
        ("conv4", "conv4_block1_1_conv"),
        ("conv5", "conv5_block1_1_conv"),
    ),
))

register(BackboneSpec(
    name="resnet50_v2", constructor="ResNet50V2", family="resnet_v2", preprocess="tf",
    default_size=224, min_size=32, features=2048,
    weights_file=_fixed_file("resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # Pre-activation units: each stage opens with a BatchNorm. The stride-2 shortcut of each
    # stage's last unit is an auto-named max_pooling2d (graph-assigned). conv5 keeps the
    # final post_bn/post_relu: a block of one BatchNorm would be a useless fine-tuning unit.
    blocks=_stages(
        ("stem", None),
        ("conv2", "conv2_block1_preact_bn"),
        ("conv3", "conv3_block1_preact_bn"),
        ("conv4", "conv4_block1_preact_bn"),
        ("conv5", "conv5_block1_preact_bn"),
    ),
))

for _depth in (16, 19):
    register(BackboneSpec(
        name=f"vgg{_depth}", constructor=f"VGG{_depth}", family=f"vgg{_depth}", preprocess="caffe",
        default_size=224, min_size=32, features=512,
        weights_file=_fixed_file(f"vgg{_depth}_weights_tf_dim_ordering_tf_kernels_notop.h5"), has_batch_norm=False,
        blocks=_stages(("block1", None), *((f"block{i}", f"block{i}_conv1") for i in range(2, 6))),
    ))

register(BackboneSpec(
    name="mobilenet", constructor="MobileNet", family="mobilenet", preprocess="tf",
    default_size=224, min_size=32, features=1024,
    weights_file=_mobilenet_v1_file,
    # Stages by resolution; each stride-2 depthwise conv is preceded by its conv_pad_N.
    blocks=_stages(
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
    default_size=224, min_size=32, features=1280,
    weights_file=_mobilenet_v2_file,
    # Stages by resolution: the stride-2 bottlenecks are block_1, 3, 6 and 13.
    blocks=_stages(
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
register(BackboneSpec(
    name="mobilenet_v3_small", constructor="MobileNetV3Small", family="mobilenet_v3", preprocess="none",
    default_size=224, min_size=32, features=576,
    weights_file=_fixed_file("weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    blocks=_stages(
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
    default_size=224, min_size=32, features=960,
    weights_file=_fixed_file("weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    blocks=_stages(
        ("stem", None),
        ("stage1", "expanded_conv_depthwise"),  # 1/2: expanded_conv (stride 1)
        ("stage2", "expanded_conv_1_expand"),  # 1/4: expanded_conv_1-2
        ("stage3", "expanded_conv_3_expand"),  # 1/8: expanded_conv_3-5
        ("stage4", "expanded_conv_6_expand"),  # 1/16: expanded_conv_6-11
        ("stage5", "expanded_conv_12_expand"),  # 1/32: expanded_conv_12-14
        ("top", "conv_1"),
    ),
))

register(BackboneSpec(
    name="xception", constructor="Xception", family="xception", preprocess="tf",
    default_size=299, min_size=71, features=2048,
    weights_file=_fixed_file("xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # Keras's own blocks: entry flow block1-4, middle flow block5-12, exit flow block13-14.
    # Shortcut conv2d/batch_normalization/add layers are auto-named: graph-assigned.
    blocks=_stages(
        ("block1", None),
        ("block2", "block2_sepconv1"),
        *((f"block{i}", f"block{i}_sepconv1_act") for i in range(3, 14)),
        ("block14", "block14_sepconv1"),
    ),
))

# InceptionV3 names only its module outputs (mixed0-mixed10): every conv, BatchNorm and
# activation is auto-named and each module opens with parallel branches, so modules are
# delimited by the concatenation that closes them (Block.ends_at).
register(BackboneSpec(
    name="inception_v3", constructor="InceptionV3", family="inception_v3", preprocess="tf",
    default_size=299, min_size=75, features=2048,
    weights_file=_fixed_file("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    blocks=(Block("stem"),) + tuple(Block(f"mixed{i}", ends_at=f"mixed{i}") for i in range(11)),
))

# EfficientNet: Keras's blockNx groups; rescaling and normalization (stem) are auto-named.
for _variant, _size, _features in (("b0", 224, 1280), ("b1", 240, 1280), ("b2", 260, 1408), ("b3", 300, 1536)):
    register(BackboneSpec(
        name=f"efficientnet_{_variant}", constructor=f"EfficientNet{_variant.upper()}", family="efficientnet",
        preprocess="none", default_size=_size, min_size=32, features=_features,
        weights_file=_fixed_file(f"efficientnet{_variant}_notop.h5"),
        blocks=_stages(
            ("stem", None),
            ("block1", "block1a_dwconv"),  # expansion ratio 1: no expand conv
            *((f"block{i}", f"block{i}a_expand_conv") for i in range(2, 8)),
            ("top", "top_conv"),
        ),
    ))

register(BackboneSpec(
    name="densenet121", constructor="DenseNet121", family="densenet", preprocess="torch",
    default_size=224, min_size=32, features=1024,
    weights_file=_fixed_file("densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # As Keras names them: convN is dense block N followed by its transition poolN (which
    # normalises and compresses that block's output); conv5 ends with the final bn/relu.
    blocks=_stages(
        ("stem", None),  # conv1 + pool1 (its zero_padding2d layers are auto-named)
        ("conv2", "conv2_block1_0_bn"),
        ("conv3", "conv3_block1_0_bn"),
        ("conv4", "conv4_block1_0_bn"),
        ("conv5", "conv5_block1_0_bn"),
    ),
))
