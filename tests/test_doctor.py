"""The doctor end to end: `tlkit doctor`, train.py refusing a broken setup, the runtime
monitor's diagnosis in the run directory, and the five real cases of FIELD_NOTES.md."""
import json
import subprocess
import sys

import numpy as np
import pytest

import tlkit
from conftest import ROOT, SMALL_VGG_DIGITS
from tlkit.backbones import get_spec
from tlkit.recipe.preflight import check_config as validate
from tlkit.doctor.config_checks import diagnose_config
from tlkit.doctor.findings import Severity
from tlkit.errors import ConfigError


def doctor_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tlkit", "doctor", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def ids(findings, at_least=Severity.warning):
    rank = {Severity.error: 0, Severity.warning: 1, Severity.info: 2}
    return {f.id for f in findings if rank[f.severity] <= rank[at_least]}


def config_findings(compose, overrides):
    cfg = tlkit.as_train_config(compose(overrides))
    return cfg, diagnose_config(cfg, validate(cfg))


# --- the command ---------------------------------------------------------------------

def test_doctor_passes_a_correct_setup_with_data_and_model_checks():
    result = doctor_cli(*SMALL_VGG_DIGITS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[error]" not in result.stdout and "[warning]" not in result.stdout


def test_doctor_reports_an_error_with_its_fix_and_exits_non_zero():
    result = doctor_cli("--config-only", *SMALL_VGG_DIGITS, "backbone.weights=imagenet",
                        "backbone.preprocess=rescale_255")
    assert result.returncode == 1
    assert "preprocess-override" in result.stdout and "backbone.preprocess=auto" in result.stdout


def test_silence_and_strict_change_the_verdict():
    warn = ["--config-only", *SMALL_VGG_DIGITS, "data.batch_size=1"]
    assert doctor_cli(*warn).returncode == 0, "a warning alone does not fail"
    assert doctor_cli(*warn, "doctor.strict=true").returncode == 1, "strict: warnings are errors"
    error = ["--config-only", *SMALL_VGG_DIGITS, "optimizer.lr=0.5"]
    assert doctor_cli(*error).returncode == 1
    assert doctor_cli(*error, "doctor.silence=[lr-too-high]").returncode == 0


def test_doctor_on_an_invalid_config_says_so():
    result = doctor_cli("--config-only", "data=folder", "data.path=/does/not/exist")
    assert result.returncode == 2 and "data.path" in result.stderr


def test_train_py_stops_before_training_on_a_doctor_error(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "train.py", *SMALL_VGG_DIGITS, "optimizer.lr=0.5", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "lr-too-high" in result.stderr and "optimizer.lr=" in result.stderr
    assert not (run_dir / "model.keras").exists(), "nothing was trained"
    assert "lr-too-high" in (run_dir / "train.log").read_text(), "the finding is in the run log"


# --- the runtime monitor inside a real run ------------------------------------------------

def test_a_diverging_stage_is_stopped_and_diagnosed_in_the_run_directory(tmp_path):
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "synthetic", "image_size": 32, "num_images": 64, "num_classes": 2, "batch_size": 8},
        "schedule": {"name": "two", "stages": [
            {"name": "all", "train": "all", "epochs": 4, "patience": None},
            {"name": "never", "train": "all", "epochs": 1, "lr_scale": 0.1},
        ]},
        "optimizer": {"name": "sgd", "lr": 1000.0},  # diverges whatever the batch order (50 did not, for some)
        "trainer": {"verbose": 0, "save_model": False},
        "doctor": {"silence": ["lr-too-high"]},  # get past the pre-flight check on purpose
    })
    result = tlkit.train(cfg, run_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "stopped_by_doctor"
    runtime = metrics["doctor"]["runtime"]
    assert runtime and runtime[0]["id"] in {"nan-loss", "loss-diverging"} and runtime[0]["fix"]
    assert [s["name"] for s in result.metrics["stages"]] == ["all"], "the stages after a stopped one are skipped"
    assert runtime[0]["id"] in (tmp_path / "train.log").read_text()


# --- the five cases of FIELD_NOTES.md, written as tlkit overrides --------------------------

def test_case1_adam_0p1_batch_1_no_preprocessing(compose):
    """Frozen ResNet50, Adam lr=0.1, batch size 1, no preprocess_input: loss grew to 78,000."""
    _, found = config_findings(compose, [
        "backbone=resnet50", "schedule=frozen", "optimizer=adam", "optimizer.lr=0.1", "data=digits",
        "data.batch_size=1", "backbone.preprocess=none", "augment=none",
    ])
    assert {"lr-too-high", "preprocess-override"} <= ids(found, Severity.error)
    assert "small-batch" in ids(found)


def test_case2_two_softmax_units_with_binary_crossentropy_is_impossible(compose):
    """Fully unfrozen ResNet50, Dense(2, softmax) + binary_crossentropy: by construction tlkit
    trains 2 logits with sparse categorical cross-entropy, whatever the config says."""
    from tlkit.config import BackboneConfig, HeadConfig, OptimizerConfig
    from tlkit.model.build import build_model
    from tlkit.training.stages import plan_stages
    from tlkit.training.optim import compile_for_stage as _compile

    spec = get_spec("resnet50")
    model = build_model(spec, BackboneConfig(name="resnet50", weights=None), HeadConfig(), 2, 32)
    _compile(model, OptimizerConfig(), plan_stages(tlkit.as_train_config(compose(["schedule=full"])).schedule.stages,
                                                   spec, 1e-3)[0], steps_per_epoch=1)
    assert model.output_shape == (None, 2)
    assert model.get_layer("head").get_layer("logits").activation.__name__ == "linear"
    # Sparse categorical cross-entropy on logits: -log softmax(z)[y], for class ids.
    logits, label = np.array([[2.0, 0.5]], np.float32), np.array([1])
    expected = np.log(np.exp(2.0) + np.exp(0.5)) - 0.5
    assert float(model.loss(label, logits)) == pytest.approx(expected, rel=1e-5)


def test_case3_rescale_255_bn_training_sgd_0p01_layers_by_index(compose):
    """ResNet50 fed x/255, first 30 layers frozen by index, BatchNorm training, SGD 0.01."""
    _, found = config_findings(compose, [
        "backbone=resnet50", "backbone.preprocess=rescale_255", "schedule=full", "schedule.bn=train",
        "optimizer=sgd", "optimizer.lr=0.01", "schedule.stages.0.lr_scale=1.0", "data=digits", "augment=none",
    ])
    assert "preprocess-override" in ids(found, Severity.error)
    assert "lr-too-high" in ids(found)
    by_index = tlkit.as_train_config(compose(["backbone=resnet50", "data=digits", "schedule.stages.0.train=layers:30"]))
    with pytest.raises(ConfigError, match="top:N"):  # freezing by layer index cannot be expressed
        validate(by_index)


def test_case4_tiny_data_vgg16_heavy_dropout(compose, tmp_path):
    """A tiny data set on VGG16 with heavy dropout: val falls while train rises. tlkit warns
    about the data size, the val set and the dropout; every stage already early-stops and
    keeps its best epoch (what the answer to the post suggested)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ["a", "b", "c"]:
        (tmp_path / cls).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    overrides = ["backbone=vgg16", "backbone.weights=null", "data=folder", f"data.path={tmp_path}",
                 "data.image_size=32", "head=mlp", "head.dropout=0.8", "schedule=full"]
    cfg = tlkit.as_train_config(compose(overrides))
    assert all(stage.patience for stage in cfg.schedule.stages), "early stopping is on by default"
    result = doctor_cli(*overrides)
    assert result.returncode == 0, result.stdout + result.stderr  # warnings: it may still run
    for finding in ["too-few-images-per-class", "val-too-small", "head-dropout-high"]:
        assert finding in result.stdout


def test_case5_top_included_and_one_softmax_unit_is_impossible():
    """VGG19 with include_top=True then Dense(1, softmax): output always 1.0. tlkit builds
    include_top=False always and refuses fewer than 2 outputs."""
    from tlkit.config import BackboneConfig, HeadConfig
    from tlkit.model.build import build_model

    spec = get_spec("vgg19")
    model = build_model(spec, BackboneConfig(name="vgg19", weights=None), HeadConfig(), 2, 32)
    assert not any(layer.name in {"fc1", "fc2", "predictions"} for layer in model.get_layer("backbone").layers)
    with pytest.raises(ConfigError, match="2 logits"):
        build_model(spec, BackboneConfig(name="vgg19", weights=None), HeadConfig(), 1, 32)
