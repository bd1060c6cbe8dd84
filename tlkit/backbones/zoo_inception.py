"""Xception, InceptionV3 and InceptionResNetV2 (tf preprocessing, 299 px).

Facts read from keras/src/applications/{xception,inception_v3,inception_resnet_v2}.py (Keras 3.15) and checked by
tests/test_backbones.py against the real models (see tlkit.backbones.zoo).
"""
from __future__ import annotations

from tlkit.backbones.registry import register
from tlkit.backbones.spec import BackboneSpec, Block, fixed_file, stages

register(BackboneSpec(
    name="xception", constructor="Xception", family="xception", preprocess="tf",
    default_size=299, min_size=71, features=2048, params=20861480,
    weights_file=fixed_file("xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # Keras's own blocks: entry flow block1-4, middle flow block5-12, exit flow block13-14.
    # Shortcut conv2d/batch_normalization/add layers are auto-named: graph-assigned.
    blocks=stages(
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
    default_size=299, min_size=75, features=2048, params=21802784,
    weights_file=fixed_file("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    blocks=(Block("stem"),) + tuple(Block(f"mixed{i}", ends_at=f"mixed{i}") for i in range(11)),
))

# InceptionResNetV2: the stem's conv2d_bn units are auto-named; the reduction modules are named by their
# concatenation (mixed_5b, mixed_6a, mixed_7a) and the residual units blockNN_i by their activation
# (blockNN_i_ac; the scale layer before it is auto-named). Blocks are Keras's stages: each run of residual units
# ends at its last activation, and block8 (its last unit has no activation) takes conv_7b.
register(BackboneSpec(
    name="inception_resnet_v2", constructor="InceptionResNetV2", family="inception_resnet_v2", preprocess="tf",
    default_size=299, min_size=75, features=1536, params=54336736,
    weights_file=fixed_file("inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    blocks=(
        Block("stem"),
        Block("mixed_5b", ends_at="mixed_5b"),  # Inception-A, from the stem's last pooling
        Block("block35", ends_at="block35_10_ac"),  # 10 x Inception-ResNet-A
        Block("mixed_6a", ends_at="mixed_6a"),  # Reduction-A
        Block("block17", ends_at="block17_20_ac"),  # 20 x Inception-ResNet-B
        Block("mixed_7a", ends_at="mixed_7a"),  # Reduction-B
        Block("block8"),  # 10 x Inception-ResNet-C, then conv_7b
    ),
))
