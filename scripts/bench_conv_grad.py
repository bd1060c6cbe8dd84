"""How much trainer.fast_conv_grad saves on CPU: TensorFlow's Conv2D input gradient against a forward convolution.

    python scripts/bench_conv_grad.py              # the layers and four backbones at 32 px (about 5 minutes)
    python scripts/bench_conv_grad.py --sizes 32 96 --backbones resnet50

Part 1, single convolutions of the shapes ResNet-50 has at 32 px and at 224 px: forward, and forward plus both
gradients with TensorFlow's gradient and with tlkit.training.conv_grad's. Part 2, a whole training step (Adam,
BatchNorm in inference mode, as tlkit trains) of each backbone built by Keras with random weights, both ways,
interleaved. Ratios, medians of repeated timings in one process: the machine is shared.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LAYERS = [  # (input map size, in channels, out channels, kernel, stride): ResNet-50 at 32 px, then at 224 px
    (1, 512, 512, 3, 1), (1, 512, 2048, 1, 1), (2, 1024, 2048, 1, 2), (2, 256, 256, 3, 1), (4, 128, 128, 3, 1),
    (7, 512, 512, 3, 1), (14, 256, 256, 3, 1), (28, 128, 128, 3, 1),
]
BUILDERS = {"resnet50": "ResNet50", "vgg16": "VGG16", "mobilenet_v2": "MobileNetV2", "efficientnet_b0": "EfficientNetB0"}


def _median_ms(function, *args, repeats: int = 5, calls: int = 3) -> float:
    function(*args)
    function(*args)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            function(*args)
        times.append((time.perf_counter() - started) / calls * 1000)
    return statistics.median(times)


def layer_rows(batch: int) -> list[str]:
    import tensorflow as tf

    from tlkit.training.conv_grad import fast_conv_gradients

    rows = []
    for size, cin, cout, k, stride in LAYERS:
        images = tf.random.normal((batch, size, size, cin))
        kernel = tf.Variable(tf.random.normal((k, k, cin, cout)) * 0.01)

        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.nn.conv2d(x, kernel, stride, "SAME") ** 2)
            return tape.gradient(loss, [x, kernel])

        forward = _median_ms(tf.function(lambda x: tf.nn.conv2d(x, kernel, stride, "SAME")), images)
        tensorflow_ms = _median_ms(tf.function(step), images)
        with fast_conv_gradients():
            fast_ms = _median_ms(tf.function(step), images)
        out = -(-size // stride)
        rows.append(f"| {size}x{size} -> {out}x{out}, {cin}->{cout}, {k}x{k}/{stride} | "
                    f"{forward:.1f} | {tensorflow_ms:.1f} | {fast_ms:.1f} | {tensorflow_ms / fast_ms:.1f}x |")
    return rows


def step_rows(backbones: list[str], sizes: list[int], batch: int, repeats: int) -> list[str]:
    import keras
    import numpy as np

    from tlkit.training.conv_grad import fast_conv_gradients

    rows = []
    for name in backbones:
        for size in sizes:
            timings = {"tensorflow": [], "fast": []}
            for _ in range(repeats):  # interleaved, each with a fresh model and its own trace
                for way in ("tensorflow", "fast"):
                    timings[way].append(_train_step_ms(keras, np, name, size, batch, fast_conv_gradients,
                                                       way == "fast"))
            slow, fast = (statistics.median(timings[w]) for w in ("tensorflow", "fast"))
            rows.append(f"| {name} | {size} | {slow:.0f} | {fast:.0f} | {slow / fast:.2f}x |")
            print(rows[-1], flush=True)
    return rows


def _train_step_ms(keras, np, name, size, batch, fast_conv_gradients, fast: bool) -> float:
    builder = getattr(keras.applications, BUILDERS[name])
    base = builder(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
    inputs = keras.Input((size, size, 3))
    model = keras.Model(inputs, keras.layers.Dense(5)(base(inputs, training=False)))
    model.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = np.arange(batch) % 5
    with fast_conv_gradients(enabled=fast):
        return _median_ms(lambda: model.train_on_batch(images, labels), repeats=3, calls=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[32])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="fresh models per way and backbone")
    parser.add_argument("--skip-layers", action="store_true")
    args = parser.parse_args()
    if not args.skip_layers:
        print(f"| convolution (batch {args.batch}) | forward ms | + gradients, TensorFlow's ms | + gradients, "
              "fast_conv_grad ms | saved |\n|---|---|---|---|---|")
        print("\n".join(layer_rows(args.batch)), flush=True)
    print(f"\n| backbone | px | training step, TensorFlow's ms | fast_conv_grad ms | faster |\n|---|---|---|---|---|",
          flush=True)
    step_rows(args.backbones, args.sizes, args.batch, args.repeats)


if __name__ == "__main__":
    main()
