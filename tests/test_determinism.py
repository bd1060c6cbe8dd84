"""seed + trainer.deterministic: two CPU runs write identical metrics.json."""
import tlkit


def test_two_seeded_runs_write_identical_metrics(tmp_path):
    cfg = tlkit.as_train_config({
        "backbone": {"name": "vgg16", "weights": None},
        "data": {"source": "synthetic", "image_size": 32, "num_images": 60, "num_classes": 3, "batch_size": 8},
        "augment": {"name": "light", "flip": True, "crop_area": 0.6},  # random augmentation must repeat too
        "schedule": {"name": "staged", "stages": [
            {"name": "head", "train": "head", "epochs": 2},  # on cached features (two augmented views)
            {"name": "top", "train": "top:1", "epochs": 1, "lr_scale": 0.1},
        ]},
        "trainer": {"verbose": 0, "save_model": False, "deterministic": True},
        "seed": 3,
    })
    first = tlkit.train(cfg, tmp_path / "a")
    second = tlkit.train(cfg, tmp_path / "b")
    assert first.metrics["stages"][0]["feature_cache"]
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    assert (tmp_path / "a" / "timings.json").exists()
    cfg.seed = 4
    other = tlkit.train(cfg, tmp_path / "c")
    assert other.metrics["val_loss"] != first.metrics["val_loss"], "the seed matters"
