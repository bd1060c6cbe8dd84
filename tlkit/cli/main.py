"""`tlkit` command line (also `python -m tlkit`).

    tlkit backbones [--filter 'convnext*'] [--family 'efficientnet*'] [--max-params 30M]
                                       the registered backbones: input contract, size, blocks, weights
    tlkit doctor [overrides...]        the pre-flight checks train.py runs, without training
    tlkit doctor --list                every finding id the doctor can report: severity, phase, meaning
    tlkit lr-find [overrides...] [stage=NAME steps=100 start_lr=1e-7 end_lr=10 rule=min_div_10 output=DIR]
                                       the LR range test on a stage: lr_find.png/.json, the suggested LR
    tlkit evaluate run=RUN_DIR [split=val|test|all] [output=DIR] [tta=flip|crops|N] [data.KEY=VALUE ...]
    tlkit predict run=RUN_DIR inputs=PATH [top_k=5] [batch_size=32] [output=FILE.csv|.json] [tta=flip|crops|N]
    tlkit export run=RUN_DIR format=keras|saved_model|tflite|onnx [quantize=float16|int8] [output=DIR]
    tlkit explain run=RUN_DIR inputs=PATH [block=NAME] [class=NAME] [output=DIR]
                                       Grad-CAM: where in each image the evidence lies, RUN_DIR/explain/*.png
    tlkit sweep-summary MULTIRUN_DIR   every trial of a sweep: sweep_summary.md/.csv/.png in MULTIRUN_DIR
    tlkit reproduce recipe=NAME [overrides] [hydra.run.dir=DIR]
                                       train a recipe with a reference block; achieved vs reference in
                                       RUN_DIR/reproduce.json and a table (exit 0 reproduced, 1 not, 2 errors)

    tlkit train [--config-dir DIR] [overrides...] [-m]
                                       train: exactly `python train.py [overrides]` (tlkit/cli/train_command.py)

`doctor`, `lr-find` and `reproduce` take train's Hydra overrides and compose the same configs (the package's
tlkit/conf/, plus --config-dir DIR: tlkit/cli/compose.py). This module is an entry point, like train.py: it may
use Hydra; the library does not. The post-training commands run in tlkit/cli/tool_commands.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tlkit.backbones.listing import backbones_table, listed_specs, parse_count, select
from tlkit.cli.compose import compose_config, user_config_dir
from tlkit.cli.tool_commands import LIBRARY_COMMANDS, run_library_command, sweep_summary_command
from tlkit.errors import error_chain


def backbones_command(args) -> int:
    try:
        max_params = None if args.max_params is None else parse_count(args.max_params)
    except ValueError as error:
        print(f"tlkit backbones: error: --max-params {error}", file=sys.stderr)
        return 2
    return _print_listing(backbones_table(select(listed_specs(), args.filter, args.family, max_params)))


def doctor_command(overrides: list[str], config_dir: Path | None, config_only: bool) -> int:
    import tlkit.recipe.auto as auto_recipe
    from tlkit.config import as_train_config
    from tlkit.doctor import Doctor, format_findings, has_errors
    from tlkit.errors import TlkitError
    from tlkit.recipe.preflight import check_run

    try:
        cfg = as_train_config(compose_config(overrides, config_dir))
        spec, data_scan = check_run(cfg)
        cfg, recipe = auto_recipe.apply(cfg, spec, data_scan)  # recipe=auto: the values training would use
    except TlkitError as error:
        print(f"[error] config-invalid: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # Hydra composition: unknown key, bad value, missing group option
        print(f"[error] config-invalid: {error_chain(error)}", file=sys.stderr)
        return 2
    if recipe is not None:
        print("\n".join(recipe.lines()))
    doctor = Doctor(cfg.doctor.strict, cfg.doctor.silence)
    doctor.config(cfg, spec)
    if not config_only:
        try:
            _data_and_model_checks(doctor, cfg, spec, recipe, data_scan)
        except TlkitError as error:  # e.g. ImageNet weights neither cached nor downloadable
            print(f"[error] cannot build the data or the model: {error}", file=sys.stderr)
            return 2
    print(f"tlkit doctor: {spec.name}, schedule={cfg.schedule.name}, data={cfg.data.source.value}")
    print(format_findings(doctor.findings))
    return 1 if has_errors(doctor.findings) else 0


def _data_and_model_checks(doctor, cfg, spec, recipe, data_scan) -> None:
    """Builds the data pipeline and the model as training would (tlkit.training.run_setup; no training) for the checks that
    need them; the recipe's probe runs too, so its decisions are shown."""
    import tlkit.training.run_setup as run_setup

    setup = run_setup.build(cfg, spec, recipe, data_scan=data_scan)
    doctor.data_and_model(setup.cfg, spec, setup.data, setup.model, setup.probe)


LR_FIND_OPTIONS = {"stage": str, "steps": int, "start_lr": float, "end_lr": float, "rule": str, "output": str}


def lr_find_command(items: list[str], config_dir: Path | None) -> int:
    """`tlkit lr-find`: the finder's own key=value options, the rest are Hydra overrides as for train.py."""
    import time

    from tlkit.config import as_train_config
    from tlkit.errors import TlkitError
    from tlkit.training.lr_find import run_command
    from tlkit.recipe.preflight import check_run

    options = {}
    for item in items:
        key, _, value = item.partition("=")
        if key in LR_FIND_OPTIONS:
            try:
                options[key] = LR_FIND_OPTIONS[key](value)
            except ValueError:
                print(f"tlkit lr-find: error: {key}={value!r} is not a {LR_FIND_OPTIONS[key].__name__}", file=sys.stderr)
                return 2
    overrides = [item for item in items if item.partition("=")[0] not in LR_FIND_OPTIONS]
    output = Path(options.pop("output", None) or f"outputs/lr_find/{time.strftime('%Y-%m-%d/%H-%M-%S')}")
    logging.getLogger("tlkit").setLevel(logging.INFO)
    try:
        cfg = as_train_config(compose_config(overrides, config_dir))
        spec, data_scan = check_run(cfg)
        result = run_command(cfg, spec, output, data_scan=data_scan, **options)
    except TlkitError as error:
        print(f"tlkit lr-find: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"tlkit lr-find: error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    print(f"suggested: optimizer.lr={result.optimizer_lr:.3g}" + (
        f" (stage '{result.stage}' peaks at optimizer.lr x {result.lr_scale:g} = {result.suggestion:.3g})"
        if result.lr_scale != 1.0 else ""))
    print(f"written: {output / 'lr_find.png'}, {output / 'lr_find.json'}")
    return 0


_CONFIG_DIR_HELP = ("a folder of your own configs, ahead of tlkit's (DIR/recipe/mine.yaml is recipe=mine; "
                    "DIR/config.yaml replaces tlkit's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlkit", description="Transfer-learning recipes for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    # Listed here for --help; main() hands `tlkit train ...` to Hydra's own command line before parsing.
    sub.add_parser("train", add_help=False, help="train: `tlkit train [overrides]` is `python train.py [overrides]` "
                   "(Hydra's flags too: -m, --cfg job, --config-dir DIR)").add_argument("rest", nargs="*")
    backbones = sub.add_parser("backbones", help="list the registered backbones and their input contracts",
                               description="Filters combine; patterns are shell globs ('convnext*').")
    backbones.add_argument("--filter", metavar="PATTERN", help="backbone names matching it, e.g. 'convnext*'")
    backbones.add_argument("--family", metavar="PATTERN",
                           help="keras.applications families matching it, e.g. efficientnet_v2 or 'resnet*'")
    backbones.add_argument("--max-params", metavar="N", help="at most N parameters (30M, 2.5M, 500K, 25000000)")
    _add_doctor_parser(sub)
    _add_hydra_parsers(sub)
    for name, (summary, usage) in LIBRARY_COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=f"{summary}. Arguments: {usage}")
        command.add_argument("args", nargs="*", metavar="key=value", help=usage)
    sweep = sub.add_parser("sweep-summary", help="a table and a plot of every trial of a sweep (train.py -m)",
                           description="Writes sweep_summary.md, .csv and .png into MULTIRUN_DIR and prints the table.")
    sweep.add_argument("multirun_dir", metavar="MULTIRUN_DIR", help="e.g. multirun/2024-01-01/12-00-00")
    sweep.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return parser


def _add_doctor_parser(sub) -> None:
    doctor = sub.add_parser(
        "doctor", help="run the pre-flight checks on a config (same overrides as train.py)",
        description="Exit status: 0 no errors, 1 errors found, 2 the config itself is invalid.",
    )
    doctor.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. backbone=resnet50 optimizer.lr=0.1")
    doctor.add_argument("--config-dir", help=_CONFIG_DIR_HELP)
    doctor.add_argument("--config-only", action="store_true", help="only the checks that need no data or model")
    doctor.add_argument("--list", action="store_true",
                        help="print every finding id with its severity, phase and meaning, and exit (no config read)")


def _add_hydra_parsers(sub) -> None:
    """lr-find and reproduce: train.py's Hydra overrides, plus their own options."""
    lr_find = sub.add_parser(
        "lr-find", help="LR range test on a stage (same overrides as train.py): a plot and the suggested LR",
        description="Options: stage=NAME (default: the first), steps=100, start_lr=1e-7, end_lr=10, "
                    "rule=min_div_10|steepest, output=DIR (default outputs/lr_find/DATE/TIME). Exit status 2: invalid "
                    "config.",
    )
    lr_find.add_argument("items", nargs="*", metavar="override", help="Hydra overrides and the options above")
    lr_find.add_argument("--config-dir", help=_CONFIG_DIR_HELP)
    reproduce = sub.add_parser(
        "reproduce", help="train a recipe with a reference block and compare with its published result",
        description="Same overrides as train.py. Run directory: hydra.run.dir=DIR or run_dir=DIR (default "
                    "outputs/reproduce/RECIPE/DATE_TIME); RUN_DIR/reproduce.json holds achieved vs reference. "
                    "Exit status: 0 every result within tolerance, 1 not, 2 invalid config or data.",
    )
    reproduce.add_argument("overrides", nargs="*", help="recipe=NAME, then any train.py override")
    reproduce.add_argument("--config-dir", help=_CONFIG_DIR_HELP)


def _print_listing(text: str) -> int:
    """Print a listing; piped into `head`, it ends quietly instead of with a BrokenPipeError traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout again at exit
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from tlkit.cli.train_command import main as train_main

        train_main(argv[1:])  # Hydra's command line, as `python train.py`; errors exit with their own status
        return 0
    args = build_parser().parse_args(argv)
    if args.command == "sweep-summary":
        return sweep_summary_command(args.multirun_dir, plot=not args.no_plot)
    if args.command == "backbones":
        return backbones_command(args)
    if args.command == "doctor" and args.list:
        from tlkit.doctor.catalogue import catalogue_table

        return _print_listing(catalogue_table())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.command in LIBRARY_COMMANDS:
        return run_library_command(args.command, args.args)
    from tlkit.errors import TlkitError

    try:
        config_dir = user_config_dir(args.config_dir)
    except TlkitError as error:
        print(f"tlkit: error: {error}", file=sys.stderr)
        return 2
    if args.command == "lr-find":
        return lr_find_command(args.items, config_dir)
    if args.command == "reproduce":
        from tlkit.cli.reproduce import reproduce_command

        return reproduce_command(args.overrides, config_dir, compose_config)
    return doctor_command(args.overrides, config_dir, args.config_only)


if __name__ == "__main__":
    sys.exit(main())
