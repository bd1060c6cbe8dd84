"""Staged fine-tuning from a TrainConfig to a run directory.

    config -> validate + doctor(config) (no TensorFlow yet) -> data -> model ->
    doctor(data, model) -> for each stage: freeze/unfreeze blocks, recompile, fit under the
    runtime monitor, restore the stage's best epoch -> evaluate -> model.keras + metrics.json
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from tlkit import rundir
from tlkit.backbones.spec import BackboneSpec
from tlkit.callbacks import BestWeights, EpochLog, StageContext
from tlkit.config.schema import ClassWeight, FeatureCacheMode, Monitor, TrainConfig
from tlkit.config.store import as_train_config
from tlkit.config.validate import lr_is_auto, resolved_image_size, validate
from tlkit import auto_recipe
from tlkit import checkpoint as ckpt
from tlkit import distribute
from tlkit import feature_cache as fc
from tlkit.data.mixing import mixing_enabled
from tlkit import runtime
from tlkit.doctor import Doctor, Severity
from tlkit.optim import compile_for_stage
from tlkit.methods.fine_tuning import FineTuning
from tlkit.methods.optimizer import lr_groups_of
from tlkit.model import build_model, preprocess_mode, with_probabilities
from tlkit.stages import Freezer, StagePlan, count_params, plan_stages

log = logging.getLogger("tlkit.train")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    model: keras.Model  # the training model (logits out); model.keras holds the probabilities version


@dataclass
class _Run:
    """What the stages share."""

    cfg: TrainConfig
    model: keras.Model
    data: object
    freezer: Freezer
    run_dir: Path
    callbacks: list  # shared across stages: one CSV log, one TensorBoard run
    compile_options: dict = field(default_factory=dict)  # jit_compile, steps_per_execution
    records: list = field(default_factory=list)
    runtime: list = field(default_factory=list)  # the runtime monitor's diagnoses
    epoch: int = 0
    features: fc.FeatureCache | None = None  # valid until a stage trains backbone blocks
    methods: FineTuning | None = None  # discriminative LRs, L2-SP, EMA, label smoothing (tlkit/methods)
    checkpoint_s: dict = field(default_factory=lambda: {"snapshot": 0.0, "write": 0.0, "waited": 0.0})


def train(cfg: TrainConfig, run_dir: str | Path | None = None, spec: BackboneSpec | None = None) -> TrainResult:
    """Run every stage of `cfg.schedule` and write the run directory.

    `spec`: the result of validate(cfg) when the caller already ran it (tlkit.train does, before
    TensorFlow is imported); validating again would walk and pre-scan an image folder twice.
    With `cfg.resume` set, continues that run directory from its last checkpoint (a finished
    run is returned as it is, with model=None).
    """
    started = time.time()
    cfg = as_train_config(cfg)
    spec = spec or validate(cfg)
    cfg, recipe = auto_recipe.apply(cfg, spec)  # recipe=auto: chosen from the data's size, before resume compares configs
    doctor = Doctor(cfg.doctor.strict, cfg.doctor.silence)
    run_dir = ckpt.resolve_run_dir(cfg, run_dir)
    resumed = None
    if cfg.resume:
        point = ckpt.resume_point(run_dir, cfg)  # the config must be the interrupted run's
        if point.finished is not None:
            log.info("resume=%s: this run already finished (status %s); nothing to do",
                     run_dir, point.finished.get("status"))
            return TrainResult(run_dir=run_dir, metrics=point.finished, model=None)
        resumed = point.checkpoint
    run_dir = distribute.output_dir(run_dir)  # multi-worker: only the chief writes the run directory
    rundir.ensure_writable(run_dir)  # a read-only run directory fails here, before any work
    rundir.attach_log_file(run_dir)
    auto_recipe.log_recipe(recipe)
    if resumed:
        log.info("resuming %s at stage %d, after epoch %d (%d done in the stage)", run_dir,
                 resumed.progress.index + 1, resumed.progress.first_epoch + resumed.progress.epochs_done,
                 resumed.progress.epochs_done)
        rundir.truncate_history(run_dir, resumed.progress.first_epoch + resumed.progress.epochs_done)
    rundir.write_config(run_dir, cfg)  # config.yaml: what `tlkit evaluate` / `export` rebuild the data from
    if cfg.doctor.enabled:
        _preflight(doctor, doctor.config(cfg, spec))
    strategy = distribute.make_strategy(cfg.trainer)  # before any TensorFlow op: multi-worker collectives need it
    keras.utils.set_random_seed(cfg.seed)
    if cfg.trainer.deterministic:
        runtime.enable_op_determinism()

    from tlkit.data import class_weights, load_data  # tf.data: imported only when training

    image_size = resolved_image_size(cfg, spec)
    data = load_data(cfg.data, cfg.augment, image_size, cfg.seed, cfg.trainer.memory_budget_gb)
    log.info(
        "data: %d train / %d val / %d test images, %d classes, %d px, %d steps per epoch",
        data.num_train, data.num_val, data.num_test, len(data.class_names), image_size, data.steps_per_epoch,
    )
    device = runtime.detect_device()
    precision = runtime.resolve_precision(cfg.trainer.precision, device)
    # The policy applies to the layers built here, and only here; the strategy's scope puts their variables on every replica.
    with runtime.dtype_policy(precision), distribute.scope(strategy):
        model = build_model(spec, cfg.backbone, cfg.head, len(data.class_names), image_size)
    compile_options = {
        "jit_compile": runtime.resolve_jit_compile(cfg.trainer.jit_compile),
        "steps_per_execution": runtime.resolve_steps_per_execution(
            cfg.trainer.steps_per_execution, device, data.steps_per_epoch),
    }
    log.info("%s", runtime.describe(cfg.trainer, device, precision, compile_options["steps_per_execution"]))
    log.info("%s", distribute.describe(strategy, cfg.trainer, cfg.data.batch_size))
    distribute.check_batch(strategy, cfg.data.batch_size, cfg.schedule.bn)
    freezer = Freezer(model, spec, cfg.schedule.bn)
    lr_factor = distribute.lr_factor(cfg.trainer.lr_scaling, distribute.replicas(strategy))  # 1 unless lr_scaling
    lr_finder = None
    if lr_is_auto(cfg.optimizer.lr):  # optimizer.lr=auto: the LR finder on the first stage (tlkit/lr_find.py)
        from tlkit.lr_find import auto_lr

        cfg, lr_finder = auto_lr(cfg, spec, data, model, freezer, run_dir, compile_options, lr_factor,
                                 doctor if cfg.doctor.enabled else None)
    plans = plan_stages(cfg.schedule.stages, spec, cfg.optimizer.lr * lr_factor)
    if cfg.doctor.enabled:
        _preflight(doctor, doctor.data_and_model(cfg, spec, data, model, freezer, plans))

    run = _Run(cfg, model, data, freezer, run_dir, compile_options=compile_options, callbacks=[
        keras.callbacks.CSVLogger(str(run_dir / rundir.HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(str(run_dir / rundir.TENSORBOARD_DIR), write_graph=False),
    ])
    run.methods = FineTuning(cfg, model, freezer)  # before any stage trains: L2-SP's start values
    weights = class_weights(data.train_counts) if cfg.data.class_weight == ClassWeight.auto else None
    status = "completed"
    if resumed:
        run.records, run.runtime = list(resumed.records), list(resumed.runtime)
        run.epoch = resumed.progress.first_epoch
    for index, plan in enumerate(plans):
        if resumed and index < resumed.progress.index:
            continue  # finished before the interruption: its record came with the checkpoint
        if not _run_stage(run, index, len(plans), plan, weights,
                          resumed if resumed and index == resumed.progress.index else None):
            status = "stopped_by_doctor"
            log.error("the runtime monitor stopped stage '%s'; the remaining stages are skipped", plan.name)
            break

    if not model.compiled:  # every stage trained on cached features: the full model was never compiled
        compile_for_stage(model, cfg.optimizer, plans[-1], data.steps_per_epoch, compile_options, methods=run.methods)
    final = {f"val_{k}": float(v) for k, v in model.evaluate(data.val, verbose=0, return_dict=True).items()}
    if data.test is not None:
        final.update({f"test_{k}": float(v) for k, v in model.evaluate(data.test, verbose=0, return_dict=True).items()})
    monitor = Monitor(cfg.trainer.monitor).value
    _warn_if_an_earlier_stage_was_better(run.records, monitor)

    # model.keras is written atomically (a full disk leaves the previous file intact) and never
    # replaced by a model with NaN/Inf weights (e.g. NaN pixels stopped the run).
    model_saved = cfg.trainer.save_model and _weights_finite(model, status)
    if model_saved:
        rundir.atomic_write(run_dir / rundir.MODEL_FILE, lambda tmp: with_probabilities(model).save(tmp))
    metrics = {
        "status": status,
        "backbone": spec.name,
        "weights": cfg.backbone.weights,
        "preprocess": preprocess_mode(spec, cfg.backbone),
        "image_size": image_size,
        "class_names": list(data.class_names),
        "num_train": data.num_train,
        "num_val": data.num_val,
        "num_test": data.num_test,
        "schedule": cfg.schedule.name,
        "bn": cfg.schedule.bn.value,
        "monitor": monitor,
        "precision": precision,
        "stages": [{k: v for k, v in r.items() if k != "wall_time_s"} for r in run.records],
        **final,
        "epochs": run.epoch,
        "doctor": {"findings": doctor.to_dict(), "runtime": run.runtime},
        "versions": {"keras": keras.__version__, "backend": keras.backend.backend()},
        "data": {"bad_files": data.bad_files, "prescan": data.prescan},  # what the pre-scan left out
        "model_saved": bool(model_saved),
        "auto_recipe": recipe.to_dict() if recipe else None,  # recipe=auto: what its rule chose, and why
        "lr_finder": lr_finder,  # optimizer.lr=auto: the LR it picked
    }
    rundir.write_metrics(run_dir, metrics)
    ckpt.remove(run_dir)  # the run is complete: resume= now finds metrics.json
    _log_hparams(run_dir, cfg, metrics)
    wall_time = round(time.time() - started, 2)
    rundir.write_timings(run_dir, {"wall_time_s": wall_time,
                                   "stages": {r["name"]: r["wall_time_s"] for r in run.records},
                                   # snapshot and waited block training; write runs beside the next epoch
                                   "checkpoint_s": {k: round(v, 2) for k, v in run.checkpoint_s.items()}})
    if cfg.trainer.save_model:  # RUN_DIR/eval/: logs a warning on failure, never raises
        from tlkit.evaluate import report_after_training

        report_after_training(run_dir, with_probabilities(model), data)
    log.info("finished in %.0fs: val_accuracy %.4f, val_loss %.4f\n%s",
             wall_time, final["val_accuracy"], final["val_loss"], rundir.summary_table(run.records))
    log.info("run directory: %s", run_dir.resolve())
    return TrainResult(run_dir=run_dir, metrics=metrics, model=model)


def _preflight(doctor: Doctor, findings: list) -> None:
    doctor.log_findings(findings)
    doctor.raise_on_errors(findings)


def _run_stage(run: _Run, index: int, count: int, plan: StagePlan, class_weight,
               resumed: ckpt.Checkpoint | None = None) -> bool:
    """Train one stage (from `resumed`'s epoch when given); False when the runtime monitor stopped it for an error."""
    from tlkit.doctor.monitor import RuntimeMonitor

    cfg, model = run.cfg, run.model
    run.freezer.apply(plan)
    if resumed:  # before the feature cache: a head-only stage after fine-tuning needs the tuned backbone
        ckpt.restore_variables(model.variables, resumed.model_variables, "model variables")
    trainable = count_params(model.trainable_weights)
    cache = _feature_cache(run, plan)
    target = cache.head_model if cache else model  # the head is shared: training one trains the other
    compile_for_stage(target, cfg.optimizer, plan, run.data.steps_per_epoch, run.compile_options, methods=run.methods)
    log.info(
        "stage %d/%d '%s': trains %s (%s), %d trainable params, peak lr %.3g, up to %d epochs",
        index + 1, count, plan.name, plan.train, ", ".join(plan.blocks) or "head only", trainable, plan.lr, plan.epochs,
    )
    monitor = Monitor(cfg.trainer.monitor).value
    best = BestWeights(monitor, plan.patience)
    callbacks = [StageContext(index), *run.methods.callbacks(target), best, *run.callbacks, EpochLog(plan.name)]
    doctor_monitor = None
    if cfg.doctor.monitor:
        previous = [r["val_loss"] for r in run.records if r.get("val_loss") is not None]
        doctor_monitor = RuntimeMonitor(
            plan.name, len(run.data.class_names), trains_backbone=bool(plan.blocks),
            reference_val_loss=min(previous) if previous else None,
        )
        callbacks.insert(1, doctor_monitor)  # right after StageContext: it reads the raw logs
    progress = resumed.progress if resumed else ckpt.StageProgress(index, run.epoch, 0, False, {}, None)
    if resumed:
        ckpt.restore_optimizer(target, resumed.optimizer_variables)
        best.restore(progress.best, resumed.best_weights)
        if doctor_monitor is not None and progress.monitor:
            doctor_monitor.restore(progress.monitor)
    # Last: it counts the stage's epochs and checkpoints the state the callbacks before it leave.
    writer = ckpt.CheckpointWriter(run.run_dir if cfg.trainer.checkpoint else None, progress, plan.epochs,
                                   run.records, run.runtime, best, doctor_monitor, model_to_save=model)
    callbacks.append(writer)
    callbacks.extend(ckpt.fault_injection())
    started = time.time()
    first = run.epoch + progress.epochs_done
    if progress.finished:  # killed after the stage's last epoch, before the next one began
        best.set_model(target)
        best.on_train_end()
    else:
        if cache:
            train_data = cache.training_batches(cfg.data.batch_size, cfg.seed, first_epoch=first)
            val_data = (cache.val_features, cache.val_labels)
        else:
            # Epoch e's batches depend only on (seed, e): a resumed stage sees what an uninterrupted one would.
            train_data = run.data.train_epochs.for_epochs(first, plan.epochs - progress.epochs_done)
            val_data = run.data.val
        target.fit(
            train_data,
            validation_data=val_data,
            validation_batch_size=cfg.data.batch_size if cache else None,
            steps_per_epoch=None if cache else run.data.steps_per_epoch,
            shuffle=False,  # both inputs shuffle themselves; Keras would only warn
            initial_epoch=first,
            epochs=run.epoch + plan.epochs,
            callbacks=callbacks,
            class_weight=class_weight,
            verbose=cfg.trainer.verbose,
        )
    if plan.blocks:
        run.features = None  # the backbone changed: cached features are stale
    epochs_run = progress.epochs_done
    for key, seconds in writer.seconds.items():
        run.checkpoint_s[key] += seconds
    run.records.append({
        "name": plan.name,
        "train": plan.train,
        "blocks": list(plan.blocks),
        "epochs_run": epochs_run,
        "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,  # 1-based, counted over the run
        "val_loss": best.best_logs.get("val_loss"),
        "val_accuracy": best.best_logs.get("val_accuracy"),
        "loss": best.best_logs.get("loss"),
        "accuracy": best.best_logs.get("accuracy"),
        "lr": plan.lr,
        "trainable_params": trainable,
        "feature_cache": bool(cache),
        "lr_multipliers": lr_groups_of(target.optimizer),  # {} without discriminative LRs
        "wall_time_s": round(time.time() - started, 2),
    })
    run.epoch += epochs_run
    if doctor_monitor is None:
        return True
    run.runtime.extend(doctor_monitor.summary())
    return not (doctor_monitor.stopped and any(d.severity == Severity.error for d in doctor_monitor.diagnoses))


def _feature_cache(run: _Run, plan: StagePlan) -> fc.FeatureCache | None:
    """The cache for a head-only stage, built on first use, or None to train through the backbone."""
    cfg, data = run.cfg, run.data
    mode = FeatureCacheMode(cfg.trainer.feature_cache)
    if plan.blocks or mode == FeatureCacheMode.off:
        return None
    if mixing_enabled(cfg.augment):  # a mix of pooled features is not a mix of images (tlkit/data/mixing.py)
        log.info("feature cache: off for stage '%s' while MixUp/CutMix mixes images: it trains through the frozen "
                 "backbone", plan.name)
        return None
    if not distribute.feature_cache_supported(run.model):
        log.info("feature cache: off under a multi-worker strategy; training the head through the frozen backbone")
        return None
    if run.features is not None:
        return run.features
    augmenting = cfg.augment.flip or cfg.augment.crop_area < 1.0 or cfg.augment.color > 0.0
    views = fc.auto_views(augmenting, plan.epochs, cfg.trainer.feature_cache_views)
    width = run.model.get_layer("pool").output.shape[-1]
    need = fc.feature_cache_bytes(data.num_train, data.num_val, width, views)
    budget = cfg.trainer.memory_budget_gb * 2**30
    if need > budget:
        (log.warning if mode == FeatureCacheMode.on else log.info)(
            "feature cache: %s is over trainer.memory_budget_gb=%g; training the head through the frozen "
            "backbone instead", fc.describe(data.num_train, data.num_val, width, views), cfg.trainer.memory_budget_gb)
        return None
    started = time.time()
    with distribute.model_scope(run.model):  # the head model it trains must be compiled under the same strategy
        run.features = fc.FeatureCache(run.model, data, views)
    log.info("feature cache: %s, built in %.1fs", fc.describe(data.num_train, data.num_val, width, views),
             time.time() - started)
    return run.features


def _warn_if_an_earlier_stage_was_better(stages: list[dict], monitor: str) -> None:
    values = [s.get(monitor) for s in stages]
    if len(values) < 2 or any(v is None for v in values):
        return
    best = min(values) if "loss" in monitor else max(values)
    if values[-1] != best:
        stage = stages[values.index(best)]["name"]
        log.warning(
            "stage '%s' reached a better %s (%.4f) than the final stage (%.4f): later stages made the model "
            "worse; consider a lower LR for them or schedule=frozen.", stage, monitor, best, values[-1],
        )


def _log_hparams(run_dir: Path, cfg: TrainConfig, metrics: dict) -> None:
    """TensorBoard's HParams tab compares the runs of a sweep; this never fails a finished run."""
    try:
        from tlkit.sweep import log_hparams

        log_hparams(run_dir, cfg, metrics)
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
