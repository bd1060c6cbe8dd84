"""tlkit: transfer-learning recipes for image classification on Keras 3.

From a notebook:

    from tlkit import train, as_train_config
    cfg = as_train_config({"backbone": {"name": "mobilenet_v2", "weights": None},
                           "data": {"source": "digits", "image_size": 32}})
    result = train(cfg, run_dir="runs/first")
"""
# First, before any tlkit module can import Keras or TensorFlow: TensorFlow's C++ start-up lines stay out of the
# console (TLKIT_TF_LOGS=1 keeps them). train.py and the `tlkit` command reach this too, as any `import tlkit.x`.
from tlkit.console import quiet_tensorflow_startup

quiet_tensorflow_startup()

from tlkit.config.store import as_train_config  # noqa: E402
from tlkit.model.load import load_model  # noqa: E402
from tlkit.version import __version__  # noqa: E402


def train(cfg, run_dir=None):
    """Run a staged fine-tuning (see tlkit.training.trainer.train).

    The config is checked first (tlkit.recipe.preflight), so a bad value fails before TensorFlow is imported; the
    post-training tools (eval/ report, TensorBoard HParams) run after it (tlkit.cli.runner).
    cfg.resume = RUN_DIR continues an interrupted run from its last completed epoch.
    """
    from tlkit.cli.runner import train as _train

    return _train(cfg, run_dir)


__all__ = ["as_train_config", "load_model", "train"]
