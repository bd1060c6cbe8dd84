"""Sweeps: the summary of a multirun folder, failed trials, and TensorBoard HParams.

    python train.py -m hparams_search=optuna ...          an Optuna search (tlkit/conf/hparams_search/optuna.yaml)
    python train.py -m optimizer.lr=1e-3,1e-4             a Hydra grid
    tlkit sweep-summary MULTIRUN_DIR                      sweep_summary.md / .csv / .png in MULTIRUN_DIR

A multirun folder holds one run directory per trial (`MULTIRUN_DIR/<num>/`, with
`.hydra/overrides.yaml`, and `metrics.json` when it finished or `failure.json` when it
raised) and, for Optuna, `optimization_results.yaml`. The summary ranks trials by their
final val_accuracy (val_map with task=multilabel: what train.py returns to the sweeper), best
first, failed trials last.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import traceback
from pathlib import Path

from tlkit.fileio import read_json
from tlkit.training.metrics_record import sweep_score

log = logging.getLogger("tlkit.sweep")  # a fixed name, as every tlkit logger has (train.log lines show it)

FAILURE_FILE = "failure.json"
SUMMARY_MD = "sweep_summary.md"
SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_PNG = "sweep_summary.png"
HPARAMS_DIR = "tensorboard/hparams"
METRIC = "val_accuracy"  # what train.py returns to the sweeper (direction: maximize)
COLUMNS = ("rank", "trial", "status", "val_accuracy", "val_loss", "epochs", "wall_time_s", "overrides", "error")


# --------------------------------------------------------------------------- failures


def write_failure(run_dir, error: BaseException, wall_time_s: float | None = None) -> Path:
    """RUN_DIR/failure.json: the error type, message and traceback of a trial that raised."""
    path = Path(run_dir) / FAILURE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "status": "failed",
        "error_type": type(error).__name__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        "wall_time_s": None if wall_time_s is None else round(wall_time_s, 2),
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- summary


def _read_overrides(trial_dir: Path) -> list[str]:
    import yaml

    path = trial_dir / ".hydra" / "overrides.yaml"
    try:
        return [str(item) for item in (yaml.safe_load(path.read_text()) or [])]
    except (OSError, yaml.YAMLError):
        return []


def _split_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def _trial_dirs(multirun_dir: Path) -> list[Path]:
    dirs = [p for p in multirun_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(dirs, key=lambda p: int(p.name))


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def summarize(multirun_dir) -> list[dict]:
    """One dict per trial, best score first (val_accuracy; val_map with task=multilabel: metrics_record.sweep_score),
    failed (and unfinished) trials last.

    Keys: rank, trial, status (the run's metrics.json status, "failed" with failure.json,
    "incomplete" with neither), val_accuracy (and val_map), metric and score (what ranks), val_loss, epochs, wall_time_s, overrides
    (the trial's command-line overrides, space-separated), params ({key: value} of those
    overrides), error ("Type: message" of a failed trial), failed (bool).
    """
    multirun_dir = Path(multirun_dir)
    if not multirun_dir.is_dir():
        raise FileNotFoundError(f"no multirun folder at {multirun_dir}")
    rows = []
    for trial_dir in _trial_dirs(multirun_dir):
        metrics = read_json(trial_dir / "metrics.json", unreadable_ok=True)
        failure = read_json(trial_dir / FAILURE_FILE, unreadable_ok=True)
        timings = read_json(trial_dir / "timings.json", unreadable_ok=True)
        overrides = _read_overrides(trial_dir)
        metric, score = sweep_score(metrics)  # val_accuracy; val_map for task=multilabel
        if failure:
            status = "failed"
        elif metrics:
            status = str(metrics.get("status", "completed"))
        else:
            status = "incomplete"  # still running, killed, or not a tlkit run
        wall = _number(timings.get("wall_time_s")) or _number(metrics.get("wall_time_s")) \
            or _number(failure.get("wall_time_s"))
        rows.append({
            "trial": int(trial_dir.name),
            "status": status,
            "failed": status in ("failed", "incomplete"),
            "val_accuracy": None if failure else _number(metrics.get("val_accuracy")),
            **({"val_map": _number(metrics.get("val_map"))} if "val_map" in metrics else {}),
            "metric": metric, "score": None if failure else _number(score),
            "val_loss": None if failure else _number(metrics.get("val_loss")),
            "epochs": None if failure else metrics.get("epochs"),
            "wall_time_s": wall,
            "overrides": " ".join(overrides),
            "params": dict(_split_override(o) for o in overrides),
            "error": f"{failure.get('error_type', 'Error')}: {failure.get('message', '')}" if failure else "",
        })
    rows.sort(key=lambda r: (r["failed"], r["score"] is None, -(r["score"] or 0.0), r["trial"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def swept_params(rows: list[dict], multirun_dir=None) -> list[str]:
    """Override keys whose value differs between trials (plus Optuna's best_params keys)."""
    keys: dict[str, set] = {}
    for row in rows:
        for key, value in row["params"].items():
            keys.setdefault(key, set()).add(value)
    swept = [k for k, values in keys.items() if len(values) > 1 or any(k not in r["params"] for r in rows)]
    if multirun_dir is not None:
        best = optimization_results(multirun_dir).get("best_params") or {}
        swept += [k for k in best if k in keys and k not in swept]
    return swept


def optimization_results(multirun_dir) -> dict:
    """Optuna's optimization_results.yaml (best_params, best_value), {} for a grid sweep."""
    import yaml

    path = Path(multirun_dir) / "optimization_results.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {} if path.is_file() else {}
    except (OSError, yaml.YAMLError):
        return {}


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _short(value: str) -> str:
    number = _as_float(value)
    if number is not None and len(value) > 8 and not value.lstrip("-").isdigit():
        return f"{number:.4g}"
    return value


def columns_of(rows: list[dict]) -> tuple:
    """COLUMNS, with val_map after status when a trial has one (task=multilabel: what ranks the trials)."""
    return COLUMNS[:3] + ("val_map",) + COLUMNS[3:] if any("val_map" in r for r in rows) else COLUMNS


def markdown_table(rows: list[dict], params: list[str] | None = None) -> str:
    """The table; with `params`, the overrides column shows only those (the swept ones), numbers rounded."""
    columns = columns_of(rows)
    header = "| " + " | ".join(columns) + " |"
    lines = [header, "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if column == "status" and row["failed"]:
                value = f"**{row['status'].upper()}**"
            elif column == "wall_time_s" and value is not None:
                value = f"{value:.1f}"
            elif column == "error" and value:
                value = value.splitlines()[0][:160]
            elif column == "overrides":
                if params:
                    value = " ".join(f"{k}={_short(row['params'][k])}" for k in params if k in row["params"])
                value = f"`{value}`" if value else "-"
            text = _cell(value).replace("|", "\\|").replace("\n", " ")
            cells.append(text[:200])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(multirun_dir, rows: list[dict] | None = None, plot: bool = True) -> dict:
    """sweep_summary.md, .csv and (plot=True) .png in `multirun_dir`; returns {kind: path}."""
    multirun_dir = Path(multirun_dir)
    rows = summarize(multirun_dir) if rows is None else rows
    params = swept_params(rows, multirun_dir)
    best = optimization_results(multirun_dir)
    ok = [r for r in rows if not r["failed"]]
    title = f"# Sweep summary: {multirun_dir}\n\n{len(rows)} trials, {len(ok)} finished, " \
            f"{len(rows) - len(ok)} failed; ranked by {next((r['metric'] for r in ok), METRIC)} (higher is better).\n"
    if best.get("best_params"):
        title += f"Optuna best: {best.get('best_value')} with {best['best_params']}\n"
    paths = {"md": multirun_dir / SUMMARY_MD, "csv": multirun_dir / SUMMARY_CSV}
    common = [f"{k}={v}" for k, v in (rows[0]["params"] if rows else {}).items() if k not in params]
    if params and common:
        title += f"Overrides of every trial: `{' '.join(common)}`; the table shows the swept ones.\n"
    paths["md"].write_text(title + "\n" + markdown_table(rows, params) + "\n")
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        columns = columns_of(rows)
        writer.writerow(list(columns) + params)
        for row in rows:
            writer.writerow([_csv(row.get(c)) for c in columns] + [row["params"].get(p, "") for p in params])
    if plot and rows:
        paths["png"] = plot_summary(rows, params, multirun_dir / SUMMARY_PNG)
    return paths


def _csv(value):
    return "" if value is None else value


def _as_float(text: str):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def plot_summary(rows: list[dict], params: list[str], path: Path) -> Path:
    """The score (val_accuracy, or val_map) against each swept parameter, one subplot each; failed trials as red x at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = params or ["trial"]
    columns = min(3, len(params))
    lines = math.ceil(len(params) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.6 * columns, 3.6 * lines), squeeze=False)
    values = [r["score"] for r in rows if r["score"] is not None]
    metric = next((r["metric"] for r in rows if r["score"] is not None), METRIC)
    low = min(values) if values else 0.0
    high = max(values) if values else 1.0
    pad = max(0.05 * (high - low), 0.02)
    fail_y = low - 2 * pad
    any_failed = any(r["failed"] or r["score"] is None for r in rows)
    for ax, param in zip(axes.flat, params):
        positions = _x_positions(ax, param, rows)
        _plot_finished(ax, positions, rows)
        _plot_failed(ax, positions, rows, fail_y)
        ax.set_ylim((fail_y if any_failed else low) - pad, high + 2 * pad)
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    _shared_legend(fig, axes)
    fig.suptitle(f"{metric} against each swept parameter ({len(rows)} trials)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if lines == 1 else 0.04, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _x_positions(ax, param: str, rows: list[dict]) -> list:
    """Each trial's x on `ax` for `param` (None: not set in that trial); sets the axis up: a log scale for LRs and
    wide numeric ranges, one tick per category for text values."""
    import matplotlib.ticker

    xs = [str(r["trial"]) if param == "trial" else r["params"].get(param) for r in rows]
    numeric = all(_as_float(x) is not None for x in xs if x is not None) and any(x is not None for x in xs)
    if numeric:
        positions = [_as_float(x) for x in xs]
        finite = [p for p in positions if p is not None]
        if finite and min(finite) > 0 and (param.endswith("lr") or max(finite) / min(finite) >= 100):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping 2x10^-4 labels
        return positions
    categories = sorted({x for x in xs if x is not None})
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=20 if len(categories) > 3 else 0, ha="right"
                       if len(categories) > 3 else "center")
    ax.set_xlim(-0.6, len(categories) - 0.4)
    return [categories.index(x) if x is not None else None for x in xs]


def _plot_finished(ax, positions: list, rows: list[dict]) -> None:
    """The finished trials as blue dots labelled with their numbers, the best one circled in green."""
    done = [(x, r) for x, r in zip(positions, rows) if x is not None and not r["failed"]
            and r["score"] is not None]
    if not done:
        return
    best = max(done, key=lambda item: item[1]["score"])
    ax.scatter([x for x, _ in done], [r["score"] for _, r in done], color="tab:blue", zorder=3,
               label="finished")
    ax.scatter([best[0]], [best[1]["score"]], s=160, facecolors="none", edgecolors="tab:green",
               linewidths=2, zorder=4, label="best")
    labels: dict = {}  # trials at the same point share one label: "0,1"
    for x, r in done:
        labels.setdefault((x, r["score"]), []).append(f"#{r['trial']}")
    for point, trials in labels.items():
        ax.annotate(",".join(trials), point, textcoords="offset points", xytext=(5, 4), fontsize=7,
                    color="dimgray")


def _plot_failed(ax, positions: list, rows: list[dict], fail_y: float) -> None:
    """The failed trials (or those without a score) as red x on a dotted line at `fail_y`."""
    failed = [(x, r) for x, r in zip(positions, rows) if x is not None and (r["failed"] or r["score"] is None)]
    if not failed:
        return
    ax.scatter([x for x, _ in failed], [fail_y] * len(failed), marker="x", color="tab:red", s=60, zorder=3,
               label="failed")
    ax.axhline(fail_y, color="tab:red", linewidth=0.6, linestyle=":", zorder=1)
    labels: dict = {}
    for x, r in failed:
        labels.setdefault(x, []).append(f"#{r['trial']}")
    for x, trials in labels.items():
        ax.annotate(",".join(trials), (x, fail_y), textcoords="offset points", xytext=(5, 4), fontsize=7,
                    color="tab:red")


def _shared_legend(fig, axes) -> None:
    """One legend under the subplots, each label once."""
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8,
                   frameon=False)


# --------------------------------------------------------------------------- TensorBoard HParams


def hparams_of(cfg) -> dict:
    """The hyperparameters of a TrainConfig, as the scalars and strings the HParams plugin takes."""
    def plain(value):
        value = getattr(value, "value", value)  # Enums
        if value is None:
            return "null"
        return value if isinstance(value, (bool, int, float, str)) else str(value)

    stages = list(cfg.schedule.stages)
    return {
        "backbone": plain(cfg.backbone.name),
        "weights": plain(cfg.backbone.weights),
        "optimizer": plain(cfg.optimizer.name),
        "lr": float(cfg.optimizer.lr),
        "weight_decay": float(cfg.optimizer.weight_decay),
        "head": plain(cfg.head.kind),
        "head_dropout": float(cfg.head.dropout),
        "augment": plain(cfg.augment.name),
        "schedule": plain(cfg.schedule.name),
        "stages": " > ".join(str(s.train) for s in stages),
        "unfreeze": str(stages[1].train) if len(stages) > 1 else str(stages[0].train),
        "epochs_max": int(sum(int(s.epochs or 0) for s in stages)),  # null (the recipe's, not applied): 0
        "bn": plain(cfg.schedule.bn),
        # Fine-tuning methods (tlkit/training/methods, issue 9): what a sweep over them compares.
        "lr_decay": plain(cfg.schedule.lr_decay),
        "regularizer": plain(cfg.regularizer.name),
        "label_smoothing": float(cfg.loss.label_smoothing or 0.0),
        "mixup": plain(cfg.augment.mixup),
        "cutmix": float(cfg.augment.cutmix),
        "ema": bool(cfg.optimizer.ema),
        "batch_size": plain(cfg.data.batch_size),
        "image_size": plain(cfg.data.image_size),
        "seed": int(cfg.seed),
    }


def log_hparams(run_dir, cfg, metrics: dict) -> Path:
    """RUN_DIR/tensorboard/hparams/: the run's hyperparameters and final metrics for TensorBoard's HParams tab.

    Call it once at the end of a run (train.py does). `metrics` is metrics.json's dict: its
    numeric val_*/test_* entries and `epochs` are written as scalars at step 0.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    path = Path(run_dir) / HPARAMS_DIR
    path.mkdir(parents=True, exist_ok=True)
    scalars = {k: float(v) for k, v in metrics.items()
               if (k.startswith(("val_", "test_")) or k == "epochs") and _number(v) is not None}
    writer = tf.summary.create_file_writer(str(path))
    try:
        with writer.as_default():
            hp.hparams(hparams_of(cfg), trial_id=Path(run_dir).name)
            for name, value in scalars.items():
                tf.summary.scalar(name, value, step=0)
        writer.flush()
    finally:
        writer.close()
    return path
