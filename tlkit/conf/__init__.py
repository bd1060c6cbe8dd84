"""tlkit's Hydra configs, shipped inside the package (`pkg://tlkit.conf`): config.yaml, one folder per
config group, and the recipes (`recipe/`, chosen with `recipe=NAME`).

Your own configs go in a folder of your own, never here: `tlkit train --config-dir DIR` (or
`hydra.searchpath=[file://DIR]`) adds DIR to Hydra's search path, so `DIR/recipe/mine.yaml` is
`recipe=mine` and `DIR/backbone/x.yaml` is `backbone=x` (tlkit.config.overrides checks what DIR holds).
"""
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent  # the folder itself: the recipes are read from it without composing
CONF_MODULE = "tlkit.conf"  # Hydra's pkg:// search path: pkg://tlkit.conf
