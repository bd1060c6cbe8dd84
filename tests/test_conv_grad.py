"""trainer.fast_conv_grad: Conv2D input gradients as forward convolutions give TensorFlow's gradients, and only inside."""
import itertools

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from tlkit.training.conv_grad import fast_conv_gradients  # noqa: E402
from tlkit.training.runtime import Device, conv_gradients  # noqa: E402


def _tensor_gradients(images, kernel, strides, padding):
    """d loss / d (images, kernel) as tensors: runs eagerly, or inside tf.function."""
    with tf.GradientTape() as tape:
        tape.watch([images, kernel])
        out = tf.nn.conv2d(images, kernel, strides, padding)
        loss = tf.reduce_sum(out * tf.sin(out))  # a gradient that differs from position to position
    return tape.gradient(loss, [images, kernel])


def _gradients(images, kernel, strides, padding, traced=False):
    compute = tf.function(_tensor_gradients, reduce_retracing=True) if traced else _tensor_gradients
    return [g.numpy() for g in compute(images, kernel, strides, padding)]


CASES = [(size, k, stride, padding)
         for size, k, stride, padding in itertools.product([1, 2, 5, 8], [1, 2, 3, 5], [1, 2, 3], ["SAME", "VALID"])
         if not (padding == "VALID" and k > size)]


@pytest.mark.parametrize("size,k,stride,padding", CASES)
def test_input_and_kernel_gradients_match_tensorflows(size, k, stride, padding):
    rng = np.random.default_rng(size * 100 + k * 10 + stride)
    images = tf.constant(rng.normal(size=(2, size, size + 1, 3)), tf.float32)  # not square: the axes kept apart
    kernel = tf.constant(rng.normal(size=(k, k, 3, 4)), tf.float32)
    expected = _gradients(images, kernel, stride, padding)
    with fast_conv_gradients() as installed:
        assert installed
        eager = _gradients(images, kernel, stride, padding)
        traced = _gradients(images, kernel, stride, padding, traced=True)
    for got in (eager, traced):
        for want, have in zip(expected, got):
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_explicit_padding_matches_tensorflows():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(2, 7, 6, 3)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 3, 5)), tf.float32)
    padding = [[0, 0], [2, 1], [0, 2], [0, 0]]
    expected = _gradients(images, kernel, 2, padding)
    with fast_conv_gradients():
        got = _gradients(images, kernel, 2, padding)
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_keras_dilated_convolution_matches_tensorflows():
    """Keras runs a dilated convolution as space-to-batch around a stride-1 Conv2D: covered too."""
    layer = keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same")
    images = tf.random.normal((2, 9, 9, 3))
    layer.build(images.shape)

    def gradients():
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_sum(tf.sin(layer(images)))
        return [g.numpy() for g in tape.gradient(loss, [images, layer.kernel])]

    expected = gradients()
    with fast_conv_gradients():
        for want, have in zip(expected, gradients()):
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5)


def _registered():
    from tensorflow.python.framework import ops as tf_ops

    return tf_ops._gradient_registry._registry["Conv2D"]["type"]


def test_the_original_gradient_is_back_after_the_context_even_after_an_error():
    original = _registered()
    with pytest.raises(RuntimeError):
        with fast_conv_gradients():
            assert _registered() is not original
            raise RuntimeError("a failing run")
    assert _registered() is original


def test_the_trainer_setting_decides_by_device():
    original = _registered()
    with conv_gradients(None, Device("gpu", True)) as on_gpu:
        assert not on_gpu and _registered() is original  # cuDNN's kernel is fine: leave it
    with conv_gradients(False, Device("cpu", False)) as switched_off:
        assert not switched_off and _registered() is original
    with conv_gradients(None, Device("cpu", False)) as on_cpu:
        assert on_cpu and _registered() is not original
    assert _registered() is original


def test_a_keras_resnet_gets_the_same_gradients():
    """Every trainable weight of a Keras ResNet-50 (7x7 stride-2 stem, strided 1x1 shortcuts, 3x3 SAME convs down to
    1x1 maps at 32 px), BatchNorm in inference mode as tlkit trains it by default."""
    def gradients():
        keras.utils.set_random_seed(3)
        base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
        model = keras.Sequential([base, keras.layers.Dense(3)])
        images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        with tf.GradientTape() as tape:
            logits = model(images, training=False)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(np.array([0, 1, 2, 0]), logits)
        return [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]

    expected = gradients()
    with fast_conv_gradients():
        got = gradients()
    assert len(got) == len(expected) > 100
    worst = max(float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12)) for a, b in zip(expected, got))
    assert worst < 1e-4
