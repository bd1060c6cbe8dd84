import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Pre-scan results and file caches of the test runs stay out of the user's ~/.cache.
os.environ.setdefault("TLKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tlkit-test-cache-"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "tlkit" / "conf"  # the package data: what a wheel installs

# --- the order the files run in -----------------------------------------------------
# pytest-xdist hands whole files to its workers (--dist loadfile) in collection order (--no-loadscope-reorder in
# pyproject.toml; its default puts the files with the fewest tests last, and those are the slow end-to-end ones: the
# quickstart and the bench smoke matrix ran at the very end). Slowest first, by the seconds each file's tests took in
# one run (pytest --durations=0, 2026-12-07, rounded); files not named here follow in collection order.
SLOW_FILES = {
    "test_resume.py": 430, "test_train.py": 227, "test_backbones.py": 226, "test_sweeps.py": 218,
    "test_evaluate_export.py": 162, "test_bench_recipes.py": 154, "test_distribute.py": 144, "test_probe.py": 143,
    "test_preprocessing.py": 123, "test_multilabel.py": 122, "test_doctor.py": 101, "test_doctor_checks.py": 96,
    "test_hub.py": 95, "test_feature_cache.py": 83, "test_console.py": 75, "test_methods.py": 71,
    "test_explain.py": 66, "test_reproduce.py": 61, "test_calibration_tta.py": 49, "test_determinism.py": 37,
}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -SLOW_FILES.get(item.path.name, 0))  # stable: each file's tests keep their order


# --- composing the real config (lead) ---------------------------------------------


@pytest.fixture(scope="session")
def compose():
    """compose(overrides) -> the DictConfig train.py would get, from the real tlkit/conf/."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from tlkit.config import register_schema

    register_schema(ConfigStore.instance())

    def _compose(overrides=()):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))

    return _compose


# A small, fast, known-good setup for tests that need "a correct config" rather than the default recipe:
# VGG16 from random weights (no BatchNorm, so random features are usable) on digits at 32 px, three short
# staged stages. (It was the quickstart's setup before the quickstart showed transfer.)
SMALL_VGG_DIGITS = [
    "backbone=vgg16", "backbone.weights=null", "data=digits", "data.image_size=32", "data.batch_size=32",
    "augment=none", "schedule=staged", "optimizer.lr=3e-3", "trainer.monitor=val_loss",
    "doctor.silence=[no-pretrained-weights]",
    "schedule.stages=[{name:head,train:head,epochs:3,lr_scale:1.0,warmup_epochs:0,cosine:true,patience:2},"
    "{name:top,train:'top:2',epochs:3,lr_scale:0.3,warmup_epochs:0,cosine:true,patience:2},"
    "{name:all,train:all,epochs:3,lr_scale:0.1,warmup_epochs:0,cosine:true,patience:2}]",
]


# A sweep's folder shared by tests/test_sweeps.py (the summary, HParams events) and tests/test_tensorboard_server.py
# (what a tensorboard process serves from it): run once per test session.
@pytest.fixture(scope="session")
def wrong_weights(tmp_path_factory):
    """A real .weights.h5 file of another model: passes validation, fails at model build (WeightsError)."""
    def build(folder):
        import keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.save_weights(str(folder / "other.weights.h5"))

    return built_once(tmp_path_factory, "weights", build) / "other.weights.h5"


@pytest.fixture(scope="session")
def grid_sweep(tmp_path_factory, wrong_weights):
    """A 2-point grid whose second trial has the wrong weights file."""
    from test_sweeps import multirun

    return built_once(tmp_path_factory, "sweeps", lambda folder: multirun(
        folder / "grid", "optimizer.lr=3e-3", f"backbone.weights=null,{wrong_weights}")) / "grid"


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder `build(folder)` fills once per test run, shared by the pytest-xdist workers (each a process with its own
    session fixtures): the first to get the lock builds it, the others wait and reuse it."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    base = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-of-USER/pytest-N: every worker's
    folder, done = base / f"shared-{name}", base / f"shared-{name}.done"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder
