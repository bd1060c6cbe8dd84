"""End to end: train.py / tlkit.train produce a correct run directory and a model that learned."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tlkit
from conftest import ROOT

FULL = os.environ.get("TLKIT_FULL_TESTS") == "1"


def reduced_quickstart():
    """Four fine-tuning epochs (for both runs) instead of the recipe's 34."""
    return ["schedule.stages.1.epochs=4"]


@pytest.mark.slow
def test_quickstart_shows_transfer_end_to_end(tmp_path):
    """`python train.py recipe=quickstart`: pretrains MobileNetV2 on digits 0-4 (first use, cached), fine-tunes it to
    digits 5-9 with the default recipe, trains the same recipe from random weights, and logs both. Reduced to 4
    fine-tuning epochs unless TLKIT_FULL_TESTS=1."""
    run_dir = tmp_path / "run"
    reduced = [] if FULL else reduced_quickstart()
    result = subprocess.run(
        [sys.executable, "train.py", "recipe=quickstart", f"hydra.run.dir={run_dir}", "trainer.verbose=2", *reduced],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in [".hydra/config.yaml", "metrics.json", "model.keras", "train.log", "history.csv", "eval/report.json"]:
        assert (run_dir / name).exists(), f"run directory lacks {name}"
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard events written"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["backbone"] == "mobilenet_v2" and metrics["class_names"] == ["5", "6", "7", "8", "9"]
    assert [s["name"] for s in metrics["stages"]] == ["head", "finetune"] and metrics["stages"][0]["probe"]
    decisions = {d["name"]: d["values"] for d in metrics["auto_recipe"]["decisions"]}
    assert decisions["flip"] == {"augment.flip": False}, "the probe sees that mirrored digits change class"
    assert metrics["best"]["stage"] in ("head", "finetune")
    scratch = metrics["scratch"]
    # Five classes: chance is 0.2. Transfer from digits 0-4 beats random weights by a wide margin.
    assert metrics["val_accuracy"] > (0.9 if FULL else 0.6), metrics["val_accuracy"]
    assert metrics["val_accuracy"] > scratch["val_accuracy"] + (0.1 if FULL else 0.0), (metrics, scratch)
    log = (run_dir / "train.log").read_text()
    assert "pretraining mobilenet_v2 on digits's source task" in log and "transfer: val accuracy" in log
    assert (run_dir / "scratch" / "metrics.json").exists()


def write_stripes(root, n_per_class=24, size=40, seed=0):
    """Two classes a CNN with random weights can still tell apart: horizontal vs vertical stripes."""
    rng = np.random.default_rng(seed)
    for cls in ["horizontal", "vertical"]:
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            period = rng.integers(4, 9)
            phase = rng.integers(0, period)
            line = ((np.arange(size) + phase) // (period // 2)) % 2
            img = np.tile(line[:, None], (1, size)) if cls == "horizontal" else np.tile(line[None, :], (size, 1))
            colour = rng.uniform(80, 255, 3)
            pixels = img[..., None] * colour + rng.normal(0, 20, (size, size, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(root / cls / f"{i}.png")


def test_two_class_folder_trains_above_chance(tmp_path):
    write_stripes(tmp_path / "images")
    cfg = tlkit.as_train_config({
        # Random weights (offline): a head on random VGG16 features (no BatchNorm, which in
        # inference mode squashes random features of MobileNet-style backbones to ~0). Training
        # the whole random network on 36 images instead reaches 1.0 or 0.5 depending on the seed.
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "folder", "path": str(tmp_path / "images"), "image_size": 32, "batch_size": 8,
                 "val_split": 0.25},
        "augment": {"name": "none"},
        "schedule": {"name": "frozen", "stages": [{"name": "head", "train": "head", "epochs": 30, "patience": None}]},
        "optimizer": {"lr": 2e-2},  # random features are small: the head needs a high LR (a doctor warning)
        "trainer": {"verbose": 0},
    })
    result = tlkit.train(cfg, run_dir=tmp_path / "run")
    assert result.metrics["class_names"] == ["horizontal", "vertical"]
    assert result.metrics["num_val"] == 12
    assert result.metrics["val_accuracy"] >= 0.75, result.metrics
    assert (tmp_path / "run" / "model.keras").exists()


def test_weights_file_saved_by_the_test_loads_through_the_config(tmp_path):
    """backbone.weights=PATH: a head-only stage leaves exactly those weights in the backbone."""
    import keras

    from tlkit.backbones import get_spec
    from tlkit.backbones.build import build_backbone

    keras.utils.set_random_seed(123)
    saved = build_backbone(get_spec("mobilenet_v2"), 32, None)
    path = tmp_path / "mine.weights.h5"
    saved.save_weights(path)
    cfg = tlkit.as_train_config({
        "backbone": {"name": "mobilenet_v2", "weights": str(path)},
        "data": {"source": "synthetic", "image_size": 32, "num_images": 48, "num_classes": 2, "batch_size": 8},
        # BatchNorm frozen as saved: the recipe would re-estimate the statistics of these random weights (AdaBN).
        "schedule": {"bn": "frozen", "stages": [{"name": "head", "train": "head", "epochs": 1}]},
        "trainer": {"verbose": 0, "save_model": False},
        # Random MobileNetV2 features are ~1e-12: the doctor rightly calls them degenerate.
        # This test is about loading weights, so that finding is silenced on purpose.
        "doctor": {"silence": ["degenerate-features"]},
        "seed": 7,  # a different seed: random init would not reproduce the saved weights
    })
    result = tlkit.train(cfg, run_dir=tmp_path / "run")
    backbone = result.model.get_layer("backbone")
    for expected, actual in zip(saved.weights, backbone.weights):
        np.testing.assert_array_equal(np.array(expected), np.array(actual))
