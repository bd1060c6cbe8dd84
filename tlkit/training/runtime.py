"""What the hardware allows: accelerator, mixed precision, XLA, steps per execution.

Backend-neutral: asks whichever Keras backend is active, importing it only here.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import keras

from tlkit.config.schema import Precision, TrainerConfig

log = logging.getLogger("tlkit.train")
ACCELERATOR_STEPS_PER_EXECUTION = 32  # fewer host round trips per epoch; callbacks see every 32nd batch


@dataclass(frozen=True)
class Device:
    kind: str  # "gpu", "tpu" or "cpu"
    bfloat16: bool  # fast bfloat16 matrix units (NVIDIA compute capability >= 8, TPUs)
    name: str = ""


def detect_device() -> Device:
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                major = (details.get("compute_capability") or (0, 0))[0]
                return Device("gpu", major >= 8, details.get("device_name", ""))
            return Device("tpu", True) if tf.config.list_physical_devices("TPU") else Device("cpu", False)
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "gpu":
                major = int(str(getattr(device, "compute_capability", "0")).split(".")[0])
                return Device("gpu", major >= 8, device.device_kind)
            return Device("tpu", True, device.device_kind) if device.platform == "tpu" else Device("cpu", False)
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return Device("gpu", torch.cuda.get_device_capability()[0] >= 8, torch.cuda.get_device_name())
    except Exception as error:  # detection must never stop a run
        log.warning("could not inspect the accelerator (%s); assuming CPU", error)
    return Device("cpu", False)


def resolve_precision(choice: Precision, device: Device) -> str:
    choice = Precision(choice)
    if choice != Precision.auto:
        return choice.value
    if device.kind == "cpu":
        return "float32"
    return "mixed_bfloat16" if device.bfloat16 else "mixed_float16"


def resolve_steps_per_execution(configured: int | None, device: Device, steps_per_epoch: int) -> int:
    if configured is not None:
        return max(1, configured)
    return 1 if device.kind == "cpu" else max(1, min(ACCELERATOR_STEPS_PER_EXECUTION, steps_per_epoch))


def resolve_jit_compile(configured: bool | None):
    return "auto" if configured is None else bool(configured)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Set Keras's global dtype policy for the models built inside, then restore it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def conv_gradients(configured: bool | None, device: Device | None = None):
    """trainer.fast_conv_grad: while inside, TensorFlow computes Conv2D input gradients as forward convolutions
    (tlkit.training.conv_grad). configured None: only when TensorFlow trains on CPU (`device`, detected if None),
    where its own kernel for them is the slow part of a training step. Yields whether they are in place."""
    if keras.backend.backend() != "tensorflow" or configured is False:
        yield False
        return
    if configured is None and (device or detect_device()).kind != "cpu":
        yield False
        return
    from tlkit.training.conv_grad import fast_conv_gradients

    with fast_conv_gradients() as installed:
        if installed:
            log.info("Conv2D input gradients computed as forward convolutions (trainer.fast_conv_grad: TensorFlow's "
                     "own CPU kernel for them is 2-12x slower)")
        yield installed


def enable_op_determinism() -> None:
    """Deterministic TensorFlow kernels (JAX is deterministic on CPU already)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def describe(trainer: TrainerConfig, device: Device, precision: str, steps_per_execution: int) -> str:
    xla = resolve_jit_compile(trainer.jit_compile)
    return (f"device {device.kind}{' ' + device.name if device.name else ''}, precision {precision}, "
            f"jit_compile {xla}, steps_per_execution {steps_per_execution}")
