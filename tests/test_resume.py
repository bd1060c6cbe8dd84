"""Resume after a crash: a run killed with SIGKILL at any point continues with
`python train.py resume=RUN_DIR` and, on CPU with the same seed, writes the same
metrics.json as a run that was never interrupted.

The kills are placed exactly with $TLKIT_FAULT (tlkit.training.checkpoint.maybe_fault): between two
epochs of a stage, between two stages, inside an epoch, and half-way through writing a
checkpoint. The runs go side by side (two cores), as subprocesses of the real train.py.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tlkit
from tlkit.training import checkpoint as ckpt
from tlkit.errors import TlkitError

TRAIN_PY = str(Path(__file__).resolve().parents[1] / "train.py")
FULL = os.environ.get("TLKIT_FULL_TESTS") == "1"
# 2 + 2 epochs: a head stage on cached features (with augmented views), then block5 fine-tuned.
ARGS = [
    "backbone=vgg16", "backbone.weights=null", "data=digits", "data.image_size=32", "data.max_images=160",
    "data.batch_size=16", "augment=light", "optimizer.lr=3e-3", "head.dropout=0.3",
    'schedule.stages=[{name:head,train:head,epochs:2},{name:top,train:"top:1",epochs:2,lr_scale:0.1}]',
    "trainer.verbose=0", "trainer.deterministic=true", "trainer.save_model=false", "trainer.checkpoint_every_s=0",
    "doctor.silence=[no-pretrained-weights]", "seed=7",
]
# (where, epoch): epochs are counted over the run, 1-based.
KILL_POINTS = [
    ("epoch-end", 1),  # between two epochs of the head stage
    ("mid-epoch", 3),  # inside the first epoch of the fine-tuning stage
    ("checkpoint-write", 2),  # half-way through the checkpoint of the head stage's last epoch
    ("epoch-end", 2),  # between the stages: the head stage's end not yet processed
]
# CI (the reduced form of this slow test): the torn checkpoint write, whose resume starts from the previous epoch
# and crosses into the fine-tuning stage
REDUCED = [("checkpoint-write", 2)]


def _train(args, fault=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(ckpt.FAULT_ENV, None)
    if fault:
        env[ckpt.FAULT_ENV] = fault
    return subprocess.Popen([sys.executable, TRAIN_PY, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process):
    output, _ = process.communicate(timeout=900)
    return process.returncode, output


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    points = KILL_POINTS if FULL else REDUCED
    reference = _train([*ARGS, f"hydra.run.dir={tmp_path / 'uninterrupted'}"])
    killed = {point: _train([*ARGS, f"hydra.run.dir={tmp_path / f'{point[0]}-{point[1]}'}"], fault=f"{point[0]}:{point[1]}")
              for point in points}
    code, output = _finish(reference)
    assert code == 0, output
    for (where, epoch), process in killed.items():
        code, output = _finish(process)
        assert code == -9, f"{where}:{epoch} was not killed (exit {code}):\n{output[-3000:]}"
        run_dir = tmp_path / f"{where}-{epoch}"
        assert not (run_dir / "metrics.json").exists()
        if where == "checkpoint-write":  # the write was cut half-way: the previous checkpoint is whole
            assert list(run_dir.glob(".checkpoint.tmp-*")), "the half-written file is where the kill left it"
            state = ckpt.load(run_dir)
            assert state.progress.epochs_done == epoch - 1

    # Resume with the run directory alone: train.py takes the run's overrides from .hydra/.
    resumed = {point: _train([f"resume={tmp_path / f'{point[0]}-{point[1]}'}"]) for point in points}
    expected = (tmp_path / "uninterrupted" / "metrics.json").read_bytes()
    for (where, epoch), process in resumed.items():
        code, output = _finish(process)
        assert code == 0, f"resuming {where}:{epoch} failed:\n{output[-3000:]}"
        run_dir = tmp_path / f"{where}-{epoch}"
        assert "resuming" in (run_dir / "train.log").read_text()
        assert (run_dir / "metrics.json").read_bytes() == expected, f"{where}:{epoch}: resumed != uninterrupted"
        assert not (run_dir / "checkpoint.npz").exists(), "a completed run drops its checkpoint"
        history = (run_dir / "history.csv").read_text().splitlines()
        assert len(history) == 1 + 4, "one history row per epoch, none repeated"

    metrics = json.loads(expected)
    assert metrics["epochs"] == 4 and [s["epochs_run"] for s in metrics["stages"]] == [2, 2]
    assert metrics["stages"][0]["feature_cache"] and not metrics["stages"][1]["feature_cache"]


def _config(**trainer):
    return tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "synthetic", "image_size": 32, "num_images": 40, "num_classes": 2, "batch_size": 8},
        "schedule": {"name": "staged", "stages": [
            {"name": "head", "train": "head", "epochs": 2},
            {"name": "top", "train": "top:1", "epochs": 1, "lr_scale": 0.1},
        ]},
        "trainer": {"verbose": 0, "save_model": False, "checkpoint_every_s": 0, **trainer},
        "doctor": {"enabled": False},
    })


class _Killed(BaseException):
    """Stands in for SIGKILL inside this process (BaseException: nothing catches it on the way)."""


def test_library_resume_continues_from_the_last_epoch(tmp_path, monkeypatch):
    """tlkit.train with cfg.resume (the notebook path): a run that died after its first epoch
    continues from there to the uninterrupted result; a finished run is returned as it is."""
    full = tlkit.train(_config(deterministic=True), tmp_path / "full")

    def die_after_epoch_1(point, epoch):
        if (point, epoch) == ("epoch-end", 1):
            raise _Killed

    monkeypatch.setattr(ckpt, "maybe_fault", die_after_epoch_1)
    monkeypatch.setenv(ckpt.FAULT_ENV, "epoch-end:1")  # the checkpoint is on disk before the "kill"
    with pytest.raises(_Killed):
        tlkit.train(_config(deterministic=True), tmp_path / "partial")
    monkeypatch.undo()
    checkpoint = ckpt.load(tmp_path / "partial")
    assert (checkpoint.progress.index, checkpoint.progress.epochs_done) == (0, 1)
    assert int(checkpoint.optimizer_variables[0]) > 0, "the optimizer's step count is saved"

    cfg = _config(deterministic=True)
    cfg.resume = str(tmp_path / "partial")
    resumed = tlkit.train(cfg)
    assert resumed.metrics["val_loss"] == full.metrics["val_loss"]
    assert resumed.metrics["stages"] == full.metrics["stages"]
    assert not (tmp_path / "partial" / "checkpoint.npz").exists()
    again = tlkit.train(cfg)  # already finished: nothing runs
    assert again.model is None and again.metrics["val_loss"] == full.metrics["val_loss"]


def test_short_epochs_are_not_checkpointed_until_the_interval_passes(tmp_path, monkeypatch):
    """trainer.checkpoint_every_s: an epoch shorter than the interval leaves no checkpoint (redoing it is cheaper)."""
    def die_after_epoch_1(point, epoch):
        if (point, epoch) == ("epoch-end", 1):
            raise _Killed

    monkeypatch.setattr(ckpt, "maybe_fault", die_after_epoch_1)
    with pytest.raises(_Killed):
        tlkit.train(_config(checkpoint_every_s=3600), tmp_path / "run")
    assert ckpt.load(tmp_path / "run") is None


def test_resume_refuses_a_different_config(tmp_path):
    cfg = _config()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    from tlkit.training.rundir import write_config

    write_config(run_dir, cfg)
    changed = _config()
    changed.optimizer.lr = 0.5
    changed.trainer.verbose = 2  # allowed to differ
    changed.resume = str(run_dir)
    with pytest.raises(TlkitError, match=r"optimizer\.lr: 0\.001 in the run, 0\.5 now") as error:
        tlkit.train(changed)
    assert "verbose" not in str(error.value)
    missing = _config()
    missing.resume = str(tmp_path / "nowhere")
    with pytest.raises(TlkitError, match="no such run directory"):
        tlkit.train(missing)


def test_a_damaged_checkpoint_is_reported_not_loaded(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ckpt.ResumeError, match="cannot be read"):
        ckpt.load(tmp_path)


def test_resume_command_line_reuses_the_runs_overrides(tmp_path):
    from tlkit.config.overrides import resume_command_line

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- backbone=vgg16\n- optimizer.lr=0.01\n- hydra.run.dir=x\n")
    (run_dir / "config.yaml").write_text("seed: 42\n")
    argv = resume_command_line([f"resume={run_dir}", "trainer.verbose=2"])
    assert argv == ["backbone=vgg16", "optimizer.lr=0.01", f"resume={run_dir}", "trainer.verbose=2",
                    f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]  # the run's .hydra/ stays its own
    # The command line wins for the keys it names; a sweep is left alone.
    assert "optimizer.lr=0.01" not in resume_command_line([f"resume={run_dir}", "optimizer.lr=0.02"])
    assert resume_command_line(["-m", f"resume={run_dir}"]) == ["-m", f"resume={run_dir}"]
    assert resume_command_line(["backbone=vgg16"]) == ["backbone=vgg16"]
    with pytest.raises(TlkitError, match=r"resume=.*nowhere.*no such directory"):
        resume_command_line([f"resume={tmp_path / 'nowhere'}"])


def test_history_is_cut_back_to_the_checkpointed_epochs(tmp_path):
    from tlkit.training.rundir import truncate_history

    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
    truncate_history(tmp_path, 2)
    assert (tmp_path / "history.csv").read_text() == "epoch,loss\n0,1.0\n1,0.9\n"


def test_restore_refuses_a_checkpoint_of_another_model():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ckpt.ResumeError, match="does not match"):
        ckpt.restore_variables(model.variables, [np.zeros((4, 2)), np.zeros(2)], "model variables")


@pytest.mark.slow
def test_a_relaunched_sweep_skips_finished_trials_and_resumes_the_interrupted_one(tmp_path):
    """The sweep dies (SIGKILL) inside trial 0; the same command again resumes trial 0 from its
    checkpoint and runs trial 1; a third launch trains nothing."""
    from conftest import ROOT, SMALL_VGG_DIGITS

    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "train.py", "-m", *SMALL_VGG_DIGITS, "data.max_images=100",
               "schedule.stages.0.epochs=1", "schedule.stages.1.epochs=1", "schedule.stages.2.epochs=1",
               "trainer.verbose=0", "trainer.save_model=false", "trainer.checkpoint_every_s=0", "optimizer.lr=3e-3,1e-3",
               f"hydra.sweep.dir={sweep_dir}"]

    def launch(fault=None):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        env.pop(ckpt.FAULT_ENV, None)
        if fault:
            env[ckpt.FAULT_ENV] = fault
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)

    killed = launch(fault="epoch-end:2")
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert (sweep_dir / "0" / "checkpoint.npz").exists() and not (sweep_dir / "1").exists()

    relaunched = launch()
    assert relaunched.returncode == 0, relaunched.stdout[-3000:] + relaunched.stderr[-3000:]
    assert "resuming" in (sweep_dir / "0" / "train.log").read_text()
    finished = {trial: (sweep_dir / trial / "metrics.json").read_bytes() for trial in ("0", "1")}
    assert all(json.loads(m)["status"] == "completed" and json.loads(m)["epochs"] == 3 for m in finished.values())

    again = launch()
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("already finished") == 2
    assert {trial: (sweep_dir / trial / "metrics.json").read_bytes() for trial in ("0", "1")} == finished


# Under MirroredStrategy (two logical CPUs, set before TensorFlow starts: a fresh process each).
MIRRORED_RUN = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tlkit
cfg = tlkit.as_train_config({
    "backbone": {"name": "vgg16", "weights": None},
    "data": {"source": "synthetic", "image_size": 32, "batch_size": 16, "num_images": 64, "num_classes": 3},
    "augment": {"name": "light", "flip": True, "crop_area": 0.6}, "head": {"dropout": 0.0}, "optimizer": {"lr": 3e-3},
    "schedule": {"stages": [{"name": "head", "train": "head", "epochs": 2, "patience": None},
                            {"name": "top", "train": "top:1", "epochs": 2, "lr_scale": 0.3, "patience": None}]},
    "trainer": {"verbose": 0, "strategy": "mirrored", "deterministic": True, "save_model": False,
                "checkpoint_every_s": 0},
    "doctor": {"silence": ["no-pretrained-weights"]},
})
if sys.argv[2] == "resume":
    cfg.resume = sys.argv[1]
tlkit.train(cfg, run_dir=sys.argv[1])
"""


@pytest.mark.slow
def test_resume_under_mirrored_strategy(tmp_path):
    """Killed inside the fine-tuning stage of a two-replica run, resumed: the uninterrupted result."""
    def run(run_dir, mode, fault=None):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        env.pop(ckpt.FAULT_ENV, None)
        env.pop("TF_CONFIG", None)
        if fault:
            env[ckpt.FAULT_ENV] = fault
        return subprocess.Popen([sys.executable, "-c", MIRRORED_RUN, str(run_dir), mode], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    full, killed = run(tmp_path / "full", "new"), run(tmp_path / "killed", "new", fault="epoch-end:3")
    code, output = _finish(full)
    assert code == 0, output[-3000:]
    code, output = _finish(killed)
    assert code == -9, output[-3000:]
    code, output = _finish(run(tmp_path / "killed", "resume"))
    assert code == 0, output[-3000:]
    assert "strategy mirrored, 2 replica(s)" in (tmp_path / "killed" / "train.log").read_text()
    expected, resumed = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("full", "killed"))
    assert resumed["stages"] == expected["stages"]
    assert resumed["val_loss"] == expected["val_loss"] and resumed["epochs"] == 4
