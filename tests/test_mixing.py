"""MixUp / CutMix (augment.mixup, augment.cutmix): soft labels, convex images, pipeline, checks, training."""
import json

import numpy as np
import pytest

import tlkit
from tlkit.config import as_train_config
from tlkit.recipe.preflight import check_config as validate
from tlkit.errors import ConfigError

BATCH, SIZE = 8, 12


def _batch(seed=0):
    """Distinct random images, one class each: a soft label row names the partner and the weight exactly."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (BATCH, SIZE, SIZE + 4, 3)).astype("float32"), np.arange(BATCH, dtype="int32")


def _mix(mixup, cutmix, seed=(3, 4)):
    import tensorflow as tf

    from tlkit.data.mixing import BatchMixer

    images, labels = _batch()
    mixed, soft = BatchMixer(mixup, cutmix, num_classes=BATCH)(images, labels, tf.constant(seed, tf.int64))
    return images, mixed.numpy(), soft.numpy()


def _partner(row: np.ndarray, i: int) -> int:
    others = [j for j in np.flatnonzero(row > 1e-6) if j != i]
    assert len(others) <= 1, f"a mixed label mixes at most two classes, got {row}"
    return others[0] if others else i


def _check_soft(soft):
    assert soft.shape == (BATCH, BATCH) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert soft.min() >= 0.0


def test_mixup_gives_convex_combinations_with_matching_soft_labels():
    images, mixed, soft = _mix(mixup=0.4, cutmix=0.0)
    _check_soft(soft)
    mixed_rows = 0
    for i in range(BATCH):
        j = _partner(soft[i], i)
        lam = soft[i, i] if j != i else 1.0
        np.testing.assert_allclose(mixed[i], lam * images[i] + (1 - lam) * images[j], atol=1e-2)
        mixed_rows += 0.01 < lam < 0.99
    assert mixed_rows >= 1, "alpha 0.4 over 8 images should mix at least one visibly"


def test_cutmix_pastes_a_box_whose_area_is_the_label_weight():
    images, mixed, soft = _mix(mixup=0.0, cutmix=1.0)
    _check_soft(soft)
    pasted_any = False
    for i in range(BATCH):
        j = _partner(soft[i], i)
        from_own = np.all(mixed[i] == images[i], axis=-1)
        from_partner = np.all(mixed[i] == images[j], axis=-1)
        assert np.all(from_own | from_partner), "every CutMix pixel comes from the image or its partner"
        if j != i:
            share = from_partner.mean()  # distinct random images: a pixel equal to the partner's was pasted
            assert share == pytest.approx(soft[i, j], abs=1e-5), "label weight = the pasted box's pixel share"
            rows, cols = np.nonzero(from_partner)
            if rows.size:
                pasted_any = True
                box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                assert box == rows.size, "the pasted region is one rectangle"
    assert pasted_any


def test_both_on_each_batch_is_mixup_or_cutmix_and_depends_only_on_the_seed():
    kinds = set()
    for seed in range(6):
        images, mixed, soft = _mix(mixup=0.4, cutmix=1.0, seed=(seed, 1))
        _check_soft(soft)
        own = [np.all(mixed[i] == images[i], axis=-1) | np.all(mixed[i] == images[_partner(soft[i], i)], axis=-1)
               for i in range(BATCH)]
        kinds.add("cutmix" if all(o.all() for o in own) else "mixup")
    assert kinds == {"mixup", "cutmix"}
    _, a, sa = _mix(0.4, 1.0, seed=(7, 7))
    _, b, sb = _mix(0.4, 1.0, seed=(7, 7))
    _, c, _ = _mix(0.4, 1.0, seed=(7, 8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    assert not np.array_equal(a, c)


def test_pipeline_mixes_training_batches_only():
    from tlkit.data import load_data

    cfg = as_train_config({"backbone": {"name": "vgg16"},
                           "data": {"source": "synthetic", "num_images": 40, "num_classes": 4, "batch_size": 8},
                           "augment": {"mixup": 0.4, "cutmix": 1.0}})
    data = load_data(cfg.data, cfg.augment, 32, cfg.seed)
    _, train_labels = next(iter(data.train))
    assert train_labels.shape == (8, 4) and train_labels.dtype.name == "float32"
    np.testing.assert_allclose(train_labels.numpy().sum(axis=1), 1.0, atol=1e-5)
    _, val_labels = next(iter(data.val))
    assert val_labels.shape == (8,) and val_labels.dtype.is_integer, "validation stays sparse ints"
    assert data.sample_batch()[1].ndim == 1, "the doctor's sample batch is not mixed"
    first = [y.numpy() for _, y in data.train_epochs.epoch(3)]
    again = [y.numpy() for _, y in data.train_epochs.epoch(3)]
    other = [y.numpy() for _, y in data.train_epochs.epoch(4)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))  # resumable: epoch e is fixed
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))


@pytest.mark.parametrize("key,value", [("mixup", 1.5), ("mixup", -0.1), ("cutmix", 2.0), ("cutmix", -1.0)])
def test_bad_alphas_fail_on_load_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"augment.{key}"):
        cfg = as_train_config({"backbone": {"name": "vgg16"}, "augment": {key: value}})
        validate(cfg)


def test_doctor_flags_mixing_combinations():
    from tlkit.doctor.config_checks import diagnose_config

    head = {"stages": [{"name": "head", "train": "head", "epochs": 2}]}  # trained by the optimizer (a probe never mixes)
    cfg = as_train_config({"backbone": {"name": "vgg16"}, "data": {"batch_size": 1}, "augment": {"mixup": 0.2},
                           "schedule": head, "trainer": {"feature_cache": "on"}})
    found = {f.id: f for f in diagnose_config(cfg, validate(cfg))}
    assert found["mixing-no-effect"].severity.value == "warning"
    assert found["mixing-without-feature-cache"].severity.value == "warning"  # feature_cache=on cannot be honoured
    plain = as_train_config({"backbone": {"name": "vgg16"}})
    assert not {"mixing-no-effect", "mixing-without-feature-cache"} & {f.id for f in diagnose_config(plain, validate(plain))}


def test_training_runs_with_mixup_and_cutmix(tmp_path):
    cfg = as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "synthetic", "image_size": 32, "num_images": 48, "num_classes": 3, "batch_size": 8},
        "augment": {"mixup": 0.4, "cutmix": 1.0},
        "schedule": {"name": "mix", "stages": [{"name": "head", "train": "head", "epochs": 1},
                                                {"name": "top", "train": "top:1", "epochs": 1, "lr_scale": 0.1}]},
        "trainer": {"verbose": 0, "save_model": False},
        "doctor": {"silence": ["no-pretrained-weights"]},
    })
    result = tlkit.train(cfg, run_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert [s["feature_cache"] for s in metrics["stages"]] == [False, False], "no feature cache while mixing"
    assert all(np.isfinite(s["loss"]) for s in metrics["stages"])
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and np.isfinite(metrics["val_loss"])
    assert result.model is not None
    assert "feature cache: off for stage 'head' while MixUp/CutMix" in (tmp_path / "run" / "train.log").read_text()
