"""What a finished run writes, and the state the trainer's stages share to get there.

    RunState      the run's set-up, stage records, runtime diagnoses, best epoch, checkpoint timings
    write_results calibrate the restored model (trainer.calibrate: tlkit.training.calibration, T folded into model.keras),
                  evaluate it (through AfterTraining, the tools the caller passes in), then model.keras,
                  metrics.json (tlkit.training.metrics_record.RunMetrics), the HParams, timings.json, eval/
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras

import tlkit.training.checkpoint as ckpt
import tlkit.training.rundir as rundir
from tlkit.training.calibration import Calibration, calibrate, write_reliability
from tlkit.training.callbacks import RunBest
from tlkit.config.schema import TrainConfig
from tlkit.doctor import Doctor
from tlkit.training.feature_cache import FeatureCache
from tlkit.training.methods.fine_tuning import FineTuning
from tlkit.training.metrics_record import RunMetrics
from tlkit.model.build import preprocess_mode, ready_to_save, with_probabilities
from tlkit.model.multilabel import write_thresholds
from tlkit.training.run_setup import RunSetup

log = logging.getLogger("tlkit.train")
# task=multilabel: the report keys that become top-level metrics.json keys beside loss and accuracy (val_map, ...)
MULTILABEL_FINAL = ("map", "map_micro", "macro_f1")


@dataclass(frozen=True)
class AfterTraining:
    """What the trainer hands a finished run to: tools above it (evaluation reports, TensorBoard HParams), passed in
    by its caller (tlkit.cli.runner.after_training()), so the trainer imports none of them.

    evaluate: (model with probabilities out, DataBundle, known, spec) -> {"val": evaluation, "test": ...}, each
        evaluation's `.report` holding "loss" and "accuracy": the final metrics come from it. known: None, or
        {split: (probabilities, labels)} the model outputs on those splits, already computed (the calibration's).
        spec: the run's backbone spec (its heat maps need its blocks; a KerasHub backbone's is not in the registry).
    write_report: (run_dir, those evaluations) -> None: RUN_DIR/eval/ (never raises), when trainer.save_model.
    log_hparams: (run_dir, cfg, metrics dict) -> None: TensorBoard's HParams (a failure is logged, not raised).
    """

    evaluate: Callable
    write_report: Callable
    log_hparams: Callable


@dataclass
class RunState:
    """What the stages of one run share, and what its results are written from."""

    setup: RunSetup
    run_dir: Path
    callbacks: list  # shared across stages: one CSV log, one TensorBoard run
    doctor: Doctor | None = None  # its pre-flight findings go to metrics.json
    resumed: ckpt.Checkpoint | None = None  # the checkpoint this run continues from
    lr_finder: dict | None = None  # optimizer.lr=auto: the LR finder's metrics entry
    as_configured: TrainConfig | None = None  # the config before the recipe decided (trainer.compare_scratch)
    records: list = field(default_factory=list)
    runtime: list = field(default_factory=list)  # the runtime monitor's diagnoses
    epoch: int = 0
    features: FeatureCache | None = None  # valid until a stage trains backbone blocks
    methods: FineTuning | None = None  # discriminative LRs, L2-SP, EMA, label smoothing (tlkit/training/methods)
    checkpoint_s: dict = field(default_factory=lambda: {"snapshot": 0.0, "write": 0.0, "waited": 0.0})
    run_best: RunBest | None = None  # the best epoch over all stages: what model.keras holds

    @property
    def cfg(self) -> TrainConfig:
        return self.setup.cfg

    @property
    def model(self) -> keras.Model:
        return self.setup.model

    @property
    def data(self):
        return self.setup.data


def restore_run_best(run: RunState) -> None:
    """`run`'s model back to the run's best epoch, saying so when later stages ended worse."""
    monitor = run.run_best.monitor
    if run.run_best.restore_into(run.model, last_index=len(run.records) - 1):
        last = run.records[-1].get(monitor)
        if run.run_best.stopped_attempt:
            log.warning("the saved model is stage '%s' epoch %s (%s %.4f), from its first attempt, which the runtime "
                        "monitor stopped: the retry did not beat it (%s %s)", run.run_best.stage, run.run_best.epoch,
                        monitor, run.run_best.logs[monitor], monitor, "n/a" if last is None else f"{last:.4f}")
            return
        log.warning("the saved model is stage '%s' epoch %s (%s %.4f), the best of the run: the stages after it "
                    "did not beat it (%s %s in '%s')", run.run_best.stage, run.run_best.epoch, monitor,
                    run.run_best.logs[monitor], monitor, "n/a" if last is None else f"{last:.4f}",
                    run.records[-1]["name"])


def write_results(run: RunState, status: str, after_training: AfterTraining, started: float) -> RunMetrics:
    """Evaluate the (restored) model and write model.keras, metrics.json, the HParams, timings.json and eval/ into
    the run directory; returns the metrics record.

    run: the finished run; status: "completed" or "stopped_by_doctor"; after_training: the tools that evaluate and
    report (AfterTraining); started: the run's start (time.time()), for timings.json."""
    setup, run_dir = run.setup, run.run_dir
    calibration = _calibrate(run, status)
    multilabel = setup.data.multilabel  # sigmoids, per-class thresholds tuned on val (tlkit.model.multilabel)
    saved = with_probabilities(setup.model, calibration.temperature if calibration else 1.0, multilabel=multilabel)
    # One pass over val (and test) with the saved model's probabilities: the final metrics and eval/ both come from it.
    # The calibration has run the model over those splits already: its logits / T are the saved model's outputs.
    evaluations = after_training.evaluate(saved, setup.data, calibration.saved_probabilities() if calibration else None,
                                          setup.spec)
    names = ("loss", "accuracy", *(MULTILABEL_FINAL if multilabel else ()))
    final = {f"{split}_{name}": float(e.report[name]) for split, e in evaluations.items() for name in names}
    # model.keras is written atomically (a full disk leaves the previous file intact) and never
    # replaced by a model with NaN/Inf weights (e.g. NaN pixels stopped the run).
    model_saved = setup.cfg.trainer.save_model and _weights_finite(setup.model, status)
    if model_saved:
        ready_to_save(setup.model, setup.spec)
        rundir.atomic_write(run_dir / rundir.MODEL_FILE, lambda tmp: saved.save(tmp))
        if multilabel:  # beside model.keras: what `tlkit predict` turns probabilities into labels with
            write_thresholds(run_dir, setup.data.class_names, evaluations["val"].report["thresholds"])
    record = _metrics(run, status, final, model_saved)
    record.calibration = calibration.to_dict() if calibration else None
    rundir.write_metrics(run_dir, record.to_dict())
    ckpt.remove(run_dir)  # the run is complete: resume= now finds metrics.json
    _log_hparams(after_training, run_dir, setup.cfg, record.to_dict())
    wall_time = round(time.time() - started, 2)
    rundir.write_timings(run_dir, {"wall_time_s": wall_time,
                                   "stages": {r["name"]: r["wall_time_s"] for r in run.records},
                                   # snapshot and waited block training; write runs beside the next epoch
                                   "checkpoint_s": {k: round(v, 2) for k, v in run.checkpoint_s.items()}})
    if setup.cfg.trainer.save_model:  # RUN_DIR/eval/: logs a warning on failure, never raises
        after_training.write_report(run_dir, evaluations)
        if calibration:
            write_reliability(run_dir / rundir.EVAL_DIR, calibration)
    log.info("finished in %.0fs: val_accuracy %.4f, val_loss %.4f\n%s",
             wall_time, final["val_accuracy"], final["val_loss"], rundir.summary_table(run.records))
    return record


def _calibrate(run: RunState, status: str) -> Calibration | None:
    """trainer.calibrate: temperature scaling on val (tlkit.training.calibration), for a completed run."""
    if not run.cfg.trainer.calibrate or status != "completed":
        return None
    if run.data.multilabel:
        log.info("trainer.calibrate: skipped for task=multilabel (temperature scaling is for one softmax; each "
                 "class's threshold is tuned on val instead, thresholds.json)")
        return None
    return calibrate(run.model, run.data)


def _metrics(run: RunState, status: str, final: dict, model_saved: bool) -> RunMetrics:
    setup, cfg = run.setup, run.cfg
    data, spec = setup.data, setup.spec
    return RunMetrics(
        status=status, backbone=spec.name, weights=cfg.backbone.weights,
        preprocess=preprocess_mode(spec, cfg.backbone), image_size=setup.image_size,
        class_names=list(data.class_names), num_train=data.num_train, num_val=data.num_val, num_test=data.num_test,
        schedule=cfg.schedule.name, bn=cfg.schedule.bn.value, monitor=run.run_best.monitor,
        precision=setup.precision,
        stages=[{k: v for k, v in r.items() if k != "wall_time_s"} for r in run.records],
        best=run.run_best.to_dict(), final=final, epochs=run.epoch,
        doctor={"findings": run.doctor.to_dict(), "runtime": run.runtime},
        versions={"keras": keras.__version__, "backend": keras.backend.backend()},
        data={"bad_files": data.bad_files, "prescan": data.prescan},  # what the pre-scan left out
        model_saved=bool(model_saved),
        auto_recipe=setup.recipe.to_dict() if setup.recipe else None,  # what the recipe chose, and why
        lr_finder=run.lr_finder,  # optimizer.lr=auto: the LR it picked
    )


def _log_hparams(after_training: AfterTraining, run_dir: Path, cfg: TrainConfig, metrics: dict) -> None:
    """TensorBoard's HParams tab compares the runs of a sweep; this never fails a finished run."""
    try:
        after_training.log_hparams(run_dir, cfg, metrics)
    except Exception as error:  # noqa: BLE001
        log.warning("could not write the TensorBoard hparams: %s", error)


def _weights_finite(model: keras.Model, status: str) -> bool:
    """False (and an error in the log) when any weight is NaN/Inf: such a model must not replace model.keras."""
    import numpy as np

    if all(np.isfinite(np.asarray(w, dtype=np.float64)).all() for w in model.get_weights()):
        return True
    log.error("the model's weights are NaN or infinite (status %s): %s was not written; a previous %s in the run "
              "directory is left as it was. Check the images for NaN/Inf and the learning rate.",
              status, rundir.MODEL_FILE, rundir.MODEL_FILE)
    return False
