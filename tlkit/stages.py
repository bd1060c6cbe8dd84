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
from tlkit.backbones.spec import BackboneSpec
from tlkit.config.schema import BNPolicy, StageConfig
from tlkit.config.validate import parse_train_target
from tlkit.model import backbone_of, head_of


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


def plan_stages(stages: list[StageConfig], spec: BackboneSpec, base_lr: float) -> list[StagePlan]:
    return [
        StagePlan(
            name=s.name,
            train=s.train,
            blocks=parse_train_target(s.train, spec, key=f"schedule.stages.{i}.train"),
            epochs=s.epochs,
            lr=base_lr * s.lr_scale,
            warmup_epochs=s.warmup_epochs,
            cosine=s.cosine,
            patience=s.patience,
        )
        for i, s in enumerate(stages)
    ]


def is_batch_norm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


class Freezer:
    """Sets what is trainable for a stage. Block membership is computed once per model."""

    def __init__(self, model: keras.Model, spec: BackboneSpec, bn: BNPolicy):
        self.model = model
        self.bn = BNPolicy(bn)
        self.blocks = assign_blocks(backbone_of(model), spec)

    def apply(self, stage: StagePlan) -> None:
        backbone = backbone_of(self.model)
        backbone.trainable = True  # Keras 3 sets this recursively; each layer is set below
        training = set(stage.blocks)
        for block_name, layers in self.blocks.items():
            for layer in layers:
                trains = block_name in training
                if is_batch_norm(layer) and self.bn == BNPolicy.frozen:
                    trains = False
                layer.trainable = trains
        head_of(self.model).trainable = True

    def trainable_blocks(self) -> list[str]:
        return [
            name for name, layers in self.blocks.items()
            if any(layer.trainable and layer.weights for layer in layers)
        ]


def count_params(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))
