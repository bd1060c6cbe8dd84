"""tlkit: transfer-learning recipes for image classification on Keras 3.

From a notebook:

    from tlkit import train, as_train_config
    cfg = as_train_config({"backbone": {"name": "mobilenet_v2", "weights": None},
                           "data": {"source": "digits", "image_size": 32}})
    result = train(cfg, run_dir="runs/first")
"""
from tlkit.config.store import as_train_config
from tlkit.model_io import load_model
from tlkit.version import __version__


def train(cfg, run_dir=None):
    """Run a staged fine-tuning (see tlkit.trainer.train).

    The config is checked first (tlkit.preflight), so a bad value fails before TensorFlow is imported.
    cfg.resume = RUN_DIR continues an interrupted run from its last completed epoch.
    """
    from tlkit.preflight import check_config

    cfg = as_train_config(cfg)
    spec = check_config(cfg)
    from tlkit.trainer import train as _train

    return _train(cfg, run_dir, spec=spec)


__all__ = ["as_train_config", "load_model", "train"]
