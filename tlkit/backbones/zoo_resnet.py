"""ResNet (v1, v2), VGG and DenseNet: keras.applications backbones that take caffe, tf or torch preprocessing.

Facts read from keras/src/applications/{resnet,resnet_v2,vgg16,vgg19,densenet}.py (Keras 3.15) and checked by
tests/test_backbones.py against the real models (see tlkit.backbones.zoo).
"""
from __future__ import annotations

from tlkit.backbones.registry import register
from tlkit.backbones.spec import BackboneSpec, fixed_file, stages

_FILE = "{}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _conv_stages(first_layer: str):
    """stem, conv2 .. conv5: Keras's stage names in ResNet and DenseNet, each stage opening at its first unit's
    `convN_block1_<first_layer>`."""
    return stages(("stem", None), *((f"conv{n}", f"conv{n}_block1_{first_layer}") for n in range(2, 6)))

# (depth, parameters of the v1 backbone, of the v2 backbone), counted from the built models.
_RESNETS = ((50, 23587712, 23564800), (101, 42658176, 42626560), (152, 58370944, 58331648))

for _depth, _v1_params, _v2_params in _RESNETS:
    register(BackboneSpec(
        name=f"resnet{_depth}", constructor=f"ResNet{_depth}",
        # keras.applications.resnet50 is ResNet50's own module; resnet holds 101 and 152 (the same caffe preprocessing)
        family="resnet50" if _depth == 50 else "resnet", preprocess="caffe",
        default_size=224, min_size=32, features=2048, params=_v1_params,
        weights_file=fixed_file(_FILE.format(f"resnet{_depth}")),
        # The shortcut conv of each stage's first unit (convN_block1_0_conv) runs beside the
        # main path and lands in that stage.
        blocks=_conv_stages("1_conv"),
    ))
    register(BackboneSpec(
        name=f"resnet{_depth}_v2", constructor=f"ResNet{_depth}V2", family="resnet_v2", preprocess="tf",
        default_size=224, min_size=32, features=2048, params=_v2_params,
        weights_file=fixed_file(_FILE.format(f"resnet{_depth}v2")),
        # Pre-activation units: each stage opens with a BatchNorm. The stride-2 shortcut of each
        # stage's last unit is an auto-named max_pooling2d (graph-assigned). conv5 keeps the
        # final post_bn/post_relu: a block of one BatchNorm would be a useless fine-tuning unit.
        blocks=_conv_stages("preact_bn"),
    ))

for _depth, _params in ((16, 14714688), (19, 20024384)):
    register(BackboneSpec(
        name=f"vgg{_depth}", constructor=f"VGG{_depth}", family=f"vgg{_depth}", preprocess="caffe",
        default_size=224, min_size=32, features=512, params=_params,
        weights_file=fixed_file(_FILE.format(f"vgg{_depth}")), has_batch_norm=False,
        blocks=stages(("block1", None), *((f"block{i}", f"block{i}_conv1") for i in range(2, 6))),
    ))

for _depth, _features, _params in ((121, 1024, 7037504), (169, 1664, 12642880), (201, 1920, 18321984)):
    register(BackboneSpec(
        name=f"densenet{_depth}", constructor=f"DenseNet{_depth}", family="densenet", preprocess="torch",
        default_size=224, min_size=32, features=_features, params=_params,
        weights_file=fixed_file(_FILE.format(f"densenet{_depth}")),
        # As Keras names them: convN is dense block N followed by its transition poolN (which
        # normalises and compresses that block's output); conv5 ends with the final bn/relu.
        blocks=_conv_stages("0_bn"),  # the stem: conv1 + pool1 (its zero_padding2d layers are auto-named)
    ))
