"""The LR finder (tlkit lr-find, optimizer.lr=auto): stops on divergence, suggests a sane LR, trains with it."""
import csv
import json
import math

import pytest

import tlkit
from tlkit.training import lr_find
from tlkit.config import as_train_config
from tlkit.recipe.preflight import check_config as validate
from tlkit.errors import ConfigError


def _result(steps=100, start=1e-7, end=10.0, rule="min_div_10"):
    return lr_find.LRFinderResult("head", 0, 1.0, "adam", start, end, steps, rule)


def _valley(lr):
    """A typical LR test curve: flat, falling between 1e-4 and 1e-2, exploding past 0.1."""
    return 0.5 + 1.8 / (1 + lr / 1e-3) + (lr / 0.1) ** 2


@pytest.mark.parametrize("rule", sorted(lr_find.RULES))
def test_sweep_stops_on_divergence_and_suggests_inside_the_range_below_it(rule):
    result = lr_find.sweep(_valley, _result(rule=rule))
    assert result.diverged and result.steps_run < result.steps_requested
    assert result.smoothed[-1] > lr_find.DIVERGENCE_FACTOR * min(result.smoothed)
    assert result.start_lr <= result.suggestion <= result.end_lr
    assert result.suggestion < result.divergence_lr
    assert 1e-5 < result.suggestion < 0.1, "the suggestion sits on the falling part of the curve"
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-7)


def test_sweep_stops_at_the_first_nan_and_keeps_only_finite_losses():
    result = lr_find.sweep(lambda lr: float("nan") if lr > 1e-2 else _valley(lr), _result())
    assert result.diverged and result.divergence_lr > 1e-2 and result.steps_run < 100
    assert all(math.isfinite(x) for x in result.losses)
    assert result.suggestion < result.divergence_lr


def test_sweep_without_divergence_runs_every_step():
    result = lr_find.sweep(lambda lr: 2.0, _result(steps=30))
    assert not result.diverged and result.steps_run == 30 and result.lrs[-1] == pytest.approx(10.0)


def test_lr_find_command_on_a_real_model_diverges_and_writes_its_files(tmp_path):
    """VGG16 (random weights, 32 px) on digits, head stage on cached features, LR up to 1e3: it must diverge."""
    from tlkit.cli.main import main

    out = tmp_path / "lrf"
    code = main(["lr-find", "backbone=vgg16", "backbone.weights=null", "data=digits", "data.image_size=32",
                 "augment=none", "data.max_images=320", "end_lr=1000", "steps=60", f"output={out}"])
    assert code == 0
    saved = json.loads((out / "lr_find.json").read_text())
    assert saved["diverged"] and saved["steps_run"] < saved["steps_requested"] == 60
    assert len(saved["lrs"]) == len(saved["losses"]) == len(saved["smoothed"]) == saved["steps_run"]
    assert saved["start_lr"] <= saved["suggestion"] < saved["divergence_lr"]
    assert saved["rule"] == "min_div_10" and saved["feature_cache"] is True
    assert (out / "lr_find.png").stat().st_size > 10_000


def test_finder_on_a_fine_tuning_stage_trains_those_blocks_and_restores_every_weight(monkeypatch):
    """Through the backbone (stage top:1, MixUp on): the sweep moves the top block, then every weight is put back."""
    import keras
    import numpy as np

    from tlkit.data import load_data
    from tlkit.model.build import build_model
    from tlkit.training.stages import Freezer, plan_stages

    cfg = as_train_config({"backbone": {"name": "vgg16", "weights": None},
                           "data": {"source": "synthetic", "image_size": 32, "num_images": 40, "batch_size": 8},
                           "augment": {"name": "none", "mixup": 0.2},
                           "schedule": {"stages": [{"name": "head"}, {"name": "top", "train": "top:1"}]}})
    spec = validate(cfg)
    keras.utils.set_random_seed(0)
    data = load_data(cfg.data, cfg.augment, 32, cfg.seed)
    model = build_model(spec, cfg.backbone, cfg.head, 3, 32)
    before = [np.array(w) for w in model.get_weights()]
    top_kernel = model.get_layer("backbone").get_layer("block5_conv3").kernel
    start = np.array(top_kernel)
    moved = []
    original = keras.Model.train_on_batch

    def spy(self, *args, **kwargs):
        logs = original(self, *args, **kwargs)
        moved.append(not np.allclose(np.array(top_kernel), start))
        return logs

    monkeypatch.setattr(keras.Model, "train_on_batch", spy)
    plan = plan_stages(cfg.schedule.stages, spec, 1.0)[1]
    result = lr_find.find_lr(cfg, data, model, Freezer(model, spec, cfg.schedule.bn), plan, 1,
                             steps=12, start_lr=1e-4, end_lr=1e-1)
    assert result.stage == "top" and not result.feature_cache and result.steps_run == len(moved) >= 1
    assert any(moved), "the stage's blocks trained during the sweep"
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, model.get_weights())), "weights restored"


def test_lr_find_refuses_an_unknown_stage(tmp_path, capsys):
    from tlkit.cli.main import main

    code = main(["lr-find", "backbone=vgg16", "backbone.weights=null", "data=digits", "data.image_size=32",
                 "stage=nope", f"output={tmp_path}"])
    assert code == 2 and "stage='nope'" in capsys.readouterr().err


def test_lr_auto_picks_a_float_that_training_uses(tmp_path):
    cfg = as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "synthetic", "image_size": 32, "num_images": 60, "num_classes": 3, "batch_size": 8},
        "augment": {"name": "none"},
        "optimizer": {"lr": "auto"},
        "schedule": {"name": "one", "stages": [{"name": "head", "train": "head", "epochs": 1, "lr_scale": 0.5,
                                                 "cosine": False}]},
        "trainer": {"verbose": 0, "save_model": False},
        "doctor": {"silence": ["no-pretrained-weights"]},
    })
    assert cfg.optimizer.lr == "auto"
    run = tmp_path / "run"
    metrics = tlkit.train(cfg, run_dir=run).metrics
    chosen = metrics["lr_finder"]["optimizer_lr"]
    assert isinstance(chosen, float) and chosen > 0
    saved = json.loads((run / "lr_find.json").read_text())
    assert chosen == pytest.approx(saved["suggestion"] / 0.5), "the suggestion is the stage's peak LR"
    assert metrics["stages"][0]["lr"] == pytest.approx(saved["suggestion"])
    with open(run / "history.csv") as f:
        logged = [float(row["lr"]) for row in csv.DictReader(f)]
    assert logged and all(lr == pytest.approx(saved["suggestion"], rel=1e-5) for lr in logged), \
        "the optimizer trained at the suggested LR (constant schedule)"
    assert (run / "lr_find.png").exists()
    assert "optimizer.lr=auto -> optimizer.lr=" in (run / "train.log").read_text()


@pytest.mark.parametrize("value", ["fast", "1e-3x", True, [0.1]])
def test_bad_lr_fails_on_load_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"optimizer\.lr=.*auto"):
        as_train_config({"backbone": {"name": "vgg16"}, "optimizer": {"lr": value}})


def test_lr_values_from_the_command_line(compose):
    assert as_train_config(compose(["optimizer.lr=auto"])).optimizer.lr == "auto"
    assert as_train_config(compose(["optimizer.lr=3e-4"])).optimizer.lr == pytest.approx(3e-4)
    assert as_train_config(compose(["optimizer=sgd"])).optimizer.lr == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="optimizer.lr='fast'"):
        as_train_config(compose(["optimizer.lr=fast"]))
    with pytest.raises(ConfigError, match="optimizer.lr"):
        validate(as_train_config(compose(["optimizer.lr=0"])))


def test_doctor_checks_the_lr_the_finder_picked_as_warnings(tmp_path, monkeypatch):
    """Pre-flight skips the LR limits for auto; after the finder they apply, downgraded to warnings."""
    from tlkit.doctor import Doctor
    from tlkit.doctor.config_checks import diagnose_config

    cfg = as_train_config({"backbone": {"name": "vgg16"}, "optimizer": {"lr": "auto"}})
    spec = validate(cfg)
    assert not {"lr-too-high", "lr-too-low"} & {f.id for f in diagnose_config(cfg, spec)}

    found = lr_find.sweep(_valley, _result())
    found.suggestion = 0.2  # far above Adam's head limit (an error from 0.05 when set by hand)
    monkeypatch.setattr(lr_find, "find_lr", lambda *args, **kwargs: found)
    doctor = Doctor()
    resolved, entry = lr_find.auto_lr(cfg, spec, None, None, None, tmp_path, doctor=doctor)
    assert resolved.optimizer.lr == pytest.approx(0.2) and entry["optimizer_lr"] == pytest.approx(0.2)
    high = [f for f in doctor.findings if f.id == "lr-too-high"]
    assert high and high[0].severity.value == "warning" and "LR finder" in high[0].message
    assert (tmp_path / "lr_find.json").exists()
