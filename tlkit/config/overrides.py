"""Command-line overrides that could make Hydra run code are refused before Hydra composes.

tlkit itself never builds an object named in a config (no `hydra.utils.instantiate`, no
import by name: optimizers, backbones and heads are Enums and registry names). Hydra does,
for its own config: it instantiates every `hydra.callbacks.*._target_` before the task
starts (checked on Hydra 1.3.8: `+hydra.callbacks.x._target_=os.makedirs
+hydra.callbacks.x.name=/tmp/marker` creates the folder), passes `hydra.job_logging` to
`logging.config.dictConfig` (whose `class`/`()` keys import by name), and instantiates
`hydra.launcher` / `hydra.sweeper`. So train.py and `tlkit doctor` refuse, before composing:

  * any override whose key, or any key inside its value (`+x={_target_: ...}`), is one of
    Hydra's instantiate keys (`_target_`, `_partial_`, `_args_`, `_recursive_`, `_convert_`);
  * any `hydra.*` key outside a small allowlist (the run and sweep folders, chdir, job
    name, verbosity, log levels, the Optuna sweeper's plain numbers: n_trials, direction,
    sampler.seed, ..., the submitit launcher's resources: partition, gpus_per_node,
    timeout_min, ...) and any override packaged into `hydra` (`group@hydra...`);
  * `--experimental-rerun` (it unpickles a file) and `--config-path` (it replaces tlkit's configs).

A folder of the user's own configs (`--config-dir DIR`, `hydra.searchpath=[file://DIR]`) is allowed once its YAML
files pass the same rules (check_config_dir): no instantiate key anywhere, no file under DIR/hydra/ or packaged
into hydra, and in a global file (DIR/config.yaml, `# @package _global_` recipes) only the hydra.* keys above.

Choosing one of Hydra's installed options (`hydra/job_logging=disabled`) stays allowed:
those are files shipped with Hydra, not strings from the command line.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Iterable, List, Tuple

from tlkit.errors import ConfigError

INSTANTIATE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
HYDRA_KEYS_ALLOWED = (
    "hydra.run.dir",
    "hydra.sweep.dir",
    "hydra.sweep.subdir",
    "hydra.job.chdir",
    "hydra.job.name",
    "hydra.verbose",
    "hydra.output_subdir",
    "hydra.mode",
    "hydra.job_logging.root.level",
    "hydra.hydra_logging.root.level",
    # hparams_search=optuna (hydra-optuna-sweeper): plain values only. Not hydra.sweeper.sampler
    # (instantiated), custom_search_space (a dotpath Hydra imports), storage or params (the
    # search space: pass optimizer.lr=interval(1e-4,1e-3) on the command line instead).
    "hydra.sweeper.n_trials",
    "hydra.sweeper.n_jobs",
    "hydra.sweeper.direction",
    "hydra.sweeper.study_name",
    "hydra.sweeper.max_failure_rate",
    "hydra.sweeper.sampler.seed",
    "hydra.sweeper.sampler.n_startup_trials",
    # hydra/launcher=slurm|local|submitit_slurm|submitit_local (hydra-submitit-launcher): the
    # resource fields. Not `setup` or `additional_parameters`: they write lines into the job script.
    *(f"hydra.launcher.{key}" for key in (
        "partition", "gpus_per_node", "tasks_per_node", "nodes", "cpus_per_task", "cpus_per_gpu", "gpus_per_task",
        "mem_gb", "mem_per_gpu", "mem_per_cpu", "timeout_min", "array_parallelism", "qos", "account", "comment",
        "constraint", "exclude", "gres", "signal_delay_s", "max_num_timeout", "name", "stderr_to_stdout",
        "submitit_folder")),
)
REFUSED_FLAGS = {
    "experimental_rerun": "--experimental-rerun (it loads a pickled config, which can run code)",
    "config_path": "--config-path/-cp (it replaces tlkit's configs: add a folder of yours with --config-dir DIR, "
                   "e.g. DIR/recipe/mine.yaml and recipe=mine)",
}
_WHY = "tlkit never builds objects named in a config, and refuses overrides that would make Hydra do it"


def _nested_items(value, prefix: str) -> Iterable[Tuple[str, object]]:
    """(dotted path, value) of every key inside a parsed override value (dicts, lists, sweeps)."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}"
            yield path, item
            yield from _nested_items(item, path)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _nested_items(item, f"{prefix}.{index}")
    elif isinstance(getattr(value, "list", None), list):  # a sweep: a,b,c or choice(a,b)
        for item in value.list:
            yield from _nested_items(item, prefix)


def check_override_strings(overrides: List[str]) -> None:
    """Raise ConfigError for the first override that could make Hydra run code (see the module doc)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - a syntax error: Hydra reports it with its own message
        return
    for override in parsed:
        text = override.input_line or override.get_key_element()
        if override.is_delete():
            continue  # removing a key runs nothing
        key = override.key_or_group
        package = override.package or ""
        if package == "hydra" or package.startswith("hydra."):
            raise ConfigError(text, override.value(), f"a package outside hydra.* ({_WHY})")
        try:
            value = override.value()
        except Exception:  # noqa: BLE001 - e.g. interpolations Hydra resolves later
            value = None
        for path, item in [(key, value), *_nested_items(value, key)]:
            name = path.rsplit(".", 1)[-1]
            if name in INSTANTIATE_KEYS:
                raise ConfigError(
                    path, item, f"no {name} keys: {_WHY}",
                    hint="tlkit's choices are config groups and plain values, e.g. optimizer=sgd optimizer.lr=0.01",
                )
        if key == "hydra.searchpath":
            _check_search_path(value)
        elif key == "hydra" or key.startswith("hydra."):
            if key not in HYDRA_KEYS_ALLOWED:
                raise ConfigError(
                    key, value, f"one of the hydra.* keys tlkit lets you override: {', '.join(HYDRA_KEYS_ALLOWED)}",
                    hint="Hydra instantiates or imports what hydra.callbacks, hydra.launcher, hydra.sweeper and "
                         "hydra.job_logging name, so overriding them could run code; options of Hydra's own groups "
                         "stay available (e.g. hydra/job_logging=disabled)",
                )


# --------------------------------------------------------------------------- the user's config folders

_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)
_DIR_WHY = "a folder of your configs may add groups and recipes; it may not make Hydra run code"


def _check_search_path(value) -> None:
    """hydra.searchpath=[file://DIR, ...]: every entry a folder that passes check_config_dir."""
    entries = value if isinstance(value, list) else [value]
    for entry in entries:
        text = str(entry)
        if "://" in text and not text.startswith("file://"):
            raise ConfigError("hydra.searchpath", text, "folders only (file://DIR or DIR): tlkit checks what they hold",
                              hint="put your configs in a folder: hydra.searchpath=[file:///my/conf] or --config-dir")
        check_config_dir(text[len("file://"):] if text.startswith("file://") else text, key="hydra.searchpath")


def check_config_dir(path, key: str = "--config-dir") -> None:
    """Raise ConfigError when a YAML file in the user's config folder could make Hydra run code (module doc)."""
    import yaml

    root = Path(path)
    if not root.is_dir():
        raise ConfigError(key, str(path), "an existing folder of YAML configs (e.g. DIR/recipe/mine.yaml)")
    for file in sorted(root.rglob("*.yaml")):
        name = file.relative_to(root).as_posix()
        text = file.read_text(errors="replace")
        package = (_PACKAGE_HEADER.search(text) or [None, ""])[1]
        if name.startswith("hydra/") or package == "hydra" or package.startswith("hydra."):
            raise ConfigError(f"{key} {root}", name, f"no configs of Hydra's own (hydra/, @package hydra): {_DIR_WHY}")
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # Hydra reports a broken file with its own message
        if not isinstance(content, dict):
            continue
        for item_path, _ in _nested_items(content, ""):
            if item_path.rsplit(".", 1)[-1] in INSTANTIATE_KEYS:
                raise ConfigError(f"{key} {root}", f"{name}: {item_path.lstrip('.')}", f"no instantiate keys: {_DIR_WHY}")
        defaults = content.get("defaults") if isinstance(content.get("defaults"), list) else []
        if any("@hydra" in str(entry) for entry in defaults):
            raise ConfigError(f"{key} {root}", f"{name}: defaults", f"nothing packaged into hydra: {_DIR_WHY}")
        if (name == "config.yaml" or package == "_global_") and "hydra" in content:
            _check_hydra_block(content["hydra"], f"{key} {root}", name)


def _check_hydra_block(block, key: str, name: str) -> None:
    leaves = [p for p, item in _nested_items({"hydra": block}, "")
              if not isinstance(item, dict)] if isinstance(block, dict) else [".hydra"]  # a list is a leaf
    for leaf in (p.lstrip(".") for p in leaves):
        if not any(leaf == allowed or leaf.startswith(allowed + ".") for allowed in HYDRA_KEYS_ALLOWED):
            raise ConfigError(key, f"{name}: {leaf}", f"one of the hydra.* keys tlkit lets you set ({_DIR_WHY})",
                              hint=f"allowed: {', '.join(HYDRA_KEYS_ALLOWED[:10])}, ...")


def check_command_line(argv: List[str]) -> List[str]:
    """The same check for a whole train.py command line (Hydra's flags included); returns its overrides."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = get_args_parser().parse_args(list(argv))
    except SystemExit:
        return []  # a malformed command line: Hydra prints its own usage message
    for flag, why in REFUSED_FLAGS.items():
        if getattr(args, flag, None):
            raise ConfigError(f"--{flag.replace('_', '-')}", getattr(args, flag), f"not used with tlkit: {why}")
    if args.config_dir:
        check_config_dir(args.config_dir)
    check_override_strings(args.overrides)
    return list(args.overrides)


def run_dir_override(overrides: List[str]) -> str:
    """The run directory train.py will get: the last hydra.run.dir=... override, else config.yaml's outputs/."""
    found = "outputs"  # tlkit/conf/config.yaml: outputs/${now:...}, relative to the working directory
    for text in overrides:
        key, sep, value = text.lstrip("+").partition("=")
        if sep and key == "hydra.run.dir":
            found = value.strip("'\"").split("${")[0] or "."  # outputs/${now:...}: check outputs/
    return found


def _override_key(text: str) -> str:
    return text.lstrip("+~").partition("=")[0]


def resume_command_line(argv: List[str]) -> List[str]:
    """`python train.py resume=RUN_DIR [overrides]` composes the interrupted run's config.

    The run's own overrides (RUN_DIR/.hydra/overrides.yaml) come first, then the command
    line's (which win for the keys they name), then hydra.run.dir=RUN_DIR: the run continues
    in its own directory. The trainer still compares the result with RUN_DIR/config.yaml
    and refuses a different config. In a sweep (-m) nothing changes: each trial resumes its
    own directory by itself.
    """
    if {"-m", "--multirun"} & set(argv):
        return list(argv)
    resumes = [a.partition("=")[2] for a in argv if _override_key(a) == "resume" and "=" in a]
    if not resumes or resumes[-1] in ("", "null"):
        return list(argv)
    run_dir = resumes[-1].strip("'\"")
    if not (Path(run_dir) / "config.yaml").is_file():
        why = "no such directory" if not Path(run_dir).is_dir() else "it has no config.yaml"
        raise ConfigError("resume", run_dir, f"a tlkit run directory to continue ({why})",
                          hint="the folder train.py wrote, e.g. outputs/DATE/TIME (it holds config.yaml and .hydra/)")
    saved: List[str] = []
    overrides_file = Path(run_dir) / ".hydra" / "overrides.yaml"
    if overrides_file.exists():
        import yaml

        saved = [str(item) for item in (yaml.safe_load(overrides_file.read_text()) or [])]
    given = {_override_key(a) for a in argv if not a.startswith("-")}
    kept = [o for o in saved if _override_key(o) not in given | {"resume", "hydra.run.dir", "hydra.output_subdir"}]
    extra = [] if "hydra.run.dir" in given else [f"hydra.run.dir={run_dir}"]
    # Hydra would rewrite RUN_DIR/.hydra/ with this command's overrides, even when the resume is
    # then refused: the run's own record (what the next resume reads) must stay as it was.
    extra.append("hydra.output_subdir=null")
    return kept + list(argv) + extra
