"""recipe=auto: the BiT-style rule picks documented values per data set size; explicit settings win."""
import numpy as np
import pytest
from PIL import Image

import tlkit
from tlkit.auto_recipe import DatasetFacts, apply, choose, describe_dataset, split_epochs
from tlkit.backbones.spec import get_spec
from tlkit.config import as_train_config
from tlkit.config.validate import validate
from tlkit.errors import ConfigError

STAGED = [5, 5, 5]


def _choose(facts, backbone="vgg16", batch=32, stages=STAGED):
    return choose(facts, get_spec(backbone), batch, stages)


def test_small_data_set_low_resolution():
    """1,438 digits of 8 px: BiT's 500 steps, 128 px, gentle crops, no flip, no MixUp or smoothing."""
    chosen = _choose(DatasetFacts(num_train=1438, num_classes=10, image_side=8, source="digits"))
    assert chosen["regime"] == "small"
    assert chosen["image_size"][0] == {"data.image_size": 128}
    assert chosen["schedule"][0] == {"epochs": [4, 4, 4], "steps": 500}  # ceil(500 / 44 steps) = 12 epochs
    assert "1,438 images < 20k -> schedule 'small': 500 steps" in chosen["schedule"][1]
    assert chosen["augment"][0] == {"augment.flip": False, "augment.crop_area": 0.8, "augment.color": 0.0}
    assert chosen["mixup"][0] == {"augment.mixup": 0.0}
    assert chosen["label_smoothing"][0] == {"label_smoothing": 0.0}


def test_medium_data_set():
    chosen = _choose(DatasetFacts(num_train=50_000, num_classes=100, image_side=300))
    assert chosen["regime"] == "medium"
    assert chosen["image_size"][0] == {"data.image_size": 224}
    assert chosen["schedule"][0] == {"epochs": [3, 2, 2], "steps": 10_000}  # ceil(10,000 / 1,562) = 7 epochs
    assert chosen["augment"][0] == {"augment.flip": True, "augment.crop_area": 0.6, "augment.color": 0.0}
    assert chosen["mixup"][0] == {"augment.mixup": 0.1}
    assert chosen["label_smoothing"][0] == {"label_smoothing": 0.1}
    few_classes = _choose(DatasetFacts(num_train=50_000, num_classes=5, image_side=300))
    assert few_classes["label_smoothing"][0] == {"label_smoothing": 0.0}


def test_large_data_set_keeps_one_epoch_per_stage():
    chosen = _choose(DatasetFacts(num_train=1_200_000, num_classes=1000, image_side=400), backbone="xception")
    assert chosen["regime"] == "large"
    assert chosen["schedule"][0] == {"epochs": [1, 1, 1], "steps": 20_000}
    assert chosen["image_size"][0] == {"data.image_size": 299}
    assert chosen["mixup"][0] == {"augment.mixup": 0.1}


def test_low_resolution_scales_with_the_backbone_and_respects_its_minimum():
    assert _choose(DatasetFacts(5000, 10, 32), backbone="xception")["image_size"][0] == {"data.image_size": 171}
    assert split_epochs(7, [5, 5, 5]) == [3, 2, 2] and split_epochs(2, [1, 1, 1]) == [1, 1, 1]
    assert split_epochs(10, [10, 5, 5]) == [5, 3, 2]  # largest remainder, ties to the earlier stage


def test_recipe_auto_fills_what_is_left_to_it(compose):
    cfg = as_train_config(compose(["recipe=auto", "backbone=vgg16", "data=digits"]))
    assert cfg.auto.enabled and cfg.schedule.name == "auto" and cfg.augment.name == "auto"
    assert cfg.data.image_size is None and cfg.augment.mixup is None
    resolved, recipe = apply(cfg, validate(cfg))
    assert resolved.data.image_size == 128
    assert [s.epochs for s in resolved.schedule.stages] == [4, 4, 4]
    assert [s.warmup_epochs for s in resolved.schedule.stages] == [0, 0.8, 0.8]  # warmup keeps its share (1 of 5)
    assert resolved.augment.flip is False and resolved.augment.crop_area == 0.8 and resolved.augment.mixup == 0.0
    assert resolved.loss.label_smoothing == 0.0
    assert not any(d.kept for d in recipe.decisions)
    text = "\n".join(recipe.lines())
    assert "1,438 training images, 10 classes" in text and "schedule 'small': 500 steps" in text
    validate(resolved)  # what the rule picks is a valid config


def test_explicit_settings_win(compose):
    cfg = as_train_config(compose(["recipe=auto", "backbone=vgg16", "data=digits", "data.image_size=48",
                                   "schedule=frozen", "augment=strong", "augment.mixup=0.2",
                                   "auto.keep=[label_smoothing]", "loss.label_smoothing=0.05"]))
    resolved, recipe = apply(cfg, validate(cfg))
    assert resolved.data.image_size == 48
    assert resolved.schedule.name == "frozen" and resolved.schedule.stages[0].epochs == cfg.schedule.stages[0].epochs
    assert (resolved.augment.crop_area, resolved.augment.color, resolved.augment.mixup) == (0.3, 0.3, 0.2)
    assert resolved.loss.label_smoothing == 0.05
    kept = {d.name for d in recipe.decisions if d.kept}
    assert kept == {"image_size", "schedule", "augment", "mixup", "label_smoothing"}
    assert "the rule would pick data.image_size=128" in "\n".join(recipe.lines())


def test_auto_keep_names_are_checked(compose):
    with pytest.raises(ConfigError, match=r"auto.keep.0='imagesize'"):
        validate(as_train_config(compose(["recipe=auto", "backbone=vgg16", "data=digits", "auto.keep=[imagesize]"])))


def test_folder_facts_come_from_the_pre_scan(tmp_path):
    for cls in ("a", "b", "c"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((120, 150, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    cfg = as_train_config({"backbone": {"name": "vgg16"}, "auto": {"enabled": True},
                           "data": {"source": "folder", "path": str(tmp_path), "val_split": 0.2}})
    validate(cfg)
    assert describe_dataset(cfg) == DatasetFacts(num_train=12, num_classes=3, image_side=120, source="folder")


def test_recipe_auto_runs_end_to_end(tmp_path, compose):
    """Tiny data: the image size and the schedule are set explicitly (and kept); augmentation and the rest are chosen."""
    cfg = as_train_config(compose([
        "recipe=auto", "backbone=vgg16", "backbone.weights=null", "data=synthetic", "data.num_images=48",
        "data.num_classes=3", "data.image_size=32", "data.batch_size=8", "schedule=frozen",
        "schedule.stages.0.epochs=1", "trainer.verbose=0", "trainer.save_model=false",
        "doctor.silence=[no-pretrained-weights,random-frozen-backbone]"]))
    run = tmp_path / "run"
    metrics = tlkit.train(cfg, run_dir=run).metrics
    assert metrics["status"] == "completed" and metrics["image_size"] == 32
    decisions = {d["name"]: d for d in metrics["auto_recipe"]["decisions"]}
    assert decisions["image_size"]["kept"] and decisions["schedule"]["kept"]
    assert decisions["augment"]["values"] == {"augment.flip": True, "augment.crop_area": 0.8, "augment.color": 0.0}
    assert metrics["auto_recipe"]["facts"]["num_train"] == metrics["num_train"] == 39  # the rule counts as the pipeline
    log = (run / "train.log").read_text()
    assert "recipe=auto: 39 training images" in log and "regime 'small'" in log
