"""Cluster sweeps (issue 7): the shipped hydra-submitit-launcher configs and a local submitit sweep."""
import os
import subprocess
import sys

import pytest

from conftest import CONF_DIR, ROOT

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]'")


def launcher(compose_hydra, name, *overrides):
    return compose_hydra(["data=digits", f"hydra/launcher={name}", *overrides]).hydra.launcher


@pytest.fixture(scope="module")
def compose_hydra():
    """Like conftest's compose, with the hydra node (where the launcher lives)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from tlkit.config import register_schema

    register_schema(ConfigStore.instance())

    def _compose(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)

    return _compose


def test_slurm_config_has_the_documented_fields(compose_hydra):
    slurm = launcher(compose_hydra, "slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                     "hydra.launcher.timeout_min=30", "hydra.launcher.array_parallelism=2")
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.partition, slurm.gpus_per_node, slurm.timeout_min, slurm.array_parallelism) == ("gpu", 4, 30, 2)
    assert slurm.nodes == 1 and slurm.tasks_per_node == 1  # one trial per node: MirroredStrategy over its GPUs
    # tlkit's file sets defaults on top of the plugin's own config, which stays available by its name
    assert launcher(compose_hydra, "submitit_slurm").array_parallelism == 256
    assert launcher(compose_hydra, "slurm").array_parallelism == 8


def test_local_configs(compose_hydra):
    local = launcher(compose_hydra, "local")
    assert local._target_.endswith("LocalLauncher") and local.gpus_per_node == 0 and local.timeout_min == 120
    assert launcher(compose_hydra, "submitit_local")._target_.endswith("LocalLauncher")


def test_guard_allows_launcher_resources_not_job_script_lines():
    from tlkit.config.overrides import check_command_line
    from tlkit.errors import ConfigError

    check_command_line(["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=8",
                        "hydra.launcher.timeout_min=600", "hydra.launcher.array_parallelism=4",
                        "hydra.launcher.mem_gb=128", "hydra.launcher.account=lab"])
    check_command_line(["-m", "hydra/launcher=submitit_local"])
    for bad in ("hydra.launcher.setup=['touch /tmp/x']", "+hydra.launcher.additional_parameters.wrap=x",
                "hydra.launcher._target_=os.system"):
        with pytest.raises(ConfigError):
            check_command_line(["-m", bad])


def test_two_trial_sweep_through_submitit_local(tmp_path):
    """Each trial in its own submitit process; both finish and the summary lists both."""
    sweep_dir = tmp_path / "sweep"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/launcher=local", "backbone=vgg16", "backbone.weights=null",
         "data=synthetic", "data.image_size=32", "data.num_images=60", "data.num_classes=2", "augment=none",
         "schedule=frozen", "schedule.stages.0.epochs=1", "trainer.verbose=0",
         "doctor.silence=[no-pretrained-weights,random-frozen-backbone]", "optimizer.lr=1e-3,3e-3",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    assert len([p for p in (sweep_dir / ".submitit").iterdir() if p.name[0].isdigit()]) == 2  # two jobs
    for trial in ("0", "1"):
        assert (sweep_dir / trial / "metrics.json").is_file(), trial

    summary = subprocess.run([sys.executable, "-m", "tlkit", "sweep-summary", str(sweep_dir)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    assert "optimizer.lr=0.001" in summary.stdout and "optimizer.lr=0.003" in summary.stdout
    from tlkit.tools.sweep import summarize

    rows = summarize(sweep_dir)
    assert sorted(r["trial"] for r in rows) == [0, 1] and all(r["status"] == "completed" for r in rows)
