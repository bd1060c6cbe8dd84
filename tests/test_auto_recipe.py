"""The default recipe: what a config leaves null is chosen from the data by documented rules; set values win."""
import numpy as np
import pytest
from PIL import Image

from tlkit.recipe import auto as auto_recipe
from tlkit.recipe.auto import apply, choose_batch_size, choose_image_size
from tlkit.recipe import measured
from tlkit.recipe.measured import decide_flip
from tlkit.backbones import get_spec
from tlkit.backbones.weights import record_pretrained_size
from tlkit.config import as_train_config
from tlkit.recipe.preflight import check_config as validate
from tlkit.errors import ConfigError
from tlkit.recipe.facts import DatasetFacts, describe_dataset


def _folder(root, classes=5, per_class=30, side=32):
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((side, side, 3), (7 * i + 40 * c) % 256, np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def _weights_file(tmp_path, size=32):
    """A .weights.h5 that says it was trained at `size` px (what tlkit.model.pretrain writes); the recipe only reads that."""
    import h5py

    path = tmp_path / "backbone.weights.h5"
    with h5py.File(path, "w") as file:
        file.create_group("layers")
    record_pretrained_size(path, size)
    return str(path)


def _resolved(cfg_dict):
    cfg = as_train_config(cfg_dict)
    return apply(cfg, validate(cfg))


def test_small_folder_with_32px_weights(tmp_path):
    """The held-out tasks' shape: 5 classes x 30 images of 32 px, weights pretrained at 32 px."""
    train, val = _folder(tmp_path / "train"), _folder(tmp_path / "val", per_class=10)
    cfg, recipe = _resolved({"backbone": {"name": "mobilenet_v2", "weights": _weights_file(tmp_path)},
                             "data": {"source": "folder", "train_dir": str(train), "val_dir": str(val)}})
    assert recipe.facts == DatasetFacts(num_train=150, num_classes=5, image_side=32, source="folder",
                                        weights="file", pretrained_size=32, smallest_class=30,
                                        backbone_params=2_257_984)
    assert cfg.data.image_size == 32, "the weights' own size, not ImageNet's 224"
    assert cfg.data.batch_size == 16
    assert cfg.schedule.bn is None, "frozen or adapt: measured on the images once the model is built"
    head, finetune = cfg.schedule.stages
    assert head.probe and head.train == "head"
    assert (finetune.train, finetune.epochs, finetune.lr_scale) == ("all", 34, 1.0)
    assert finetune.warmup_epochs == 3.4, "10% of the 306 steps: 30.6 steps of 9 per epoch"
    assert (finetune.patience, finetune.min_epochs) == (8, 17), "early stopping, never in the first half"
    assert cfg.augment.crop_area == auto_recipe.CROP_AREA and cfg.augment.mixup == 0.0
    assert cfg.loss.label_smoothing == 0.0
    assert cfg.augment.flip is None, "left to the probe, which needs the model"
    assert cfg.optimizer.clipnorm == auto_recipe.FINETUNE_CLIPNORM, "the recipe's fine-tune clips its gradients"
    text = "\n".join(recipe.lines())
    assert "150 training images, 5 classes" in text and "300 steps of 9 per epoch at batch 16 -> 34 epochs" in text
    assert "early stopping after 8 epochs without improvement, not before epoch 17" in text
    validate(cfg)  # what the recipe picks is a valid config


def test_image_size_follows_what_the_weights_were_trained_at():
    spec = get_spec("resnet50")
    facts = dict(num_train=500, num_classes=5)
    assert choose_image_size(DatasetFacts(image_side=32, pretrained_size=224, **facts), spec)[0] == 128  # BiT low-res
    assert choose_image_size(DatasetFacts(image_side=300, pretrained_size=224, **facts), spec)[0] == 224
    assert choose_image_size(DatasetFacts(image_side=32, pretrained_size=32, weights="file", **facts), spec)[0] == 32
    unknown, reason = choose_image_size(DatasetFacts(image_side=48, pretrained_size=None, weights="file", **facts), spec)
    assert unknown == 48 and "backbone.pretrained_size" in reason, "unknown size: the images' own, and how to say it"
    assert choose_image_size(DatasetFacts(image_side=8, pretrained_size=None, **facts), spec)[0] == spec.min_size
    xception = get_spec("xception")
    assert choose_image_size(DatasetFacts(image_side=32, pretrained_size=299, **facts), xception)[0] == 171


def test_batch_size_gives_small_data_sets_enough_steps():
    assert choose_batch_size(50)[0] == 8 and choose_batch_size(150)[0] == 16 and choose_batch_size(300)[0] == 32
    assert choose_batch_size(100_000)[0] == 32
    assert choose_batch_size(50, bn="train")[0] == 16, "BatchNorm statistics need a real batch"


def test_the_user_keeps_what_they_set(tmp_path):
    train = _folder(tmp_path / "train")
    cfg, recipe = _resolved({"backbone": {"name": "mobilenet_v2", "weights": _weights_file(tmp_path)},
                             "data": {"source": "folder", "path": str(train), "image_size": 48, "batch_size": 64},
                             "augment": {"flip": True, "crop_area": 1.0},
                             "schedule": {"stages": [{"name": "head", "train": "head", "probe": True},
                                                     {"name": "finetune", "train": "all", "epochs": 7,
                                                      "lr_scale": 0.1, "warmup_epochs": None}]}})
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.augment.flip, cfg.augment.crop_area) == (48, 64, True, 1.0)
    finetune = cfg.schedule.stages[1]
    assert (finetune.epochs, finetune.lr_scale) == (7, 0.1) and finetune.warmup_epochs is not None
    assert (finetune.patience, finetune.min_epochs) == (3, None), "a stage the user sized keeps its early stopping"
    assert "early stopping after" not in "\n".join(recipe.lines()), "nothing the recipe did not set is claimed"
    kept = {d.name for d in recipe.decisions if d.kept}
    assert {"image_size", "batch_size", "augment", "flip"} <= kept
    assert "the rule would pick 32" in "\n".join(recipe.lines())


def test_gradient_clipping_comes_with_the_recipes_fine_tune_and_yields_to_the_user(tmp_path):
    train = _folder(tmp_path / "train")
    base = {"backbone": {"name": "mobilenet_v2", "weights": _weights_file(tmp_path)},
            "data": {"source": "folder", "path": str(train)}}
    default, _ = _resolved(base)
    cfg, recipe = _resolved({**base, "optimizer": {"clipnorm": 5.0}})
    assert default.optimizer.clipnorm == auto_recipe.FINETUNE_CLIPNORM and cfg.optimizer.clipnorm == 5.0
    assert "clipnorm: kept optimizer.clipnorm=5.0 (set in the config; the rule would pick 1.0" in "\n".join(recipe.lines())
    cfg, recipe = _resolved({**base, "auto": {"keep": ["clipnorm"]}})
    assert cfg.optimizer.clipnorm is None and cfg.schedule == default.schedule, "only that decision is off"
    written = {"stages": [{"name": "head", "train": "head", "probe": True},
                          {"name": "all", "train": "all", "epochs": 6, "lr_scale": 0.1, "warmup_epochs": 1}]}
    cfg, recipe = _resolved({**base, "schedule": written})
    assert cfg.optimizer.clipnorm is None, "a fine-tune the user sized keeps the optimizer as configured"
    assert not any(d.name == "clipnorm" for d in recipe.decisions)


def test_the_recipe_switched_off_gives_fixed_values(tmp_path):
    train = _folder(tmp_path / "train")
    cfg, recipe = _resolved({"backbone": {"name": "mobilenet_v2", "weights": _weights_file(tmp_path)},
                             "data": {"source": "folder", "path": str(train)}, "auto": {"enabled": False}})
    fixed = auto_recipe.FIXED
    assert cfg.data.batch_size == fixed["batch_size"] and cfg.augment.flip is False
    assert cfg.schedule.stages[1].epochs == fixed["epochs"] and cfg.augment.crop_area == fixed["crop_area"]
    assert cfg.data.image_size == get_spec("mobilenet_v2").default_size
    with pytest.raises(ConfigError, match=r"auto.keep.0='imagesize'"):
        validate(as_train_config({"backbone": {"name": "vgg16"}, "data": {"source": "digits"},
                                  "auto": {"keep": ["imagesize"]}}))


def test_random_weights_train_batchnorm_and_the_head_with_the_optimizer():
    cfg, recipe = _resolved({"backbone": {"name": "mobilenet_v2", "weights": None},
                             "data": {"source": "synthetic", "num_images": 60, "num_classes": 3, "image_size": 32,
                                      "batch_size": None}})
    assert cfg.schedule.bn.value == "train" and cfg.data.batch_size == 16
    assert not cfg.schedule.stages[0].probe, "random features have nothing for a probe to fit"
    assert cfg.augment.flip is False, "no probe on random features: flips stay off"


def test_a_large_backbone_fine_tunes_at_a_lower_peak_lr(tmp_path):
    """Above LARGE_BACKBONE_PARAMS (ResNet50, VGG16, ...) the recipe's fine-tune starts at 0.3x the LR; a scale the
    user sets is kept, and the small backbones keep the full LR."""
    train, val = _folder(tmp_path / "train"), _folder(tmp_path / "val", per_class=10)
    base = {"backbone": {"name": "resnet50", "weights": _weights_file(tmp_path)},
            "data": {"source": "folder", "train_dir": str(train), "val_dir": str(val)}}
    cfg, recipe = _resolved(base)
    assert cfg.schedule.stages[1].lr_scale == auto_recipe.LARGE_BACKBONE_LR_SCALE == 0.3
    assert "a large backbone (23.6M parameters > 10M)" in "\n".join(recipe.lines())
    assert cfg.schedule.stages[1].epochs == 34, "the same step budget"
    cfg, _ = _resolved({**base, "schedule": {"stages": [{"name": "head", "train": "head", "probe": True},
                                                        {"name": "finetune", "train": "all", "lr_scale": 0.5}]}})
    assert cfg.schedule.stages[1].lr_scale == 0.5, "the user's scale wins"
    cfg, _ = _resolved({**base, "backbone": {**base["backbone"], "name": "efficientnet_b0"}})
    assert cfg.schedule.stages[1].lr_scale == 1.0, "EfficientNetB0 (4.0M parameters): the full LR"


def test_a_larger_small_set_gets_a_longer_fine_tune():
    """300 steps up to 150 images, then growing as sqrt(n): glyphs at 100 per class (500 images) still improved at
    the end of 300 steps (20 epochs)."""
    def epochs(num_train):
        batch, _ = choose_batch_size(num_train)
        values, reason = auto_recipe.choose_finetune(DatasetFacts(num_train, 5, 32), batch)
        return values["epochs"], reason

    assert epochs(150)[0] == 34 and "150 images (small): 300 steps of 9 per epoch" in epochs(150)[1]
    assert epochs(50)[0] == 40, "10 per class: the budget does not shrink below 300 steps (the 40-epoch cap)"
    five_hundred, reason = epochs(500)
    assert five_hundred == 37 and "300 x sqrt(500 / 150) = 548 steps of 15 per epoch at batch 32" in reason
    assert epochs(1_500)[0] == 21 and epochs(19_000)[0] == auto_recipe.FINETUNE_MIN_EPOCHS
    assert epochs(50_000)[1].startswith("50,000 images (medium): 10,000 steps"), "BiT's budgets from 20k images"


def test_medium_data_sets_get_bits_mixup_and_label_smoothing():
    facts = DatasetFacts(num_train=50_000, num_classes=100, image_side=300)
    assert auto_recipe.mixup_for(facts)[0] == 0.1 and auto_recipe.label_smoothing_for(facts)[0] == 0.1
    assert auto_recipe.label_smoothing_for(DatasetFacts(50_000, 5, 300))[0] == 0.0
    values, _ = auto_recipe.choose_finetune(facts, batch_size=32)
    assert values["epochs"] == auto_recipe.FINETUNE_MIN_EPOCHS, "10k steps of 1,562 per epoch: the 10-epoch floor"


def test_flips_are_kept_only_when_mirrored_images_keep_their_class():
    probe = {"val_accuracy": 0.80, "num_val": 150, "chance": 0.2}
    keeps, reason = decide_flip({**probe, "flipped_val_accuracy": 0.78})
    assert keeps and "keeps its class" in reason
    changes, reason = decide_flip({**probe, "flipped_val_accuracy": 0.40})
    assert not changes and "mirroring changes what they show" in reason
    weak, reason = decide_flip({**probe, "val_accuracy": 0.22, "flipped_val_accuracy": 0.23})
    assert not weak and "too close to chance" in reason, "a probe near chance cannot tell: flips stay off"


def test_batchnorm_statistics_are_re_estimated_only_for_far_images():
    assert measured.decide_bn(0.12)[0] == "frozen" and measured.decide_bn(0.65)[0] == "adapt"


def test_far_data_gets_twice_the_fine_tuning_steps_unless_the_user_sized_them(tmp_path):
    """BatchNorm statistics far from the weights' (re-estimated): the stage the recipe sized gets 2x its step budget."""
    from tlkit.config.schema import BNPolicy

    train, val = _folder(tmp_path / "train"), _folder(tmp_path / "val", per_class=10)
    base = {"backbone": {"name": "mobilenet_v2", "weights": _weights_file(tmp_path)},
            "data": {"source": "folder", "train_dir": str(train), "val_dir": str(val)}}
    cfg, recipe = _resolved(base)
    near = measured.apply_bn(cfg, recipe, shift=0.12)
    assert near.schedule.bn == BNPolicy.frozen and near.schedule.stages == cfg.schedule.stages
    cfg, recipe = _resolved(base)
    far = measured.apply_bn(cfg, recipe, shift=0.65)
    finetune = far.schedule.stages[1]
    assert far.schedule.bn == BNPolicy.adapt
    # 600 steps of 9 per epoch at batch 16 would be 67 epochs: the 40-epoch cap, warmup 10% of 360 steps, half for min
    assert (finetune.epochs, finetune.warmup_epochs, finetune.min_epochs) == (40, 4.0, 20)
    assert (finetune.lr_scale, finetune.patience) == (1.0, 8), "only the length changes"
    assert "far data (BatchNorm statistics 0.65 from the weights', re-estimated)" in "\n".join(recipe.lines())
    written = {"stages": [{"name": "head", "train": "head", "probe": True},
                          {"name": "all", "train": "all", "epochs": 6, "lr_scale": 1.0, "warmup_epochs": 1}]}
    for user in ({"auto": {"finetune_steps": 300}}, {"auto": {"keep": ["schedule"]}}, {"schedule": written}):
        cfg, recipe = _resolved({**base, **user})
        assert measured.apply_bn(cfg, recipe, shift=0.65).schedule.stages == cfg.schedule.stages, user


def test_folder_facts_come_from_the_pre_scan(tmp_path):
    for cls in ("a", "b", "c"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((120, 150, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    cfg = as_train_config({"backbone": {"name": "vgg16"}, "data": {"source": "folder", "path": str(tmp_path),
                                                                  "val_split": 0.2, "classes": ["a", "c"]}})
    validate(cfg)
    facts = describe_dataset(cfg)
    assert (facts.num_train, facts.num_classes, facts.image_side) == (8, 2, 120), "data.classes counts"


def test_early_stopping_never_ends_a_stage_before_min_epochs():
    """schedule.stages.N.min_epochs: patience runs out at epoch 3, but the stage goes on to epoch 5, then stops; the
    count survives a resume (it is in the checkpointed state)."""
    import keras

    from tlkit.training.callbacks import BestWeights

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.stop_training = False  # what fit() sets before the first epoch
    best = BestWeights("val_accuracy", patience=2, min_epochs=5)
    best.set_model(model)
    stopped_at = None
    for epoch, value in enumerate([0.5, 0.4, 0.4, 0.4, 0.4, 0.4]):
        best.on_epoch_end(epoch, {"val_accuracy": value, "val_loss": 1.0})
        if model.stop_training and stopped_at is None:
            stopped_at = epoch + 1
    assert stopped_at == 5 and best.best_epoch == 0
    resumed = BestWeights("val_accuracy", patience=2, min_epochs=8)  # a checkpoint after those 6 epochs
    resumed.set_model(model)
    model.stop_training = False
    resumed.restore(best.state(), None)
    assert resumed.epochs_seen == 6
    resumed.on_epoch_end(6, {"val_accuracy": 0.4, "val_loss": 1.0})
    assert not model.stop_training, "epoch 7 of a stage that may not stop before epoch 8"
    resumed.on_epoch_end(7, {"val_accuracy": 0.4, "val_loss": 1.0})
    assert model.stop_training


def test_min_epochs_is_validated_when_the_config_loads():
    cfg = as_train_config({"backbone": {"name": "mobilenet_v2", "weights": None},
                           "schedule": {"stages": [{"name": "head", "train": "head", "min_epochs": -1}]}})
    with pytest.raises(ConfigError, match=r"schedule.stages.0.min_epochs.*-1.*integer >= 0"):
        validate(cfg)


def test_a_resumed_far_data_run_trains_the_length_it_started_with(tmp_path):
    """resume= sizes the recipe again before the model exists; the interrupted run had re-estimated BatchNorm and
    lengthened its fine-tune, which its config.yaml holds: the resumed config is that one, or resuming is refused."""
    from dataclasses import replace

    from tlkit.training import checkpoint as ckpt
    from tlkit.training import rundir

    train, val = _folder(tmp_path / "train"), _folder(tmp_path / "val", per_class=10)
    base = {"backbone": {"name": "mobilenet_v2", "weights": _weights_file(tmp_path)},
            "data": {"source": "folder", "train_dir": str(train), "val_dir": str(val)}}
    cfg, recipe = _resolved(base)
    started = measured.apply_bn(cfg, recipe, shift=0.65)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rundir.write_config(run_dir, replace(started, augment=replace(started.augment, flip=False)))
    again, recipe = _resolved({**base, "resume": str(run_dir)})
    assert again.schedule.stages != started.schedule.stages, "sized again: the short budget"
    resumed = ckpt.with_probe_decisions(run_dir, again, recipe)
    assert resumed.schedule == started.schedule and resumed.augment.flip is False
    assert ckpt.resume_point(run_dir, resumed).finished is None, "the same config: resuming is allowed"
