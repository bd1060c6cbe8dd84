"""The LR range test (Smith 2017, "Cyclical Learning Rates"; fastai's lr_find): `tlkit lr-find`, optimizer.lr=auto.

One stage of the run as the trainer would train it (same model, data, augmentation and mixing,
frozen blocks, optimizer and loss), for up to `steps` steps with the LR growing exponentially
from `start_lr` to `end_lr` (1e-7 -> 10 over 100 steps by default), one batch per step:

- the loss is smoothed with a bias-corrected exponential moving average (beta 0.98, fastai's);
- the sweep stops when the loss is NaN/Inf or the smoothed loss exceeds 4x its best (divergence);
- the suggestion is one documented rule (`rule=`), both candidates are recorded:
    min_div_10 (default)  the LR at the smoothed loss's minimum, divided by 10 (fastai's `lr_min`):
                          a step well inside the region where the loss still falls fast
    steepest              the LR where the smoothed loss falls fastest per decade of LR, before
                          its minimum (fastai's `lr_steep`)
  Either lies inside the swept range and below the LR where the loss diverged.

Head-only stages run on the pooled features of the frozen backbone (the batches the sweep
needs, once; tlkit.training.feature_cache), as the trainer does, unless MixUp/CutMix is on. The model's
weights are restored afterwards. The suggestion is the stage's peak LR; as optimizer.lr it is
divided by the stage's lr_scale. For a later stage the head starts untrained (the finder does not
train the stages before it), so there the suggestion is a rough guide.
Outputs: lr_find.json (lrs, losses, smoothed losses, suggestion, rule) and lr_find.png.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

log = logging.getLogger("tlkit.train")

START_LR, END_LR, STEPS = 1e-7, 10.0, 100
SMOOTHING = 0.98  # EMA of the loss (bias-corrected), as fastai
DIVERGENCE_FACTOR = 4.0  # stop once the smoothed loss exceeds 4x its best, as fastai
RULES = {
    "min_div_10": "the LR at the smoothed loss's minimum / 10 (fastai lr_min)",
    "steepest": "the LR of the steepest fall of the smoothed loss per decade of LR, before its minimum (fastai lr_steep)",
}
DEFAULT_RULE = "min_div_10"
JSON_FILE, PNG_FILE = "lr_find.json", "lr_find.png"


@dataclass
class LRFinderResult:
    """One sweep: what was asked (the first eight fields), the losses per step and the suggestion."""

    stage: str
    stage_index: int
    lr_scale: float
    optimizer: str
    start_lr: float
    end_lr: float
    steps_requested: int
    rule: str
    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    diverged: bool = False
    divergence_lr: float | None = None  # the LR whose loss broke the divergence rule
    suggestion: float | None = None  # the stage's peak LR
    candidates: dict = field(default_factory=dict)  # rule -> LR
    min_loss_lr: float | None = None
    feature_cache: bool = False

    @property
    def steps_run(self) -> int:
        return len(self.lrs)

    @property
    def optimizer_lr(self) -> float:
        """The suggestion as optimizer.lr: divided by the stage's lr_scale."""
        return self.suggestion / self.lr_scale

    def to_dict(self) -> dict:
        return {**asdict(self), "steps_run": self.steps_run, "optimizer_lr": self.optimizer_lr,
                "rule_description": RULES[self.rule]}

    def summary(self) -> str:
        end = (f"diverged at lr {self.divergence_lr:.3g} after {self.steps_run} of {self.steps_requested} steps"
               if self.diverged else f"no divergence in {self.steps_run} steps up to lr {self.lrs[-1]:.3g}")
        text = (f"LR finder, stage '{self.stage}' ({self.optimizer}{', on cached features' if self.feature_cache else ''})"
                f": {end}; smoothed loss lowest at lr {self.min_loss_lr:.3g}. Suggested peak LR {self.suggestion:.3g} "
                f"({self.rule}: {RULES[self.rule]})")
        if self.lr_scale != 1.0:
            text += f" = optimizer.lr {self.optimizer_lr:.3g} x lr_scale {self.lr_scale:g}"
        return text


# --------------------------------------------------------------------------- the sweep (no Keras)


def lr_at(step: int, start_lr: float, end_lr: float, steps: int) -> float:
    """The LR of step `step` (0-based) of a sweep growing exponentially from `start_lr` (step 0) to `end_lr` (step
    `steps` - 1)."""
    return float(start_lr * (end_lr / start_lr) ** (step / max(steps - 1, 1)))


def sweep(step_fn, result: LRFinderResult) -> LRFinderResult:
    """Run `step_fn(lr) -> loss` at exponentially growing LRs until the end or divergence; fill `result`.

    `step_fn`: one training step at learning rate `lr`, returning its loss. `result`: an LRFinderResult whose
    start_lr, end_lr, steps_requested and rule say what to sweep; its lrs, losses, smoothed, diverged, candidates,
    suggestion and min_loss_lr are filled in, and it is returned. Raises FloatingPointError when the very first loss
    is not finite.
    """
    average, best = 0.0, math.inf
    for step in range(result.steps_requested):
        lr = lr_at(step, result.start_lr, result.end_lr, result.steps_requested)
        loss = float(step_fn(lr))
        if not math.isfinite(loss):
            result.diverged, result.divergence_lr = True, lr
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        result.lrs.append(lr)
        result.losses.append(loss)
        result.smoothed.append(smoothed)
        best = min(best, smoothed)
        if smoothed > DIVERGENCE_FACTOR * best:
            result.diverged, result.divergence_lr = True, lr
            break
    if not result.lrs:
        raise FloatingPointError(f"the loss was not finite at the first step (lr {result.start_lr:.3g}): check the "
                                 "data (tlkit doctor) before looking for a learning rate")
    result.candidates = suggestions(result.lrs, result.smoothed)
    result.suggestion = result.candidates[result.rule]
    result.min_loss_lr = result.lrs[int(np.argmin(result.smoothed))]
    return result


def suggestions(lrs: list, smoothed: list) -> dict:
    """Every rule's LR for one sweep: {rule name: LR}, each within [lrs[0], lrs[argmin]], so below any divergence.

    `lrs`: the LR of each step run; `smoothed`: the smoothed loss of each of those steps (same length).
    """
    lrs_arr, loss = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    lowest = int(np.argmin(loss))
    out = {"min_div_10": float(max(lrs_arr[lowest] / 10.0, lrs_arr[0]))}
    if lowest >= 2:
        slope = np.gradient(loss[: lowest + 1], np.log10(lrs_arr[: lowest + 1]))
        out["steepest"] = float(lrs_arr[int(np.argmin(slope))])
    else:
        out["steepest"] = float(lrs_arr[0])
    return out


# --------------------------------------------------------------------------- on a tlkit model


def find_lr(cfg, data, model, freezer, plan, stage_index: int, compile_options: dict | None = None,
            start_lr: float = START_LR, end_lr: float = END_LR, steps: int = STEPS,
            rule: str = DEFAULT_RULE) -> LRFinderResult:
    """The LR sweep on one stage with the trainer's data and model; the model's weights are restored after.

    cfg: the run's TrainConfig (optimizer, loss, class weights, feature cache and mixing settings).
    data: the run's DataBundle (its training epochs feed the sweep, one batch per step).
    model: the built tlkit model; it stays uncompiled (the sweep compiles a second Model on its layers).
    freezer: the run's tlkit.training.stages.Freezer, which sets what `plan` trains.
    plan: the tlkit.training.stages.StagePlan of the stage to sweep; stage_index: its index in cfg.schedule.stages.
    compile_options: Keras compile options of the run (jit_compile...; steps_per_execution is ignored: one step
        per LR); None: Keras' defaults.
    start_lr, end_lr, steps: the sweep, exponentially from start_lr to end_lr in at most `steps` steps.
    rule: the suggestion rule, a key of RULES.
    Returns the filled LRFinderResult; raises ConfigError for an invalid sweep (check_sweep).
    """
    from tlkit.config.schema import ClassWeight, OptimizerName
    from tlkit.data import class_weights
    from tlkit.training.feature_cache import eligibility

    check_sweep(start_lr, end_lr, steps, rule)
    result = LRFinderResult(plan.name, stage_index, cfg.schedule.stages[stage_index].lr_scale,
                            OptimizerName(cfg.optimizer.name).value, float(start_lr), float(end_lr), int(steps), rule)
    freezer.apply(plan)
    saved = model.get_weights()
    use_cache, _ = eligibility(cfg, plan, model)  # the trainer's rule: the sweep trains what the stage would
    target, batches = _compiled_target(cfg, data, model, freezer, plan, use_cache, steps, start_lr, compile_options)
    result.feature_cache = use_cache
    weights = (class_weights(data.train_counts) if ClassWeight(cfg.data.class_weight) == ClassWeight.auto
               and not data.multilabel else None)  # multi-label: positive weights in the loss
    iterator = _cycle(batches)

    def step(lr: float) -> float:
        target.optimizer.learning_rate.assign(lr)
        images, labels = next(iterator)
        return target.train_on_batch(images, labels, class_weight=weights, return_dict=True)["loss"]

    try:
        sweep(step, result)
    finally:
        model.set_weights(saved)
    return result


def _compiled_target(cfg, data, model, freezer, plan, use_cache: bool, steps: int, start_lr: float,
                     compile_options: dict | None):
    """(the model the sweep trains, compiled at `start_lr`, the batches it trains on): the head on the frozen
    backbone's features of the batches the sweep needs when `use_cache`, else a second Model on `model`'s layers."""
    import keras

    import tlkit.training.distribute as distribute
    import tlkit.training.feature_cache as fc
    from tlkit.training.methods.fine_tuning import FineTuning
    from tlkit.training.optim import make_loss, make_optimizer

    per_epoch = data.steps_per_epoch
    with distribute.model_scope(model):
        if use_cache:  # the frozen backbone's features of the batches the sweep needs, computed once
            features, labels = fc.features_of(model, data.train_epochs.epoch(0).take(min(steps, per_epoch)))
            target = fc.head_on_features(model, features.shape[-1])
            size = min(cfg.data.batch_size, len(labels))
            batches = [(features[i:i + size], labels[i:i + size]) for i in range(0, len(labels) - size + 1, size)]
        else:  # a second Model on the same layers: `model` itself stays uncompiled for the trainer
            target = keras.Model(model.inputs, model.outputs, name="lr_finder")
            batches = data.train_epochs.for_epochs(0, math.ceil(steps / per_epoch))
        options = {k: v for k, v in (compile_options or {}).items() if k != "steps_per_execution"}
        methods = FineTuning(cfg, model, freezer).optimizer_options(target, plan)  # per-block LRs, L2-SP, EMA
        target.compile(optimizer=make_optimizer(cfg.optimizer, float(start_lr), **methods), loss=make_loss(cfg, data),
                       steps_per_execution=1, **options)
    return target, batches


def _cycle(batches):
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the LR finder got no training batch")


def check_sweep(start_lr: float, end_lr: float, steps: int, rule: str) -> None:
    """Raise ConfigError (naming start_lr, steps or rule) unless 0 < start_lr < end_lr, steps >= 5 and `rule` is a
    key of RULES."""
    from tlkit.errors import ConfigError

    if not 0 < start_lr < end_lr:
        raise ConfigError("start_lr", start_lr, f"a number > 0 and below end_lr={end_lr}")
    if steps < 5:
        raise ConfigError("steps", steps, "an integer >= 5 (100 is usual)")
    if rule not in RULES:
        raise ConfigError("rule", rule, " or ".join(RULES))


# --------------------------------------------------------------------------- outputs


def write_outputs(result: LRFinderResult, directory) -> tuple[Path, Path | None]:
    """Write `result` as lr_find.json and lr_find.png in `directory` (created if missing); returns their paths.

    A failing plot logs a warning and returns None for the PNG: the JSON is always written.
    """
    from tlkit.fileio import atomic_write

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    json_path = directory / JSON_FILE
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
    try:
        from tlkit.plots import save

        png_path = save(figure(result), directory / PNG_FILE)
    except Exception as error:  # noqa: BLE001 - a picture never loses the result
        log.warning("could not draw %s: %s", PNG_FILE, error)
        png_path = None
    return json_path, png_path


def figure(result: LRFinderResult):
    """The matplotlib figure of `result`: smoothed loss against LR (log axis), raw losses faint, the suggestion and
    the divergence marked."""
    from tlkit.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(figsize=(7.5, 4.5))
    lrs, smoothed = np.asarray(result.lrs), np.asarray(result.smoothed)
    axes.plot(lrs, result.losses, color="0.75", linewidth=0.8, label="loss per step")
    axes.plot(lrs, smoothed, color="tab:blue", linewidth=2, label=f"smoothed (EMA {SMOOTHING:g})")
    axes.set_xscale("log")
    low, high = float(smoothed.min()), float(np.percentile(smoothed, 95))
    margin = 0.1 * (high - low) or 0.1
    axes.set_ylim(low - margin, max(high, float(smoothed[0])) + 3 * margin)
    at = float(np.interp(np.log(result.suggestion), np.log(lrs), smoothed))
    axes.axvline(result.suggestion, color="tab:red", linestyle="--", linewidth=1)
    axes.plot([result.suggestion], [at], "o", color="tab:red", markersize=8,
              label=f"suggestion {result.suggestion:.2g} ({result.rule})")
    axes.plot([result.min_loss_lr], [smoothed.min()], "v", color="tab:green", markersize=7,
              label=f"lowest smoothed loss, lr {result.min_loss_lr:.2g}")
    if result.diverged:
        axes.axvline(result.divergence_lr, color="0.3", linestyle=":", linewidth=1)
        axes.annotate(f"diverged\nlr {result.divergence_lr:.2g}", (result.divergence_lr, axes.get_ylim()[1]),
                      xytext=(-4, -4), textcoords="offset points", ha="right", va="top", fontsize=9, color="0.3")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    axes.set_title(f"LR finder: stage '{result.stage}', {result.optimizer}, {result.steps_run} of "
                   f"{result.steps_requested} steps", fontsize=11)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- optimizer.lr=auto and the CLI


def auto_lr(cfg, spec, data, model, freezer, run_dir, compile_options: dict | None = None,
            lr_factor: float = 1.0, doctor=None):
    """optimizer.lr=auto: the finder on the first stage; returns (cfg with a float optimizer.lr, metrics entry).

    On resume the suggestion of the interrupted run (RUN_DIR/lr_find.json) is reused, so both halves
    train at the same LR. `lr_factor` (tf.distribute LR scaling) is divided out: the finder already
    measured at the global batch. LR findings the pre-flight doctor skipped are checked here.

    cfg, spec: the run's TrainConfig (with optimizer.lr=auto) and BackboneSpec. data, model, freezer: the run's
    DataBundle, built model and tlkit.training.stages.Freezer (as in find_lr). run_dir: the run directory, where
    lr_find.json/.png are written (and read back on resume). compile_options: as in find_lr. lr_factor: the
    distribution LR factor the trainer multiplies optimizer.lr by (tlkit.training.distribute.lr_factor). doctor: the run's
    tlkit.doctor.Doctor, to record the LR findings (None: not checked).
    The metrics entry: optimizer_lr, suggestion, rule, steps_run and diverged (the last two None on resume).
    """
    from tlkit.training.stages import plan_stages

    index = next((i for i, stage in enumerate(cfg.schedule.stages) if not stage.probe), 0)
    previous = Path(run_dir) / JSON_FILE
    if getattr(cfg, "resume", None) and previous.is_file():
        saved = json.loads(previous.read_text())
        result = None
        suggestion, rule = float(saved["suggestion"]), saved["rule"]
        log.info("optimizer.lr=auto: reusing the LR finder's suggestion %.3g from %s", suggestion, previous)
    else:
        # The peak LR is what the finder looks for, on the first stage the optimizer trains (not a probe stage).
        plan = plan_stages(cfg.schedule.stages, spec, 1.0)[index]
        result = find_lr(cfg, data, model, freezer, plan, index, compile_options)
        suggestion, rule = result.suggestion, result.rule
        write_outputs(result, run_dir)
        log.info("%s", result.summary())
    lr = suggestion / (cfg.schedule.stages[index].lr_scale or 1.0) / lr_factor
    log.info("optimizer.lr=auto -> optimizer.lr=%.3g (LR finder, rule %s; %s and %s in the run directory)",
             lr, rule, JSON_FILE, PNG_FILE)
    cfg = replace(cfg, optimizer=replace(cfg.optimizer, lr=float(lr)))
    if doctor is not None:
        # The doctor's LR limits are rules of thumb; this LR was measured on the data (the loss still fell
        # there), so they warn and do not stop the run (doctor.strict=true still does).
        from tlkit.doctor.config_checks import diagnose_config
        from tlkit.doctor.findings import Severity

        measured = " [optimizer.lr=auto: chosen by the LR finder from measured losses, see lr_find.png]"
        findings = doctor.record([replace(f, severity=Severity.warning if f.severity == Severity.error else f.severity,
                                          message=f.message + measured)
                                  for f in diagnose_config(cfg, spec) if f.id in LR_FINDINGS])
        doctor.log_findings(findings)
        doctor.raise_on_errors(findings)
    entry = {"optimizer_lr": float(lr), "suggestion": float(suggestion), "rule": rule,
             "steps_run": result.steps_run if result else None, "diverged": result.diverged if result else None}
    return cfg, entry


LR_FINDINGS = ("lr-too-high", "lr-too-low")  # the pre-flight checks that need a number


def run_command(cfg, spec, output, stage: str | None = None, start_lr: float = START_LR, end_lr: float = END_LR,
                steps: int = STEPS, rule: str = DEFAULT_RULE, data_scan=None) -> LRFinderResult:
    """`tlkit lr-find`: data, model and freezing as train.py would build them, the sweep, the files in `output`.

    cfg, spec: the checked TrainConfig and its BackboneSpec (tlkit.recipe.preflight.check_config); the default recipe is
    applied here. output: the folder for lr_find.json and lr_find.png. stage: the name of the stage to sweep, one the
    optimizer trains (None: the first such stage). start_lr, end_lr, steps, rule: the sweep, as in find_lr.
    data_scan: the pre-flight's tlkit.data.scan.DataScan (tlkit.recipe.preflight.check_run), so the data is walked once.
    Returns the LRFinderResult; raises ConfigError for an unknown stage or an invalid sweep.
    """
    import tlkit.recipe.auto as auto_recipe
    import tlkit.training.run_setup as run_setup
    import tlkit.training.runtime as runtime
    from tlkit.errors import ConfigError

    check_sweep(start_lr, end_lr, steps, rule)
    cfg, recipe = auto_recipe.apply(cfg, spec, data_scan)  # first: the recipe may turn a probe stage into a trained one
    names = [s.name for s in cfg.schedule.stages]
    trained = [s.name for s in cfg.schedule.stages if not s.probe]  # a probe stage has no learning rate
    index = names.index(trained[0]) if stage is None and trained else names.index(stage) if stage in trained else -1
    if index < 0:
        raise ConfigError("stage", stage, f"a stage of this schedule the optimizer trains: {', '.join(trained)}")
    auto_recipe.log_recipe(recipe)
    with runtime.conv_gradients(cfg.trainer.fast_conv_grad):
        setup = run_setup.build(cfg, spec, recipe, data_scan=data_scan)  # data, model, the probe: as train.py builds
        plan = setup.plans(peak_lr=1.0)[index]  # the finder looks for the peak LR: lr is the stage's lr_scale
        options = {"jit_compile": setup.compile_options["jit_compile"]}
        result = find_lr(setup.cfg, setup.data, setup.model, setup.freezer, plan, index, options, start_lr, end_lr,
                         steps, rule)
    write_outputs(result, output)
    return result
