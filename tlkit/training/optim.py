"""Optimizers, LR schedules, the loss and accuracy, and compiling a model for a stage.

Every stage compiles a fresh optimizer: recompiling is what makes a change of `trainable`
take effect in Keras.
"""
from __future__ import annotations

import keras
from keras import ops

from tlkit.config.schema import OptimizerConfig, OptimizerName
from tlkit.training.distribute import model_scope
from tlkit.training.stages import StagePlan


def compile_for_stage(model: keras.Model, opt_cfg: OptimizerConfig, plan: StagePlan, steps_per_epoch: int,
                      options: dict | None = None, *, methods=None, data=None) -> None:
    """A fresh optimizer per stage: recompiling is what makes a change of `trainable` take effect.

    `methods`: the run's tlkit.training.methods.FineTuning (discriminative LRs, L2-SP, label smoothing);
    None compiles plain cross-entropy and one LR. `data`: the run's DataBundle (task=multilabel: the positive
    weights of data.class_weight=auto come from its training labels).
    """
    extra = methods.optimizer_options(model, plan) if methods is not None else {}
    cfg = methods.cfg if methods is not None else None
    with model_scope(model):  # under a tf.distribute strategy, optimizer and metric variables live on every replica
        model.compile(
            optimizer=make_optimizer(opt_cfg, lr_schedule(plan, steps_per_epoch), **extra),
            loss=make_loss(cfg, data),
            metrics=make_metrics(cfg),
            **(options or {}),
        )
        # Built now, not inside the first train step: Keras defers it there without a tf.distribute strategy, and
        # TensorFlow then traces the whole train step twice (the slots are created in the first trace): 1.8 s a
        # stage on MobileNetV2 at 32 px, more on ResNet-50.
        model.optimizer.build(model.trainable_variables)


def lr_schedule(plan: StagePlan, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warmup to the stage's peak LR, then cosine decay to 0 (or constant)."""
    total = max(1, plan.epochs * steps_per_epoch)
    warmup = int(round(plan.warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else plan.lr,
        decay_steps=max(1, total - warmup),
        alpha=0.0 if plan.cosine else 1.0,  # alpha=1 keeps the LR constant after warmup
        warmup_target=plan.lr if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(opt_cfg: OptimizerConfig, learning_rate, **methods) -> keras.optimizers.Optimizer:
    """`methods` (lr_scales, pulls, lr_groups; see tlkit.training.methods.optimizer) or EMA: the fine-tuning subclass."""
    name = OptimizerName(opt_cfg.name)
    common = {"learning_rate": learning_rate, "clipnorm": opt_cfg.clipnorm,
              "use_ema": bool(opt_cfg.ema), "ema_momentum": opt_cfg.ema_momentum}
    decay = opt_cfg.weight_decay or None
    if name == OptimizerName.sgd:
        cls, kwargs = keras.optimizers.SGD, {"momentum": opt_cfg.momentum, "nesterov": opt_cfg.nesterov,
                                             "weight_decay": decay}
    elif name == OptimizerName.adamw:
        cls, kwargs = keras.optimizers.AdamW, {"weight_decay": opt_cfg.weight_decay}
    else:
        cls, kwargs = keras.optimizers.Adam, {"weight_decay": decay}
    if methods or opt_cfg.ema:  # the subclass also warms the EMA up
        from tlkit.training.methods.optimizer import with_fine_tuning

        return with_fine_tuning(cls)(**kwargs, **common, **methods)
    return cls(**kwargs, **common)


# --- loss and accuracy: sparse int labels or soft labels -------------------------------------


def _soft(y_true, y_pred) -> bool:
    """Soft labels ([B, N], e.g. MixUp/CutMix) have the logits' rank; sparse ones are [B] or [B, 1]."""
    return len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] != 1


@keras.saving.register_keras_serializable(package="tlkit")
class ClassificationLoss(keras.losses.Loss):
    """Cross-entropy from logits, for sparse int labels ([B] or [B, 1]) or soft labels ([B, N], rows summing
    to 1). Label smoothing eps replaces the target t by (1 - eps)*t + eps/N, for either form."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        if _soft(y_true, y_pred):
            target = ops.cast(y_true, "float32")
        else:
            labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
            if not self.label_smoothing:
                return keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
            target = ops.one_hot(labels, y_pred.shape[-1], dtype="float32")
        return keras.losses.categorical_crossentropy(
            target, y_pred, from_logits=True, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def accuracy(y_true, y_pred):
    """1 where the top logit is the label (the largest entry of a soft label), else 0."""
    labels = ops.argmax(y_true, axis=-1) if _soft(y_true, y_pred) else ops.reshape(y_true, (-1,))
    return ops.cast(ops.equal(ops.cast(labels, "int32"), ops.cast(ops.argmax(y_pred, axis=-1), "int32")), "float32")


@keras.saving.register_keras_serializable(package="tlkit")
class Accuracy(keras.metrics.MeanMetricWrapper):
    """Named "accuracy" (history.csv, metrics.json: accuracy / val_accuracy), for either label form."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(fn=accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def make_loss(cfg=None, data=None) -> keras.losses.Loss:
    """The training loss for a TrainConfig, a LossConfig or None (plain cross-entropy); task=multilabel: binary
    cross-entropy (tlkit.model.multilabel), with data.class_weight=auto's positive weights from `data`'s training labels."""
    from tlkit.model.multilabel import MultiLabelLoss, is_multilabel, positive_weights

    if is_multilabel(cfg):
        auto = str(getattr(cfg.data.class_weight, "value", cfg.data.class_weight)) == "auto" and data is not None
        return MultiLabelLoss(positive_weights(data.train_labels) if auto else None)
    loss_cfg = getattr(cfg, "loss", cfg)
    return ClassificationLoss(label_smoothing=(loss_cfg.label_smoothing or 0.0) if loss_cfg is not None else 0.0)


def make_accuracy() -> keras.metrics.Metric:
    return Accuracy()


def make_metrics(cfg=None) -> list:
    """[accuracy]; task=multilabel: exact-match accuracy and map (tlkit.model.multilabel.training_metrics)."""
    from tlkit.model.multilabel import is_multilabel, training_metrics

    return training_metrics() if is_multilabel(cfg) else [make_accuracy()]
