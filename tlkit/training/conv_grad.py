"""A faster input gradient for TensorFlow's Conv2D on CPU.

TensorFlow's CPU kernel for a convolution's input gradient (Conv2DBackpropInput) is many times slower than the
forward convolution that computes the same numbers: on this project's 2-core machine 12x on ResNet-50's 1x1 maps
(512 channels, 3x3 kernel: 108 ms against 9 ms), 2.5x on its 7x7 maps at 224 px (there the whole layer, forward and
both gradients, gains only 1.2x). Training a ResNet-50 at 32 px spends most of each step there: 919 ms a step
against 270 ms (BENCHMARKS.md section 9). The input gradient of a convolution is itself a convolution: of
the output gradient, spread out by the stride and padded, with the kernel mirrored in space and its channel axes
swapped. `fast_conv_gradients` computes it so while a run trains on CPU; the kernel's gradient stays TensorFlow's.

TensorFlow has no public hook to replace a registered gradient, so the context swaps the function in TensorFlow's
gradient registry for its duration and puts the original back after. Functions traced inside keep the gradient they
were traced with. A convolution this does not cover (dilated, grouped, NCHW, a spatial size unknown when traced)
takes TensorFlow's own gradient.
"""
from __future__ import annotations

import contextlib
import logging

import tensorflow as tf

log = logging.getLogger("tlkit.train")
_OP = "Conv2D"


def _registry() -> dict:
    from tensorflow.python.framework import ops as tf_ops  # the registry has no public accessor

    return tf_ops._gradient_registry._registry


@contextlib.contextmanager
def fast_conv_gradients(enabled: bool = True):
    """While inside, TensorFlow computes Conv2D's input gradient as a forward convolution (`enabled`=False: a no-op).

    Yields whether the faster gradient is in place (False when disabled, or when this TensorFlow's registry does not
    look as expected: the run then goes on with TensorFlow's gradient)."""
    entry = _registry().get(_OP) if enabled else None
    original = entry.get("type") if isinstance(entry, dict) else None
    if original is None:
        if enabled:
            log.warning("could not install the faster Conv2D input gradient (this TensorFlow's gradient registry "
                        "differs); training uses TensorFlow's own")
        yield False
        return
    entry["type"] = _gradient_with(original)
    try:
        yield True
    finally:
        entry["type"] = original


def _gradient_with(original):
    def conv2d_gradient(op, grad):
        input_grad = _input_gradient(op, grad)
        if input_grad is None:
            return original(op, grad)
        from tensorflow.python.ops import gen_nn_ops

        filter_grad = gen_nn_ops.conv2d_backprop_filter(
            op.inputs[0], tf.shape(op.inputs[1]), grad, strides=op.get_attr("strides"),
            padding=op.get_attr("padding"), explicit_paddings=op.get_attr("explicit_paddings"),
            use_cudnn_on_gpu=op.get_attr("use_cudnn_on_gpu"), data_format=op.get_attr("data_format"),
            dilations=op.get_attr("dilations"))
        return [input_grad, filter_grad]

    return conv2d_gradient


def _input_gradient(op, grad):
    """d loss / d input of an NHWC Conv2D as one forward convolution, or None where that is not worked out here."""
    images, kernel = op.inputs
    covered = (op.get_attr("data_format") in (b"NHWC", "NHWC") and list(op.get_attr("dilations")) == [1, 1, 1, 1]
               and images.shape.rank == 4 and None not in images.shape[1:] and None not in kernel.shape
               and images.shape[3] == kernel.shape[2] and None not in grad.shape[1:3])
    if not covered:
        return None
    padding = op.get_attr("padding")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    explicit = list(op.get_attr("explicit_paddings") or [0] * 8)
    _, stride_h, stride_w, _ = op.get_attr("strides")
    pads = [_pads(images.shape[1], grad.shape[1], kernel.shape[0], stride_h, padding, explicit[2]),
            _pads(images.shape[2], grad.shape[2], kernel.shape[1], stride_w, padding, explicit[4])]
    if min(pads[0] + pads[1]) < 0:
        return None
    spread = tf.pad(_spread(grad, stride_h, stride_w), [[0, 0], pads[0], pads[1], [0, 0]])
    mirrored = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])  # [kh, kw, out, in]
    return tf.nn.conv2d(spread, mirrored, 1, "VALID")


def _pads(size: int, out: int, kernel: int, stride: int, padding: str, explicit_before: int) -> list[int]:
    """Before/after padding of the spread output gradient along one axis, so that a stride-1 VALID convolution
    with the mirrored kernel returns `size` values: each input position gets every (output, tap) it fed."""
    if padding == "VALID":
        before = 0
    elif padding == "SAME":
        before = max((out - 1) * stride + kernel - size, 0) // 2
    else:  # EXPLICIT
        before = explicit_before
    return [kernel - 1 - before, size + before - (out - 1) * stride - 1]


def _spread(grad, stride_h: int, stride_w: int):
    """Put stride-1 zeros between the output gradient's positions: where a strided convolution's outputs sat."""
    if stride_h == 1 and stride_w == 1:
        return grad
    batch, channels = tf.shape(grad)[0], tf.shape(grad)[3]
    height, width = grad.shape[1], grad.shape[2]
    spread = tf.reshape(grad, [batch, height, 1, width, 1, channels])
    spread = tf.pad(spread, [[0, 0], [0, 0], [0, stride_h - 1], [0, 0], [0, stride_w - 1], [0, 0]])
    spread = tf.reshape(spread, [batch, height * stride_h, width * stride_w, channels])
    return spread[:, :(height - 1) * stride_h + 1, :(width - 1) * stride_w + 1, :]
