"""Staged training really freezes: frozen blocks keep their weights and BatchNorm statistics."""
import keras
import numpy as np
import pytest
from block_checks import trainable_blocks

from tlkit.backbones import get_spec
from tlkit.config import BackboneConfig, HeadConfig, OptimizerConfig, StageConfig
from tlkit.config.schema import BNPolicy
from tlkit.model.build import backbone_of, build_model, head_of
from tlkit.training.stages import Freezer, is_batch_norm, plan_stages
from tlkit.training.optim import compile_for_stage as _compile

SIZE, CLASSES = 32, 3
BACKBONE = "resnet50"  # BatchNorm in every block, and healthy signal with random weights


def snapshot(layers):
    return {(layer.name, i): np.array(w) for layer in layers for i, w in enumerate(layer.weights)}


def changed(before, layers, kind):
    """Names of layers whose weights of `kind` ('kernel', 'moving') changed."""
    out = set()
    for layer in layers:
        for i, w in enumerate(layer.weights):
            if kind in w.path and not np.array_equal(before[(layer.name, i)], np.array(w)):
                out.add(layer.name)
    return out


def fit_one_stage(bn: BNPolicy, train: str):
    keras.utils.set_random_seed(0)
    spec = get_spec(BACKBONE)
    model = build_model(spec, BackboneConfig(name=BACKBONE, weights=None), HeadConfig(), CLASSES, SIZE)
    freezer = Freezer(model, spec, bn)
    plan = plan_stages([StageConfig(name="s", train=train, epochs=1)], spec, base_lr=1e-2)[0]
    freezer.apply(plan)
    _compile(model, OptimizerConfig(name="sgd", lr=1e-2), plan, steps_per_epoch=2)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, SIZE, SIZE, 3)).astype("float32")
    labels = rng.integers(0, CLASSES, 16).astype("int32")
    before = snapshot(backbone_of(model).layers)
    head_before = snapshot(head_of(model).layers)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    return spec, model, freezer, before, head_before


@pytest.fixture(scope="module")
def top1_frozen_bn():
    return fit_one_stage(BNPolicy.frozen, "top:1")


def test_only_the_unfrozen_block_and_head_change(top1_frozen_bn):
    spec, model, freezer, before, head_before = top1_frozen_bn
    top = spec.block_names[-1]
    for block, layers in freezer.blocks.items():
        kernels = changed(before, layers, "kernel")
        if block == top:
            assert kernels, f"block {block} trains in this stage: its kernels must move"
        else:
            assert not kernels, f"frozen block {block} changed: {sorted(kernels)[:5]}"
    assert changed(head_before, head_of(model).layers, "kernel"), "the head always trains"
    assert trainable_blocks(freezer) == [top]


def test_bn_frozen_keeps_moving_statistics_everywhere(top1_frozen_bn):
    _, model, freezer, before, _ = top1_frozen_bn
    for block, layers in freezer.blocks.items():
        assert not changed(before, layers, "moving"), f"BatchNorm statistics drifted in block {block}"


def test_bn_train_updates_statistics_only_in_unfrozen_blocks():
    spec, model, freezer, before, _ = fit_one_stage(BNPolicy.train, "top:1")
    top = spec.block_names[-1]
    for block, layers in freezer.blocks.items():
        moved = changed(before, layers, "moving")
        if block == top and any(is_batch_norm(layer) for layer in layers):
            assert moved, "bn=train: the unfrozen block's BatchNorm statistics must update"
        elif block != top:
            assert not moved, f"frozen block {block}: BatchNorm statistics must not change"


def test_keras_training_false_alone_does_not_protect_batchnorm():
    """Why tlkit freezes BatchNorm layers instead of relying on `backbone(x, training=False)`.

    If this starts failing, Keras changed behaviour: revisit the note in tlkit/training/stages.py.
    """
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="bn")(inner_in))
    outer_in = keras.Input((4,))
    outer = keras.Model(outer_in, keras.layers.Dense(1)(inner(outer_in, training=False)))
    outer.compile("sgd", "mse")
    outer.fit(np.full((16, 4), 9.0, "float32"), np.zeros((16, 1), "float32"), verbose=0)
    assert np.abs(np.array(inner.get_layer("bn").moving_mean)).max() > 0
