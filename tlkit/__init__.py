"""tlkit: transfer-learning recipes for image classification on Keras 3.

From a notebook:

    from tlkit import train, as_train_config
    cfg = as_train_config({"backbone": {"name": "mobilenet_v2", "weights": None},
                           "data": {"source": "digits", "image_size": 32}})
    result = train(cfg, run_dir="runs/first")
"""
from tlkit.config.store import as_train_config

__version__ = "0.1.0"


def train(cfg, run_dir=None):
    """Run a staged fine-tuning (see tlkit.trainer.train).

    The config is checked first, so a bad value fails before TensorFlow is imported.
    cfg.resume = RUN_DIR continues an interrupted run from its last completed epoch.
    """
    from tlkit.config.validate import validate

    cfg = as_train_config(cfg)
    spec = validate(cfg)
    from tlkit.trainer import train as _train

    return _train(cfg, run_dir, spec=spec)


def load_model(path):
    """Load a saved tlkit model (model.keras): registers tlkit's layers first."""
    import keras

    import tlkit.preprocessing  # noqa: F401  (registers ImagePreprocessing)

    return keras.saving.load_model(path)


__all__ = ["as_train_config", "load_model", "train"]
