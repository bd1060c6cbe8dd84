"""One set-up for everything that builds a run's data and model: the trainer, `tlkit doctor`, `tlkit lr-find`.

    config (validated, the recipe applied) -> tf.distribute strategy -> seeds -> data -> model under the
    dtype policy and the strategy's scope -> compile options -> block freezer -> the recipe's probe

so the doctor checks, and the LR finder measures, exactly what training would run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import keras

import tlkit.recipe.auto as auto_recipe
import tlkit.recipe.measured as measured
import tlkit.training.distribute as distribute
import tlkit.training.runtime as runtime
from tlkit.backbones.spec import BackboneSpec
from tlkit.config.schema import BNPolicy, TrainConfig
from tlkit.config.validate import resolved_image_size
from tlkit.model.build import build_model
from tlkit.training.stages import Freezer, plan_stages

log = logging.getLogger("tlkit.train")


@dataclass
class RunSetup:
    cfg: TrainConfig  # with every recipe decision filled in (the probe's too, once it ran)
    spec: BackboneSpec
    recipe: auto_recipe.AutoRecipe | None
    strategy: object  # tf.distribute strategy, or None (Keras's default)
    data: object  # tlkit.data.pipeline.DataBundle
    image_size: int
    precision: str
    model: keras.Model  # the training model: RGB 0-255 in, logits out
    compile_options: dict  # jit_compile, steps_per_execution
    freezer: Freezer | None  # set once schedule.bn is known
    lr_factor: float  # trainer.lr_scaling over the replicas (1 unless set)
    probe: object = None  # tlkit.recipe.probe.ProbeResult on the pretrained features, when the recipe needed it
    data_scan: object = None  # tlkit.data.scan.DataScan the data was loaded from (None: the loader scanned it)
    # The training images through the pretrained model (tlkit.recipe.frozen_pass), from the BatchNorm measurement, for the
    # probe: one pass for both (only while the two sample the same images, and the statistics stay as stored).
    pretrained_pass: object = None

    def plans(self, peak_lr: float | None = None):
        """The stages as tlkit.training.stages.StagePlan: at the current optimizer.lr scaled for the replicas, or, with
        `peak_lr`, at that LR as it is (the LR finder plans at 1.0: each stage's lr is then its lr_scale)."""
        if peak_lr is None:
            lr = self.cfg.optimizer.lr
            peak_lr = (lr if isinstance(lr, float) else 1.0) * self.lr_factor
        return plan_stages(self.cfg.schedule.stages, self.spec, peak_lr)


def build(cfg: TrainConfig, spec: BackboneSpec, recipe, *, first_stage: int = 0, data_scan=None) -> RunSetup:
    """Data, model and the recipe's probe for `cfg` (already through auto_recipe.apply).

    spec: cfg's BackboneSpec; recipe: what auto_recipe.apply returned with cfg (None: no recipe).
    `first_stage`: the stage training starts at (a resumed run): the probe runs only when a probe stage is still
    ahead or the flip is still open. `data_scan`: the pre-flight's tlkit.data.scan.DataScan of cfg.data
    (tlkit.recipe.preflight.check_run), so the loader neither checks nor walks the data again; None: it does.
    """
    strategy = distribute.make_strategy(cfg.trainer)  # before any TensorFlow op: multi-worker collectives need it
    from tlkit.model.pretrain import resolve_weights

    # backbone.weights=tlkit:TASK is pretrained now, on first use, not inside build_model: pretraining seeds itself,
    # and a run must train the same whether its weights were just made or found in the cache.
    resolve_weights(spec, cfg.backbone.weights)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.trainer.deterministic:
        runtime.enable_op_determinism()

    from tlkit.data import load_data  # tf.data: imported only now

    image_size = resolved_image_size(cfg, spec)
    data = load_data(cfg.data, cfg.augment, image_size, cfg.seed, cfg.trainer.memory_budget_gb, data_scan,
                     task=cfg.task)
    log.info("data: %d train / %d val / %d test images, %d classes, %d px, %d steps per epoch", data.num_train,
             data.num_val, data.num_test, len(data.class_names), image_size, data.steps_per_epoch)
    device = runtime.detect_device()
    precision = runtime.resolve_precision(cfg.trainer.precision, device)
    # The policy applies to the layers built here, and only here; the strategy's scope puts their variables on every replica.
    with runtime.dtype_policy(precision), distribute.scope(strategy):
        model = build_model(spec, cfg.backbone, cfg.head, len(data.class_names), image_size)
    compile_options = {
        "jit_compile": runtime.resolve_jit_compile(cfg.trainer.jit_compile),
        "steps_per_execution": runtime.resolve_steps_per_execution(cfg.trainer.steps_per_execution, device,
                                                                   data.steps_per_epoch),
    }
    log.info("%s", runtime.describe(cfg.trainer, device, precision, compile_options["steps_per_execution"]))
    log.info("%s", distribute.describe(strategy, cfg.trainer, cfg.data.batch_size))
    setup = RunSetup(cfg, spec, recipe, strategy, data, image_size, precision, model, compile_options, None,
                     distribute.lr_factor(cfg.trainer.lr_scaling, distribute.replicas(strategy)), data_scan=data_scan)
    if first_stage == 0:  # a resumed run restores the statistics with the model's variables
        batch_norm_statistics(setup)
    distribute.check_batch(strategy, cfg.data.batch_size, setup.cfg.schedule.bn)
    setup.freezer = Freezer(model, spec, setup.cfg.schedule.bn)
    if any(s.probe for s in cfg.schedule.stages[first_stage:]) or cfg.augment.flip is None:
        run_probe(setup)
    return setup


BN_SAMPLE = 1024  # training images the BatchNorm statistics are measured on


def batch_norm_statistics(setup: RunSetup) -> None:
    """schedule.bn=adapt: re-estimate the backbone's BatchNorm statistics on the training images (AdaBN); null (the
    recipe's): first measure how far the images are from the stored statistics (decide_bn)."""
    from tlkit.recipe.frozen_pass import frozen_pass
    from tlkit.training.stages import batchnorm_shift, reestimate_batchnorm

    cfg = setup.cfg
    has_batch_norm = setup.spec.has_batch_norm
    if cfg.schedule.bn is None:
        if not has_batch_norm:
            setup.cfg = replace(cfg, schedule=replace(cfg.schedule, bn=BNPolicy.frozen))
            return
        started = time.time()
        statistics = frozen_pass(setup.model, setup.data.train_epochs.plain(BN_SAMPLE), batch_norm=True)
        shift = batchnorm_shift(setup.model, variances=statistics.bn_variances)
        if setup.data.num_train <= BN_SAMPLE:  # every training image: the probe's sample too, so it reuses the pass
            setup.pretrained_pass = statistics
        log.info("BatchNorm statistics measured on %d training images in %.1fs: median |log variance ratio| %.2f",
                 min(BN_SAMPLE, setup.data.num_train), time.time() - started, shift)
        setup.cfg = cfg = measured.apply_bn(cfg, setup.recipe, shift)
    if BNPolicy(cfg.schedule.bn) == BNPolicy.adapt and has_batch_norm:
        setup.pretrained_pass = None  # the features change with the statistics
        started = time.time()
        with distribute.model_scope(setup.model):
            reestimate_batchnorm(setup.model, setup.data.train_epochs.plain(BN_SAMPLE))
        log.info("BatchNorm statistics re-estimated on the training images (AdaBN) in %.1fs", time.time() - started)


def run_probe(setup: RunSetup) -> None:
    """The recipe's probe on the pretrained features (tlkit.recipe.probe): decides augment.flip when it is open."""
    from tlkit.data.augment import build_augmenter
    from tlkit.recipe.probe import MAX_PROBE_TRAIN, run_probe as fit_probe

    started = time.time()
    data, cfg = setup.data, setup.cfg
    setup.probe = result = fit_probe(setup.model, data.train_epochs.plain(MAX_PROBE_TRAIN), data.val,
                                     train_pass=setup.pretrained_pass)
    setup.pretrained_pass = None
    log.info("probe: a logistic regression on the frozen %d-d features of %d training images (C=%g) classifies "
             "%.1f%% of the %d validation images (chance %.1f%%) and %.1f%% of their mirror images (%.1fs)",
             result.kernel.shape[0], result.num_train, result.c, 100 * result.val_accuracy, result.num_val,
             100 * result.chance, 100 * result.flipped_val_accuracy, time.time() - started)
    if setup.recipe is not None:
        setup.recipe.probe = result.to_dict()
    if cfg.augment.flip is None:  # open only while the recipe decides it (tlkit.recipe.auto.apply)
        evidence = result.to_dict()
        if result.val_map is not None:  # multi-label: mirrored images judged by the probe's mAP, not exact match
            evidence.update(val_accuracy=result.val_map, flipped_val_accuracy=result.flipped_val_map)
        setup.cfg = measured.apply_flip(cfg, setup.recipe, evidence)
        data.train_epochs.set_augmenter(build_augmenter(setup.cfg.augment, setup.image_size), setup.image_size)
