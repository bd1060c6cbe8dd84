"""Shared bits of the benchmarks: quiet TensorFlow, per-epoch times from history.csv, machine facts."""
from __future__ import annotations

import csv
import os
import platform
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def epoch_times(run_dir) -> list[float]:
    with open(os.path.join(run_dir, "history.csv")) as f:
        return [float(row["epoch_time_s"]) for row in csv.DictReader(f)]


def steady(times: list[float], skip: int = 1) -> float:
    """Median epoch time after the first `skip` epochs (tracing, first decode, cache fill)."""
    rest = times[skip:] or times
    return statistics.median(rest)


def machine() -> str:
    import keras

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Keras {keras.__version__} ({keras.backend.backend()})")
