"""Sweeps (issue 4): Optuna and grid multiruns, a failing trial, the summary, TensorBoard HParams."""
import csv
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import CONF_DIR, ROOT, SMALL_VGG_DIGITS

# Tiny trials: 100 digits at 32 px, random VGG16, one epoch per stage of the staged schedule's
# three stages (the Optuna space sets schedule.stages.1.train, so stage 1 must exist).
# The search space sets optimizer.lr and augment: they must not be fixed on the command line.
TINY = [*[o for o in SMALL_VGG_DIGITS if not o.startswith(("optimizer.lr=", "augment="))], "data.max_images=100", "data.image_size=32", "schedule.stages.0.epochs=1",
        "schedule.stages.1.epochs=1", "schedule.stages.2.epochs=1", "trainer.verbose=0"]


def multirun(sweep_dir, *overrides):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "train.py", "-m", *TINY, *overrides, f"hydra.sweep.dir={sweep_dir}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def summary_cli(sweep_dir):
    proc = subprocess.run([sys.executable, "-m", "tlkit", "sweep-summary", str(sweep_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_grid_sweep_with_a_failing_trial(grid_sweep, wrong_weights):
    """A 2-point grid: the trial with the wrong weights file fails, the other finishes, the summary has both."""
    from tlkit.tools.sweep import summarize

    sweep_dir = grid_sweep
    failure = json.loads((sweep_dir / "1" / "failure.json").read_text())
    assert failure["error_type"] == "WeightsError" and "do not fit" in failure["message"]
    assert "Traceback" in failure["traceback"]
    assert (sweep_dir / "0" / "metrics.json").is_file() and not (sweep_dir / "0" / "failure.json").exists()

    out = summary_cli(sweep_dir)
    rows = summarize(sweep_dir)
    assert [r["trial"] for r in rows] == [0, 1]  # the finished trial first
    assert rows[0]["status"] == "completed" and rows[0]["val_accuracy"] is not None and rows[0]["epochs"] == 3
    assert rows[1]["status"] == "failed" and rows[1]["failed"] and rows[1]["error"].startswith("WeightsError")
    assert "**FAILED**" in out and f"backbone.weights={wrong_weights}" in out
    for name in ("sweep_summary.md", "sweep_summary.csv", "sweep_summary.png"):
        assert (sweep_dir / name).stat().st_size > 0
    with open(sweep_dir / "sweep_summary.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [t["status"] for t in table] == ["completed", "failed"]
    assert table[0]["backbone.weights"] == "null"  # one column per swept parameter

    # TensorBoard HParams of the finished trial: hyperparameters and final metrics in one event file
    hparams, scalars = read_hparams_events(sweep_dir / "0" / "tensorboard" / "hparams")
    assert hparams["backbone"] == "vgg16" and hparams["weights"] == "null" and hparams["unfreeze"] == "top:2"
    assert math.isclose(hparams["lr"], 3e-3)
    metrics = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert math.isclose(scalars["val_accuracy"], metrics["val_accuracy"], rel_tol=1e-6)


def test_optuna_sweep_two_trials(tmp_path):
    from tlkit.tools.sweep import summarize

    sweep_dir = tmp_path / "optuna"
    multirun(sweep_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=2")
    results = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_params" in results and "optimizer.lr" in results
    rows = summarize(sweep_dir)
    assert sorted(r["trial"] for r in rows) == [0, 1] and not any(r["failed"] for r in rows)
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"]
    for row in rows:  # every trial got a value for each parameter of the shipped search space
        assert {"optimizer", "optimizer.lr", "head.dropout", "schedule.stages.1.train", "augment"} <= set(row["params"])
    out = summary_cli(sweep_dir)
    assert "optimizer.lr=" in out and (sweep_dir / "sweep_summary.png").is_file()


def read_hparams_events(folder):
    """({hparam: value}, {scalar tag: value}) from the event files of a log_hparams folder."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams, scalars = {}, {}
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        for key, item in data.session_start_info.hparams.items():
                            kind = item.WhichOneof("kind")
                            hparams[key] = getattr(item, kind)
                elif value.HasField("tensor"):
                    scalars[value.tag] = float(tf.make_ndarray(value.tensor))
    return hparams, scalars


def test_log_hparams_without_training(tmp_path):
    from tlkit.config import as_train_config
    from tlkit.tools.sweep import log_hparams

    cfg = as_train_config({"backbone": {"name": "vgg16", "weights": None}, "optimizer": {"name": "sgd", "lr": 0.01}})
    log_hparams(tmp_path, cfg, {"val_accuracy": 0.5, "val_loss": 1.25, "epochs": 4, "status": "completed",
                                "test_accuracy": None})
    hparams, scalars = read_hparams_events(tmp_path / "tensorboard" / "hparams")
    assert hparams["optimizer"] == "sgd" and math.isclose(hparams["lr"], 0.01) and hparams["weights"] == "null"
    assert scalars == {"val_accuracy": 0.5, "val_loss": 1.25, "epochs": 4.0}


def test_summary_of_hand_made_trials(tmp_path):
    """Ranking, failed and unfinished trials, log-x for lr; no training."""
    from tlkit.tools.sweep import summarize, write_summary

    def trial(num, lr, metrics=None, failure=None):
        folder = tmp_path / str(num)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- augment=light\n")
        if metrics:
            (folder / "metrics.json").write_text(json.dumps(metrics))
        if failure:
            (folder / "failure.json").write_text(json.dumps(failure))

    trial(0, 1e-4, {"status": "completed", "val_accuracy": 0.6, "val_loss": 1.0, "epochs": 3})
    trial(1, 1e-3, {"status": "completed", "val_accuracy": 0.8, "val_loss": 0.5, "epochs": 5})
    trial(2, 1e-2, failure={"error_type": "ValueError", "message": "boom", "wall_time_s": 1.0})
    trial(3, 1e-5)  # killed before metrics.json
    rows = summarize(tmp_path)
    assert [(r["trial"], r["status"]) for r in rows] == [(1, "completed"), (0, "completed"), (2, "failed"),
                                                          (3, "incomplete")]
    paths = write_summary(tmp_path)
    assert set(paths) == {"md", "csv", "png"}
    text = paths["md"].read_text()
    assert text.index("| 1 | 1 |") < text.index("| 2 | 0 |") and "ValueError: boom" in text
    header = paths["csv"].read_text().splitlines()[0]
    assert header.endswith("optimizer.lr")  # augment=light is the same everywhere: not a swept parameter


def test_multilabel_trials_are_ranked_by_val_map(tmp_path):
    """task=multilabel: what ranks the trials (and what train.py hands Optuna) is val_map, not the harsh exact-match
    accuracy: trial 0 has the better accuracy but the worse mAP."""
    from tlkit.training.metrics_record import sweep_score
    from tlkit.tools.sweep import summarize, write_summary

    for num, (accuracy, mean_ap) in enumerate([(0.5, 0.70), (0.3, 0.85)]):
        folder = tmp_path / str(num)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={10.0 ** -(num + 3)}\n")
        metrics = {"status": "completed", "monitor": "val_map", "val_accuracy": accuracy, "val_map": mean_ap,
                   "val_loss": 0.3, "epochs": 2}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    assert sweep_score(metrics) == ("val_map", 0.85)
    assert sweep_score({"val_accuracy": 0.5, "val_loss": 1.0}) == ("val_accuracy", 0.5)
    rows = summarize(tmp_path)
    assert [r["trial"] for r in rows] == [1, 0] and rows[0]["score"] == 0.85
    paths = write_summary(tmp_path)
    text = paths["md"].read_text()
    assert "ranked by val_map" in text and "| val_map |" in text
    assert paths["csv"].read_text().splitlines()[0].startswith("rank,trial,status,val_map,val_accuracy")


def test_sweeper_overrides_pass_the_guard_and_instantiate_keys_do_not():
    from tlkit.config.overrides import check_command_line
    from tlkit.errors import ConfigError

    check_command_line(["-m", "hparams_search=optuna", "hydra/sweeper=optuna", "hydra/sweeper/sampler=random",
                        "hydra.sweeper.n_trials=5", "hydra.sweeper.sampler.seed=1", "hydra.sweeper.direction=minimize",
                        "optimizer.lr=tag(log,interval(1e-4,1e-2))"])
    for bad in ("hydra.sweeper.sampler._target_=os.system", "hydra.sweeper.custom_search_space=os.getcwd",
                "hydra.sweeper.sampler={_target_: os.system}", "hydra.sweeper.storage=sqlite:///x.db",
                "hydra.sweeper.params.optimizer=choice(adam)"):
        with pytest.raises(ConfigError):
            check_command_line(["-m", bad])


def test_shipped_search_space_composes(compose):
    import yaml

    compose(["hparams_search=optuna"])  # the group exists and composes with the schema

    space = yaml.safe_load((CONF_DIR / "hparams_search" / "optuna.yaml").read_text())
    params = space["hydra"]["sweeper"]["params"]
    assert space["hydra"]["sweeper"]["direction"] == "maximize"
    assert set(params) == {"optimizer", "optimizer.lr", "head.dropout", "schedule.stages.1.train", "augment"}
    # every unfreeze choice is valid for every backbone (the smallest has more than 2 blocks)
    from tlkit.backbones import all_specs

    assert min(len(s.block_names) for s in all_specs()) > 2


def test_hparams_include_the_fine_tuning_methods(compose):
    """A sweep over the issue-9 methods is compared in TensorBoard's HParams tab by these keys."""
    import tlkit
    from tlkit.tools.sweep import hparams_of

    cfg = tlkit.as_train_config(compose(["regularizer=l2sp", "loss.label_smoothing=0.1", "schedule.lr_decay=0.7",
                                         "augment.cutmix=1.0", "optimizer.ema=true"]))
    hparams = hparams_of(cfg)
    assert hparams["regularizer"] == "l2sp" and hparams["label_smoothing"] == 0.1 and hparams["lr_decay"] == 0.7
    assert hparams["cutmix"] == 1.0 and hparams["ema"] is True
    assert all(isinstance(v, (bool, int, float, str)) for v in hparams.values())
