"""tf.data pipelines over the data sources (tlkit/data/sources.py, tlkit/data/tfds.py).

The model's input contract: float32 RGB in 0..255, [B, H, W, 3], labels int32 [B]. The
model does its own preprocessing, so nothing here scales or normalises pixels.
Images stay uint8 (4x smaller than float32) until they are batched, which is also what
`cache` keeps in memory; augmentation runs after the cache so it differs every epoch.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tlkit.data.augment import build_augmenter
from tlkit.data.scan import DataScan, check_data_config, is_multilabel, on_bad_file_policy, source_name
from tlkit.data.tf_images import read_image as _read_image  # noqa: F401  (tests read images as training does)
from tlkit.data.tf_images import resizer as _resizer
from tlkit.data.sources import (  # noqa: F401  (stratified_split, synthetic_images: imported from here too)
    _digits, _folder, _report_prescan, _table, _synthetic, cap_per_class, select_classes, stratified_split,
    synthetic_images,
)
from tlkit.config.schema import ImageCache
from tlkit.errors import ConfigError, DataError

AUTOTUNE = tf.data.AUTOTUNE
data_log = logging.getLogger("tlkit.data")


@dataclass
class DataBundle:
    train: tf.data.Dataset  # epoch 0: batched, shuffled, augmented
    val: tf.data.Dataset  # batched, in order, not augmented
    test: Optional[tf.data.Dataset]
    class_names: List[str]
    train_counts: List[int]  # training images per class, in class_names order
    num_train: int
    num_val: int
    num_test: int
    steps_per_epoch: int  # training batches per epoch
    plain_train: Optional[tf.data.Dataset] = field(default=None, repr=False)  # first batch, no augmentation
    # Any epoch of the training data: train_epochs.for_epochs(first, count), train_epochs.epoch(e).
    train_epochs: Optional["TrainEpochs"] = field(default=None, repr=False)
    # Image file paths per split (folder source only; None for in-memory sources): what the
    # doctor hashes to find the same image in two splits.
    train_files: Optional[List[str]] = field(default=None, repr=False)
    val_files: Optional[List[str]] = field(default=None, repr=False)
    test_files: Optional[List[str]] = field(default=None, repr=False)
    # Folder source: files left out by the pre-scan {count, policy, first: [{path, reason}]},
    # and what it found per split (formats, class counts); None for in-memory sources.
    bad_files: Optional[dict] = None
    prescan: Optional[dict] = field(default=None, repr=False)
    # task=multilabel: labels are multi-hot int32 [N, classes] (train_counts: positives per class); the train and
    # val labels, for the doctor's checks (classes without positives, label cardinality)
    multilabel: bool = False
    train_labels: Optional[np.ndarray] = field(default=None, repr=False)
    val_labels: Optional[np.ndarray] = field(default=None, repr=False)

    def sample_batch(self) -> Tuple[np.ndarray, np.ndarray]:
        """One un-augmented, un-shuffled training batch (images float32 0..255, labels int32)."""
        dataset = self.plain_train if self.plain_train is not None else self.train
        images, labels = next(iter(dataset))
        return images.numpy(), labels.numpy()


def class_weights(counts: List[int]) -> Dict[int, float]:
    """'balanced' class weights: n / (k * count_c), so every class contributes equally to the loss."""
    counts = [int(c) for c in counts]
    empty = [index for index, count in enumerate(counts) if count <= 0]
    if not counts or empty:
        raise DataError(f"class_weights needs a positive count for every class; got counts={counts} "
                        f"(classes without images: {empty})")
    total, num_classes = sum(counts), len(counts)
    return {index: total / (num_classes * count) for index, count in enumerate(counts)}


# --------------------------------------------------------------------------- tf.data


def _to_float(images, labels):
    return tf.cast(images, tf.float32), tf.cast(labels, tf.int32)


def _decoded(split, image_size: int, from_files: bool) -> tf.data.Dataset:
    items, labels = split
    dataset = tf.data.Dataset.from_tensor_slices((items, labels.astype(np.int32)))
    return dataset.map(_resizer(image_size, from_files), num_parallel_calls=AUTOTUNE)


# Inference keeps no activations for a backward pass, so evaluation and feature passes (validation every epoch, the
# probe, BatchNorm statistics, reports) batch 4x the training batch, at most 128 and never below it: far fewer steps
# for the same images (ResNet50 at 32 px predicts 2x faster per image at batch 64 than at 16 on 2 CPU cores). A
# multiple of the training batch, so it divides across replicas as the training batch does.
EVAL_BATCH_FACTOR, EVAL_BATCH_MAX = 4, 128


def eval_batch_size(batch_size: int) -> int:
    """The batch of inference passes for a run that trains at `batch_size`."""
    return max(batch_size, min(batch_size * EVAL_BATCH_FACTOR, EVAL_BATCH_MAX // batch_size * batch_size))


def _eval_dataset(split, image_size: int, batch_size: int, from_files: bool, cache) -> tf.data.Dataset:
    dataset = _decoded(split, image_size, from_files)
    if cache is not None:
        dataset = cache(dataset)
    batches = dataset.batch(eval_batch_size(batch_size)).map(_to_float, num_parallel_calls=AUTOTUNE)
    return without_autotune(batches.prefetch(AUTOTUNE))


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuning off (AUTOTUNE parallelism then means the runner's default: the cores).

    The autotuner's thread sleeps up to 60 s between optimisations, and an iterator that lived long
    enough waits for it when it is destroyed: the end of every fit() stalled for up to a minute with the CPU
    idle (VGG16 on digits, a 90 s stage: 154 s for the run, 90 s without the autotuner, the same epochs and
    accuracy). Our pipelines are small maps over cached uint8 images: the tuner has nothing to win.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: a pure function of (config seed, epoch), below 2**63."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**62)


class TrainEpochs:
    """The training pipeline as a function of the epoch: `for_epochs(first, count)`.

    Epoch e's order and augmentation depend only on (seed, e), never on how many epochs
    this process has iterated, so a run resumed at epoch e sees what an uninterrupted run
    sees (tf.data's reshuffle_each_iteration and stateful random ops would not).
    """

    def __init__(self, split, image_size, batch_size, from_files, cache, augmenter, seed, mixer=None):
        self.count = len(split[1])
        self.seed = int(seed)
        # Traced once for every epoch: each epoch's Dataset.map would otherwise trace the whole
        # augmentation again (0.1 s an epoch here: 12 s before a 125-epoch stage starts).
        self.set_augmenter(augmenter, image_size)
        self.mixer = mixer  # MixUp / CutMix (tlkit.data.mixing): labels become soft [B, N]
        # Full batches only (a fixed shape never retraces the train step), unless there are
        # fewer images than one batch: then one smaller batch, never zero steps.
        self.batch_size, self.drop_remainder = batch_size, self.count >= batch_size
        self.steps = max(self.count // batch_size, 1)
        self._resize = _resizer(image_size, from_files)
        if cache is not None:
            # Decode once, keep uint8; every epoch shuffles the cached images (shared by all epochs).
            self._source, self._decode_after_shuffle = cache(_decoded(split, image_size, from_files)), False
        else:
            # Shuffle the cheap (path, label) pairs, then decode.
            items, labels = split
            self._source = tf.data.Dataset.from_tensor_slices((items, labels.astype(np.int32)))
            self._decode_after_shuffle = True

    def epoch(self, epoch) -> tf.data.Dataset:
        dataset = self._source.shuffle(self.count, seed=epoch_seed(self.seed, epoch), reshuffle_each_iteration=False)
        if self._decode_after_shuffle:
            dataset = dataset.map(self._resize, num_parallel_calls=AUTOTUNE)
        dataset = dataset.batch(self.batch_size, drop_remainder=self.drop_remainder)
        dataset = dataset.map(_to_float, num_parallel_calls=AUTOTUNE)
        if self.augmenter is not None:
            augmenter, seed = self.augmenter, self.seed

            def augment_batch(index, batch):
                images, labels = batch
                batch_seed = tf.stack([tf.constant(epoch_seed(seed, epoch), tf.int64), index])
                return augmenter(images, batch_seed), labels

            dataset = dataset.enumerate().map(augment_batch, num_parallel_calls=AUTOTUNE)
        if self.mixer is not None:  # after augmentation, on whole batches: randomness from (seed, epoch, index)
            dataset = dataset.enumerate().map(self.mixer.for_epoch(self.seed, epoch), num_parallel_calls=AUTOTUNE)
        return dataset

    def plain(self, limit: int | None = None) -> tf.data.Dataset:
        """The training images as they are: no augmentation, no mixing; a seeded random `limit` of them.

        What the recipe's probe (tlkit.recipe.probe) fits on, and BatchNorm statistics are measured on; batched for
        inference (eval_batch_size)."""
        dataset = self._source
        if limit is not None and limit < self.count:
            dataset = dataset.shuffle(self.count, seed=epoch_seed(self.seed, -1), reshuffle_each_iteration=False)
            dataset = dataset.take(limit)
        if self._decode_after_shuffle:
            dataset = dataset.map(self._resize, num_parallel_calls=AUTOTUNE)
        batch = eval_batch_size(self.batch_size)
        return dataset.batch(batch).map(_to_float, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    def set_augmenter(self, augmenter, image_size: int) -> None:
        """Replace the augmentation (the recipe decides flips once its probe has run, before any stage)."""
        self.augmenter = augmenter and tf.function(augmenter.__call__, reduce_retracing=True, input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.float32), tf.TensorSpec([2], tf.int64)])

    def for_epochs(self, first_epoch: int, count: int) -> tf.data.Dataset:
        """Epochs first_epoch .. first_epoch + count - 1 back to back: pass steps_per_epoch to fit.

        Chained in Python, each epoch with a plain-integer seed: a tensor seed (Dataset.range
        + flat_map) breaks tf.random.get_seed when the global seed is 0 (TF 2.21).
        """
        dataset = self.epoch(first_epoch)
        for epoch in range(first_epoch + 1, first_epoch + count):
            dataset = dataset.concatenate(self.epoch(epoch))
        return without_autotune(dataset.prefetch(AUTOTUNE))


def image_cache(mode, num_images: int, image_size: int, budget_gb: float):
    """How decoded uint8 images are kept: a function dataset -> cached dataset, or None.

    States the size before anything is cached; `auto` falls back to a file over the budget.
    """
    mode = ImageCache(getattr(mode, "value", mode))
    size = num_images * image_size * image_size * 3
    text = f"{num_images} images x {image_size}x{image_size}x3 uint8 = {size / 2**20:.1f} MiB"
    if mode == ImageCache.off:
        data_log.info("image cache: off (%s would be decoded every epoch)", text)
        return None
    if mode == ImageCache.memory or (mode == ImageCache.auto and size <= budget_gb * 2**30):
        if size > budget_gb * 2**30:
            data_log.warning("image cache: %s in memory, over trainer.memory_budget_gb=%g (data.cache=memory)", text, budget_gb)
        else:
            data_log.info("image cache: %s in memory", text)
        return lambda dataset: dataset.cache()
    folder = _cache_folder()
    if mode == ImageCache.auto:
        data_log.warning("image cache: %s is over trainer.memory_budget_gb=%g; caching in files under %s instead",
                    text, budget_gb, folder)
    else:
        data_log.info("image cache: %s in files under %s", text, folder)
    counter = iter(range(1_000_000))
    return lambda dataset: dataset.cache(os.path.join(folder, f"split{next(counter)}"))


def _cache_folder() -> str:
    """A private folder for tf.data file caches, removed when the process ends."""
    root = os.environ.get("TLKIT_CACHE_DIR") or None
    if root:
        os.makedirs(root, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="tlkit-image-cache-", dir=root)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def load_data(cfg, augment, image_size: int, seed: int, memory_budget_gb: float = 4.0,
              data_scan: DataScan | None = None, task=None) -> DataBundle:
    """Build the train/val(/test) datasets described by `cfg` (a DataConfig) at `image_size`.

    augment: the AugmentConfig (None: no augmentation); seed: the run's seed (splits, shuffles, augmentation);
    memory_budget_gb: what the image cache and tfds decoding may hold in memory; data_scan: what
    check_data_config(cfg) returned, when the caller ran it (the pre-flight): the config is not checked, nor its
    folders walked, again.
    """
    multilabel = is_multilabel(task)  # task=multilabel: multi-hot labels (tlkit.data.multilabel_table)
    if data_scan is None:
        data_scan = check_data_config(cfg, task)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError("image_size", image_size, "an integer >= 1 (the backbone's input size)")
    from_files = source_name(cfg) in ("folder", "csv")
    class_names, splits, bad_files, prescan = _source_splits(cfg, image_size, seed, memory_budget_gb, data_scan,
                                                             multilabel)
    class_names, (train_split, val_split, test_split), train_counts = _chosen(cfg, class_names, splits, seed,
                                                                             multilabel)
    num_train, batch_size = len(train_split[1]), cfg.batch_size

    augmenter = build_augmenter(augment, image_size) if augment is not None else None
    total = num_train + len(val_split[1]) + (len(test_split[1]) if test_split is not None else 0)
    cache = image_cache(cfg.cache, total, image_size, memory_budget_gb)
    from tlkit.data.mixing import build_mixer

    mixer = build_mixer(augment, len(class_names))  # None unless augment.mixup / augment.cutmix > 0
    train = TrainEpochs(train_split, image_size, batch_size, from_files, cache, augmenter, seed, mixer)
    val = _eval_dataset(val_split, image_size, batch_size, from_files, cache)
    test = _eval_dataset(test_split, image_size, batch_size, from_files, cache) if test_split is not None else None
    # A fixed random sample (not the first files, which would all be one class).
    sample = np.sort(np.random.default_rng(seed).permutation(num_train)[:batch_size])
    plain_train = _decoded((train_split[0][sample], train_split[1][sample]), image_size, from_files)
    plain_train = plain_train.batch(batch_size).map(_to_float)

    return DataBundle(
        train=train.for_epochs(0, 1),
        train_epochs=train,
        val=val,
        test=test,
        class_names=list(class_names),
        train_counts=[int(c) for c in train_counts],
        num_train=num_train,
        num_val=len(val_split[1]),
        num_test=len(test_split[1]) if test_split is not None else 0,
        steps_per_epoch=train.steps,
        plain_train=plain_train,
        train_files=_paths(train_split) if from_files else None,
        val_files=_paths(val_split) if from_files else None,
        test_files=_paths(test_split) if from_files and test_split is not None else None,
        bad_files=bad_files,
        prescan=prescan,
        multilabel=multilabel,
        train_labels=train_split[1] if multilabel else None,
        val_labels=val_split[1] if multilabel else None,
    )


def _chosen(cfg, class_names, splits, seed: int, multilabel: bool):
    """(class names, splits, training images per class) after data.classes and data.max_images; multi-label:
    max_images is a seeded random sample, and the counts are positives per class."""
    if multilabel:
        train_split, val_split, test_split = splits
        keep = np.sort(np.random.default_rng(seed).permutation(len(train_split[1]))[:cfg.max_images])
        train_split = (train_split[0][keep], train_split[1][keep])
        return class_names, (train_split, val_split, test_split), train_split[1].sum(axis=0).tolist()
    class_names, (train_split, val_split, test_split) = select_classes(class_names, splits, getattr(cfg, "classes", None))
    keep = cap_per_class(train_split[1], cfg.max_images, seed)
    train_split = (train_split[0][keep], train_split[1][keep])
    counts = np.bincount(train_split[1], minlength=len(class_names)).tolist()
    return class_names, (train_split, val_split, test_split), counts


def _source_splits(cfg, image_size: int, seed: int, memory_budget_gb: float, data_scan: DataScan,
                   multilabel: bool = False):
    """(class names, (train, val, test) splits, bad_files, prescan) from the data source; the last two are None
    except for folders (what the pre-scan left out, for metrics.json)."""
    source = source_name(cfg)
    bad_files = prescan = None
    if source in ("folder", "csv"):
        if source == "folder":
            class_names, train_split, val_split, test_split, scans = _folder(cfg, seed, data_scan)
        else:
            class_names, train_split, val_split, test_split, scans = _table(cfg, seed, data_scan, multilabel)
        bad_files, prescan = _report_prescan(scans, on_bad_file_policy(cfg))
    elif source == "tfds":  # decoded once into uint8 arrays at image_size, then handled like digits
        from tlkit.data.tfds import tfds_splits

        class_names, train_split, val_split, test_split = tfds_splits(cfg, image_size, seed, memory_budget_gb)
    else:
        class_names, train_split, val_split, test_split = {"digits": _digits, "synthetic": _synthetic}[source](cfg, seed)
    return class_names, (train_split, val_split, test_split), bad_files, prescan


def _paths(split) -> List[str]:
    return [str(path) for path in split[0]]
