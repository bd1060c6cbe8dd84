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

import time

import keras
import numpy as np

import tlkit.training.distribute as distribute
from tlkit.config.schema import FeatureCacheMode
from tlkit.data.mixing import mixing_enabled
from tlkit.model.build import head_of

log = logging.getLogger("tlkit.train")
MAX_AUTO_VIEWS = 4  # with augmentation: each view costs one forward pass over the training set


def eligibility(cfg, plan, model: keras.Model) -> tuple[bool, str]:
    """Whether a stage may train on cached features: the one rule the trainer and the LR finder share.

    cfg: the run's TrainConfig (trainer.feature_cache, augment's MixUp/CutMix); plan: the stage's
    tlkit.training.stages.StagePlan; model: the built tlkit model (its strategy decides multi-worker).
    Returns (True, "") or (False, why): `why` is "" when nothing needs saying (a stage that trains backbone
    blocks, trainer.feature_cache=off), else a sentence for the log. The memory budget is the trainer's own check:
    it depends on how many views the cache holds.
    """
    if plan.blocks or FeatureCacheMode(cfg.trainer.feature_cache) == FeatureCacheMode.off:
        return False, ""
    if mixing_enabled(cfg.augment):  # a mix of pooled features is not a mix of images (tlkit/data/mixing.py)
        return False, (f"feature cache: off for stage '{plan.name}' while MixUp/CutMix mixes images: it trains "
                       "through the frozen backbone")
    if not distribute.feature_cache_supported(model):
        return False, "feature cache: off under a multi-worker strategy; training the head through the frozen backbone"
    return True, ""


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
        extractor = _extractor_with_labels(model, data.val)
        # View v is the augmentation of training epoch v: a pure function of (seed, v).
        epochs = getattr(data, "train_epochs", None)
        train = [_extract(extractor, epochs.epoch(v) if epochs else data.train) for v in range(views)]
        self.train_features = [f for f, _ in train]
        self.train_labels = [y for _, y in train]
        self.val_features, self.val_labels = _extract(extractor, data.val)
        self.head_model = head_on_features(model, self.val_features.shape[-1])

    def training_batches(self, batch_size: int, seed: int, first_epoch: int) -> "FeatureBatches":
        return FeatureBatches(self.train_features, self.train_labels, batch_size, seed, first_epoch)


def _extractor_with_labels(model: keras.Model, dataset=None) -> keras.Model:
    """(image, label) -> (pooled features, label): one pass keeps them aligned, whatever the shuffle. `dataset`: a
    batched (images, labels) dataset whose label shape the input takes ([B]; multi-hot [B, classes])."""
    shape = () if dataset is None else tuple(dataset.element_spec[1].shape[1:])
    label_in = keras.Input(shape=shape, dtype="int32", name="label")
    features = model.get_layer("pool").output
    return keras.Model([model.input, label_in], [features, keras.layers.Identity()(label_in)])


def features_of(model: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(pooled backbone features float32 [N, width], labels int32 [N]) of a batched (images, labels) `dataset`."""
    return _extract(_extractor_with_labels(model, dataset), dataset)


def _extract(extractor: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray]:
    paired = dataset.map(lambda images, labels: ((images, labels),))
    features, labels = extractor.predict(paired, verbose=0)
    return np.asarray(features, dtype="float32"), np.asarray(labels, dtype="int32")


def head_on_features(model: keras.Model, width: int) -> keras.Model:
    """A Model from pooled features ([B, width]) to logits through `model`'s own head: training it trains `model`."""
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


def for_stage(cfg, plan, model: keras.Model, data, built: "FeatureCache | None") -> "FeatureCache | None":
    """The cache a stage trains on: `built` (the run's, while still valid) or a new one; None to train through the
    backbone (eligibility says no, or the cache would not fit trainer.memory_budget_gb). Logs why.

    cfg: the run's TrainConfig; plan: the stage's StagePlan; model: the run's model; data: its DataBundle.
    """
    eligible, why_not = eligibility(cfg, plan, model)
    if not eligible:
        if why_not:
            log.info("%s", why_not)
        return None
    if built is not None:
        return built
    augmenting = bool(cfg.augment.flip) or (cfg.augment.crop_area or 1.0) < 1.0 or cfg.augment.color > 0.0
    views = auto_views(augmenting, plan.epochs, cfg.trainer.feature_cache_views)
    width = model.get_layer("pool").output.shape[-1]
    need = feature_cache_bytes(data.num_train, data.num_val, width, views)
    budget = cfg.trainer.memory_budget_gb * 2**30
    if need > budget:
        (log.warning if FeatureCacheMode(cfg.trainer.feature_cache) == FeatureCacheMode.on else log.info)(
            "feature cache: %s is over trainer.memory_budget_gb=%g; training the head through the frozen "
            "backbone instead", describe(data.num_train, data.num_val, width, views), cfg.trainer.memory_budget_gb)
        return None
    started = time.time()
    with distribute.model_scope(model):  # the head model it trains must be compiled under the same strategy
        cache = FeatureCache(model, data, views)
    log.info("feature cache: %s, built in %.1fs", describe(data.num_train, data.num_val, width, views),
             time.time() - started)
    return cache
