"""Accelerator defaults: precision, XLA and steps per execution follow the device; overrides win."""
import keras
import numpy as np

import tlkit
from tlkit.config.schema import Precision
from tlkit.training.runtime import Device, resolve_jit_compile, resolve_precision, resolve_steps_per_execution

CPU, A100, V100 = Device("cpu", False), Device("gpu", True, "A100"), Device("gpu", False, "V100")


def test_precision_follows_the_device_unless_set():
    assert resolve_precision(Precision.auto, CPU) == "float32"
    assert resolve_precision(Precision.auto, A100) == "mixed_bfloat16"
    assert resolve_precision(Precision.auto, V100) == "mixed_float16"
    assert resolve_precision(Precision.float32, A100) == "float32"


def test_xla_and_steps_per_execution_defaults():
    assert resolve_jit_compile(None) == "auto" and resolve_jit_compile(False) is False
    assert resolve_steps_per_execution(None, CPU, 100) == 1
    assert resolve_steps_per_execution(None, A100, 100) == 32
    assert resolve_steps_per_execution(None, A100, 5) == 5, "never more than an epoch"
    assert resolve_steps_per_execution(4, A100, 100) == 4


def test_mixed_bfloat16_trains_with_float32_logits_and_restores_the_policy(tmp_path):
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "synthetic", "image_size": 32, "num_images": 40, "num_classes": 2, "batch_size": 8},
        "schedule": {"name": "full", "stages": [{"name": "all", "train": "all", "epochs": 1}]},
        "trainer": {"verbose": 0, "precision": "mixed_bfloat16", "save_model": False},
        "doctor": {"enabled": False},
    })
    result = tlkit.train(cfg, tmp_path)
    model = result.model
    assert result.metrics["precision"] == "mixed_bfloat16"
    assert model.get_layer("backbone").layers[1].compute_dtype == "bfloat16"
    assert model.get_layer("preprocess").compute_dtype == "float32", "0-255 inputs keep float32 precision"
    logits = model(np.zeros((2, 32, 32, 3), "float32"))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(result.metrics["val_loss"])
    assert keras.config.dtype_policy().name == "float32", "the global policy is restored after the run"
