"""Staged fine-tuning: which blocks train in each stage, with what LR.

Freezing is by backbone blocks (tlkit.backbones.blocks), never by layer index.
BatchNorm policy: with bn=frozen every BatchNormalization layer stays non-trainable,
which in Keras 3 also runs it in inference mode. Calling the backbone with
`training=False` is *not* enough in Keras 3.15: fit() passes training=True down to the
nested model and its BatchNorm statistics drift (measured; see tests/test_stages.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras

from tlkit.backbones.blocks import assign_blocks
from tlkit.backbones.build import batch_norm_layers, is_batch_norm
from tlkit.backbones.spec import BackboneSpec
from tlkit.config.schema import BNPolicy, StageConfig
from tlkit.config.validate import parse_train_target
from tlkit.model.build import backbone_of, head_of


@dataclass(frozen=True)
class StagePlan:
    name: str
    train: str  # as configured: head | all | top:N | from:BLOCK
    blocks: tuple[str, ...]  # backbone blocks that train (the head always does)
    epochs: int
    lr: float  # peak learning rate of the stage
    warmup_epochs: float
    cosine: bool
    patience: int | None
    probe: bool = False  # a head stage fitted as a logistic regression on cached features (tlkit.recipe.probe)
    min_epochs: int | None = None  # early stopping never ends the stage before this many epochs


def plan_stages(stages: list[StageConfig], spec: BackboneSpec, base_lr: float) -> list[StagePlan]:
    return [
        StagePlan(
            name=s.name,
            train=s.train,
            blocks=parse_train_target(s.train, spec, key=f"schedule.stages.{i}.train"),
            epochs=s.epochs,
            lr=base_lr * (s.lr_scale if s.lr_scale is not None else 1.0),  # null: the recipe has not sized it
            warmup_epochs=s.warmup_epochs,
            cosine=s.cosine,
            patience=s.patience,
            probe=bool(s.probe) and s.train == "head",
            min_epochs=s.min_epochs,
        )
        for i, s in enumerate(stages)
    ]


class Freezer:
    """Sets what is trainable for a stage. Block membership is computed once per model."""

    def __init__(self, model: keras.Model, spec: BackboneSpec, bn: BNPolicy):
        self.model = model
        self.bn = BNPolicy(bn) if bn is not None else BNPolicy.frozen  # null (the recipe's, undecided): frozen
        self.blocks = assign_blocks(backbone_of(model), spec)

    def apply(self, stage: StagePlan) -> None:
        backbone = backbone_of(self.model)
        backbone.trainable = True  # Keras 3 sets this recursively; each layer is set below
        training = set(stage.blocks)
        for block_name, layers in self.blocks.items():
            for layer in layers:
                trains = block_name in training
                if is_batch_norm(layer) and self.bn != BNPolicy.train:  # frozen, or adapted then frozen
                    trains = False
                layer.trainable = trains
        head_of(self.model).trainable = True


def batchnorm_shift(model: keras.Model, batches=None, variances: list | None = None) -> float:
    """How far images are from what the backbone's BatchNorm statistics describe: the median over BatchNorm layers of
    mean |log(variance of the layer's input on these images / its stored moving variance)|, in inference mode (each
    layer sees its input as the stored statistics of the layers below shape it). Batches: (images 0..255, labels);
    or `variances`, the tlkit.recipe.frozen_pass.FrozenPass.bn_variances of such a pass, already measured."""
    import numpy as np

    from tlkit.recipe.frozen_pass import frozen_pass

    layers = batch_norm_layers(backbone_of(model))
    if not layers:
        return 0.0
    if variances is None:
        variances = frozen_pass(model, batches, batch_norm=True).bn_variances
    shifts = [float(np.mean(np.abs(np.log((variance + layer.epsilon)
                                           / (np.asarray(layer.moving_variance) + layer.epsilon)))))
              for layer, variance in zip(layers, variances)]
    return float(np.median(shifts))


def reestimate_batchnorm(model: keras.Model, batches) -> list:
    """AdaBN (Li et al. 2016): every backbone BatchNorm layer's moving statistics re-estimated on `batches` (images
    float32 0..255, labels), as the running average over them. Returns the previous statistics (restore_batchnorm
    puts them back)."""
    import numpy as np

    layers = batch_norm_layers(backbone_of(model))
    old = [(np.array(layer.moving_mean), np.array(layer.moving_variance)) for layer in layers]
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    preprocess = model.get_layer("preprocess")
    for layer in layers:
        layer.trainable = True  # Keras updates the statistics in training mode only for trainable BatchNorm
    for count, (images, _) in enumerate(batches, 1):
        for layer in layers:
            layer.momentum = (count - 1) / count  # moving = the mean of the batch statistics so far
        backbone_of(model)(preprocess(images), training=True)
    for layer, (momentum, trainable) in zip(layers, saved):
        layer.momentum, layer.trainable = momentum, trainable
    return old


def restore_batchnorm(model: keras.Model, old: list) -> None:
    layers = batch_norm_layers(backbone_of(model))
    for layer, (mean, variance) in zip(layers, old):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)


def count_params(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))
