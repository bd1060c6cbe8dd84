"""`tlkit reproduce recipe=NAME [overrides]`: train a recipe and compare it with its published result.

    check_reference(cfg)          the reference block against the rest of the config (tlkit.config.reference;
                                  validate calls it)
    compare(reference, metrics)   one row per reference result: achieved, difference, pass / fail / missing
    format_table(rows)            the console table
    reproduce_command(...)        the command: compose like train.py, train into a run dir, write
                                  RUN_DIR/reproduce.json, print the table; exit 0 all within
                                  tolerance, 1 not, 2 config (or data) errors

A result passes when |achieved - value| <= tolerance: far above the reference fails too,
because then the run does not match what was published (another split, a leak). The
composing is tlkit.cli.compose.compose_config's (passed in): this module does not import Hydra.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from tlkit.config.reference import STAGE_METRICS, check_reference  # noqa: F401  (re-exported)
from tlkit.errors import TlkitError, error_chain
from tlkit.text_table import text_table

REPORT_FILE = "reproduce.json"
DEFAULT_RUN_ROOT = "outputs/reproduce"  # RUN_DIR = outputs/reproduce/RECIPE/DATE_TIME unless hydra.run.dir= / run_dir=
RUN_DIR_KEYS = ("hydra.run.dir", "run_dir")
log = logging.getLogger("tlkit.reproduce")


def _value(item):
    return getattr(item, "value", item)  # Enum -> str


# --------------------------------------------------------------------------- comparison


def compare(reference, metrics: dict) -> List[dict]:
    """One row per reference result, in order: achieved vs reference and the verdict.

    status: pass (|difference| <= tolerance), fail, or missing (the run has no such value:
    a stage that never ran, a run stopped by the doctor); only pass counts as reproduced.
    """
    rows = []
    stages = {stage.get("name"): stage for stage in metrics.get("stages", [])}
    for result in reference.results:
        metric = _value(result.metric)
        tolerance = float(reference.tolerance if result.tolerance is None else result.tolerance)
        if result.stage is None:
            achieved, why = metrics.get(metric), f"metrics.json has no {metric}"
        elif result.stage in stages:
            achieved, why = stages[result.stage].get(metric), f"stage '{result.stage}' recorded no {metric}"
        else:
            achieved = None
            why = f"stage '{result.stage}' did not run (run status: {metrics.get('status', 'unknown')})"
        row = {"metric": metric, "stage": result.stage, "reference": float(result.value), "tolerance": tolerance,
               "achieved": None, "difference": None, "status": "missing", "why": why}
        if isinstance(achieved, (int, float)) and math.isfinite(achieved):
            difference = float(achieved) - float(result.value)
            row.update(achieved=float(achieved), difference=difference, why=None,
                       status="pass" if abs(difference) <= tolerance + 1e-12 else "fail")  # 1e-12: float rounding
        rows.append(row)
    return rows


def all_passed(rows: Sequence[dict]) -> bool:
    return bool(rows) and all(row["status"] == "pass" for row in rows)


def format_table(rows: Sequence[dict]) -> str:
    header = ("metric", "stage", "reference", "tolerance", "achieved", "difference", "result")
    lines = []
    for row in rows:
        achieved = "-" if row["achieved"] is None else f"{row['achieved']:.4f}"
        difference = "-" if row["difference"] is None else f"{round(row['difference'], 4) + 0.0:+.4f}"  # no -0.0000
        lines.append((row["metric"], row["stage"] or "(final)", f"{row['reference']:.4f}",
                      f"±{row['tolerance']:.4f}", achieved, difference, row["status"].upper()))
    text = text_table(header, lines).split("\n")
    notes = [f"  {row['metric']} ({row['stage'] or 'final'}): {row['why']}" for row in rows if row["why"]]
    passed = sum(row["status"] == "pass" for row in rows)
    verdict = "reproduced" if all_passed(rows) else "NOT reproduced"
    return "\n".join(text + notes + [f"{passed} of {len(rows)} within tolerance: {verdict}"])


# --------------------------------------------------------------------------- the command


def recipes_with_reference(config_dir: Path) -> List[tuple]:
    """(name, source) of every recipe file with a reference block, read as YAML (no composing)."""
    import yaml

    found = []
    for path in sorted((Path(config_dir) / "recipe").glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        reference = data.get("reference") if isinstance(data, dict) else None
        if isinstance(reference, dict):
            found.append((path.stem, str(reference.get("source", "")).strip()))
    return found


def _recipe_list(config_dir: Optional[Path]) -> str:
    """The package's recipes with a reference, then those of the user's --config-dir (which win by name)."""
    from tlkit.conf import CONF_DIR

    recipes = dict(recipes_with_reference(CONF_DIR))
    recipes.update(recipes_with_reference(config_dir) if config_dir else [])
    recipes = sorted(recipes.items())
    if not recipes:
        return "no recipe in recipe/ has a reference block"
    return "recipes with a reference:\n" + "\n".join(f"  {name:<24} {source[:100]}" for name, source in recipes)


def split_overrides(overrides: Sequence[str]):
    """(Hydra overrides, recipe name or None, run dir or None): run-dir keys are the command's own."""
    rest, recipe, run_dir = [], None, None
    for text in overrides:
        key, sep, value = text.lstrip("+").partition("=")
        if sep and key in RUN_DIR_KEYS:
            run_dir = value.strip("'\"")
            continue
        if sep and key == "recipe":
            recipe = value.strip("'\"")
        rest.append(text)
    return rest, recipe, run_dir


def _fail(message: str) -> int:
    print(f"tlkit reproduce: error: {message}", file=sys.stderr)
    return 2


def reproduce_command(overrides: Sequence[str], config_dir: Optional[Path], compose: Callable) -> int:
    """`tlkit reproduce recipe=NAME [overrides]`; `compose(overrides, config_dir)` is tlkit.cli.compose.compose_config,
    config_dir the user's --config-dir or None."""
    from tlkit.config import as_train_config
    from tlkit.recipe.preflight import check_run

    command = "tlkit reproduce " + " ".join(overrides)
    overrides, recipe, run_dir = split_overrides(overrides)
    if not recipe:
        return _fail(f"recipe=NAME is required.\n{_recipe_list(config_dir)}")
    try:
        composed = compose(overrides, config_dir)
        cfg = as_train_config(composed)
        checked = check_run(cfg)  # includes check_reference; its data scan is handed on to training
    except TlkitError as error:
        return _fail(f"config-invalid: {error}")
    except Exception as error:  # noqa: BLE001 - Hydra composition: unknown key, bad value, unknown recipe
        return _fail(f"config-invalid: {error_chain(error)}\n{_recipe_list(config_dir)}")
    if cfg.reference is None:
        return _fail(f"recipe={recipe} has no reference block (reference.source, .tolerance, .results), "
                     f"so there is nothing to reproduce; train it with python train.py recipe={recipe}.\n"
                     f"{_recipe_list(config_dir)}")
    if not run_dir:
        run_dir = str(Path(DEFAULT_RUN_ROOT) / recipe / time.strftime("%Y-%m-%d_%H-%M-%S"))
    return _run(cfg, composed, overrides, recipe, Path(_resolve(run_dir)), command, checked)


def _resolve(path: str) -> str:
    """hydra.run.dir=runs/${now:%H-%M} as train.py resolves it (Hydra registered `now` while composing)."""
    from omegaconf import OmegaConf

    try:
        return str(OmegaConf.create({"dir": path}).dir)
    except Exception:  # noqa: BLE001 - not an interpolation OmegaConf can resolve: the path as given
        return path


def _run(cfg, composed, overrides: List[str], recipe: str, run_dir: Path, command: str, checked=None) -> int:
    import tlkit.training.rundir as rundir

    try:
        rundir.check_can_create(run_dir)
        rundir.ensure_writable(run_dir)
    except TlkitError as error:
        return _fail(str(error))
    _write_hydra_files(run_dir, composed, overrides)
    logging.getLogger("tlkit").setLevel(logging.INFO)
    print(f"tlkit reproduce: recipe={recipe} -> {run_dir}\nreference: {cfg.reference.source}", flush=True)
    started = time.time()
    try:
        result = _train(cfg, run_dir, checked)
    except TlkitError as error:  # data not downloadable, weights not cached, a doctor error
        return _fail(str(error))
    rows = compare(cfg.reference, result.metrics)
    report = {
        "recipe": recipe,
        "command": command,
        "run_dir": str(run_dir),
        "source": cfg.reference.source,
        "notes": cfg.reference.notes,
        "status": result.metrics.get("status"),
        "passed": all_passed(rows),
        "results": rows,
        "wall_time_s": round(time.time() - started, 1),
    }
    text = json.dumps(report, indent=2) + "\n"
    rundir.atomic_write(run_dir / REPORT_FILE, lambda tmp: Path(tmp).write_text(text))
    print(f"\n{format_table(rows)}\nwritten: {run_dir / REPORT_FILE}")
    return 0 if report["passed"] else 1


def _train(cfg, run_dir: Path, checked=None):
    """What tlkit.train does (the package's facade is not imported from inside it): check, then train; `checked`:
    tlkit.recipe.preflight.check_run(cfg) when already run."""
    from tlkit.cli.runner import train

    return train(cfg, run_dir, checked)


def _write_hydra_files(run_dir: Path, composed, overrides: List[str]) -> None:
    """RUN_DIR/.hydra/config.yaml and overrides.yaml, as train.py's Hydra writes them."""
    from omegaconf import OmegaConf

    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(composed, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), folder / "overrides.yaml")

