"""Feature cache for head-only stages.

A stage that trains only the head runs the same frozen backbone forward pass every
epoch. Instead, compute the pooled backbone features once (once per augmentation view
when augmentation is on), train the head on them, and hand the trained head back to the
full model: the head layer is shared, so the next stage starts from it.

Backend-neutral Keras: features are extracted with `predict`, and the head trains on a
keras.utils.PyDataset whose order is a pure function of (seed, epoch).
"""
from __future__ import annotations

import logging

import keras
import numpy as np

from tlkit.model import head_of

log = logging.getLogger("tlkit.train")
MAX_AUTO_VIEWS = 4  # with augmentation: each view costs one forward pass over the training set


def feature_cache_bytes(num_train: int, num_val: int, features: int, views: int) -> int:
    return 4 * features * (views * num_train + num_val)  # float32


def auto_views(augmenting: bool, epochs: int, configured: int | None) -> int:
    if configured is not None:
        return max(1, configured)
    return min(epochs, MAX_AUTO_VIEWS) if augmenting else 1


class FeatureCache:
    """Pooled features of the training set (V views) and of the validation set."""

    def __init__(self, model: keras.Model, data, views: int):
        self.model = model
        self.views = views
        extractor = _extractor_with_labels(model)
        # View v is the augmentation of training epoch v: a pure function of (seed, v).
        epochs = getattr(data, "train_epochs", None)
        train = [_extract(extractor, epochs.epoch(v) if epochs else data.train) for v in range(views)]
        self.train_features = [f for f, _ in train]
        self.train_labels = [y for _, y in train]
        self.val_features, self.val_labels = _extract(extractor, data.val)
        self.head_model = _head_model(model, self.val_features.shape[-1])

    def training_batches(self, batch_size: int, seed: int, first_epoch: int) -> "FeatureBatches":
        return FeatureBatches(self.train_features, self.train_labels, batch_size, seed, first_epoch)


def _extractor_with_labels(model: keras.Model) -> keras.Model:
    """(image, label) -> (pooled features, label): one pass keeps them aligned, whatever the shuffle."""
    label_in = keras.Input(shape=(), dtype="int32", name="label")
    features = model.get_layer("pool").output
    return keras.Model([model.input, label_in], [features, keras.layers.Identity()(label_in)])


def _extract(extractor: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray]:
    paired = dataset.map(lambda images, labels: ((images, labels),))
    features, labels = extractor.predict(paired, verbose=0)
    return np.asarray(features, dtype="float32"), np.asarray(labels, dtype="int32")


def _head_model(model: keras.Model, width: int) -> keras.Model:
    features_in = keras.Input(shape=(width,), name="features")
    return keras.Model(features_in, head_of(model)(features_in), name="head_on_features")


class FeatureBatches(keras.utils.PyDataset):
    """Shuffled batches of cached features; epoch e uses view e % V in an order seeded by (seed, e).

    drop_remainder, like the image pipeline: every batch has the same shape.
    """

    def __init__(self, features: list, labels: list, batch_size: int, seed: int, first_epoch: int):
        super().__init__()
        self.features, self.labels = features, labels
        self.batch_size = min(batch_size, len(labels[0]))
        self.seed = seed
        self.epoch = first_epoch
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels[0]))

    def __len__(self) -> int:
        return max(1, len(self.labels[0]) // self.batch_size)

    def __getitem__(self, index: int):
        view = self.epoch % len(self.features)
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.features[view][rows], self.labels[view][rows]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._permutation()


def describe(num_train: int, num_val: int, features: int, views: int) -> str:
    size = feature_cache_bytes(num_train, num_val, features, views)
    return f"{views} view(s) x {num_train} train + {num_val} val images x {features} features = {size / 2**20:.1f} MiB"

