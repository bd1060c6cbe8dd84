"""Per-epoch checkpoints, and resuming a run from its last completed epoch.

RUN_DIR/checkpoint.npz is one file, replaced atomically (temporary file, fsync, rename)
after every epoch, so a kill at any moment, even during the write, leaves the previous
complete checkpoint. It holds everything the rest of the run depends on:

- every model variable (weights, BatchNorm statistics, dropout seed states),
- the stage's optimizer variables (step count, moments: the LR schedule resumes mid-way),
- where the run stands: stage index, epochs done in it, whether it already ended
  (early stopping), the finished stages' records, the best-epoch tracker and the runtime
  monitor, and the best epoch's weights (of the stage, and of the run when an earlier stage holds it).

The training data of epoch e is a pure function of (seed, e) (tlkit.data.pipeline.TrainEpochs,
tlkit.training.feature_cache.FeatureBatches), so with trainer.deterministic a resumed run writes the
same metrics.json as an uninterrupted one. The file is removed when the run completes.
"""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

import tlkit.training.rundir as rundir
from tlkit.errors import TlkitError

log = logging.getLogger("tlkit.train")
CHECKPOINT_FILE = rundir.CHECKPOINT_FILE
FORMAT_VERSION = 1
# Keys that may differ between the interrupted run and its resumption.
IGNORED_ON_RESUME = {"resume", "trainer.verbose"}
FAULT_ENV = "TLKIT_FAULT"  # tests only: "POINT:EPOCH" kills this process there (see maybe_fault)


class ResumeError(TlkitError):
    pass


@dataclass
class StageProgress:
    """Where a run stands inside one stage."""

    index: int  # the stage
    first_epoch: int  # the run's epoch count when the stage started
    epochs_done: int  # epochs of this stage completed
    finished: bool  # no epoch left to run (early stopping or the stage's last epoch)
    best: dict  # BestWeights.state()
    monitor: dict | None  # RuntimeMonitor.state()
    attempt: int = 0  # 1: the recipe's retry of a stage the runtime monitor stopped (tlkit.training.trainer)


@dataclass
class Checkpoint:
    progress: StageProgress
    records: list  # the finished stages' records
    runtime: list  # the runtime monitor's diagnoses of the finished stages
    model_variables: list = field(repr=False)
    optimizer_variables: list = field(repr=False)
    best_weights: list | None = field(repr=False)
    run_best: dict | None = None  # tlkit.training.callbacks.RunBest.state()
    run_best_weights: list | None = field(default=None, repr=False)


def path_of(run_dir) -> Path:
    return Path(run_dir) / CHECKPOINT_FILE


def snapshot(progress: StageProgress, records: list, runtime: list, model: keras.Model,
             optimizer: keras.optimizers.Optimizer, best_weights: list | None, run_best=None) -> dict:
    """Copies of everything a checkpoint holds, taken between two epochs (cheap next to writing them).

    `run_best`: the run's tlkit.training.callbacks.RunBest (its weights are saved while an earlier stage holds them)."""
    state = {"format": FORMAT_VERSION, "progress": dict(progress.__dict__), "records": records, "runtime": runtime,
             "run_best": run_best.state() if run_best is not None else None}
    arrays = {"state": np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)}
    arrays.update({f"model_{i}": _numpy(v) for i, v in enumerate(model.variables)})
    arrays.update({f"optimizer_{i}": _numpy(v) for i, v in enumerate(optimizer.variables)})
    for i, value in enumerate(best_weights or []):
        arrays[f"best_{i}"] = np.asarray(value)  # get_weights() copies, never changed in place: no copy here
    for i, value in enumerate((run_best.weights if run_best is not None else None) or []):
        arrays[f"runbest_{i}"] = np.asarray(value)
    return arrays


def write(run_dir, arrays: dict) -> None:
    """RUN_DIR/checkpoint.npz, atomically: a kill half-way leaves the previous checkpoint whole."""
    progress = json.loads(arrays["state"].tobytes().decode())["progress"]
    epoch = progress["first_epoch"] + progress["epochs_done"]
    size = sum(a.nbytes for a in arrays.values())

    def write_to(tmp: str) -> None:
        with open(tmp, "wb") as file:
            testing = os.environ.get(FAULT_ENV, "").startswith("checkpoint-write:")
            np.savez(_FaultAtHalf(file, size, epoch) if testing else file, **arrays)

    rundir.atomic_write(path_of(run_dir), write_to)


def save(run_dir, progress: StageProgress, records: list, runtime: list, model: keras.Model,
         optimizer: keras.optimizers.Optimizer, best_weights: list | None, run_best=None) -> None:
    write(run_dir, snapshot(progress, records, runtime, model, optimizer, best_weights, run_best))


class _FaultAtHalf(io.RawIOBase):
    """A file wrapper for the resume tests: maybe_fault('checkpoint-write') once half the bytes are out."""

    def __init__(self, file, size: int, epoch: int):
        self.file, self.half, self.epoch, self.written = file, size // 2, epoch, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        before, self.written = self.written, self.written + len(data)
        if before < self.half <= self.written:
            self.file.write(bytes(data)[: self.half - before])
            self.file.flush()
            maybe_fault("checkpoint-write", self.epoch)
            self.file.write(bytes(data)[self.half - before:])
        else:
            self.file.write(data)
        return len(data)

    def flush(self) -> None:
        self.file.flush()


def load(run_dir) -> Checkpoint | None:
    """The run's checkpoint, or None when it has none. Leftover temporary files of an
    interrupted write are removed: the checkpoint they were replacing is intact."""
    run_dir = Path(run_dir)
    for stale in run_dir.glob(f".{Path(CHECKPOINT_FILE).stem}.tmp-*"):
        stale.unlink(missing_ok=True)
    path = path_of(run_dir)
    if not path.exists():
        return None
    try:
        with np.load(path) as archive:
            state = json.loads(archive["state"].tobytes().decode())
            model = _numbered(archive, "model_")
            optimizer = _numbered(archive, "optimizer_")
            best = _numbered(archive, "best_")
            run_best_weights = _numbered(archive, "runbest_")
    except Exception as error:  # noqa: BLE001 - a damaged file, whatever numpy raises
        raise ResumeError(f"the checkpoint {path} cannot be read ({type(error).__name__}: {error}); "
                          f"start the run again without resume") from error
    if state.get("format") != FORMAT_VERSION:
        raise ResumeError(f"the checkpoint {path} has format {state.get('format')!r}; this tlkit reads "
                          f"format {FORMAT_VERSION}")
    return Checkpoint(StageProgress(**state["progress"]), state["records"], state["runtime"], model, optimizer,
                      best or None, state.get("run_best"), run_best_weights or None)


@dataclass
class ResumePoint:
    checkpoint: Checkpoint | None = None  # None and finished None: start from the first epoch
    finished: dict | None = None  # the metrics.json of a run that already completed


def resolve_run_dir(cfg, run_dir) -> Path:
    """The run directory: `run_dir`, or cfg.resume's when only that is given; both must agree."""
    if cfg.resume is None:
        if run_dir is None:
            raise ResumeError("tlkit.train needs a run_dir (or cfg.resume, the run directory to continue)")
        return Path(run_dir)
    if run_dir is not None and Path(run_dir).resolve() != Path(cfg.resume).resolve():
        raise ResumeError(f"resume={cfg.resume} but the run directory is {run_dir}: a run resumes in its own "
                          f"directory (python train.py resume=RUN_DIR sets it)")
    return Path(cfg.resume)


def resume_point(run_dir, cfg) -> ResumePoint:
    """What resuming `run_dir` with `cfg` means; refuses a config that differs from the run's."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResumeError(f"resume={run_dir}: no such run directory")
    saved_config = run_dir / rundir.CONFIG_FILE
    if saved_config.exists():
        saved = OmegaConf.to_container(OmegaConf.load(saved_config), resolve=True)
        current = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
        differences = config_differences(saved, current)
        if differences:
            raise ResumeError(f"resume={run_dir}: the config differs from the interrupted run's, so the result "
                              f"would match neither; differences:\n  " + "\n  ".join(differences)
                              + "\nResume with the run's own config (python train.py resume=RUN_DIR alone "
                              "reuses its overrides), or start a new run.")
    checkpoint = load(run_dir)
    metrics = run_dir / rundir.METRICS_FILE
    if checkpoint is None and metrics.exists():
        return ResumePoint(finished=json.loads(metrics.read_text()))
    if checkpoint is None:
        log.warning("resume=%s: no checkpoint there (killed before its first epoch ended, or "
                    "trainer.checkpoint=false); the run starts from its first epoch", run_dir)
    return ResumePoint(checkpoint=checkpoint)


def with_probe_decisions(run_dir, cfg, recipe=None):
    """`cfg` with what the interrupted run decided once its model was built (augment.flip, schedule.bn, when the
    config leaves them open, and with BatchNorm re-estimated the far-data budget: tlkit.recipe.measured), read from
    the run's config.yaml: a resumed run trains as it started. recipe: what tlkit.recipe.auto.apply gave `cfg`."""
    from dataclasses import replace

    from omegaconf import OmegaConf

    from tlkit.config.schema import BNPolicy

    saved_config = Path(run_dir) / rundir.CONFIG_FILE
    if not saved_config.exists():
        return cfg
    saved = OmegaConf.load(saved_config)
    flip, bn = saved.get("augment", {}).get("flip"), saved.get("schedule", {}).get("bn")
    if cfg.augment.flip is None and flip is not None:
        cfg = replace(cfg, augment=replace(cfg.augment, flip=bool(flip)))
    if cfg.schedule.bn is None and bn is not None:
        cfg = replace(cfg, schedule=replace(cfg.schedule, bn=BNPolicy(bn)))
        if recipe is not None and BNPolicy(bn) == BNPolicy.adapt:
            from tlkit.recipe.measured import lengthen_for_far_data

            cfg = lengthen_for_far_data(cfg, recipe)
    return cfg


def remove(run_dir) -> None:
    path_of(run_dir).unlink(missing_ok=True)


def restore_variables(variables, values: list, what: str) -> None:
    if len(variables) != len(values) or any(tuple(v.shape) != np.shape(x) for v, x in zip(variables, values)):
        raise ResumeError(
            f"the checkpoint's {what} ({len(values)} arrays) does not match this run's ({len(variables)} "
            f"variables): the model or its trainable blocks differ from the interrupted run's")
    for variable, value in zip(variables, values):
        variable.assign(value)


def restore_optimizer(model: keras.Model, values: list) -> None:
    """Build the freshly compiled optimizer on the stage's variables, then load its state."""
    from tlkit.training.distribute import model_scope

    with model_scope(model):  # under a tf.distribute strategy the slots are mirrored variables
        model.optimizer.build(model.trainable_variables)
    restore_variables(model.optimizer.variables, values, "optimizer state")


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring IGNORED_ON_RESUME."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        dotted = f"{prefix}{key}"
        if dotted in IGNORED_ON_RESUME:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences.extend(config_differences(a, b, dotted + "."))
        elif a != b:
            differences.append(f"{dotted}: {a!r} in the run, {b!r} now")
    return differences


class CheckpointWriter(keras.callbacks.Callback):
    """Checkpoints the end of every epoch; must come after every callback whose state it
    saves (BestWeights, the runtime monitor, CSVLogger).

    The state is copied between epochs; writing it (hundreds of MB for a ResNet-50 being
    fine-tuned) happens on a background thread while the next epoch trains. One write at
    a time: the next epoch's waits for the previous one, and so does the end of the stage.
    """

    def __init__(self, run_dir, progress: StageProgress, stage_epochs: int, records: list, runtime: list,
                 best, monitor=None, model_to_save: keras.Model | None = None, run_best=None,
                 every_s: float = 0.0):
        super().__init__()
        self.run_dir = run_dir  # None: count epochs only (trainer.checkpoint=false)
        self.progress, self.stage_epochs = progress, stage_epochs
        self.records, self.runtime, self.best, self.monitor = records, runtime, best, monitor
        self.model_to_save = model_to_save  # the full model, also when the head trains on cached features
        self.run_best = run_best  # tlkit.training.callbacks.RunBest: the best epoch of the stages before this one
        self.every_s = float(every_s)  # trainer.checkpoint_every_s: 0 checkpoints every epoch
        self._since = time.perf_counter()
        self.seconds = {"snapshot": 0.0, "write": 0.0, "waited": 0.0}  # what checkpoints cost (timings.json)

    def on_epoch_end(self, epoch, logs=None):
        self.progress.epochs_done = epoch + 1 - self.progress.first_epoch
        self.progress.finished = bool(self.model.stop_training) or self.progress.epochs_done >= self.stage_epochs
        self.progress.best = self.best.state()
        self.progress.monitor = self.monitor.state() if self.monitor is not None else None
        if self.run_dir is not None and time.perf_counter() - self._since >= self.every_s:
            self._checkpoint()
        maybe_fault("epoch-end", epoch + 1)  # the tests' "between epochs", whether or not this one was saved

    def _checkpoint(self) -> None:
        started = self._since = time.perf_counter()
        arrays = snapshot(self.progress, self.records, self.runtime, self.model_to_save or self.model,
                          self.model.optimizer, self.best.best_weights, self.run_best)
        self.seconds["snapshot"] += time.perf_counter() - started
        self.wait()
        self._pending = _executor().submit(self._timed_write, arrays)
        if os.environ.get(FAULT_ENV, "").startswith("epoch-end:"):
            self.wait()  # the tests' kill comes after this epoch's checkpoint is on disk

    def on_train_end(self, logs=None):
        self.wait()

    def wait(self) -> None:
        """Block until the last write is on disk; re-raises its error (e.g. disk full)."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:
            started = time.perf_counter()
            pending.result()
            self.seconds["waited"] += time.perf_counter() - started

    def _timed_write(self, arrays: dict) -> None:
        started = time.perf_counter()
        write(self.run_dir, arrays)
        self.seconds["write"] += time.perf_counter() - started


def fault_injection() -> list:
    return [FaultInjection()] if os.environ.get(FAULT_ENV, "").startswith("mid-epoch:") else []


class FaultInjection(keras.callbacks.Callback):
    """Tests only ($TLKIT_FAULT=mid-epoch:N): SIGKILL in the middle of epoch N."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            maybe_fault("mid-epoch", self._epoch)


def maybe_fault(point: str, epoch: int) -> None:
    """SIGKILL this process when $TLKIT_FAULT names this point and epoch (1-based, counted over the run).

    How the resume tests kill a run at an exact place (between epochs, inside an epoch, half-way
    through a checkpoint write) instead of racing a timer. Never set outside tests.
    """
    if os.environ.get(FAULT_ENV) == f"{point}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


_EXECUTOR = None


def _executor():
    global _EXECUTOR
    if _EXECUTOR is None:
        from concurrent.futures import ThreadPoolExecutor

        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlkit-checkpoint")
    return _EXECUTOR


def _numpy(variable) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable.value if hasattr(variable, "value") else variable))


def _numbered(archive, prefix: str) -> list:
    count = sum(1 for name in archive.files if name.startswith(prefix))
    return [archive[f"{prefix}{i}"] for i in range(count)]
