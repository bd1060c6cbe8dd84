"""The post-training commands of `tlkit` (tlkit/cli/main.py parses the command line, this runs them): evaluate,
predict, export, explain on key=value arguments, and sweep-summary. Each is a thin layer over its library
function (tlkit.tools.evaluate, tlkit.tools.predict, tlkit.tools.export, tlkit.tools.explain, tlkit.tools.sweep); errors a user can fix exit 2
with their message.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path


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
    from tlkit.data.scan import has_test_split
    from tlkit.tools.evaluate import evaluate_run, summary_text
    from tlkit.training.rundir import EVAL_DIR, load_config

    args = parse_key_values(items, {"run": str, "split": str, "output": _optional, "tta": _optional, "data.": None},
                            "evaluate")
    run_dir = Path(_required(args, "run", "evaluate"))
    overrides = {k: v for k, v in args.items() if k.startswith("data.")}
    split = args.get("split", "all")
    if split == "all":
        cfg = load_config(run_dir, **overrides)
        splits = ["val", "test"] if has_test_split(cfg.data, cfg.task) else ["val"]
    else:
        splits = [split]
    for name in splits:
        report = evaluate_run(run_dir, name, overrides, output=args.get("output"), tta=args.get("tta"))
        print(summary_text(report, name))
    print(f"report and pictures: {Path(args.get('output') or run_dir / EVAL_DIR)}")
    return 0


def predict_command(items: list[str]) -> int:
    from tlkit.tools.predict import load_model_and_classes, predict, write_predictions
    from tlkit.tools.tta import plan_tta

    args = parse_key_values(items, {"run": str, "inputs": str, "top_k": int, "batch_size": int, "output": _optional,
                                    "progress": lambda v: v.lower() in ("1", "true", "yes"), "tta": _optional},
                            "predict")
    run_dir = _required(args, "run", "predict")
    inputs = _required(args, "inputs", "predict")
    tta = plan_tta(args.get("tta"), Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent)
    model, names = load_model_and_classes(run_dir)
    top_k = min(args.get("top_k", 5), len(names))
    from tlkit.model.multilabel import read_thresholds  # a multi-label run: every class over its threshold

    thresholds = read_thresholds(Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent, names)
    rows, failures = predict(model, inputs, top_k=top_k, batch_size=args.get("batch_size", 32), class_names=names,
                             progress=args.get("progress", sys.stderr.isatty()), tta=tta, thresholds=thresholds)
    path = write_predictions(rows, failures, args.get("output"), top_k, names, stream=sys.stdout)
    for failure in failures:
        print(f"not predicted: {failure.path}: {failure.error}", file=sys.stderr)
    where = f" -> {path}" if path else ""
    print(f"predicted {len(rows)} images, {len(failures)} unreadable{where}", file=sys.stderr)
    if tta:
        what = "label sets" if thresholds is not None else "top-1 predictions"  # multi-label: the labels over thresholds
        changed = sum(row["without_tta"] != (row["labels"] if thresholds is not None else row["predictions"][0]["label"])
                      for row in rows)
        left_out = "".join(f"; left out {view}: {why}" for view, why in tta.skipped.items())
        print(f"TTA tta={tta.request}: {len(tta.views)} view(s) ({', '.join(tta.views)}); {changed} of {len(rows)} "
              f"{what} changed{left_out}", file=sys.stderr)
    return 0


def export_command(items: list[str]) -> int:
    import json

    from tlkit.tools.export import CARD_FILE, export

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
    from tlkit.tools.explain import explain_run

    args = parse_key_values(items, {"run": str, "inputs": str, "block": _optional, "class": _optional,
                                    "output": _optional, "batch_size": int}, "explain")
    result = explain_run(_required(args, "run", "explain"), _required(args, "inputs", "explain"), args.get("block"),
                         args.get("class"), args.get("output"), args.get("batch_size", 16))
    for failure in result.failures:
        print(f"not explained: {failure.path}: {failure.error}", file=sys.stderr)
    print(f"{result.method}: {len(result.explanations)} images, {len(result.failures)} unreadable -> {result.output}")
    return 0


def sweep_summary_command(multirun_dir: str, plot: bool = True) -> int:
    from tlkit.tools.sweep import markdown_table, summarize, swept_params, write_summary

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


def run_library_command(command: str, items: list[str]) -> int:
    from tlkit.errors import TlkitError

    logging.getLogger("tlkit").setLevel(logging.INFO)
    handler = {"evaluate": evaluate_command, "predict": predict_command, "export": export_command,
               "explain": explain_command}[command]
    try:
        return handler(items)
    except (TlkitError, FileNotFoundError) as error:
        print(f"tlkit {command}: error: {error}", file=sys.stderr)
        return 2
