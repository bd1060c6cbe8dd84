"""Per-variable learning-rate scales and the L2-SP pull, as a mixin over any Keras optimizer.

Keras 3 has one learning rate per optimizer. Scaling a block's *gradients* would not lower
its learning rate under Adam (Adam is invariant to the gradient's scale), so the mixin
scales the *update*: every backend updates each variable through
`update_step(gradient, variable, learning_rate)` — the TensorFlow backend from
`_distributed_tf_update_step`, after the cross-replica all-reduce and with `variable` the
backing tf.Variable (keras/src/backend/tensorflow/optimizer.py, Keras 3.15) — and the mixin
multiplies `learning_rate` there, per variable. Weight decay follows the same scale.

L2-SP adds its gradient, alpha*(w - w0) on the backbone and beta*w on the head's kernels,
in the same place: after the all-reduce, so the pull does not grow with the number of
replicas, and outside the reported loss, so `loss`/`val_loss` stay the data loss and
compare across runs. The start values w0 are optimizer variables: they are saved and
restored with the optimizer's state.
"""
from __future__ import annotations

import numpy as np
from keras import ops


class _MethodState:
    """A plain holder: the optimizer's attribute tracker would adopt Variables kept in a list or dict."""

    def __init__(self, lr_scales: dict, pulls: list, lr_groups: dict):
        self.lr_scales = lr_scales  # optimizer var key -> LR multiplier (only those != 1)
        self.pulls = pulls  # (model variable, start value or None, coefficient), turned into anchors in build()
        self.lr_groups = lr_groups  # group name (block or "head") -> multiplier, for logs and metrics.json
        self.anchors: dict = {}  # var key -> (model variable, anchor variable or None, coefficient)


class FineTuningOptimizer:
    """Mixin: `lr_scales` [(variable, multiplier)], `pulls` [(variable, start array or None, coefficient)].

    A pull with a start value adds coefficient*(w - start) to the gradient, one without adds
    coefficient*w: the gradients of coefficient/2*||w - start||^2 and coefficient/2*||w||^2.
    """

    def __init__(self, *args, lr_scales=(), pulls=(), lr_groups=None, **kwargs):
        super().__init__(*args, **kwargs)
        scales = {self._var_key(v): float(s) for v, s in lr_scales if float(s) != 1.0}
        self._tlkit = _MethodState(scales, list(pulls), dict(lr_groups or {}))

    @property
    def lr_groups(self) -> dict:
        return dict(self._tlkit.lr_groups)

    def build(self, variables):
        already = self.built
        super().build(variables)
        if already:
            return
        for variable, start, coefficient in self._tlkit.pulls:
            anchor = None
            if start is not None:
                anchor = self.add_variable_from_reference(variable, "l2sp_start", initializer=_constant(start))
            self._tlkit.anchors[self._var_key(variable)] = (variable, anchor, float(coefficient))
        self._tlkit.pulls = []  # the anchors hold the start values now

    def update_step(self, gradient, variable, learning_rate):
        key = self._var_key(variable)
        pull = self._tlkit.anchors.get(key)
        if pull is not None:
            _, anchor, coefficient = pull
            offset = variable if anchor is None else ops.subtract(variable, anchor)
            gradient = ops.add(gradient, ops.multiply(ops.cast(offset, gradient.dtype), coefficient))
        scale = self._tlkit.lr_scales.get(key)
        if scale is not None:
            learning_rate = ops.multiply(learning_rate, scale)
        return super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        # Keras decays every variable by weight_decay * the optimizer's LR; a scaled group decays at its own LR.
        if self.weight_decay is None or not self._tlkit.lr_scales:
            return super()._apply_weight_decay(variables)
        groups: dict[float, list] = {}
        for variable in variables:
            groups.setdefault(self._tlkit.lr_scales.get(self._var_key(variable), 1.0), []).append(variable)
        decay = self.weight_decay
        try:
            for scale, group in groups.items():
                self.weight_decay = decay * scale  # read as a constant while the step is traced
                super()._apply_weight_decay(group)
        finally:
            self.weight_decay = decay

    def _update_model_variables_moving_average(self, trainable_variables):
        # Keras's EMA uses ema_momentum from the second step on: over a short stage (tens of steps, as on
        # small data) the average would stay near the stage's starting weights. Warm it up (as timm does):
        # momentum min(ema_momentum, t / (t + 10)) at step t, 0 at the first step (the average starts at w).
        if not self.use_ema:
            return
        step = ops.cast(self.iterations, "float32")
        momentum = ops.minimum(self.ema_momentum, step / (step + 10.0))
        for variable, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = ops.cast(momentum, variable.dtype)
                average.assign(ops.add(ops.multiply(m, average), ops.multiply(ops.subtract(1.0, m), variable)))

    def l2sp_penalty(self) -> float:
        """sum over pulls of coefficient/2 * ||w - w0||^2 (||w||^2 without a start value), now."""
        total = 0.0
        for variable, anchor, coefficient in self._tlkit.anchors.values():
            offset = ops.convert_to_numpy(variable).astype("float64")
            if anchor is not None:
                offset = offset - ops.convert_to_numpy(anchor)
            total += 0.5 * coefficient * float(np.sum(offset * offset))
        return total


def _constant(value: np.ndarray):
    def initializer(shape, dtype=None):
        return np.asarray(value, dtype=dtype or value.dtype).reshape(shape)
    return initializer


_CLASSES: dict[type, type] = {}


def with_fine_tuning(base: type) -> type:
    """The subclass of a Keras optimizer class with the mixin (one per base, so retracing is not triggered by new types)."""
    if base not in _CLASSES:
        _CLASSES[base] = type(f"FineTuning{base.__name__}", (FineTuningOptimizer, base), {})
    return _CLASSES[base]


def inner_optimizer(optimizer):
    """The optimizer that updates the variables (mixed_float16 wraps it in a LossScaleOptimizer)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def lr_groups_of(optimizer) -> dict:
    """{group: LR multiplier} when the stage uses discriminative LRs, else {}."""
    return dict(getattr(inner_optimizer(optimizer), "lr_groups", None) or {})
