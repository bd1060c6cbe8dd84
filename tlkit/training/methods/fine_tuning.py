"""What the fine-tuning methods need across the stages of one run.

The trainer makes one FineTuning per run, right after the model and its Freezer (before any
stage trains, so the L2-SP start values are the pretrained ones), and asks it at each stage
for the optimizer's per-variable options (discriminative LRs, L2-SP pulls) and the stage's
extra callbacks (per-group LR and L2-SP logs, EMA weights for validation and the saved model).
"""
from __future__ import annotations

import keras
import numpy as np

from tlkit.config.schema import RegularizerName, StageConfig, TrainConfig
from tlkit.training.methods.optimizer import inner_optimizer, lr_groups_of
from tlkit.model.build import backbone_of
from tlkit.training.stages import Freezer, StagePlan

HEAD_GROUP = "head"


def block_lr_scales(blocks: list[str], lr_decay: float | None, block_lr: dict | None) -> dict[str, float]:
    """LR multiplier of each trained block (`blocks` stem first): the top block 1, the next lr_decay, then
    lr_decay**2, ...; an entry of `block_lr` replaces the decayed value of the block it names."""
    block_lr = dict(block_lr or {})
    scales = {}
    for rank, block in enumerate(reversed(blocks)):
        scales[block] = float(block_lr.get(block, lr_decay ** rank if lr_decay else 1.0))
    return dict(reversed(list(scales.items())))  # stem first, like the blocks


class FineTuning:
    def __init__(self, cfg: TrainConfig, model: keras.Model, freezer: Freezer):
        self.cfg = cfg
        self.freezer = freezer
        reg = cfg.regularizer
        self.l2sp = RegularizerName(reg.name) == RegularizerName.l2sp
        # Start-of-training values of every backbone weight: a weight keeps them until a stage trains it.
        self.start_values = ({id(w): np.array(w) for w in backbone_of(model).weights}
                             if self.l2sp and reg.alpha > 0 else {})

    def _stage(self, plan: StagePlan) -> StageConfig | None:
        return next((s for s in self.cfg.schedule.stages if s.name == plan.name), None)

    def lr_settings(self, plan: StagePlan) -> tuple[float | None, dict]:
        """(lr_decay, block_lr) of a stage: its own when set (lr_decay not null, block_lr not {}), else the schedule's."""
        stage, schedule = self._stage(plan), self.cfg.schedule
        decay = stage.lr_decay if stage is not None and stage.lr_decay is not None else schedule.lr_decay
        block_lr = stage.block_lr if stage is not None and stage.block_lr else schedule.block_lr
        return decay, dict(block_lr or {})

    def optimizer_options(self, target: keras.Model, plan: StagePlan) -> dict:
        """Keyword arguments for tlkit.training.optim.make_optimizer; {} when no method changes the optimizer."""
        trainable = {id(v) for v in target.trainable_weights}
        by_block = {}
        for block in plan.blocks:
            weights = [w for layer in self.freezer.blocks[block] for w in layer.trainable_weights if id(w) in trainable]
            if weights:
                by_block[block] = weights
        in_blocks = {id(w) for weights in by_block.values() for w in weights}
        head = [v for v in target.trainable_weights if id(v) not in in_blocks]
        options: dict = {}
        decay, block_lr = self.lr_settings(plan)
        scales = block_lr_scales(list(by_block), decay, block_lr)
        if any(s != 1.0 for s in scales.values()):
            options["lr_scales"] = [(w, scales[b]) for b, weights in by_block.items() for w in weights]
            options["lr_groups"] = {**scales, HEAD_GROUP: 1.0}
        if self.l2sp:
            alpha, beta = self.cfg.regularizer.alpha, self.cfg.regularizer.beta
            pulls = [(w, self._start(w), alpha) for weights in by_block.values() for w in weights] if alpha > 0 else []
            pulls += [(v, None, beta) for v in head if beta > 0 and len(v.shape) >= 2]  # kernels, not biases
            options["pulls"] = pulls
        return options

    def _start(self, weight) -> np.ndarray:
        try:
            return self.start_values[id(weight)]
        except KeyError:
            raise ValueError(f"L2-SP: no start value for {weight.path}: not a weight of this run's backbone") from None

    def callbacks(self, target: keras.Model) -> list:
        """Per stage, after compiling `target` and before BestWeights (which must see the EMA weights)."""
        out = []
        if lr_groups_of(target.optimizer):
            out.append(GroupLRLog())
        if self.l2sp:
            out.append(L2SPLog())
        if self.cfg.optimizer.ema:
            # Validation runs on the EMA weights, and they stay in the model from each epoch's end
            # to the next epoch's start: BestWeights keeps (and finally restores) EMA weights.
            out.append(EMAWeights())
        return out


class EMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras's swap, plus: a stage resumed from an epoch-end checkpoint starts with the EMA weights in the
    model (this callback had swapped them in when the checkpoint was written), so the first epoch swaps back."""

    def __init__(self):
        super().__init__(swap_on_epoch=True)

    def on_train_begin(self, logs=None):
        self._ema_weights_in_model = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) > 0


class GroupLRLog(keras.callbacks.Callback):
    """`lr_<group>` in the epoch logs (TensorBoard, train.log): the group's LR at the epoch's start."""

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for group, scale in lr_groups_of(self.model.optimizer).items():
                logs[f"lr_{group}"] = self._lr * scale


class L2SPLog(keras.callbacks.Callback):
    """`l2sp_penalty` in the epoch logs: the L2-SP term the gradients follow (not part of `loss`)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            penalty = getattr(inner_optimizer(self.model.optimizer), "l2sp_penalty", None)
            logs["l2sp_penalty"] = penalty() if penalty else 0.0
