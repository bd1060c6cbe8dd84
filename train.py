"""Fine-tune an ImageNet backbone: `python train.py backbone=resnet50 data=folder data.path=/my/images`.

A thin Hydra entry point: compose conf/, check the config (before TensorFlow starts),
hand typed objects to tlkit. Everything else lives in the library.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the console

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tlkit.config import as_train_config, register_schema
from tlkit.errors import TlkitError

register_schema(ConfigStore.instance())


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from tlkit.config.validate import validate

    config = as_train_config(cfg)
    try:
        validate(config)  # before importing TensorFlow: a bad value costs a second, not a model build
        from tlkit.trainer import train

        result = train(config, run_dir=HydraConfig.get().runtime.output_dir)
    except TlkitError as error:
        print(f"tlkit: error: {error}", file=sys.stderr)
        sys.exit(2)
    return result.metrics["val_accuracy"]


if __name__ == "__main__":
    main()
