"""Pretrain a backbone on a source task and save it as a weights file: the offline stand-in for ImageNet.

These machines cannot download pretrained weights, so the quickstart and scripts/bench_recipes.py
make their own: a keras.applications backbone trained from scratch on a source task
(tlkit.data.tasks), saved with `save_weights` as a `.weights.h5` file that
`backbone.weights=FILE` loads. The file also records the input size it was trained at (an HDF5
attribute, `PRETRAINED_SIZE_ATTR`), which tlkit reads as the weights' pretrained size.

BatchNorm: the moving statistics of a backbone trained for a few hundred steps have not
converged (MobileNetV2's momentum is 0.999: they would still hold mostly their initial values),
and a frozen-BatchNorm fine-tune would then normalise with wrong statistics. Training uses a
momentum of 0.9, and the statistics are re-estimated over the training set at the end, as a
careful pretraining run would leave them. Keras only: runs under any backend.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import keras
import numpy as np

from tlkit.backbones.build import batch_norm_layers, build_backbone
from tlkit.backbones.weights import record_pretrained_size
from tlkit.backbones.spec import BackboneSpec
from tlkit.model.preprocessing import preprocessing_model

log = logging.getLogger("tlkit.pretrain")
PRETRAIN_BN_MOMENTUM = 0.9
RECALIBRATION_BATCHES = 30
TLKIT_PREFIX = "tlkit:"
# Epochs on a source task: enough for the source accuracy to level off (scripts/bench_recipes.py uses these).
PRETRAIN_EPOCHS = {"resnet50": 12, "vgg16": 12, "vgg19": 12}
DEFAULT_PRETRAIN_EPOCHS = 15
# VGG has no BatchNorm: from scratch at Adam 2e-3 its ReLUs die and every image gives the same features (seen here).
PRETRAIN_LR = {"vgg16": 1e-4, "vgg19": 1e-4}
DEFAULT_PRETRAIN_LR = 2e-3


def pretrained_root() -> Path:
    """Where tlkit keeps the weights it pretrains: $TLKIT_CACHE_DIR/pretrained, else ~/.cache/tlkit/pretrained."""
    import os

    base = os.environ.get("TLKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tlkit")
    return Path(base) / "pretrained"


def resolve_weights(spec: BackboneSpec, weights: str | None) -> str | None:
    """`weights` as Keras loads it: tlkit:TASK becomes the file of `spec` pretrained on TASK's source task, made on
    first use (a minute or two on a CPU for a small backbone) and cached; anything else is returned as it is."""
    if not (isinstance(weights, str) and weights.startswith(TLKIT_PREFIX)):
        return weights
    return str(ensure_pretrained(spec, weights[len(TLKIT_PREFIX):]))


def ensure_pretrained(spec: BackboneSpec, task: str, root: str | Path | None = None, epochs: int | None = None) -> Path:
    """`spec` pretrained on the source task of tlkit.data.tasks.PAIRS[task] at 32 px: the cached file, else made."""
    from tlkit.data.tasks import PAIRS, SIZE, source_images

    path = Path(root or pretrained_root()) / weights_file_name(spec.name, task, SIZE)
    if path.is_file():
        return path
    pair = PAIRS[task]
    images, labels = source_images(pair)
    epochs = epochs or PRETRAIN_EPOCHS.get(spec.name, DEFAULT_PRETRAIN_EPOCHS)
    log.warning("backbone.weights=tlkit:%s: pretraining %s on %s's source task (%s, %d images, %d epochs) once; the "
                "weights are cached in %s", task, spec.name, task, pair.description.split(" -> ")[0], len(labels),
                epochs, path)
    result = pretrain_backbone(spec, images, labels, path, epochs=epochs,
                               lr=PRETRAIN_LR.get(spec.name, DEFAULT_PRETRAIN_LR))
    info = {"backbone": spec.name, "task": task, "source": pair.description.split(" -> ")[0], "images": len(labels),
            "epochs": epochs, "train_accuracy": result["train_accuracy"], "size": SIZE}
    path.with_name(path.name.replace(".weights.h5", ".json")).write_text(json.dumps(info, indent=1) + "\n")
    return path


def weights_file_name(backbone: str, task: str, image_size: int) -> str:
    return f"{backbone}_{task}_{image_size}px.weights.h5"


def pretrain_backbone(spec: BackboneSpec, images: np.ndarray, labels: np.ndarray, path: str | Path, *,
                      epochs: int = 15, batch_size: int = 64, lr: float = DEFAULT_PRETRAIN_LR, seed: int = 0) -> dict:
    """Train `spec`'s backbone from scratch on (images uint8 [N, S, S, 3], labels) and save its weights to `path`.

    Adam with a cosine decay and random shifts of up to 1/8 of the image; returns the final
    training accuracy and loss, and the path. Sets the global random seed to `seed` (what makes the file the same on
    every machine): a caller that seeds its own work seeds after this (tlkit.training.run_setup.build does).
    """
    keras.utils.set_random_seed(seed)
    size = int(images.shape[1])
    backbone = build_backbone(spec, size, None)
    for layer in batch_norm_layers(backbone):
        layer.momentum = PRETRAIN_BN_MOMENTUM
    inputs = keras.Input((size, size, 3))
    x = preprocessing_model(spec.preprocess)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    model = keras.Model(inputs, keras.layers.Dense(int(labels.max()) + 1)(x))
    steps = epochs * math.ceil(len(labels) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps)
    model.compile(keras.optimizers.Adam(schedule), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    history = {"accuracy": [], "loss": []}
    for _ in range(epochs):
        shifted = _random_shifts(images, rng)
        result = model.fit(shifted, labels, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
        for key in history:
            history[key].append(float(result.history[key][-1]))
    _recalibrate(backbone, preprocessing_model(spec.preprocess), images, batch_size, rng)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
    backbone.save_weights(str(tmp))
    record_pretrained_size(tmp, size)
    tmp.replace(path)
    log.info("pretrained %s on %d images (%d epochs): train accuracy %.3f -> %s", spec.name, len(labels), epochs,
             history["accuracy"][-1], path)
    return {"path": str(path), "train_accuracy": history["accuracy"][-1], "train_loss": history["loss"][-1]}


def _random_shifts(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image moved by up to size/8 pixels in x and y, edges repeated."""
    size = images.shape[1]
    pad = max(1, size // 8)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dx, dy = rng.integers(0, 2 * pad + 1, size=(2, len(images)))
    return np.stack([padded[i, y:y + size, x:x + size] for i, (x, y) in enumerate(zip(dx, dy))]).astype("float32")


def _recalibrate(backbone: keras.Model, preprocess, images: np.ndarray, batch_size: int,
                 rng: np.random.Generator) -> None:
    """Re-estimate the BatchNorm moving statistics with the final weights: RECALIBRATION_BATCHES forward passes in
    training mode, run by `predict` (compiled: eager calls took 11 s of a 37 s MobileNetV2 pretraining here)."""
    if not batch_norm_layers(backbone):
        return
    rows = np.concatenate([rng.choice(len(images), size=min(batch_size, len(images)), replace=False)
                           for _ in range(RECALIBRATION_BATCHES)])
    _TrainingModeForward(backbone, preprocess).predict(images[rows].astype("float32"), batch_size=batch_size,
                                                       verbose=0)


class _TrainingModeForward(keras.Model):
    """backbone(preprocess(x)) with BatchNorm in training mode, so that `predict` updates its moving statistics
    (its call takes no `training` argument: predict cannot switch it off)."""

    def __init__(self, backbone: keras.Model, preprocess: keras.Model):
        super().__init__(name="training_mode_forward")
        self.backbone, self.preprocess = backbone, preprocess

    def call(self, x):
        return self.backbone(self.preprocess(x), training=True)
