"""Fine-tune an ImageNet backbone: `python train.py backbone=resnet50 data=folder data.path=/my/images`.

A thin Hydra entry point: compose conf/, check the config (before TensorFlow starts),
hand typed objects to tlkit. Everything else lives in the library.
"""
import errno
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the console

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tlkit.config import as_train_config, register_schema
from tlkit.config.overrides import check_command_line, run_dir_override
from tlkit.errors import TlkitError
from tlkit.rundir import check_can_create

register_schema(ConfigStore.instance())


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from tlkit.config.validate import validate

    try:
        config = as_train_config(cfg)  # keys a leading + added that the schema lacks fail here
        validate(config)  # before importing TensorFlow: a bad value costs a second, not a model build
        from tlkit.trainer import train

        result = train(config, run_dir=HydraConfig.get().runtime.output_dir)
    except TlkitError as error:
        print(f"tlkit: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"tlkit: error: disk full while writing {error.filename or 'the run directory'}: {error}. "
              "Files tlkit writes atomically (model.keras, metrics.json) keep their last complete version.",
              file=sys.stderr)
        sys.exit(2)
    return result.metrics["val_accuracy"]


if __name__ == "__main__":
    try:
        # Before Hydra composes: Hydra itself instantiates hydra.callbacks.*._target_ (code named by a string).
        overrides = check_command_line(sys.argv[1:])
        if not {"-m", "--multirun"} & set(sys.argv[1:]):
            check_can_create(run_dir_override(overrides))  # before Hydra creates it (its error is a stack trace)
    except TlkitError as error:
        print(f"tlkit: error: {error}", file=sys.stderr)
        sys.exit(2)
    main()
