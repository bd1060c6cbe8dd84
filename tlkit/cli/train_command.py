"""`tlkit train [overrides]`, which is `python train.py [overrides]`: compose tlkit's configs (pkg://tlkit.conf,
plus the user's --config-dir), check the command line (before Hydra composes, before TensorFlow starts), hand
typed objects to tlkit. An entry point like tlkit.cli.main: it may use Hydra; the library does not.
"""
import errno
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import tlkit.console  # noqa: F401  first of tlkit: keeps TensorFlow's C++ start-up lines out of the console
from tlkit.config import as_train_config, register_schema
from tlkit.config.overrides import check_command_line, resume_command_line, run_dir_override
from tlkit.training.distribute import is_chief
from tlkit.errors import TlkitError
from tlkit.training.rundir import check_can_create, has_progress

log = logging.getLogger("tlkit")


@hydra.main(config_path="pkg://tlkit.conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float:
    """Train; returns the final val_accuracy (val_map with task=multilabel), what a sweep maximizes
    (hparams_search=optuna; tlkit.training.metrics_record.sweep_score)."""
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        return run(cfg, hydra_config.runtime.output_dir)
    # In a sweep one failing trial never stops the others: failure.json in its run dir, NaN
    # returned (Optuna records the trial as FAIL; a grid sweep goes on to the next point).
    started = time.time()
    try:
        return run(cfg, hydra_config.runtime.output_dir)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - any error of one trial
        from tlkit.tools.sweep import write_failure

        path = write_failure(hydra_config.runtime.output_dir, error, time.time() - started)
        log.error("trial %s failed: %s: %s (traceback in %s)", hydra_config.job.num, type(error).__name__,
                  error, path)
        return float("nan")
    finally:
        if "keras" in sys.modules:  # trials share this process: each starts from a clean Keras state
            sys.modules["keras"].backend.clear_session()


def run(cfg: DictConfig, run_dir: str) -> float:
    from tlkit.recipe.preflight import check_run

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        config = as_train_config(cfg)  # keys a leading + added that the schema lacks fail here
        if multirun:  # a relaunched sweep (same hydra.sweep.dir): finished trials are skipped,
            from tlkit.tools.sweep import FAILURE_FILE  # interrupted ones resume, failed ones run again

            (Path(run_dir) / FAILURE_FILE).unlink(missing_ok=True)
            if has_progress(run_dir):
                config.resume = run_dir
        checked = check_run(config)  # before TensorFlow is imported: a bad value costs a second, not a model build
        from tlkit.cli.runner import train

        result = train(config, run_dir, checked=checked)
    except TlkitError as error:
        if multirun:
            raise
        print(f"tlkit: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        if multirun or error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"tlkit: error: disk full while writing {error.filename or 'the run directory'}: {error}. "
              "Files tlkit writes atomically (model.keras, metrics.json) keep their last complete version.",
              file=sys.stderr)
        sys.exit(2)
    from tlkit.training.metrics_record import sweep_score

    return sweep_score(result.metrics)[1]


def main(argv: Optional[List[str]] = None) -> None:
    """The command line of `tlkit train` / `python train.py`: the guard, resume=, then Hydra (which exits)."""
    if argv is not None:
        sys.argv[1:] = list(argv)
    try:
        # Before Hydra composes: Hydra itself instantiates what hydra.callbacks name (code named by a string).
        overrides = check_command_line(sys.argv[1:])
        # resume=RUN_DIR: the run's own overrides and directory (tlkit/config/overrides.py).
        sys.argv[1:] = resume_command_line(sys.argv[1:])
        overrides = check_command_line(sys.argv[1:])
        if not {"-m", "--multirun"} & set(sys.argv[1:]):
            check_can_create(run_dir_override(overrides))  # before Hydra creates it (its error is a stack trace)
        if not is_chief():  # a multi-worker run (TF_CONFIG): Hydra's .hydra/ and train.log are the chief's alone
            sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    except TlkitError as error:
        print(f"tlkit: error: {error}", file=sys.stderr)
        sys.exit(2)
    register_schema(ConfigStore.instance())
    hydra_main()


if __name__ == "__main__":
    main()
