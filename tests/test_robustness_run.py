"""A run directory that cannot be written, a disk that fills up, NaN pixels: clear errors, and the
last good model.keras survives.

Simulated, on purpose (and only these):
  * disk full: ENOSPC cannot be produced on demand here, so the writer is replaced by one
    that writes part of the file and then raises OSError(ENOSPC), which is what a full disk
    does mid-write;
  * a read-only run directory: tests run as root, and root ignores chmod, so for root tlkit's
    write probe is made to raise PermissionError(EACCES) as it would for a user; for other
    users a real chmod 0o500 folder is used. A file in the way of the run directory is real;
  * NaN pixels: files decode to uint8 and cannot hold NaN, so the data bundle is wrapped to
    put a NaN in every batch, as an array source or a user's own pipeline could. The checks
    that catch it are the doctor's `input-range` (before training) and the runtime monitor's
    `nan-loss` (during training); nothing new is added for NaN, only that model.keras survives.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tlkit
from conftest import ROOT
from tlkit.training import rundir
from tlkit.training.rundir import RunDirError, atomic_write, ensure_writable

NOISY = ["random-frozen-backbone", "no-pretrained-weights", "too-few-images-per-class", "val-too-small"]


def _disk_full_after_half(data: bytes):
    """A writer that fills half the file, then fails as a full disk does."""
    def writer(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    return writer


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- atomic writes


def test_disk_full_mid_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"the last good model")
    with pytest.raises(RunDirError) as info:
        atomic_write(target, _disk_full_after_half(b"x" * 1000))
    message = str(info.value)
    assert "disk full" in message and str(target) in message and "previous file is intact" in message
    assert target.read_bytes() == b"the last good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"], "the temporary file is removed"


def test_atomic_write_replaces_the_file_when_it_succeeds(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    atomic_write(target, lambda tmp: Path(tmp).write_text("new"))
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_metrics_json_survives_a_full_disk(tmp_path, monkeypatch):
    rundir.write_metrics(tmp_path, {"val_accuracy": 0.9})
    real_write_text = Path.write_text

    def full(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(RunDirError, match=r"disk full while writing .*metrics\.json"):
        rundir.write_metrics(tmp_path, {"val_accuracy": 0.1})
    monkeypatch.undo()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"val_accuracy": 0.9}


# --------------------------------------------------------------------------- the run directory


def test_run_dir_that_is_a_file_is_refused_before_training(tmp_path):
    in_the_way = tmp_path / "run"
    in_the_way.write_text("a file, not a folder")
    with pytest.raises(RunDirError, match=r"run directory .*run.* is a file, not a directory: nothing was trained"):
        ensure_writable(in_the_way)
    with pytest.raises(RunDirError, match="cannot be created"):
        rundir.check_can_create(in_the_way / "sub")


def test_read_only_run_dir_is_refused_before_training(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root ignores chmod: simulate what a user gets
        def refuse(directory):
            raise PermissionError(errno.EACCES, "Permission denied", str(directory / ".probe"))

        monkeypatch.setattr(rundir, "_probe_write", refuse)
    else:
        locked.chmod(0o500)
    cfg = tlkit.as_train_config({"backbone": {"name": "vgg16", "weights": None},
                                 "data": {"source": "synthetic", "image_size": 32},
                                 "schedule": {"stages": [{"name": "head"}]}})
    try:
        with pytest.raises(RunDirError) as info:
            tlkit.train(cfg, run_dir=locked / "run")
    finally:
        locked.chmod(0o700)
    message = str(info.value)
    assert "not writable" in message and str(locked / "run") in message and "nothing was trained" in message
    assert not (locked / "run" / "model.keras").exists()


def test_train_py_names_a_run_dir_it_cannot_create(tmp_path):
    (tmp_path / "file").write_text("in the way")
    result = subprocess.run(
        [sys.executable, "train.py", "data=digits", f"hydra.run.dir={tmp_path / 'file' / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "tlkit: error: the run directory" in result.stderr and "is a file, not a directory" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- real runs: the last good model survives


def _cfg(backbone="vgg16", **doctor):
    return tlkit.as_train_config({
        "backbone": {"name": backbone, "weights": None},
        "data": {"source": "synthetic", "num_images": 48, "num_classes": 2, "image_size": 32, "batch_size": 8},
        "augment": {"name": "none"},
        "schedule": {"name": "frozen", "stages": [{"name": "head", "train": "head", "epochs": 1, "patience": None}]},
        "trainer": {"verbose": 0},
        "doctor": {"silence": NOISY, **doctor},
    })


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("robust") / "run"
    tlkit.train(_cfg(), run_dir=run_dir)
    model = run_dir / "model.keras"
    assert model.is_file()
    return run_dir, _digest(model)


@pytest.fixture
def nan_pixels(monkeypatch):
    """The first image of every batch is all NaN (see the module docstring)."""
    import tensorflow as tf

    import tlkit.data
    from tlkit.data.pipeline import load_data

    def poison(dataset):
        def put_nan(images, labels):
            return tf.concat([tf.fill(tf.shape(images[:1]), float("nan")), images[1:]], axis=0), labels

        return dataset.map(put_nan)

    class PoisonedEpochs:  # what the trainer iterates: any epoch of the training data
        def __init__(self, epochs):
            self.epochs = epochs

        def epoch(self, epoch):
            return poison(self.epochs.epoch(epoch))

        def for_epochs(self, first, count):
            return poison(self.epochs.for_epochs(first, count))

    def load_with_nan(*args, **kwargs):
        data = load_data(*args, **kwargs)
        return dataclasses.replace(data, train=poison(data.train), val=poison(data.val),
                                   plain_train=poison(data.plain_train), train_epochs=PoisonedEpochs(data.train_epochs))

    monkeypatch.setattr(tlkit.data, "load_data", load_with_nan, raising=False)


def test_nan_pixels_stop_before_training_and_the_model_survives(good_run, nan_pixels):
    from tlkit.doctor.findings import DoctorError

    run_dir, digest = good_run
    with pytest.raises(DoctorError) as info:
        tlkit.train(_cfg(), run_dir=run_dir)
    assert "input-range" in str(info.value) and "NaN" in str(info.value)
    assert _digest(run_dir / "model.keras") == digest


def test_nan_pixels_during_training_stop_the_stage_and_the_model_survives(good_run, nan_pixels):
    """With the pre-flight checks off, the runtime monitor stops the stage; NaN weights are not saved.

    MobileNetV2, not VGG16: on this CPU (oneDNN) VGG16's max pooling turns NaN inputs into
    finite features (max(NaN, x) is x), so its loss stays finite and only the pre-flight
    input-range check (on by default) can see the NaN.
    """
    run_dir, digest = good_run
    result = tlkit.train(_cfg("mobilenet_v2", enabled=False), run_dir=run_dir)
    assert result.metrics["status"] == "stopped_by_doctor"
    assert [d["id"] for d in result.metrics["doctor"]["runtime"]] == ["nan-loss"]
    assert result.metrics["model_saved"] is False
    assert _digest(run_dir / "model.keras") == digest
    log = (run_dir / "train.log").read_text()
    assert "nan-loss" in log and "model.keras was not written" in log


def test_disk_full_while_saving_the_model_keeps_the_last_good_one(good_run, monkeypatch):
    import keras

    run_dir, digest = good_run

    def save_on_a_full_disk(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device", str(filepath))

    monkeypatch.setattr(keras.Model, "save", save_on_a_full_disk)
    with pytest.raises(RunDirError) as info:
        tlkit.train(_cfg(), run_dir=run_dir)
    message = str(info.value)
    assert "disk full" in message and str(run_dir / "model.keras") in message
    monkeypatch.undo()
    assert _digest(run_dir / "model.keras") == digest
    assert not [p.name for p in run_dir.iterdir() if ".tmp-" in p.name], "no temporary file left behind"
    model = tlkit.load_model(run_dir / "model.keras")
    probabilities = model.predict(np.full((1, 32, 32, 3), 128.0, np.float32), verbose=0)
    assert probabilities.shape == (1, 2) and np.isfinite(probabilities).all()
