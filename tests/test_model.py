"""The model is right by construction: 0-255 in, preprocessing inside, N >= 2 logits, probabilities saved."""
import numpy as np
import pytest

import tlkit
from tlkit.backbones import get_spec
from tlkit.config import BackboneConfig, HeadConfig
from tlkit.errors import ConfigError

SIZE = 32


@pytest.fixture(scope="module")
def binary_model():
    from tlkit.model.build import build_model

    spec = get_spec("mobilenet_v2")
    return build_model(spec, BackboneConfig(name=spec.name, weights=None), HeadConfig(), num_classes=2, image_size=SIZE)


def test_binary_is_two_logits_with_preprocessing_inside(binary_model):
    assert binary_model.input_shape == (None, SIZE, SIZE, 3)
    assert binary_model.output_shape == (None, 2)
    assert binary_model.get_layer("preprocess").mode == "tf", "mobilenet_v2 expects x/127.5 - 1"
    backbone = binary_model.get_layer("backbone")
    assert not any(layer.name == "predictions" for layer in backbone.layers), "include_top must be False"


def test_zero_initialised_head_starts_uniform(binary_model):
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    logits = np.asarray(binary_model(images, training=False))
    np.testing.assert_allclose(logits, 0.0, atol=1e-6)


def test_saved_model_ends_in_probabilities_and_reloads(binary_model, tmp_path):
    from tlkit.model.build import with_probabilities

    images = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    # Give the head non-zero weights so probabilities differ per image.
    dense = binary_model.get_layer("head").get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([np.random.default_rng(2).normal(size=kernel.shape).astype("float32"), bias])
    served = with_probabilities(binary_model)
    expected = np.asarray(served([images], training=False))
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)
    path = tmp_path / "model.keras"
    served.save(path)
    reloaded = tlkit.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded([images], training=False)), expected, atol=1e-5)
    dense.set_weights([kernel, bias])


def test_one_class_is_refused_with_the_binary_hint():
    from tlkit.model.build import build_model

    spec = get_spec("vgg16")
    with pytest.raises(ConfigError) as info:
        build_model(spec, BackboneConfig(name="vgg16", weights=None), HeadConfig(), num_classes=1, image_size=SIZE)
    assert "2 logits" in str(info.value)


def test_preprocess_override_is_explicit():
    from tlkit.model.build import preprocess_mode

    spec = get_spec("resnet50")
    assert preprocess_mode(spec, BackboneConfig(name="resnet50")) == "caffe"
    assert preprocess_mode(spec, BackboneConfig(name="resnet50", preprocess="rescale_255")) == "rescale_255"
