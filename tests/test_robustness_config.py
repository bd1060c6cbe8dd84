"""Config mistakes fail fast (before TensorFlow is imported), and no override can make anything run code.

Each case runs `python -X importtime train.py ...` in a subprocess: the exit status, the
wall time (< 3 s; ~0.4-0.8 s measured here on 2 shared cores) and the import log, which
would list `tensorflow` had it been imported. tests/test_config.py covers the same mistakes
in-process; this file checks the command line a user types.

Injection: tlkit never calls hydra.utils.instantiate or imports anything by a name from a
config (grep tlkit/ for `instantiate` / `_target_`: only the guard below mentions them).
Hydra does, for its own config: on Hydra 1.3.8, `+hydra.callbacks.x._target_=os.makedirs
+hydra.callbacks.x.name=DIR` creates DIR before the task starts. train.py and `tlkit doctor`
refuse such overrides before Hydra composes (tlkit.config.overrides); each test below uses a
target that would leave a marker folder behind, and checks that it does not exist.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from tlkit.config.overrides import check_command_line, check_override_strings
from tlkit.errors import ConfigError

_TF_IMPORT_S: list = []


def tensorflow_import_s() -> float:
    """Seconds a fresh Python takes to import TensorFlow, measured once, now: a config error must come back sooner
    than TensorFlow alone would load (a ratio on the same loaded machine, not a fixed number of seconds)."""
    if not _TF_IMPORT_S:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, check=True)
        _TF_IMPORT_S.append(time.perf_counter() - started)
    return _TF_IMPORT_S[0]


def run_train(*overrides, tmp_path: Path, flags=()):
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "train.py", *flags, "data=digits", *overrides,
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TLKIT_CACHE_DIR": str(tmp_path / "cache"), "HYDRA_FULL_ERROR": "0"},
    )
    elapsed = time.perf_counter() - started
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    message = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
    return result, elapsed, imported, message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.batchsize=8", ["data.batchsize", "batchsize"]),  # unknown key
        ("+data.batchsize=8", ["data.batchsize", "batch_size"]),  # unknown key added with +: lists the real keys
        ("+seeed=3", ["seeed", "seed"]),
        ("data.batch_size=eight", ["data.batch_size", "eight"]),  # wrong type
        ("optimizer.lr=fast", ["optimizer.lr", "fast"]),
        ("schedule.stages.0.epochs=-1", ["schedule.stages.0.epochs=-1", ">= 1"]),  # out of range
        ("optimizer.lr=0", ["optimizer.lr=0.0", "> 0"]),  # LR <= 0
        ("optimizer.lr=-0.001", ["optimizer.lr=-0.001", "> 0"]),
        ("data.val_split=1.5", ["data.val_split=1.5"]),
        ("head.dropout=1.2", ["head.dropout=1.2"]),
        ("backbone=resnet5", ["backbone/resnet5", "resnet50", "vgg16", "efficientnet_b0"]),  # misspelt group option
        ("optimizer=adamm", ["optimizer/adamm", "adam", "adamw", "sgd"]),
        ("schedule.bn=sometimes", ["schedule.bn", "frozen", "train"]),  # misspelt nested enum: the choices
        ("data.on_bad_file=ignore", ["data.on_bad_file", "skip", "error"]),
        ("backbone.preprocess=imagenet", ["backbone.preprocess", "caffe", "torch"]),
    ],
)
def test_config_errors_fail_fast_before_tensorflow(override, expected, tmp_path):
    result, elapsed, imported, message = run_train(override, tmp_path=tmp_path)
    assert result.returncode != 0, message
    for words in expected:
        assert words in message, (words, message)
    assert "Traceback" not in message, "a config mistake is a message, not a stack trace"
    assert "tensorflow" not in imported and "keras" not in imported
    assert elapsed < tensorflow_import_s(), f"{override}: {elapsed:.2f}s, importing TensorFlow {tensorflow_import_s():.2f}s"
    assert not (tmp_path / "run" / "model.keras").exists()


# --------------------------------------------------------------------------- injection


def _marker_overrides(tmp_path: Path):
    """Overrides that, if Hydra honoured them, would create a marker folder (harmless, observable)."""
    marker = tmp_path / "marker"
    evil = tmp_path / "evil_conf"  # a config folder whose YAML would make Hydra run the target
    (evil / "recipe").mkdir(parents=True, exist_ok=True)
    (evil / "config.yaml").write_text(f"hydra:\n  callbacks:\n    evil:\n      _target_: os.makedirs\n"
                                      f"      name: {marker}\n")
    (evil / "recipe" / "evil.yaml").write_text(f"# @package _global_\nhydra:\n  callbacks:\n    evil:\n"
                                               f"      _target_: os.makedirs\n      name: {marker}\n")
    return marker, [
        [f"+hydra.callbacks.evil._target_=os.makedirs", f"+hydra.callbacks.evil.name={marker}"],
        [f"+hydra.callbacks={{evil:{{_target_:os.makedirs,name:{marker}}}}}"],  # the target inside a value
        [f"+optimizer._target_=os.makedirs", f"+optimizer.name={marker}"],
        [f"+_target_=os.makedirs", f"+name={marker}"],
        [f"++hydra.callbacks.evil._target_=os.makedirs", f"++hydra.callbacks.evil.name={marker}"],
        [f"+hydra.job_logging.handlers.evil={{class:os.makedirs,name:{marker}}}"],  # dictConfig imports `class`
        [f"+data.extra=[{{_target_:os.makedirs,name:{marker}}}]"],
        [f"+hydra.launcher._target_=os.makedirs"],
        [f"hydra.searchpath=[file://{evil}]", "recipe=evil"],  # lets an outside YAML set hydra.callbacks
        ["backbone@hydra.callbacks=vgg16"],  # a config group packaged into hydra's own config
        ["hydra.job.env_set.LD_PRELOAD=/tmp/evil.so"],
        ["--experimental-rerun", str(tmp_path / "config.pickle")],  # unpickling runs code
        ["--config-dir", str(evil)],  # its config.yaml replaces tlkit's and sets hydra.callbacks
        ["hydra.searchpath=[pkg://hydra.conf]"],  # a package's configs: tlkit cannot check them
    ]


def test_every_injection_override_is_refused_by_the_guard(tmp_path):
    _, cases = _marker_overrides(tmp_path)
    for argv in cases:
        with pytest.raises(ConfigError) as info:
            check_command_line(argv)
        message = str(info.value)
        assert "tlkit" in message or "hydra" in message, message


def test_ordinary_overrides_pass_the_guard():
    check_command_line([
        "backbone=resnet50", "data=folder", "data.path=/x", "optimizer.lr=0.01", "schedule.stages.0.epochs=3",
        "hydra.run.dir=/tmp/out", "hydra.job.chdir=false", "hydra/job_logging=disabled", "~hydra.callbacks",
        "doctor.silence=[small-batch]", "-m", "optimizer.lr=0.1,0.01", "--cfg", "job",
    ])


@pytest.mark.parametrize("index", [*range(9), 12])  # those that could run code (8, 12: a config folder), each through a real train.py
def test_train_py_refuses_injected_targets_and_nothing_runs(index, tmp_path):
    marker, cases = _marker_overrides(tmp_path)
    flags, overrides = (cases[index][:2], cases[index][2:]) if cases[index][0] == "--config-dir" else ((), cases[index])
    result, elapsed, imported, message = run_train(*overrides, tmp_path=tmp_path, flags=flags)
    assert result.returncode == 2, message
    assert message.startswith("tlkit: error:") and "is not valid" in message, message
    assert not marker.exists(), "the injected target ran"
    assert not (tmp_path / "run").exists(), "refused before Hydra created the run directory"
    assert "tensorflow" not in imported and elapsed < tensorflow_import_s()


def test_without_the_guard_hydra_would_run_the_target(tmp_path):
    """Why the guard exists: Hydra 1.3 instantiates hydra.callbacks itself (the marker appears).

    Runs a copy of train.py without the guard call; optimizer.lr=0 makes tlkit stop right
    after Hydra's callbacks ran, before any training.
    """
    source = (ROOT / "tlkit" / "cli" / "train_command.py").read_text()  # what train.py and `tlkit train` run
    assert "check_command_line(sys.argv[1:])" in source
    unguarded = tmp_path / "unguarded_train.py"
    unguarded.write_text(source.replace("check_command_line(sys.argv[1:])", "[]"))
    marker = tmp_path / "marker"
    result = subprocess.run(
        [sys.executable, str(unguarded), "data=digits", "optimizer.lr=0", f"hydra.run.dir={tmp_path / 'run'}",
         "+hydra.callbacks.evil._target_=os.makedirs", f"+hydra.callbacks.evil.name={marker}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2 and "optimizer.lr" in result.stderr, result.stderr[-2000:]
    assert marker.is_dir(), "Hydra no longer instantiates hydra.callbacks from overrides: revisit tlkit.config.overrides"


def test_doctor_refuses_injected_targets(tmp_path, capsys):
    from tlkit.cli.main import main

    marker = tmp_path / "marker"
    code = main(["doctor", "--config-only", "data=digits", "+hydra.callbacks.evil._target_=os.makedirs",
                 f"+hydra.callbacks.evil.name={marker}"])
    assert code == 2 and not marker.exists()
    assert "_target_" in capsys.readouterr().err


def test_guard_names_the_key_and_what_is_allowed():
    with pytest.raises(ConfigError) as info:
        check_override_strings(["+hydra.callbacks.x.level=1"])
    assert "hydra.callbacks.x.level" in str(info.value) and "hydra.run.dir" in str(info.value)
    with pytest.raises(ConfigError, match=r"optimizer\._target_='os\.system'.*no _target_ keys"):
        check_override_strings(["+optimizer._target_=os.system"])


def test_tlkit_never_instantiates_from_a_config():
    """No hydra.utils.instantiate / get_class / import by name anywhere in tlkit (the guard only names them)."""
    offenders = []
    for path in (ROOT / "tlkit").rglob("*.py"):
        if path.name == "overrides.py":
            continue
        text = path.read_text()
        for needle in ("instantiate(", "get_class(", "get_method(", "_target_", "locate("):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders
