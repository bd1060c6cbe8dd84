"""The recipe's probe and what it decides: a linear probe on frozen features, flips that keep labels, the probe head,
and BatchNorm statistics measured and re-estimated on the training images."""
import math

import keras
import numpy as np
import pytest

import tlkit
from tlkit.recipe.measured import decide_flip
from tlkit.backbones import get_spec
from tlkit.config.schema import BackboneConfig, HeadConfig
from tlkit.model.build import build_model
from tlkit.recipe.probe import run_probe

SIZE = 32


def stripes(angles, per_class, seed):
    """Stripe images whose class is the stripes' angle (radians), random period, phase and colours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images, labels = [], []
    for label, angle in enumerate(angles):
        for _ in range(per_class):
            period, phase = rng.uniform(5, 9), rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi / period * (x * np.cos(angle) + y * np.sin(angle)) + phase)
            a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            image = ((wave[..., None] + 1) / 2) * (a - b) + b + rng.normal(0, 8, (SIZE, SIZE, 3))
            images.append(image.clip(0, 255))
            labels.append(label)
    return np.array(images, dtype=np.float32), np.array(labels)


def batches(images, labels, size=32):
    return [(images[i:i + size], labels[i:i + size]) for i in range(0, len(labels), size)]


@pytest.fixture(scope="module")
def vgg():
    """Random VGG16 at 32 px: no BatchNorm, so its random features still tell stripe orientations apart."""
    keras.utils.set_random_seed(0)
    return build_model(get_spec("vgg16"), BackboneConfig(name="vgg16", weights=None), HeadConfig(), 2, SIZE)


def test_mirror_images_that_change_class_turn_flips_off(vgg):
    """'/' and '\\' stripes are each other's mirror images: the probe sees mirrored validation images lose their class."""
    train, val = stripes([np.pi / 4, -np.pi / 4], 40, seed=1), stripes([np.pi / 4, -np.pi / 4], 30, seed=2)
    result = run_probe(vgg, batches(*train), batches(*val))
    assert result.val_accuracy >= 0.8 and result.flipped_val_accuracy <= 0.4, result
    flip, reason = decide_flip(result.to_dict())
    assert not flip and "mirroring changes what they show" in reason


def test_mirror_images_that_keep_their_class_keep_flips(vgg):
    """Horizontal and vertical stripes look the same in a mirror: flips stay on."""
    train, val = stripes([np.pi / 2, 0.0], 40, seed=3), stripes([np.pi / 2, 0.0], 30, seed=4)
    result = run_probe(vgg, batches(*train), batches(*val))
    flip, reason = decide_flip(result.to_dict())
    assert result.val_accuracy > 0.69 and flip, reason  # 0.69: what decide_flip needs over chance (0.5) on 60 images


def test_the_probe_head_is_the_fitted_classifier_on_raw_features(vgg):
    """The kernel and bias a probe stage puts into the linear head give the probe's own validation accuracy."""
    train, val = stripes([np.pi / 2, 0.0], 40, seed=3), stripes([np.pi / 2, 0.0], 30, seed=4)
    result = run_probe(vgg, batches(*train), batches(*val))
    vgg.get_layer("head").get_layer("logits").set_weights([result.kernel, result.bias])
    logits = keras.ops.convert_to_numpy(vgg(val[0], training=False))
    assert np.mean(logits.argmax(axis=1) == val[1]) == pytest.approx(result.val_accuracy)


def test_batchnorm_statistics_shift_and_adabn():
    """Random MobileNetV2 statistics (mean 0, variance 1) are far from what images give; re-estimated on them (AdaBN)
    they are close, and the old statistics can be put back."""
    from tlkit.training.stages import batchnorm_shift, reestimate_batchnorm, restore_batchnorm

    keras.utils.set_random_seed(0)
    model = build_model(get_spec("mobilenet_v2"), BackboneConfig(name="mobilenet_v2", weights=None), HeadConfig(), 2,
                        SIZE)
    images = batches(*stripes([0.0, np.pi / 2], 32, seed=5))
    before = batchnorm_shift(model, images)
    first = model.get_layer("backbone").get_layer("bn_Conv1")
    stored = np.array(first.moving_variance)
    old = reestimate_batchnorm(model, images)
    after = batchnorm_shift(model, images)
    assert before > 1.0 and after < 0.2 * before, (before, after)
    assert not np.allclose(np.array(first.moving_variance), stored)
    restore_batchnorm(model, old)
    np.testing.assert_allclose(np.array(first.moving_variance), stored)
    assert [layer.momentum for layer in model.get_layer("backbone").layers if hasattr(layer, "moving_mean")][0] == 0.999


def test_a_probe_stage_fits_the_head_and_the_run_keeps_its_best_stage(tmp_path, vgg):
    """A `probe: true` head stage, then a stage that ruins the model (Adam at 0.5 on every block, runtime monitor
    off): the saved model is the probe's, metrics.json says so, and the final accuracy is the probe stage's."""
    weights = tmp_path / "vgg16.weights.h5"  # "pretrained" weights: random VGG16 features separate the stripes
    vgg.get_layer("backbone").save_weights(weights)
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": str(weights), "pretrained_size": SIZE},
        "data": {"source": "synthetic", "image_size": SIZE, "num_images": 240, "num_classes": 3, "batch_size": 16},
        "augment": {"name": "none", "flip": False, "crop_area": 1.0},
        "schedule": {"stages": [{"name": "head", "train": "head", "probe": True},
                                {"name": "ruin", "train": "all", "epochs": 2, "lr_scale": 500.0, "warmup_epochs": 0,
                                 "patience": None}]},
        "trainer": {"verbose": 0, "save_model": False},
        "doctor": {"monitor": False, "silence": ["lr-too-high", "no-pretrained-weights"]},
    })
    metrics = tlkit.train(cfg, run_dir=tmp_path / "run").metrics
    head, ruin = metrics["stages"]
    assert head["epochs_run"] == 0 and head["probe"]["c"] > 0 and head["val_accuracy"] > 0.6
    assert ruin["val_accuracy"] < head["val_accuracy"]
    assert metrics["best"]["stage"] == "head"
    assert metrics["val_accuracy"] == pytest.approx(head["val_accuracy"], abs=1e-6)


def test_a_fine_tune_the_monitor_stops_is_retried_once_gentler(tmp_path, vgg, caplog):
    """A fine-tuning stage that diverges (Adam at 2000x the LR) is stopped by the runtime monitor and retried once from
    where it started at 0.3x the LR; diverging again, the run stops there and keeps its best epoch (the probe's)."""
    import logging

    weights = tmp_path / "vgg16.weights.h5"
    vgg.get_layer("backbone").save_weights(weights)
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": str(weights), "pretrained_size": SIZE},
        "data": {"source": "synthetic", "image_size": SIZE, "num_images": 240, "num_classes": 3, "batch_size": 16},
        "augment": {"name": "none", "flip": False, "crop_area": 1.0},
        "schedule": {"stages": [{"name": "head", "train": "head", "probe": True},
                                {"name": "ruin", "train": "all", "epochs": 3, "lr_scale": 2000.0, "warmup_epochs": 0,
                                 "patience": None}]},
        "trainer": {"verbose": 0, "save_model": False},
        "doctor": {"silence": ["lr-too-high"]},
    })
    with caplog.at_level(logging.WARNING, logger="tlkit"):
        metrics = tlkit.train(cfg, run_dir=tmp_path / "run").metrics
    head, ruin = metrics["stages"]
    assert ruin["retried"]["first_attempt"]["lr"] == pytest.approx(2.0) and ruin["lr"] == pytest.approx(0.6)
    assert "retrying it once from where it started, at 0.3 x the LR" in caplog.text
    assert metrics["status"] == "stopped_by_doctor" and metrics["best"]["stage"] == "head"
    assert metrics["val_accuracy"] == pytest.approx(head["val_accuracy"], abs=1e-6)


def test_one_pretrained_pass_gives_the_features_and_the_batchnorm_variances_of_each_batch():
    """The pass the recipe shares between the BatchNorm measurement and the probe: per batch (a short last batch
    included, run padded) the variance of each BatchNorm layer's input over the batch and spatial axes, and the
    pooled features, equal what the model computes on that batch directly."""
    from keras import ops

    from tlkit.backbones.build import batch_norm_layers
    from tlkit.recipe.frozen_pass import frozen_pass

    keras.utils.set_random_seed(0)
    model = build_model(get_spec("mobilenet_v2"), BackboneConfig(name="mobilenet_v2", weights=None), HeadConfig(), 2,
                        SIZE)
    images, labels = stripes([0.0, np.pi / 2], 7, seed=3)  # 14 images: batches of 8 and 6
    measured = frozen_pass(model, batches(images, labels, size=8), batch_norm=True, mirror=True)

    backbone = model.get_layer("backbone")
    layers = [batch_norm_layers(backbone)[i] for i in (0, 10, -1)]
    direct = keras.Model(backbone.input, [ops.var(layer.input, axis=(0, 1, 2)) for layer in layers])
    preprocess = model.get_layer("preprocess")
    per_batch = [[np.asarray(v) for v in direct(preprocess(images[i:i + 8]), training=False)] for i in (0, 8)]
    expected = [(first + second) / 2 for first, second in zip(*per_batch)]
    got = [measured.bn_variances[i] for i in (0, 10, -1)]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-6)
    pooled = keras.Model(model.input, model.get_layer("pool").output)
    np.testing.assert_allclose(measured.features, np.asarray(pooled(images)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(measured.mirrored, np.asarray(pooled(images[:, :, ::-1])), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(measured.labels, labels)


def test_a_retry_that_re_estimates_batchnorm_fits_the_probe_head_again():
    """The recipe's retry re-estimates the BatchNorm statistics (AdaBN) from the stage's start, where the head is the
    probe's: fitted on the features of the old statistics, it no longer fits the new ones, and the retry would start
    from a head far worse than the probe (seen: loss 94 on ResNet50 digits). The head is fitted again on them."""
    from types import SimpleNamespace

    from tlkit.model.build import LOGITS_LAYER, head_of
    from tlkit.training import trainer
    from tlkit.training.stages import reestimate_batchnorm

    keras.utils.set_random_seed(0)
    model = build_model(get_spec("mobilenet_v2"), BackboneConfig(name="mobilenet_v2", weights=None), HeadConfig(), 2,
                        SIZE)
    angles = [np.pi / 2, 0.0]
    train, val = batches(*stripes(angles, 40, seed=5)), batches(*stripes(angles, 30, seed=6))
    dim, _ = stripes(angles, 40, seed=7)
    reestimate_batchnorm(model, batches(0.25 * dim, _))  # stored statistics: of darker images than the target's
    stale = run_probe(model, train, val)  # the probe head, fitted on the features those statistics give
    head_of(model).get_layer(LOGITS_LAYER).set_weights([stale.kernel, stale.bias])
    reestimate_batchnorm(model, train)

    def val_loss():
        images, labels = (np.concatenate(parts) for parts in zip(*val))
        logits = model.predict(images, verbose=0)
        return float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits))

    before = val_loss()
    data = SimpleNamespace(train_epochs=SimpleNamespace(plain=lambda limit: train), val=val)
    run = SimpleNamespace(records=[{"name": "head", "probe": {"c": 0.1}}], model=model, data=data)
    assert trainer._refit_probe_head(run)
    after = val_loss()
    refit = run_probe(model, train, val)
    assert after == pytest.approx(refit.val_loss, abs=1e-3), "the head is the probe on the new features"
    assert before > after + 0.1, f"the stale head fits the new features worse ({before:.3f} vs {after:.3f})"
    assert not trainer._refit_probe_head(SimpleNamespace(records=[{"name": "head"}], model=model, data=data)), \
        "a head the optimizer trained is left alone"


def test_far_images_re_estimate_batchnorm_and_lengthen_the_recipes_fine_tune(tmp_path, caplog):
    """The trainer's set-up (tlkit.training.run_setup.build) on weights whose BatchNorm statistics are far from what
    the images give (a random MobileNetV2's: mean 0, variance 1): the statistics are re-estimated, and the fine-tune
    the recipe sized gets twice its steps, in the config the run trains with and in the recipe's log."""
    from tlkit.backbones.build import build_backbone
    from tlkit.backbones.weights import record_pretrained_size
    from tlkit.recipe import auto as auto_recipe
    from tlkit.recipe.preflight import check_run
    from tlkit.training import run_setup

    keras.utils.set_random_seed(0)
    spec = get_spec("mobilenet_v2")
    weights = tmp_path / "random_mobilenet_v2.weights.h5"
    build_backbone(spec, SIZE, None).save_weights(str(weights))
    record_pretrained_size(weights, SIZE)
    cfg = tlkit.as_train_config({"backbone": {"name": "mobilenet_v2", "weights": str(weights)},
                                 "data": {"source": "synthetic", "num_images": 120, "num_classes": 3},
                                 "trainer": {"verbose": 0}})
    spec, scan = check_run(cfg)
    cfg, recipe = auto_recipe.apply(cfg, spec, scan)
    before = cfg.schedule.stages[1]
    caplog.set_level("INFO", logger="tlkit.train")
    setup = run_setup.build(cfg, spec, recipe, data_scan=scan)
    after = setup.cfg.schedule.stages[1]
    assert setup.cfg.schedule.bn == "adapt" and recipe.bn_shift > 1.0
    assert after.epochs > before.epochs and after.min_epochs == math.ceil(after.epochs / 2), (before, after)
    assert "far data (BatchNorm statistics" in caplog.text and "2x the step budget: " in caplog.text
