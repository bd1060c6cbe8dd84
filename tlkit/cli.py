"""`tlkit` command line (also `python -m tlkit`).

    tlkit backbones                    the registered backbones and their input contracts
    tlkit doctor [overrides...]        the pre-flight checks train.py runs, without training

`doctor` takes the same Hydra overrides as train.py and composes the same conf/. This
module is an entry point, like train.py: it may use Hydra; the library does not.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tlkit.backbones.spec import all_specs


def backbones_table() -> str:
    header = ("name", "keras constructor", "preprocess", "size", "min", "features", "blocks (stem -> top)")
    rows = [header] + [
        (s.name, s.constructor, s.preprocess, str(s.default_size), str(s.min_size), str(s.features),
         " ".join(s.block_names))
        for s in all_specs()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(r[:-1], widths)] + [r[-1]]) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = (
        "\nEvery model takes RGB images in 0-255; the preprocessing above runs inside the model.\n"
        "Freeze by blocks: schedule.stages.N.train=head | all | top:N | from:BLOCK"
    )
    return "\n".join(lines) + "\n" + notes


def find_config_dir(explicit: str | None = None) -> Path:
    """conf/ of the current directory, else the one beside an editable install of tlkit."""
    candidates = [Path(explicit)] if explicit else [Path.cwd() / "conf", Path(__file__).resolve().parents[1] / "conf"]
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate.resolve()
    raise SystemExit(f"tlkit: error: no conf/config.yaml in {', '.join(map(str, candidates))}; pass --config-dir")


def compose_config(overrides: list[str], config_dir: Path):
    """The DictConfig `python train.py OVERRIDES` would get."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore

    from tlkit.config import register_schema

    register_schema(ConfigStore.instance())
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _error_chain(error: BaseException) -> str:
    parts = []
    while error is not None and str(error) not in parts:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def doctor_command(overrides: list[str], config_dir: Path, config_only: bool) -> int:
    from tlkit.config import as_train_config
    from tlkit.config.validate import validate
    from tlkit.doctor import Doctor, format_findings, has_errors
    from tlkit.errors import TlkitError

    try:
        cfg = as_train_config(compose_config(overrides, config_dir))
        spec = validate(cfg)
    except TlkitError as error:
        print(f"[error] config-invalid: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # Hydra composition: unknown key, bad value, missing group option
        print(f"[error] config-invalid: {_error_chain(error)}", file=sys.stderr)
        return 2
    doctor = Doctor(cfg.doctor.strict, cfg.doctor.silence)
    doctor.config(cfg, spec)
    if not config_only:
        try:
            _data_and_model_checks(doctor, cfg, spec)
        except TlkitError as error:  # e.g. ImageNet weights neither cached nor downloadable
            print(f"[error] cannot build the data or the model: {error}", file=sys.stderr)
            return 2
    print(f"tlkit doctor: {spec.name}, schedule={cfg.schedule.name}, data={cfg.data.source.value}")
    print(format_findings(doctor.findings))
    return 1 if has_errors(doctor.findings) else 0


def _data_and_model_checks(doctor, cfg, spec) -> None:
    """Builds the data pipeline and the model (no training) for the checks that need them."""
    import keras

    from tlkit.config.validate import resolved_image_size
    from tlkit.data import load_data
    from tlkit.model import build_model
    from tlkit.stages import Freezer, count_params, plan_stages

    keras.utils.set_random_seed(cfg.seed)
    size = resolved_image_size(cfg, spec)
    data = load_data(cfg.data, cfg.augment, size, cfg.seed)
    model = build_model(spec, cfg.backbone, cfg.head, len(data.class_names), size)
    freezer, plans = Freezer(model, spec, cfg.schedule.bn), plan_stages(cfg.schedule.stages, spec, cfg.optimizer.lr)
    trainable = {}
    for plan in plans:
        freezer.apply(plan)
        trainable[plan.name] = count_params(model.trainable_weights)
    doctor.data(cfg, spec, data, plans=plans, trainable_params=trainable)
    doctor.model(cfg, model, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tlkit", description="Transfer-learning recipes for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backbones", help="list the registered backbones and their input contracts")
    doctor = sub.add_parser(
        "doctor", help="run the pre-flight checks on a config (same overrides as train.py)",
        description="Exit status: 0 no errors, 1 errors found, 2 the config itself is invalid.",
    )
    doctor.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. backbone=resnet50 optimizer.lr=0.1")
    doctor.add_argument("--config-dir", help="the conf/ folder (default: ./conf, else the one beside tlkit)")
    doctor.add_argument("--config-only", action="store_true", help="only the checks that need no data or model")
    args = parser.parse_args(argv)
    if args.command == "backbones":
        print(backbones_table())
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    return doctor_command(args.overrides, find_config_dir(args.config_dir), args.config_only)


if __name__ == "__main__":
    sys.exit(main())
