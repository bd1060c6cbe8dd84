"""TensorFlow's C++ start-up logging kept out of tlkit's console: one place, reached before TensorFlow is imported.

Every TensorFlow process prints, before anything else, lines nobody using tlkit can act on:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    I0000 ... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions ...
    To enable the following instructions: AVX2 AVX512F ..., in other operations, rebuild TensorFlow with ...
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: ...

The facade (tlkit/__init__.py) calls `quiet_tensorflow_startup()` first, so train.py, the `tlkit` command and
every library user reach it before any tlkit module imports Keras or TensorFlow. It

- sets TF_CPP_MIN_LOG_LEVEL=2 unless the user set it (C++ INFO and WARNING off, errors kept). Since TensorFlow
  2.17 or so that no longer reaches the lines above: TensorFlow logs them through absl before absl's logging is
  initialised, straight to file descriptor 2, whatever the level. So, in addition,
- the first `import tensorflow` (direct, or through `import keras`) runs with file descriptor 2 passed through a
  filter that drops exactly the lines of STARTUP_LINES and forwards everything else as it comes (a real error
  during the import is still seen). Inside that window TensorFlow also lists its GPUs (where the cuInit error is
  printed); tlkit's runtime and distribute modules list them right after anyway.

Later, TensorFlow Lite prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." each time an interpreter is
built: tflite_lines_filtered() drops exactly that line around it (tlkit.tools.export.TFLiteRunner). And the Python
warnings of LIBRARY_WARNINGS (Keras/TensorFlow warnings a tlkit user cannot act on, each with its reason) are
filtered from `import tlkit` on (quiet_library_warnings); a user's own warnings and every other library's stay.

TF_ENABLE_ONEDNN_OPTS is deliberately left alone: it changes the numerics, not just the message.
TLKIT_TF_LOGS=1 leaves TensorFlow's logging and Keras's warnings untouched (no variable set, no filter). Stdlib
only: the lowest layer.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import threading
import warnings

TF_LOGS_ENV = "TLKIT_TF_LOGS"

# A C++ log line's head: absl's "I0000 00:00:1796231569.188143   30823 " or the older
# "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/", then the source file.
_HEAD = r"(?:[IWE]\d{4} [\d:. ]+\d+ |\d{4}-\d\d-\d\d [\d:.]+: [IWE] )(?:\S*/)?"

# The start-up lines dropped from the first `import tensorflow`, each matched on the whole line.
STARTUP_LINES = tuple(re.compile(pattern) for pattern in (
    # absl's notice that it is not initialised yet (TensorFlow never initialises it for Python).
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    # oneDNN is on by default on x86: informational, and the user's only lever changes the results.
    _HEAD + r"port\.cc:\d+\] oneDNN custom operations are on\..*",
    # A CPU-only machine (or a CUDA build without a driver): tlkit's own log says "device cpu".
    _HEAD + r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.",
    _HEAD + r"cuda_(?:platform|driver|executor)\.cc:\d+\] failed call to cuInit: .*",
    # Advice to rebuild TensorFlow from source (two lines).
    _HEAD + r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU instructions in "
    r"performance-critical operations\.",
    r"To enable the following instructions: .*, in other operations, rebuild TensorFlow with the appropriate "
    r"compiler flags\.",
    # CUDA builds registering their plugins twice (XLA and TensorFlow each try): harmless.
    _HEAD + r"cuda_(?:dnn|fft|blas)\.cc:\d+\] Unable to register cu(?:DNN|FFT|BLAS) factory: Attempting to register "
    r"factory for plugin cu(?:DNN|FFT|BLAS) when one has already been registered",
))

# Lines TensorFlow Lite's C++ prints later, each time an interpreter is built (export's check, TFLiteRunner).
TFLITE_LINES = (
    # XNNPACK is TFLite's default CPU delegate: a notice that it is on, nothing to act on.
    re.compile(r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."),
)

# Python warnings from Keras/TensorFlow that nobody using tlkit can act on, each with why it is filtered:
# (category, message regex, module regex, reason). Looked for on tlkit's commands (doctor, train, evaluate,
# predict, export) with every warning shown (warnings.simplefilter("always")): this is the one that fires.
LIBRARY_WARNINGS = (
    (DeprecationWarning, r"__array__ implementation doesn't accept a copy keyword", r"keras\.",
     "numpy 2 asks TensorFlow's EagerTensor.__array__ for a `copy` argument it does not take yet; Keras's "
     "convert_to_numpy (np.array on a tensor) triggers it on every batch it converts (870 times in a two-epoch "
     "run): TensorFlow's to fix, nothing a caller changes"),
)

_installed = False


def tensorflow_logs_wanted() -> bool:
    return os.environ.get(TF_LOGS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_startup_line(line: str) -> bool:
    return any(pattern.fullmatch(line.rstrip("\r\n")) for pattern in STARTUP_LINES)


def quiet_library_warnings() -> None:
    """The LIBRARY_WARNINGS filters (idempotent: warnings.filterwarnings drops a duplicate); none with TLKIT_TF_LOGS=1."""
    if tensorflow_logs_wanted():
        return
    for category, message, module, _reason in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


@contextlib.contextmanager
def tflite_lines_filtered():
    """File descriptor 2 without TFLITE_LINES while TensorFlow Lite builds an interpreter (all kept with TLKIT_TF_LOGS=1)."""
    if tensorflow_logs_wanted():
        yield
        return
    with _StderrFilter(TFLITE_LINES):
        yield


def quiet_tensorflow_startup() -> None:
    """Idempotent; the start-up filter is a no-op with TLKIT_TF_LOGS=1 or once TensorFlow is imported (too late)."""
    global _installed
    quiet_library_warnings()
    if _installed or tensorflow_logs_wanted() or "tensorflow" in sys.modules:
        return
    _installed = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.meta_path.insert(0, _FirstTensorFlowImport())


class _FirstTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: hands the real `tensorflow` spec back with its loader run under the stderr filter."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders answer from here on
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_resource_reader, is_package, ...: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _StderrFilter():
            self._loader.exec_module(module)
            try:
                module.config.list_physical_devices("GPU")  # where a driverless CUDA build logs cuInit's failure
            except Exception:  # noqa: BLE001 - never fail an import over a log line
                pass


class _StderrFilter:
    """File descriptor 2 through a pipe; a thread forwards each line to the real stderr unless is_startup_line."""

    def __init__(self, patterns=STARTUP_LINES):
        self._patterns = patterns

    def __enter__(self):
        self._saved = None
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            self._read, write = os.pipe()
            os.dup2(write, 2)
            os.close(write)
        except (OSError, AttributeError, ValueError):  # no usable fd 2 (pythonw, a closed stderr): no filter
            if self._saved is not None:
                os.close(self._saved)
                self._saved = None
            return self
        self._thread = threading.Thread(target=self._forward, name="tlkit-tf-startup-filter", daemon=True)
        self._thread.start()
        return self

    def _forward(self):
        with os.fdopen(self._read, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                self._write(lines, end=b"\n")
            if pending:
                self._write([pending], end=b"")

    def _write(self, lines, end):
        kept = [line + end for line in lines
                if not any(p.fullmatch(line.decode("utf-8", "replace").rstrip("\r")) for p in self._patterns)]
        data = b"".join(kept)
        while data:
            data = data[os.write(self._saved, data):]

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the thread reads to the end and stops
        self._thread.join(timeout=10)
        os.close(self._saved)
        return False
