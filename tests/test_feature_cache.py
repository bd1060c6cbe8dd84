"""Head-only stages on cached features: same result as through the frozen backbone, much faster."""
import logging

import numpy as np
import pytest

import tlkit


def config(feature_cache, **overrides):
    base = {
        # ResNet50: BatchNorm in every block (frozen) and healthy features at random init.
        "backbone": {"name": "resnet50", "weights": None},
        "data": {"source": "synthetic", "image_size": 32, "num_images": 80, "num_classes": 3, "batch_size": 128},
        "augment": {"name": "none"},  # a preset: its nulls are off (tlkit.recipe.auto)
        "head": {"dropout": 0.0},
        "optimizer": {"lr": 1e-2},
        "schedule": {"name": "frozen", "stages": [{"name": "head", "train": "head", "epochs": 6, "patience": None}]},
        "trainer": {"verbose": 0, "save_model": False, "feature_cache": feature_cache},
        "doctor": {"enabled": False},
    }
    cfg = tlkit.as_train_config(base)
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_cached_features_train_the_same_head_as_the_frozen_model(tmp_path):
    """Full-batch training (batch 128 > ~64 train images: one batch per epoch), no dropout, no augmentation: every epoch
    sees the same gradient whatever the order, so both paths must agree up to float error."""
    through_model = tlkit.train(config("off"), tmp_path / "off")
    on_features = tlkit.train(config("on"), tmp_path / "on")
    assert not through_model.metrics["stages"][0]["feature_cache"]
    assert on_features.metrics["stages"][0]["feature_cache"]
    assert through_model.metrics["num_train"] < 128
    np.testing.assert_allclose(on_features.metrics["val_loss"], through_model.metrics["val_loss"], rtol=1e-3)
    head_off = through_model.model.get_layer("head").get_weights()
    head_on = on_features.model.get_layer("head").get_weights()
    for a, b in zip(head_off, head_on):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_the_cache_states_its_size_and_falls_back_when_over_budget(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tlkit")
    result = tlkit.train(config("on", **{"trainer.memory_budget_gb": 1e-9}), tmp_path)
    assert not result.metrics["stages"][0]["feature_cache"], "over budget: trains through the backbone"
    warned = [r for r in caplog.records if "feature cache" in r.getMessage() and r.levelno == logging.WARNING]
    assert warned and "MiB" in warned[0].getMessage() and "memory_budget_gb" in warned[0].getMessage()


def test_augmented_views_and_invalidation_after_the_backbone_trains(tmp_path, caplog):
    """With augmentation, one pass per view; after a stage trains blocks, a later head-only stage
    recomputes the features (the old ones describe a backbone that no longer exists)."""
    caplog.set_level(logging.INFO, logger="tlkit")
    cfg = config("auto")
    cfg.optimizer.lr = 1e-3  # three stages must run: keep the random-feature head stable
    cfg.augment.flip = True
    cfg.schedule.stages = [
        tlkit.config.StageConfig(name="head", train="head", epochs=3, patience=None),
        tlkit.config.StageConfig(name="top", train="top:1", epochs=1, lr_scale=0.1, patience=None),
        tlkit.config.StageConfig(name="head_again", train="head", epochs=2, patience=None),
    ]
    result = tlkit.train(cfg, tmp_path)
    assert [s["feature_cache"] for s in result.metrics["stages"]] == [True, False, True]
    built = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature cache:")]
    assert len(built) == 2 and "3 view(s)" in built[0] and "2 view(s)" in built[1]
