"""Fine-tuning from a TrainConfig to a run directory.

    set-up:   config -> the recipe's choices + doctor(config) (no TensorFlow yet) -> run set-up (data, model,
              the recipe's probe; tlkit.training.run_setup) -> doctor(data, model)
    stages:   for each stage: freeze/unfreeze blocks, recompile, fit under the runtime monitor, restore the
              stage's best epoch (a stage the monitor stopped is retried once, gentler)
    finalize: the run's best epoch -> evaluate -> model.keras + metrics.json + eval/ (tlkit.training.run_results, with the
              post-training tools the caller passes in)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras

import tlkit.recipe.auto as auto_recipe
import tlkit.training.checkpoint as ckpt
import tlkit.training.distribute as distribute
import tlkit.training.feature_cache as fc
import tlkit.training.run_setup as run_setup
import tlkit.training.rundir as rundir
import tlkit.training.runtime as runtime
from tlkit.backbones.spec import BackboneSpec
from tlkit.training.callbacks import BestWeights, EpochLog, RunBest, StageContext
from tlkit.config.schema import BNPolicy, ClassWeight, Monitor, TrainConfig
from tlkit.config.store import as_train_config
from tlkit.config.validate import lr_is_auto
from tlkit.doctor import Doctor, Severity
from tlkit.training.methods.fine_tuning import FineTuning
from tlkit.training.methods.optimizer import lr_groups_of
from tlkit.model.build import LOGITS_LAYER, head_of
from tlkit.training.optim import compile_for_stage
from tlkit.recipe.preflight import check_run
from tlkit.training.run_results import AfterTraining, RunState, restore_run_best, write_results  # noqa: F401  (AfterTraining:
#   re-exported, the type of train()'s after_training)
from tlkit.training.stages import StagePlan, count_params

log = logging.getLogger("tlkit.train")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict  # metrics.json's content (tlkit.training.metrics_record.RunMetrics.to_dict)
    model: keras.Model  # the training model (logits out); model.keras holds the probabilities version


def train(cfg: TrainConfig, run_dir: str | Path | None = None, spec: BackboneSpec | None = None, *,
          after_training: AfterTraining, data_scan=None) -> TrainResult:
    """Run every stage of `cfg.schedule` and write the run directory: set-up -> stage loop -> finalize.

    cfg: the TrainConfig (or anything tlkit.config.as_train_config takes); run_dir: where the run's files go (None:
    a dated folder, or cfg.resume's). With `cfg.resume` set, continues that run directory from its last checkpoint
    (a finished run is returned as it is, with model=None).
    spec, data_scan: the result of tlkit.recipe.preflight.check_run(cfg) when the caller already ran it (tlkit.train does,
    before TensorFlow is imported): the backbone spec and the data's scan, handed on to the recipe and the loader
    so that an image folder is walked once per run.
    after_training: the post-training tools (tlkit.cli.runner.after_training(); see AfterTraining).
    """
    started = time.time()
    cfg = as_train_config(cfg)
    with runtime.conv_gradients(cfg.trainer.fast_conv_grad):
        run = _set_up(cfg, run_dir, spec, data_scan)
        if isinstance(run, TrainResult):  # resume= of a run that already finished
            return run
        status = _run_stages(run, run.setup.plans(), run.resumed)
        metrics = _finalize(run, status, after_training, started)
    return TrainResult(run_dir=run.run_dir, metrics=metrics, model=run.model)


def _set_up(cfg: TrainConfig, run_dir, spec, data_scan) -> RunState | TrainResult:
    """Config checks, the recipe, the run directory (resume), the pre-flight doctor, data and model (tlkit.training.run_setup),
    the LR finder: everything before the first stage trains. A finished run (resume=) comes back as its result."""
    if spec is None:
        spec, data_scan = check_run(cfg)
    as_configured = cfg  # trainer.compare_scratch: the same config from random weights, for the recipe to decide anew
    cfg, recipe = auto_recipe.apply(cfg, spec, data_scan)  # chosen from the data, before resume compares configs
    cfg, run_dir, resumed, finished = _open_run_dir(cfg, run_dir, recipe)
    if finished is not None:
        return TrainResult(run_dir=run_dir, metrics=finished, model=None)
    auto_recipe.log_recipe(recipe)
    rundir.write_config(run_dir, cfg)  # config.yaml: what `tlkit evaluate` / `export` rebuild the data from
    doctor = Doctor(cfg.doctor.strict, cfg.doctor.silence)
    if cfg.doctor.enabled:
        _preflight(doctor, doctor.config(cfg, spec))
    setup = run_setup.build(cfg, spec, recipe, first_stage=resumed.progress.index if resumed else 0,
                            data_scan=data_scan)
    lr_finder = _auto_lr(setup, run_dir, doctor) if lr_is_auto(cfg.optimizer.lr) else None
    rundir.write_config(run_dir, setup.cfg)  # now with the probe's (and the LR finder's) choices
    if cfg.doctor.enabled:
        _preflight(doctor, doctor.data_and_model(setup.cfg, spec, setup.data, setup.model, setup.probe))
    run = _start(setup, run_dir, resumed)
    run.doctor, run.lr_finder, run.as_configured = doctor, lr_finder, as_configured
    return run


def _finalize(run: RunState, status: str, after_training: AfterTraining, started: float) -> dict:
    """The run's best epoch restored, the results written (model.keras, metrics.json, eval/ ...), and
    trainer.compare_scratch's run from random weights; returns metrics.json's content."""
    restore_run_best(run)
    record = write_results(run, status, after_training, started)
    cfg = run.cfg
    if cfg.trainer.compare_scratch and cfg.backbone.weights is not None:
        record.scratch = _compare_scratch(run, record.to_dict(), after_training)
        rundir.write_metrics(run.run_dir, record.to_dict())
    log.info("run directory: %s", run.run_dir.resolve())
    return record.to_dict()


SCRATCH_DIR = "scratch"


def _compare_scratch(run: RunState, metrics: dict, after_training: AfterTraining) -> dict:
    """trainer.compare_scratch: the same config from random weights in RUN_DIR/scratch/, the recipe deciding afresh
    (BatchNorm trains there); returns its final metrics and logs them beside the run's."""
    from dataclasses import replace

    cfg, run_dir = run.as_configured, run.run_dir
    log.info("trainer.compare_scratch: the same recipe from random weights (%s/%s/)", run_dir, SCRATCH_DIR)
    scratch_cfg = replace(cfg, backbone=replace(cfg.backbone, weights=None), resume=None,
                          trainer=replace(cfg.trainer, compare_scratch=False, save_model=False),
                          doctor=replace(cfg.doctor, silence=[*cfg.doctor.silence, "no-pretrained-weights"]))
    scratch = train(scratch_cfg, run_dir / SCRATCH_DIR, spec=run.setup.spec, data_scan=run.setup.data_scan,
                    after_training=after_training).metrics
    splits = [s for s in ("val", "test") if f"{s}_accuracy" in scratch]
    log.info("transfer: %s", "; ".join(
        f"{split} accuracy {metrics[f'{split}_accuracy']:.4f} fine-tuned from {cfg.backbone.weights} vs "
        f"{scratch[f'{split}_accuracy']:.4f} from random weights "
        f"({100 * (metrics[f'{split}_accuracy'] - scratch[f'{split}_accuracy']):+.1f} points)" for split in splits))
    return {k: scratch.get(k) for k in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "epochs")}


def _open_run_dir(cfg: TrainConfig, run_dir, recipe=None):
    """(cfg, run_dir, checkpoint to resume or None, metrics of a finished run or None); the log file attached.

    A resumed run's cfg takes what the interrupted run's probe decided."""
    run_dir = ckpt.resolve_run_dir(cfg, run_dir)
    resumed = None
    if cfg.resume:
        cfg = ckpt.with_probe_decisions(run_dir, cfg, recipe)  # what the interrupted run decided once it was built
        point = ckpt.resume_point(run_dir, cfg)  # the config must be the interrupted run's
        if point.finished is not None:
            log.info("resume=%s: this run already finished (status %s); nothing to do",
                     run_dir, point.finished.get("status"))
            return cfg, run_dir, None, point.finished
        resumed = point.checkpoint
    run_dir = distribute.output_dir(run_dir)  # multi-worker: only the chief writes the run directory
    rundir.ensure_writable(run_dir)  # a read-only run directory fails here, before any work
    rundir.attach_log_file(run_dir)
    if resumed:
        progress = resumed.progress
        log.info("resuming %s at stage %d, after epoch %d (%d done in the stage)", run_dir, progress.index + 1,
                 progress.first_epoch + progress.epochs_done, progress.epochs_done)
        rundir.truncate_history(run_dir, progress.first_epoch + progress.epochs_done)
    return cfg, run_dir, resumed, None


def _auto_lr(setup: run_setup.RunSetup, run_dir: Path, doctor: Doctor) -> dict:
    """optimizer.lr=auto: the LR finder (tlkit/training/lr_find.py) on the first stage the optimizer trains."""
    from tlkit.training.lr_find import auto_lr

    setup.cfg, entry = auto_lr(setup.cfg, setup.spec, setup.data, setup.model, setup.freezer, run_dir,
                               setup.compile_options, setup.lr_factor, doctor if setup.cfg.doctor.enabled else None)
    return entry


def _start(setup: run_setup.RunSetup, run_dir: Path, resumed) -> RunState:
    run = RunState(setup, run_dir, resumed=resumed, callbacks=[
        keras.callbacks.CSVLogger(str(run_dir / rundir.HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(str(run_dir / rundir.TENSORBOARD_DIR), write_graph=False),
    ])
    run.methods = FineTuning(setup.cfg, setup.model, setup.freezer)  # before any stage trains: L2-SP's start values
    run.run_best = RunBest(Monitor(setup.cfg.trainer.monitor).value)
    if resumed:
        run.records, run.runtime = list(resumed.records), list(resumed.runtime)
        run.epoch = resumed.progress.first_epoch
        run.run_best.restore(resumed.run_best, resumed.run_best_weights)
    return run


def _run_stages(run: RunState, plans: list[StagePlan], resumed) -> str:
    """Every stage from where the run stands; the run's status."""
    from tlkit.data import class_weights

    cfg = run.cfg
    weights = (class_weights(run.data.train_counts) if cfg.data.class_weight == ClassWeight.auto
               and not run.data.multilabel else None)  # multi-label: positive weights in the loss (tlkit.model.multilabel)
    for index, plan in enumerate(plans):
        if resumed and index < resumed.progress.index:
            continue  # finished before the interruption: its record came with the checkpoint
        here = resumed if resumed and index == resumed.progress.index else None
        attempt = here.progress.attempt if here else 0
        if attempt:
            plan = _retry_plan(plan)
        start = _retry_point(run, plan) if here is None else None  # a resumed stage is not retried
        ok = _run_stage(run, index, len(plans), plan, weights, here, attempt)
        if not ok and start is not None:
            ok = _retry_stage(run, index, len(plans), plan, weights, start)
        if not ok:
            log.error("the runtime monitor stopped stage '%s'; the remaining stages are skipped", plan.name)
            return "stopped_by_doctor"
    return "completed"


RETRY_LR_FACTOR = 0.3  # a stage the monitor stopped is retried once at this times its LR, BatchNorm re-estimated


def _retry_point(run: RunState, plan: StagePlan):
    """What a retry of `plan` starts from, when the recipe may retry it: a fine-tuning stage under the recipe."""
    if not plan.blocks or not run.cfg.auto.enabled or not run.cfg.doctor.monitor:
        return None
    return run.model.get_weights()


def _retry_plan(plan: StagePlan) -> StagePlan:
    from dataclasses import replace

    return replace(plan, lr=plan.lr * RETRY_LR_FACTOR)


def _retry_stage(run: RunState, index: int, count: int, plan: StagePlan, class_weight, start) -> bool:
    """A fine-tuning stage the runtime monitor stopped (diverged, collapsed), once more from where it started: at a
    lower LR, with BatchNorm statistics re-estimated on the training images (AdaBN) if they were kept frozen."""
    from dataclasses import replace

    from tlkit.training.stages import reestimate_batchnorm
    from tlkit.training.run_setup import BN_SAMPLE

    failed = run.records.pop()
    # The stopped attempt's best epoch (validated like any other) stays a candidate for the run's best: a stop can
    # come while val accuracy still climbs (MobileNetV2 glyphs: stopped at 0.687, the retry reached 0.547).
    run.run_best.keep_stopped_attempt(index, run.model)
    run.model.set_weights(start)
    adapted = BNPolicy(run.cfg.schedule.bn) == BNPolicy.frozen
    refitted = False
    if adapted:
        reestimate_batchnorm(run.model, run.data.train_epochs.plain(BN_SAMPLE))
        run.setup.cfg = replace(run.cfg, schedule=replace(run.cfg.schedule, bn=BNPolicy.adapt))
        refitted = _refit_probe_head(run)
    retry = _retry_plan(plan)
    log.warning("stage '%s' was stopped by the runtime monitor after %d epoch(s) (val_accuracy %s): retrying it once "
                "from where it started, at %g x the LR (%.3g)%s%s", plan.name, failed["epochs_run"],
                failed.get("val_accuracy"), RETRY_LR_FACTOR, retry.lr,
                ", BatchNorm statistics re-estimated on the training images" if adapted else "",
                ", the head fitted again on the features they give" if refitted else "")
    ok = _run_stage(run, index, count, retry, class_weight, attempt=1)
    run.records[-1]["retried"] = {"first_attempt": {k: failed.get(k) for k in ("epochs_run", "val_accuracy", "lr")},
                                  "lr_factor": RETRY_LR_FACTOR, "batchnorm_reestimated": adapted,
                                  "head_refitted": refitted}
    return ok


def _refit_probe_head(run: RunState) -> bool:
    """A head the probe fitted, fitted again after the BatchNorm statistics under it changed: the old head no longer
    matches the features (ResNet50 on digits: the retry's first epoch at loss 94, where the head had started at 0.5)."""
    from tlkit.recipe.probe import MAX_PROBE_TRAIN, run_probe

    if not any(record.get("probe") for record in run.records):
        return False
    probe = run_probe(run.model, run.data.train_epochs.plain(MAX_PROBE_TRAIN), run.data.val)
    head_of(run.model).get_layer(LOGITS_LAYER).set_weights([probe.kernel, probe.bias])
    log.info("the head fitted again as a logistic regression on the re-estimated features: val_accuracy %.4f",
             probe.val_accuracy)
    return True


def _preflight(doctor: Doctor, findings: list) -> None:
    doctor.log_findings(findings)
    doctor.raise_on_errors(findings)


def _run_stage(run: RunState, index: int, count: int, plan: StagePlan, class_weight,
               resumed: ckpt.Checkpoint | None = None, attempt: int = 0) -> bool:
    """Train one stage (from `resumed`'s epoch when given); False when the runtime monitor stopped it for an error.
    `attempt` 1: the recipe's retry of a stopped stage (its plan already gentler)."""
    cfg, model = run.cfg, run.model
    run.setup.freezer.apply(plan)
    if plan.probe:
        return _fit_head_by_probe(run, index, count, plan)
    if resumed:  # before the feature cache: a head-only stage after fine-tuning needs the tuned backbone
        ckpt.restore_variables(model.variables, resumed.model_variables, "model variables")
    trainable = count_params(model.trainable_weights)
    cache = run.features = fc.for_stage(cfg, plan, model, run.data, run.features)
    target = cache.head_model if cache else model  # the head is shared: training one trains the other
    compile_for_stage(target, cfg.optimizer, plan, run.data.steps_per_epoch, run.setup.compile_options,
                      methods=run.methods, data=run.data)
    log.info("stage %d/%d '%s': trains %s (%s), %d trainable params, peak lr %.3g, up to %d epochs", index + 1, count,
             plan.name, plan.train, ", ".join(plan.blocks) or "head only", trainable, plan.lr, plan.epochs)
    progress = resumed.progress if resumed else ckpt.StageProgress(index, run.epoch, 0, False, {}, None, attempt)
    best, doctor_monitor, writer, callbacks = _stage_callbacks(run, index, plan, target, progress, resumed)
    started = time.time()
    if progress.finished:  # killed after the stage's last epoch, before the next one began
        best.set_model(target)
        best.on_train_end()
    else:
        _fit(run, plan, target, cache, run.epoch + progress.epochs_done, progress, callbacks, class_weight)
    if plan.blocks:
        run.features = run.setup.probe = None  # the backbone changed: cached features are stale
    for key, seconds in writer.seconds.items():
        run.checkpoint_s[key] += seconds
    run.records.append({
        "name": plan.name, "train": plan.train, "blocks": list(plan.blocks), "epochs_run": progress.epochs_done,
        "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,  # 1-based, counted over the run
        **{k: best.best_logs.get(k) for k in ("val_loss", "val_accuracy", "loss", "accuracy")},
        **({"val_map": best.best_logs.get("val_map")} if run.data.multilabel else {}),
        "lr": plan.lr, "trainable_params": trainable, "feature_cache": bool(cache),
        "lr_multipliers": lr_groups_of(target.optimizer),  # {} without discriminative LRs
        "wall_time_s": round(time.time() - started, 2),
    })
    run.epoch += progress.epochs_done
    run.run_best.offer(index, run.records[-1], model, last=index == count - 1)
    if doctor_monitor is None:
        return True
    run.runtime.extend(doctor_monitor.summary())
    return not (doctor_monitor.stopped and any(d.severity == Severity.error for d in doctor_monitor.diagnoses))


def _stage_callbacks(run: RunState, index: int, plan: StagePlan, target, progress, resumed):
    """(best-epoch tracker, runtime monitor or None, checkpoint writer, every callback in order) for one stage."""
    from tlkit.doctor.monitor import RuntimeMonitor

    cfg, model = run.cfg, run.model
    best = BestWeights(Monitor(cfg.trainer.monitor).value, plan.patience, plan.min_epochs)
    callbacks = [StageContext(index), *run.methods.callbacks(target), best, *run.callbacks, EpochLog(plan.name)]
    doctor_monitor = None
    if cfg.doctor.monitor:
        previous = [r for r in run.records if r.get("val_loss") is not None]
        multilabel = run.data.multilabel  # binary cross-entropy: chance is log 2; exact match has no chance level
        doctor_monitor = RuntimeMonitor(
            plan.name, 2 if multilabel else len(run.data.class_names), trains_backbone=bool(plan.blocks),
            reference_val_loss=min(r["val_loss"] for r in previous) if previous else None,
            batchnorm_trains=BNPolicy(cfg.schedule.bn) == BNPolicy.train and run.setup.spec.has_batch_norm,
            reference_val_accuracy=None if multilabel else max((r.get("val_accuracy") or 0.0 for r in previous),
                                                                default=None),
            warmup_epochs=plan.warmup_epochs,
        )
        callbacks.insert(1, doctor_monitor)  # right after StageContext: it reads the raw logs
    if resumed:
        ckpt.restore_optimizer(target, resumed.optimizer_variables)
        best.restore(progress.best, resumed.best_weights)
        if doctor_monitor is not None and progress.monitor:
            doctor_monitor.restore(progress.monitor)
    # Last: it counts the stage's epochs and checkpoints the state the callbacks before it leave.
    writer = ckpt.CheckpointWriter(run.run_dir if cfg.trainer.checkpoint else None, progress, plan.epochs,
                                   run.records, run.runtime, best, doctor_monitor, model_to_save=model,
                                   run_best=run.run_best, every_s=cfg.trainer.checkpoint_every_s)
    return best, doctor_monitor, writer, [*callbacks, writer, *ckpt.fault_injection()]


def _fit(run: RunState, plan: StagePlan, target, cache, first: int, progress, callbacks, class_weight) -> None:
    cfg = run.cfg
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


def _fit_head_by_probe(run: RunState, index: int, count: int, plan: StagePlan) -> bool:
    """A `probe: true` head stage: the linear head set to the probe's logistic regression (tlkit.recipe.probe)."""
    from tlkit.recipe.probe import MAX_PROBE_TRAIN, run_probe

    started = time.time()
    if run.setup.probe is None:  # after a stage that trained backbone blocks: fit on the current features
        run.setup.probe = run_probe(run.model, run.data.train_epochs.plain(MAX_PROBE_TRAIN), run.data.val)
    probe = run.setup.probe
    head_of(run.model).get_layer(LOGITS_LAYER).set_weights([probe.kernel, probe.bias])
    log.info("stage %d/%d '%s': the head fitted as a logistic regression on the frozen features (C=%g, %d training "
             "images): val_accuracy %.4f, val_loss %.4f", index + 1, count, plan.name, probe.c, probe.num_train,
             probe.val_accuracy, probe.val_loss)
    run.records.append({
        "name": plan.name, "train": plan.train, "blocks": [], "epochs_run": 0, "best_epoch": None,
        "val_loss": probe.val_loss, "val_accuracy": probe.val_accuracy, "loss": None, "accuracy": None,
        **({"val_map": probe.val_map} if probe.val_map is not None else {}),
        "lr": None, "trainable_params": count_params(run.model.trainable_weights), "feature_cache": True,
        "probe": {"c": probe.c, "num_train": probe.num_train}, "lr_multipliers": {},
        "wall_time_s": round(time.time() - started, 2),
    })
    run.run_best.offer(index, run.records[-1], run.model, last=index == count - 1)
    return True


