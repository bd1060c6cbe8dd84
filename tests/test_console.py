"""The console says only what matters: TensorFlow's C++ start-up lines stay out of it (tlkit/console.py).

Each child process gets this checkout on PYTHONPATH and no TF_CPP_MIN_LOG_LEVEL (conftest sets one for the test
process; a user's shell has none).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tlkit.console import STARTUP_LINES, is_startup_line

ROOT = Path(__file__).resolve().parents[1]
# What TensorFlow 2.21 prints on this kind of machine (CPU only, x86) before anything else.
SAMPLES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796231569.188143   30823 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796231569.188557   30823 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1796231569.241020   30823 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796234981.585824   21740 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
]
NOISE = re.compile(r"oneDNN custom operations|Could not find cuda drivers|failed call to cuInit|"
                   r"This TensorFlow binary is optimized|absl::InitializeLog")


def _env(**extra):
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "TLKIT_TF_LOGS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**env, **extra}


def _python(code: str, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


def test_the_startup_lines_are_recognised_and_nothing_else():
    assert all(is_startup_line(line) for line in SAMPLES)
    for line in ["E0000 00:00:1796234981.585824   21740 cuda_dnn.cc:52] Could not create cudnn handle",
                 "Traceback (most recent call last):", "tlkit: error: data.path does not exist",
                 "I0000 00:00:1796231569.188143   30823 port.cc:153] something else entirely",
                 "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR and more"]:
        assert not is_startup_line(line), line
    assert len(STARTUP_LINES) >= 6


def test_the_filter_drops_only_the_startup_lines_and_forwards_the_rest():
    result = _python(f"""
        import os
        from tlkit.console import _StderrFilter
        with _StderrFilter():
            os.write(2, b"kept before\\n" + {SAMPLES[1].encode()!r} + b"\\nkept after\\n")
            os.write(2, {SAMPLES[0].encode()!r} + b"\\nno newline at the end")
        os.write(2, b"\\nafter the filter\\n")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "kept before\nkept after\nno newline at the end\nafter the filter\n"


def test_a_user_set_log_level_is_kept_and_tlkit_does_not_import_tensorflow():
    code = "import os, sys, tlkit; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), 'tensorflow' in sys.modules)"
    assert _python(code, TF_CPP_MIN_LOG_LEVEL="0").stdout.split() == ["0", "False"]
    assert _python(code).stdout.split() == ["2", "False"]
    assert _python(code, TLKIT_TF_LOGS="1").stdout.split() == ["None", "False"]


def _noise(stderr: str) -> list:
    return [re.sub(r"[\d:.]+\s+\d+ ", "", line) for line in stderr.splitlines() if NOISE.search(line)]


def test_tlkit_tf_logs_1_leaves_tensorflow_logging_untouched():
    """TLKIT_TF_LOGS=1: the same start-up lines as a plain `import keras` without tlkit, and the filter is off."""
    code = "import {first}; import keras; print(keras.backend.backend())"
    plain = _python(code.format(first="sys"))
    untouched = _python(code.format(first="tlkit"), TLKIT_TF_LOGS="1")
    quiet = _python(code.format(first="tlkit"))
    assert plain.returncode == untouched.returncode == quiet.returncode == 0, quiet.stderr
    assert _noise(untouched.stderr) == _noise(plain.stderr)
    assert _noise(quiet.stderr) == []
    if quiet.stdout.strip() == "tensorflow":
        assert _noise(plain.stderr), "TensorFlow printed no start-up lines here: nothing to compare"


def test_train_py_prints_no_tensorflow_startup_lines(tmp_path):
    """A real (tiny) `python train.py` run: stderr holds none of TensorFlow's start-up lines."""
    result = subprocess.run(
        [sys.executable, "train.py", "backbone=vgg16", "backbone.weights=null", "data=synthetic", "data.image_size=32",
         "data.num_images=40", "data.num_classes=2", "data.batch_size=8", "schedule=full",
         "schedule.stages=[{name:all,train:all,epochs:1}]", "doctor.enabled=false", "trainer.verbose=0",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, env=_env(PYTHONWARNINGS="default"), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "model.keras").exists()
    assert _noise(result.stderr) == [], result.stderr[-3000:]
    assert "finished in" in result.stdout  # tlkit's own log still reaches the console
    # Every warning shown (PYTHONWARNINGS=default, more than a user's default): none but tlkit's filters leave.
    assert "Warning:" not in result.stderr, result.stderr[-3000:]


# tlkit doctor's own output: the recipe's decisions, the report line, the findings and their fixes.
DOCTOR_LINE = re.compile(r"recipe: .*|  \S.*|tlkit doctor: .*|no findings: .*|  \[(info|warning|error)\] .*|      fix: .*")


def test_doctor_on_a_correct_setup_prints_only_its_own_report(tmp_path):
    """`tlkit doctor` on a small correct set-up (VGG16, random weights, digits, 32 px: data and model built): stderr
    is empty and every stdout line is the doctor's, with every Python warning shown (PYTHONWARNINGS=default)."""
    result = subprocess.run(
        [sys.executable, "-m", "tlkit", "doctor", "backbone=vgg16", "backbone.weights=null", "data=digits",
         "data.image_size=32", "data.max_images=200", "augment=none", "schedule=staged", "optimizer.lr=3e-3",
         "doctor.silence=[no-pretrained-weights]"],
        cwd=tmp_path, env=_env(PYTHONWARNINGS="default"), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr[-3000:]
    assert "tlkit doctor: vgg16, schedule=staged, data=digits" in result.stdout
    foreign = [line for line in result.stdout.splitlines() if line and not DOCTOR_LINE.fullmatch(line)]
    assert foreign == [], result.stdout


def test_library_warnings_are_filtered_with_a_reason_and_kept_with_tlkit_tf_logs():
    """Each filter names why; the warning it targets, raised where Keras raises it, is gone after `import tlkit`
    and shown with TLKIT_TF_LOGS=1 (which keeps everything TensorFlow and Keras say)."""
    from tlkit.console import LIBRARY_WARNINGS

    assert LIBRARY_WARNINGS and all(len(reason) > 40 for *_, reason in LIBRARY_WARNINGS)
    code = """
        import warnings, tlkit
        warnings.simplefilter("default")  # a user who shows every warning...
        import tlkit.console
        tlkit.console.quiet_library_warnings()  # ...still gets tlkit's filters first
        warnings.warn_explicit("__array__ implementation doesn't accept a copy keyword, so passing copy=False "
                               "failed.", DeprecationWarning, "core.py", 172, module="keras.src.backend.tensorflow.core")
        warnings.warn_explicit("a warning of the user's own", DeprecationWarning, "mine.py", 1, module="mine")
    """
    quiet, kept = _python(code), _python(code, TLKIT_TF_LOGS="1")
    assert quiet.returncode == kept.returncode == 0, quiet.stderr + kept.stderr
    assert "copy keyword" not in quiet.stderr and "of the user's own" in quiet.stderr
    assert "copy keyword" in kept.stderr
