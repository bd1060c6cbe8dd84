"""What `tlkit doctor`, `lr-find` and `reproduce` compose: the config `tlkit train OVERRIDES` gets.

tlkit's configs are package data (pkg://tlkit.conf), so every command works from any directory after a plain
install. A folder of the user's own (`--config-dir DIR`) is put ahead of them on Hydra's search path, as Hydra's
own --config-dir does for `tlkit train`: DIR/recipe/mine.yaml is `recipe=mine`. An entry-point module (like
tlkit.cli.main): it may use Hydra; the library does not.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

from tlkit.conf import CONF_MODULE


def user_config_dir(explicit: Optional[str]) -> Optional[Path]:
    """--config-dir DIR, checked like `tlkit train --config-dir` checks it (tlkit.config.overrides); None without."""
    if not explicit:
        return None
    from tlkit.config.overrides import check_config_dir

    check_config_dir(explicit)
    return Path(explicit).resolve()


@contextlib.contextmanager
def _hydra_search_path(config_dir: Optional[Path]) -> Iterator[None]:
    """Hydra initialised on pkg://tlkit.conf, with config_dir ahead of it (what Hydra's --config-dir does)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    search_path = create_config_search_path(f"pkg://{CONF_MODULE}")
    if config_dir is not None:
        search_path.prepend(provider="command-line", path=f"file://{config_dir}")
    previous = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if previous is not None:
            GlobalHydra.instance().initialize(previous)


def compose_config(overrides: list[str], config_dir: Optional[Path] = None):
    """The DictConfig `tlkit train [--config-dir DIR] OVERRIDES` would get."""
    from hydra import compose
    from hydra.core.config_store import ConfigStore

    from tlkit.config import register_schema
    from tlkit.config.overrides import check_override_strings

    check_override_strings(overrides)  # robustness: refuse what train refuses (objects named in overrides)
    register_schema(ConfigStore.instance())
    with _hydra_search_path(config_dir):
        return compose(config_name="config", overrides=overrides)
