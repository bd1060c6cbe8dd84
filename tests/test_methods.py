"""Fine-tuning methods do what they say: discriminative LRs, L2-SP, EMA of weights, label smoothing, LP-FT."""
import json

import keras
import numpy as np
import pytest

import tlkit
from tlkit.backbones import get_spec
from tlkit.config import BackboneConfig, HeadConfig, StageConfig
from tlkit.recipe.preflight import check_config as validate
from tlkit.errors import ConfigError
from tlkit.training.methods import FineTuning, block_lr_scales
from tlkit.training.methods.optimizer import inner_optimizer
from tlkit.model.build import build_model, head_of
from tlkit.training.optim import compile_for_stage, make_accuracy, make_loss
from tlkit.training.stages import Freezer, plan_stages

SIZE, CLASSES = 32, 3


def train_config(**sections):
    base = {"backbone": {"name": "vgg16", "weights": None}, "data": {"source": "digits", "image_size": SIZE}}
    base.update(sections)
    return tlkit.as_train_config(base)


@pytest.fixture(scope="module")
def vgg():
    """VGG16 at 32 px without dropout (no randomness in a step), its blocks and its initial weights."""
    keras.utils.set_random_seed(0)
    spec = get_spec("vgg16")
    model = build_model(spec, BackboneConfig(name="vgg16", weights=None), HeadConfig(dropout=0.0, zero_init=False),
                        CLASSES, SIZE)
    rng = np.random.default_rng(0)
    batch = (rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32"), rng.integers(0, CLASSES, 8).astype("int32"))
    return spec, model, model.get_weights(), batch


def one_step(vgg, cfg, train, steps=1):
    """Weights of block4, block5 and the head before and after `steps` SGD/Adam steps from the initial weights."""
    spec, model, initial, (x, y) = vgg
    model.set_weights(initial)
    freezer = Freezer(model, spec, cfg.schedule.bn)
    stage = StageConfig(name=cfg.schedule.stages[0].name, train=train, epochs=1, cosine=False)
    plan = plan_stages([stage], spec, base_lr=cfg.optimizer.lr)[0]
    freezer.apply(plan)
    methods = FineTuning(cfg, model, freezer)
    compile_for_stage(model, cfg.optimizer, plan, steps_per_epoch=steps, methods=methods)
    kernels = {b: next(w for layer in freezer.blocks[b] for w in layer.weights) for b in ("block4", "block5")}
    kernels["head"] = head_of(model).trainable_weights[0]
    before = {k: np.array(v) for k, v in kernels.items()}
    for _ in range(steps):
        model.train_on_batch(x, y)
    return before, {k: np.array(v) for k, v in kernels.items()}, model, methods


# --- discriminative learning rates -------------------------------------------------------------


def test_block_lr_scales_decay_from_the_top_block_and_explicit_entries_win():
    assert block_lr_scales(["b1", "b2", "b3"], 0.5, {}) == {"b1": 0.25, "b2": 0.5, "b3": 1.0}
    assert block_lr_scales(["b1", "b2", "b3"], 0.5, {"b1": 0.9}) == {"b1": 0.9, "b2": 0.5, "b3": 1.0}
    assert block_lr_scales(["b1", "b2"], None, {}) == {"b1": 1.0, "b2": 1.0}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_lower_block_moves_by_its_multiplier_times_a_plain_step(vgg, optimizer):
    """SGD without momentum: the update is -lr*m*g exactly. Adam's first step is -lr*m*g/(|g|+eps): scaling the
    gradient instead would leave it unchanged, scaling the update makes it m times the plain one too."""
    opt = {"name": optimizer, "lr": 0.01, "momentum": 0.0}
    plain_before, plain_after, _, _ = one_step(vgg, train_config(optimizer=opt), "top:2")
    cfg = train_config(optimizer=opt, schedule={"lr_decay": 0.5, "stages": [{"name": "s", "train": "top:2"}]})
    before, after, model, _ = one_step(vgg, cfg, "top:2")
    opt_used = inner_optimizer(model.optimizer)
    assert opt_used.lr_groups == {"block4": 0.5, "block5": 1.0, "head": 1.0}
    for group, scale in [("block4", 0.5), ("block5", 1.0), ("head", 1.0)]:
        plain, scaled = plain_after[group] - plain_before[group], after[group] - before[group]
        assert np.abs(plain).max() > 0, f"{group} must move in one step"
        # float32 weights: a difference of two weights is exact to ~1e-9 here, updates are ~1e-5
        np.testing.assert_allclose(scaled, scale * plain, rtol=1e-4, atol=1e-3 * np.abs(plain).max())


def test_a_stage_overrides_the_schedule_decay_and_block_lr_names_a_block(vgg):
    cfg = train_config(optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.0},
                       schedule={"lr_decay": 0.5, "stages": [{"name": "s", "train": "top:2", "lr_decay": 0.25}]})
    _, _, model, _ = one_step(vgg, cfg, "top:2")
    assert inner_optimizer(model.optimizer).lr_groups["block4"] == 0.25
    cfg.schedule.stages[0].block_lr = {"block4": 0.1}
    _, _, model, _ = one_step(vgg, cfg, "top:2")
    assert inner_optimizer(model.optimizer).lr_groups["block4"] == 0.1


def test_per_group_lrs_reach_the_epoch_logs(vgg):
    spec, model, initial, (x, y) = vgg
    cfg = train_config(optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.0},
                       schedule={"lr_decay": 0.5, "stages": [{"name": "s", "train": "top:2"}]})
    _, _, model, methods = one_step(vgg, cfg, "top:2")
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=methods.callbacks(model))
    assert history.history["lr_block4"][0] == pytest.approx(0.5 * history.history["lr_block5"][0])
    assert history.history["lr_block5"][0] == pytest.approx(0.01)


# --- L2-SP -------------------------------------------------------------------------------------


def distance_from_start(before, after):
    return float(np.linalg.norm(after - before))


def test_l2sp_keeps_trained_weights_closer_to_their_start(vgg):
    """Random labels push the top block away from its start; the L2-SP pull holds it back."""
    opt = {"name": "sgd", "lr": 0.05, "momentum": 0.0}
    free_before, free_after, _, _ = one_step(vgg, train_config(optimizer=opt), "top:1", steps=6)
    cfg = train_config(optimizer=opt, regularizer={"name": "l2sp", "alpha": 3.0, "beta": 0.0})
    pulled_before, pulled_after, _, _ = one_step(vgg, cfg, "top:1", steps=6)
    free = distance_from_start(free_before["block5"], free_after["block5"])
    pulled = distance_from_start(pulled_before["block5"], pulled_after["block5"])
    assert free > 0
    assert pulled < 0.8 * free, (pulled, free)


def test_l2sp_penalty_and_its_gradient_at_a_known_point(vgg):
    """From w = w0 + delta: the penalty is alpha/2*||delta||^2 (+ beta/2*||head kernel||^2), and one SGD step
    differs from a plain one by exactly -lr*alpha*delta on the backbone and -lr*beta*w on the head kernel."""
    spec, model, initial, (x, y) = vgg
    lr, alpha, beta = 1e-3, 5.0, 50.0  # pulls well above the float32 resolution of the updated weights
    opt = {"name": "sgd", "lr": lr, "momentum": 0.0}
    cfg = train_config(optimizer=opt, regularizer={"name": "l2sp", "alpha": alpha, "beta": beta})
    freezer = Freezer(model, spec, cfg.schedule.bn)
    plan = plan_stages([StageConfig(name="s", train="top:1", epochs=1, cosine=False)], spec, base_lr=lr)[0]
    results = {}
    for name, config in (("plain", train_config(optimizer=opt)), ("l2sp", cfg)):
        model.set_weights(initial)
        freezer.apply(plan)
        methods = FineTuning(config, model, freezer)  # start values: the initial weights
        block5 = [w for layer in freezer.blocks["block5"] for w in layer.trainable_weights]
        delta = [np.full(w.shape, 0.01, "float32") for w in block5]
        for w, d in zip(block5, delta):
            w.assign(np.array(w) + d)  # the known point
        compile_for_stage(model, config.optimizer, plan, steps_per_epoch=1, methods=methods)
        model.optimizer.build(model.trainable_variables)
        head_kernel = head_of(model).trainable_weights[0]
        if name == "l2sp":
            expected = alpha / 2 * sum(float(np.sum(d.astype("float64") ** 2)) for d in delta)
            expected += beta / 2 * float(np.sum(np.array(head_kernel, "float64") ** 2))
            assert inner_optimizer(model.optimizer).l2sp_penalty() == pytest.approx(expected, rel=1e-6)
        before = [np.array(w) for w in block5] + [np.array(head_kernel)]
        model.train_on_batch(x, y)
        results[name] = [np.array(w) - b for w, b in zip(block5 + [head_kernel], before)]
        results[name + "_head"] = before[-1]
        results[name + "_resolution"] = [4 * np.spacing(np.abs(np.array(w)).max()) for w in block5 + [head_kernel]]
    expected = [-lr * alpha * d for d in delta] + [-lr * beta * results["l2sp_head"]]
    for plain, pulled, term, resolution in zip(results["plain"], results["l2sp"], expected, results["l2sp_resolution"]):
        assert np.abs(term).max() > 100 * resolution
        np.testing.assert_allclose(pulled - plain, term, rtol=1e-3, atol=2 * resolution)


# --- EMA of weights ----------------------------------------------------------------------------


def test_ema_weights_are_validated_kept_and_restored():
    """Validation runs on the EMA weights and the stage ends holding them (so the saved model has them)."""
    from tlkit.training.callbacks import BestWeights

    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, name="head")(inputs))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 4)).astype("float32"), rng.integers(0, CLASSES, 40).astype("int32")
    cfg = train_config(optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.0, "ema": True, "ema_momentum": 0.8})
    plan = plan_stages([StageConfig(name="head", epochs=1, cosine=False)], get_spec("vgg16"), base_lr=0.5)[0]
    methods = FineTuning(cfg, model, freezer=None)
    compile_for_stage(model, cfg.optimizer, plan, steps_per_epoch=5, methods=methods)
    raw = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw.append([np.array(w) for w in model.trainable_weights])

    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, validation_data=(x, y),
                        callbacks=[*methods.callbacks(model), BestWeights("val_loss"), Record()])
    ema = raw[0]
    for t, weights in enumerate(raw[1:], start=1):
        m = min(0.8, t / (t + 10))
        ema = [m * e + (1 - m) * w for e, w in zip(ema, weights)]
    assert np.abs(raw[-1][0] - ema[0]).max() > 1e-2, "the EMA must differ from the last raw weights"
    for held, expected in zip(model.trainable_weights, ema):
        np.testing.assert_allclose(np.array(held), expected, rtol=1e-5, atol=1e-6)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(x, y, verbose=0)[0], rel=1e-5)


# --- label smoothing, sparse and soft labels ----------------------------------------------------


def cross_entropy(target, logits):
    logits = logits.astype("float64")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(np.mean(-(target * log_p).sum(-1)))


LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], "float32")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_accepts_sparse_and_soft_labels_with_label_smoothing(smoothing):
    loss = make_loss(train_config(loss={"label_smoothing": smoothing}))
    one_hot = np.eye(3)[[0, 2]]
    smoothed = (1 - smoothing) * one_hot + smoothing / 3
    expected = cross_entropy(smoothed, LOGITS)
    assert float(loss(np.array([0, 2], "int32"), LOGITS)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(np.array([[0], [2]], "int32"), LOGITS)) == pytest.approx(expected, rel=1e-5)
    soft = np.array([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]], "float32")  # MixUp / CutMix labels
    expected_soft = cross_entropy((1 - smoothing) * soft + smoothing / 3, LOGITS)
    assert float(loss(soft, LOGITS)) == pytest.approx(expected_soft, rel=1e-5)


def test_accuracy_is_named_accuracy_and_reads_both_label_forms():
    for labels in (np.array([0, 1], "int32"), np.array([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3]], "float32")):
        metric = make_accuracy()
        metric.update_state(labels, LOGITS)
        assert metric.name == "accuracy"
        assert float(metric.result()) == pytest.approx(0.5)  # row 0 right; row 1 is class 1, predicted 2


def test_soft_training_labels_and_sparse_validation_labels_fit_together():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(inputs))
    cfg = train_config(loss={"label_smoothing": 0.1})
    plan = plan_stages([StageConfig(name="head", epochs=1)], get_spec("vgg16"), base_lr=1e-2)[0]
    compile_for_stage(model, cfg.optimizer, plan, steps_per_epoch=2, methods=FineTuning(cfg, model, None))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 4)).astype("float32")
    soft = rng.dirichlet(np.ones(3), 16).astype("float32")
    history = model.fit(x, soft, batch_size=8, epochs=1, verbose=0,
                        validation_data=(x, rng.integers(0, 3, 16).astype("int32")))
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= history.history.keys()
    assert all(np.isfinite(v[0]) for v in history.history.values())


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sections,key", [
    ({"schedule": {"lr_decay": 1.5}}, "schedule.lr_decay"),
    ({"schedule": {"block_lr": {"block9": 0.5}}}, "schedule.block_lr.block9"),
    ({"schedule": {"stages": [{"name": "s", "train": "all", "lr_decay": 0.0}]}}, "schedule.stages.0.lr_decay"),
    ({"optimizer": {"ema_momentum": 1.0}}, "optimizer.ema_momentum"),
    ({"regularizer": {"name": "l2sp", "alpha": -1.0}}, "regularizer.alpha"),
    ({"regularizer": {"name": "l2sp"}, "optimizer": {"name": "adamw", "weight_decay": 0.01}}, "optimizer.weight_decay"),
    ({"loss": {"label_smoothing": 1.0}}, "loss.label_smoothing"),
])
def test_bad_method_settings_fail_validation_naming_the_key(sections, key):
    with pytest.raises(ConfigError) as error:
        validate(train_config(**sections))
    assert key in str(error.value)


def test_shipped_method_configs_compose(compose):
    cfg = tlkit.as_train_config(compose(["data=digits", "schedule=lp_ft", "regularizer=l2sp", "loss.label_smoothing=0.1",
                                         "schedule.lr_decay=0.7", "optimizer.ema=true"]))
    assert cfg.regularizer.name.value == "l2sp" and cfg.regularizer.alpha > 0
    assert [s.train for s in cfg.schedule.stages] == ["head", "all"]
    assert cfg.schedule.stages[0].patience and not cfg.schedule.stages[0].cosine  # early-stopped at a constant LR
    from tlkit.recipe.auto import apply

    defaults = tlkit.as_train_config(compose(["data=digits"]))
    defaults, _ = apply(defaults, validate(defaults))  # label smoothing is the recipe's: off under 20k images
    assert (defaults.regularizer.name.value, defaults.loss.label_smoothing, defaults.optimizer.ema,
            defaults.schedule.lr_decay, defaults.augment.mixup) == ("none", 0.0, False, None, 0.0), \
        "every method is off by default"
    with pytest.raises(ConfigError, match="optimizer.weight_decay"):
        validate(tlkit.as_train_config(compose(["data=digits", "regularizer=l2sp", "optimizer=adamw"])))


# --- LP-FT and every method through the trainer --------------------------------------------------


def test_lp_ft_fine_tunes_from_the_early_stopped_head(compose, tmp_path, monkeypatch):
    """Stage 1 trains the head (on cached features) until the monitor stops improving; stage 2 starts
    from exactly that head. The other methods run along to show they work with the cache and stages."""
    import tlkit.training.trainer as trainer

    heads = []

    class RecordingBestWeights(trainer.BestWeights):
        def on_train_end(self, logs=None):
            super().on_train_end(logs)
            heads.append(("end", [np.array(w) for w in self.model.get_layer("head").get_weights()]))

    def recording_compile(target, *args, **kwargs):
        heads.append(("start", [np.array(w) for w in target.get_layer("head").get_weights()]))
        return compile_for_stage(target, *args, **kwargs)

    monkeypatch.setattr(trainer, "BestWeights", RecordingBestWeights)
    monkeypatch.setattr(trainer, "compile_for_stage", recording_compile)
    cfg = tlkit.as_train_config(compose([
        # 64 images and a high head LR: the probe's val loss stops improving well before the 50-epoch cap.
        "backbone=vgg16", "backbone.weights=null", "data=digits", "data.image_size=32", "data.max_images=64",
        "data.batch_size=16", "augment=none", "schedule=lp_ft", "schedule.stages.1.epochs=1",
        "schedule.stages.1.warmup_epochs=0", "optimizer.lr=0.1", "trainer.monitor=val_loss",
        "schedule.lr_decay=0.5", "regularizer=l2sp", "optimizer.ema=true", "loss.label_smoothing=0.1",
        "trainer.verbose=0", "trainer.save_model=false", "doctor.enabled=false",
    ]))
    result = tlkit.train(cfg, tmp_path)
    probe, finetune = result.metrics["stages"]
    assert probe["feature_cache"] and not finetune["feature_cache"]
    assert probe["epochs_run"] < cfg.schedule.stages[0].epochs, "the probe must stop early on the monitor"
    assert probe["best_epoch"] < probe["epochs_run"]
    assert [kind for kind, _ in heads] == ["start", "end", "start", "end"]
    trained_head, finetune_start = heads[1][1], heads[2][1]
    assert np.abs(trained_head[0]).max() > 0, "the probe trained the zero-initialised head"
    for a, b in zip(trained_head, finetune_start):
        np.testing.assert_array_equal(a, b)
    # The methods: per-block LRs recorded and logged, the L2-SP term logged, EMA validated.
    assert finetune["lr_multipliers"]["block4"] == 0.5 and finetune["lr_multipliers"]["block1"] == 0.5 ** 4
    log = (tmp_path / "train.log").read_text()
    assert "lr_block1=" in log and "l2sp_penalty=" in log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard" / "train"))
    events.Reload()
    tags = set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
    assert {"epoch_lr_block1", "epoch_lr_block5", "epoch_l2sp_penalty"} <= tags
    assert probe["val_accuracy"] > 0.2  # chance is 0.1 (random-weight VGG16: fine-tuning it gains nothing here)
    assert json.loads((tmp_path / "metrics.json").read_text())["stages"][1]["lr_multipliers"]["head"] == 1.0
