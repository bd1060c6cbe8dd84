"""The peers tlkit's default is measured against (scripts/bench_recipes.py), each in plain Keras.

    python scripts/recipe_peers.py PEER --backbone B --weights FILE --task DIR --size 32 --seed 0 --json OUT

PEER is one of:
  keras_guide   keras.io/guides/transfer_learning: preprocess_input, frozen base called with
                training=False, GlobalAveragePooling, Dropout(0.2), Dense; Adam 1e-3 for 10 epochs,
                then the whole base unfrozen, Adam 1e-5 for 10 epochs.
  linear_probe  scikit-learn LogisticRegression (L2, C=1, standardised features) on the frozen
                backbone's average-pooled features.
  fastai        fastai's `Learner.fine_tune(10)` written in Keras: fastai's head (concat pooling,
                BatchNorm, dropout 0.25/0.5, 512 hidden); 1 epoch frozen (BatchNorm still training) at
                one-cycle 2e-3, then everything for 10 epochs, one-cycle with discriminative LRs
                1e-5 / 1e-4 / 1e-3 over (lower half of the backbone, upper half, head); AdamW wd 0.01,
                beta_2 0.99, eps 1e-5. Not copied: fastai's momentum cycling.
  scratch       the same backbone from random weights (BatchNorm momentum 0.9 so its statistics can
                converge), Adam 1e-3 with cosine decay, 20 epochs, random shifts.
DIR holds train/, val/ and test/ class folders. Every peer reads them with
keras.utils.image_dataset_from_directory, batch 32, and writes val/test accuracy and its
wall time (the whole process, like `python train.py`) to OUT as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

STARTED = time.time()  # before TensorFlow is imported: the peers' time includes it, as tlkit's does
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

BATCH = 32


def load(task, split, size, seed, shuffle=False):
    return keras.utils.image_dataset_from_directory(
        os.path.join(task, split), image_size=(size, size), batch_size=BATCH, seed=seed, shuffle=shuffle,
        label_mode="int", verbose=False)


def backbone(spec, size, weights):
    """keras.applications.<Model>(include_top=False) with the weights file loaded (None: random)."""
    base = getattr(keras.applications, spec.constructor)(include_top=False, weights=None,
                                                         input_shape=(size, size, 3), **spec.builder_kwargs)
    if weights:
        base.load_weights(weights)
    return base


def preprocess_fn(spec):
    return getattr(keras.applications, spec.family).preprocess_input


def evaluate(model, splits) -> dict:
    return {f"{name}_accuracy": float(model.evaluate(data, verbose=0, return_dict=True)["accuracy"])
            for name, data in splits.items()}


def sparse_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# --------------------------------------------------------------------------- Keras guide


def keras_guide(spec, task, size, weights, seed, epochs=(10, 10)):
    keras.utils.set_random_seed(seed)
    train, val, test = load(task, "train", size, seed, True), load(task, "val", size, seed), load(task, "test", size, seed)
    base = backbone(spec, size, weights)
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Lambda(preprocess_fn(spec))(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(len(train.class_names))(x))
    model.compile(keras.optimizers.Adam(), sparse_loss(), metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=epochs[0], verbose=0)
    base.trainable = True
    model.compile(keras.optimizers.Adam(1e-5), sparse_loss(), metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=epochs[1], verbose=0)
    return evaluate(model, {"val": val, "test": test})


# --------------------------------------------------------------------------- linear probe


def linear_probe(spec, task, size, weights, seed):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    keras.utils.set_random_seed(seed)
    base = backbone(spec, size, weights)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Lambda(preprocess_fn(spec))(inputs)
    extractor = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(base(x, training=False)))

    def features(split):
        xs, ys = [], []
        for images, labels in load(task, split, size, seed):
            xs.append(extractor.predict_on_batch(images))
            ys.append(labels.numpy())
        return np.concatenate(xs), np.concatenate(ys)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = features("train"), features("val"), features("test")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    probe.fit(x_train, y_train)
    return {"val_accuracy": float(probe.score(x_val, y_val)), "test_accuracy": float(probe.score(x_test, y_test))}


# --------------------------------------------------------------------------- fastai fine_tune


class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """fastai's fit_one_cycle: cosine from lr/div up to lr over pct_start of the steps, then down to lr/div_final."""

    def __init__(self, lr, steps, pct_start=0.25, div=25.0, div_final=1e5):
        self.lr, self.steps, self.pct, self.div, self.div_final = lr, steps, pct_start, div, div_final

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        up = max(1.0, self.pct * self.steps)
        down = max(1.0, self.steps - up)

        def cos(start, end, frac):
            return end + (start - end) / 2 * (1 + ops.cos(math.pi * ops.clip(frac, 0.0, 1.0)))

        warm = cos(self.lr / self.div, self.lr, step / up)
        anneal = cos(self.lr, self.lr / self.div_final, (step - up) / down)
        return ops.where(step < up, warm, anneal)


class GroupLRModel(keras.Model):
    """A train step with one AdamW per layer group: fastai's discriminative learning rates."""

    def set_groups(self, groups, optimizers):
        self.groups, self.group_optimizers = groups, optimizers

    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=logits)
        variables = [v for group in self.groups for v in group]
        grads = tape.gradient(loss, variables)
        start = 0
        for group, optimizer in zip(self.groups, self.group_optimizers):
            optimizer.apply_gradients(zip(grads[start:start + len(group)], group))
            start += len(group)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}


def _fit_groups(model, groups, optimizers):
    for group, optimizer in zip(groups, optimizers):
        optimizer.build(group)  # outside the traced step: tf.function may create variables only once
    model.set_groups(groups, optimizers)
    model.compile(optimizer=optimizers[-1], loss=sparse_loss(), metrics=["accuracy"])


def _adamw(lr):
    return keras.optimizers.AdamW(learning_rate=lr, weight_decay=0.01, beta_2=0.99, epsilon=1e-5)


def fastai(spec, task, size, weights, seed, epochs=10, base_lr=2e-3, lr_mult=100):
    keras.utils.set_random_seed(seed)
    train, val, test = load(task, "train", size, seed, True), load(task, "val", size, seed), load(task, "test", size, seed)
    base = backbone(spec, size, weights)
    inputs = keras.Input((size, size, 3))
    x = base(keras.layers.Lambda(preprocess_fn(spec))(inputs))
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(x), keras.layers.GlobalMaxPooling2D()(x)])
    x = keras.layers.Dropout(0.25)(keras.layers.BatchNormalization()(x))
    x = keras.layers.Dense(512, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(keras.layers.BatchNormalization()(x))
    model = GroupLRModel(inputs, keras.layers.Dense(len(train.class_names))(x))
    in_base = {id(v) for v in base.weights}
    head = [v for v in model.trainable_weights if id(v) not in in_base]
    steps_per_epoch = int(train.cardinality())

    # freeze(): only the head and BatchNorm layers train (fastai's train_bn=True)
    for layer in base.layers:
        layer.trainable = isinstance(layer, keras.layers.BatchNormalization)
    frozen_bn = [v for v in base.trainable_weights]
    _fit_groups(model, [frozen_bn + head], [_adamw(OneCycle(base_lr, steps_per_epoch, pct_start=0.99))])
    model.fit(train, validation_data=val, epochs=1, verbose=0)

    # unfreeze(): everything, LRs even_mults(base_lr / 2 / lr_mult, base_lr / 2) over three groups
    for layer in base.layers:
        layer.trainable = True
    lr = base_lr / 2
    body = [layer for layer in base.layers if layer.trainable_weights]
    half = len(body) // 2
    groups = [[v for layer in body[:half] for v in layer.trainable_weights],
              [v for layer in body[half:] for v in layer.trainable_weights], head]
    lrs = [lr / lr_mult, lr / math.sqrt(lr_mult), lr]
    steps = epochs * steps_per_epoch
    _fit_groups(model, groups, [_adamw(OneCycle(g, steps, pct_start=0.3, div=5.0)) for g in lrs])
    model.fit(train, validation_data=val, epochs=epochs, verbose=0)
    return evaluate(model, {"val": val, "test": test})


# --------------------------------------------------------------------------- from scratch


def scratch(spec, task, size, weights, seed, epochs=20):
    keras.utils.set_random_seed(seed)
    train, val, test = load(task, "train", size, seed, True), load(task, "val", size, seed), load(task, "test", size, seed)
    base = backbone(spec, size, None)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    inputs = keras.Input((size, size, 3))
    x = keras.layers.RandomTranslation(0.125, 0.125, fill_mode="nearest")(inputs)
    x = keras.layers.Lambda(preprocess_fn(spec))(x)
    x = keras.layers.GlobalAveragePooling2D()(base(x))
    model = keras.Model(inputs, keras.layers.Dense(len(train.class_names))(x))
    steps = epochs * int(train.cardinality())
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)), sparse_loss(),
                  metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=epochs, verbose=0)
    return evaluate(model, {"val": val, "test": test})


PEERS = {"keras_guide": keras_guide, "linear_probe": linear_probe, "fastai": fastai, "scratch": scratch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--task", required=True, help="folder with train/, val/, test/")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    from tlkit.backbones import get_spec

    result = PEERS[args.peer](get_spec(args.backbone), args.task, args.size, args.weights, args.seed)
    result["wall_s"] = round(time.time() - STARTED, 2)
    with open(args.json, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
