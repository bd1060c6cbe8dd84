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
                                       train: exactly `python train.py [overrides]` (tlkit/cli_train.py)

`doctor`, `lr-find` and `reproduce` take train's Hydra overrides and compose the same configs (the package's
tlkit/conf/, plus --config-dir DIR: tlkit/cli_config.py). This module is an entry point, like train.py: it may
use Hydra; the library does not.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tlkit.backbones.listing import backbones_table, listed_specs, parse_count, select
from tlkit.cli_config import compose_config, user_config_dir
from tlkit.errors import error_chain


def backbones_command(args) -> int:
    try:
        max_params = None if args.max_params is None else parse_count(args.max_params)
    except ValueError as error:
        print(f"tlkit backbones: error: --max-params {error}", file=sys.stderr)
        return 2
    return _print_listing(backbones_table(select(listed_specs(), args.filter, args.family, max_params)))


def doctor_command(overrides: list[str], config_dir: Path | None, config_only: bool) -> int:
    import tlkit.auto_recipe as auto_recipe
    from tlkit.config import as_train_config
    from tlkit.doctor import Doctor, format_findings, has_errors
    from tlkit.errors import TlkitError
    from tlkit.preflight import check_run

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
    """Builds the data pipeline and the model as training would (tlkit.run_setup; no training) for the checks that
    need them; the recipe's probe runs too, so its decisions are shown."""
    import tlkit.run_setup as run_setup

    setup = run_setup.build(cfg, spec, recipe, data_scan=data_scan)
    doctor.data_and_model(setup.cfg, spec, setup.data, setup.model, setup.probe)


LR_FIND_OPTIONS = {"stage": str, "steps": int, "start_lr": float, "end_lr": float, "rule": str, "output": str}


def lr_find_command(items: list[str], config_dir: Path | None) -> int:
    """`tlkit lr-find`: the finder's own key=value options, the rest are Hydra overrides as for train.py."""
    import time

    from tlkit.config import as_train_config
    from tlkit.errors import TlkitError
    from tlkit.lr_find import run_command
    from tlkit.preflight import check_run

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


# --------------------------------------------------------------------------- evaluate, predict, export


def parse_key_values(items: list[str], allowed: dict, command: str) -> dict:
    """key=value arguments -> {key: value}; `allowed` maps key -> converter ("data." keys pass through)."""
    import yaml

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"tlkit {command}: error: expected key=value, got {item!r}")
        if key in allowed:
            parsed[key] = allowed[key](value)
        elif key.startswith("data.") and "data." in allowed:
            parsed[key] = yaml.safe_load(value) if value else None  # as Hydra types it: null, 8, true, a/path
        else:
            keys = ", ".join(k + ("KEY" if k.endswith(".") else "") for k in allowed)
            raise SystemExit(f"tlkit {command}: error: unknown argument {key!r}; expected {keys}")
    return parsed


def _required(args: dict, key: str, command: str):
    if args.get(key) in (None, ""):
        raise SystemExit(f"tlkit {command}: error: {key}= is required (e.g. {key}=outputs/2024-01-01/12-00-00)")
    return args[key]


def _optional(value: str):
    return None if value.lower() in ("", "null", "none") else value


def evaluate_command(items: list[str]) -> int:
    from tlkit.evaluate import evaluate_run, summary_text
    from tlkit.rundir import EVAL_DIR, load_config

    args = parse_key_values(items, {"run": str, "split": str, "output": _optional, "tta": _optional, "data.": None},
                            "evaluate")
    run_dir = Path(_required(args, "run", "evaluate"))
    overrides = {k: v for k, v in args.items() if k.startswith("data.")}
    split = args.get("split", "all")
    if split == "all":
        data = load_config(run_dir, **overrides).data
        has_test = data.test_dir is not None or data.splits.test is not None  # folder or tfds
        splits = ["val", "test"] if has_test else ["val"]
    else:
        splits = [split]
    for name in splits:
        report = evaluate_run(run_dir, name, overrides, output=args.get("output"), tta=args.get("tta"))
        print(summary_text(report, name))
    print(f"report and pictures: {Path(args.get('output') or run_dir / EVAL_DIR)}")
    return 0


def predict_command(items: list[str]) -> int:
    from tlkit.predict import load_model_and_classes, predict, write_predictions
    from tlkit.tta import plan_tta

    args = parse_key_values(items, {"run": str, "inputs": str, "top_k": int, "batch_size": int, "output": _optional,
                                    "progress": lambda v: v.lower() in ("1", "true", "yes"), "tta": _optional},
                            "predict")
    run_dir = _required(args, "run", "predict")
    inputs = _required(args, "inputs", "predict")
    tta = plan_tta(args.get("tta"), Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent)
    model, names = load_model_and_classes(run_dir)
    top_k = min(args.get("top_k", 5), len(names))
    from tlkit.multilabel import read_thresholds  # a multi-label run: every class over its threshold

    thresholds = read_thresholds(Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent, names)
    rows, failures = predict(model, inputs, top_k=top_k, batch_size=args.get("batch_size", 32), class_names=names,
                             progress=args.get("progress", sys.stderr.isatty()), tta=tta, thresholds=thresholds)
    path = write_predictions(rows, failures, args.get("output"), top_k, names, stream=sys.stdout)
    for failure in failures:
        print(f"not predicted: {failure.path}: {failure.error}", file=sys.stderr)
    where = f" -> {path}" if path else ""
    print(f"predicted {len(rows)} images, {len(failures)} unreadable{where}", file=sys.stderr)
    if tta:
        changed = sum(row["without_tta"] != row["predictions"][0]["label"] for row in rows)
        left_out = "".join(f"; left out {view}: {why}" for view, why in tta.skipped.items())
        print(f"TTA tta={tta.request}: {len(tta.views)} view(s) ({', '.join(tta.views)}); {changed} of {len(rows)} "
              f"top-1 predictions changed{left_out}", file=sys.stderr)
    return 0


def export_command(items: list[str]) -> int:
    import json

    from tlkit.export import CARD_FILE, export

    args = parse_key_values(items, {"run": str, "format": str, "quantize": _optional, "output": _optional,
                                    "verify": lambda v: v.lower() in ("1", "true", "yes")}, "export")
    run_dir = _required(args, "run", "export")
    path = export(run_dir, _required(args, "format", "export"), args.get("quantize"), args.get("output"),
                  verify=args.get("verify", True))
    card_path = (path if path.is_dir() else path.parent) / CARD_FILE
    card = json.loads(card_path.read_text())
    shape = card["input"]["shape"]
    print(f"exported: {path}\nmodel card: {card_path}")
    print(f"input: float32 RGB 0-255, shape [batch, {shape[1]}, {shape[2]}, 3]; output: {card['num_classes']} "
          "probabilities in class_names order")
    check = card.get("verification", {})
    if "max_abs_diff" in check:
        print(f"check against model.keras on {check['images']} val images: max |diff| {check['max_abs_diff']:.2e}, "
              f"top-1 agreement {check['top1_agreement']:.4f}")
    if "accuracy_change" in card:
        change = card["accuracy_change"]
        print(f"val accuracy {change['val_accuracy_float']:.4f} -> {change['val_accuracy_quantized']:.4f} "
              f"({change['change']:+.4f}) with {card['quantize']}")
    return 0


def explain_command(items: list[str]) -> int:
    from tlkit.explain import explain_run

    args = parse_key_values(items, {"run": str, "inputs": str, "block": _optional, "class": _optional,
                                    "output": _optional, "batch_size": int}, "explain")
    result = explain_run(_required(args, "run", "explain"), _required(args, "inputs", "explain"), args.get("block"),
                         args.get("class"), args.get("output"), args.get("batch_size", 16))
    for failure in result.failures:
        print(f"not explained: {failure.path}: {failure.error}", file=sys.stderr)
    print(f"{result.method}: {len(result.explanations)} images, {len(result.failures)} unreadable -> {result.output}")
    return 0


def sweep_summary_command(multirun_dir: str, plot: bool = True) -> int:
    from tlkit.sweep import markdown_table, summarize, swept_params, write_summary

    try:
        rows = summarize(multirun_dir)
    except FileNotFoundError as error:
        print(f"tlkit sweep-summary: error: {error}", file=sys.stderr)
        return 2
    if not rows:
        print(f"tlkit sweep-summary: error: no trial folders (0/, 1/, ...) in {multirun_dir}", file=sys.stderr)
        return 2
    paths = write_summary(multirun_dir, rows, plot=plot)
    print(markdown_table(rows, swept_params(rows, multirun_dir)))
    print(f"\n{len(rows)} trials, {sum(r['failed'] for r in rows)} failed; written: "
          + ", ".join(str(p) for p in paths.values()))
    return 0


# The commands that run a library function on key=value arguments: (help, usage).
LIBRARY_COMMANDS = {
    "evaluate": ("accuracy, top-k, per-class metrics, confusion matrix and pictures into RUN_DIR/eval/",
                 "run=RUN_DIR [split=val|test|all] [output=DIR] [tta=flip|crops|N] [data.KEY=VALUE ...] (overrides "
                 "of the run's data)"),
    "predict": ("top-k classes of image files as CSV (stdout or output=*.csv) or JSON (output=*.json)",
                "run=RUN_DIR inputs=FILE|FOLDER|GLOB [top_k=5] [batch_size=32] [output=FILE] [progress=true] "
                "[tta=flip|crops|N]"),
    "export": ("a serving model with its model_card.json, in RUN_DIR/export/FORMAT/",
               "run=RUN_DIR format=keras|saved_model|tflite|onnx [quantize=float16|int8] [output=DIR] "
               "[verify=true]"),
    "explain": ("Grad-CAM pictures: where in each image the evidence for its predicted class lies, in RUN_DIR/explain/",
                "run=RUN_DIR inputs=FILE|FOLDER|GLOB [block=NAME (a backbone block; default: the deepest with a map "
                "of at least 4x4)] [class=NAME (default: the predicted one)] [output=DIR] [batch_size=16]"),
}
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
        from tlkit.cli_train import main as train_main

        train_main(argv[1:])  # Hydra's command line, as `python train.py`; errors exit with their own status
        return 0
    args = build_parser().parse_args(argv)
    if args.command == "sweep-summary":
        return sweep_summary_command(args.multirun_dir, plot=not args.no_plot)
    if args.command == "backbones":
        return backbones_command(args)
    if args.command == "doctor" and args.list:
        from tlkit.doctor_catalogue import catalogue_table

        return _print_listing(catalogue_table())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.command in LIBRARY_COMMANDS:
        return _run_library_command(args.command, args.args)
    from tlkit.errors import TlkitError

    try:
        config_dir = user_config_dir(args.config_dir)
    except TlkitError as error:
        print(f"tlkit: error: {error}", file=sys.stderr)
        return 2
    if args.command == "lr-find":
        return lr_find_command(args.items, config_dir)
    if args.command == "reproduce":
        from tlkit.reproduce import reproduce_command

        return reproduce_command(args.overrides, config_dir, compose_config)
    return doctor_command(args.overrides, config_dir, args.config_only)


def _run_library_command(command: str, items: list[str]) -> int:
    from tlkit.errors import TlkitError

    logging.getLogger("tlkit").setLevel(logging.INFO)
    handler = {"evaluate": evaluate_command, "predict": predict_command, "export": export_command,
               "explain": explain_command}[command]
    try:
        return handler(items)
    except (TlkitError, FileNotFoundError) as error:
        print(f"tlkit {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
