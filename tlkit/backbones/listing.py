"""`tlkit backbones`: the registry as a table, searchable by name, family and size, without building a model.

Pure Python (no Keras, no TensorFlow): parameter counts are the ones stored in the specs.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Iterable

from tlkit.backbones.hub import HubSpec, catalogue_specs, kagglehub_cache
from tlkit.backbones.registry import all_specs
from tlkit.backbones.spec import BackboneSpec
from tlkit.text_table import text_table

HEADER = ("name", "keras constructor", "family", "params", "size", "min", "preprocess", "features", "weights",
          "blocks (count: stem -> top)")
_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}


def parse_count(text: str) -> int:
    """'30M' -> 30_000_000; also K, G (or B) and plain numbers ('2.5M', '500000')."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGB]?)\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r}: expected a parameter count such as 30M, 2.5M, 500K or 25000000")
    return int(float(match.group(1)) * _SUFFIXES[match.group(2).upper()])


def format_count(count: int | None) -> str:
    if count is None:
        return "?"
    for suffix, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}"
    return str(count)


def select(specs: Iterable[BackboneSpec], name: str | None = None, family: str | None = None,
           max_params: int | None = None) -> list[BackboneSpec]:
    """The specs whose name and family match these shell patterns ('convnext*') and with at most max_params."""
    return [s for s in specs
            if (name is None or fnmatch.fnmatchcase(s.name, name))
            and (family is None or fnmatch.fnmatchcase(s.family, family))
            and (max_params is None or (s.params is not None and s.params <= max_params))]


def listed_specs() -> list[BackboneSpec]:
    """What `tlkit backbones` lists: the keras.applications registry, then the named KerasHub backbones."""
    return all_specs() + catalogue_specs()


def _weights_of(s: BackboneSpec) -> str:
    if isinstance(s, HubSpec):  # the preset, and the Kaggle handle its weights come from
        return f"{s.weights_source} ({s.weights_file(s.default_size)})"
    return s.weights_source


def _row(s: BackboneSpec) -> tuple[str, ...]:
    preprocess = f"{s.preprocess} (in model)" if s.builtin_preprocess else s.preprocess
    return (s.name, s.constructor, s.family, format_count(s.params), str(s.default_size), str(s.min_size), preprocess,
            str(s.features), _weights_of(s), f"{len(s.blocks)}: " + " ".join(s.block_names))


def backbones_table(specs: list[BackboneSpec] | None = None) -> str:
    specs = all_specs() if specs is None else specs
    if not specs:
        return "no backbone matches (tlkit backbones lists them all)"
    inside = sorted({(s.family, s.builtin_preprocess) for s in specs if s.builtin_preprocess})
    notes = ["", "Every model takes RGB images in 0-255; the preprocessing above runs inside the model, once."]
    if inside:
        notes += ["'none (in model)': the backbone's own first layers do it:",
                  *(f"  {family}: {does}" for family, does in inside)]
    notes += ["weights: backbone.weights=imagenet loads that file from the Keras cache ($KERAS_HOME/models, else "
              "~/.keras/models; downloaded there when online).",
              *([f"hub:PRESET (pip install 'tlkit[hub]'): the KerasHub preset, from the kagglehub cache "
                 f"({kagglehub_cache()}, $KAGGLEHUB_CACHE) or a local folder (backbone.preset=FOLDER); the preset's "
                 "image converter is the preprocessing above, in the model; pooling: the class token (vit, dinov2) "
                 "or the mean (swin); min: the smallest input size the preset's weights take. Any other preset: "
                 "backbone=hub backbone.preset=NAME|PATH"]
                if any(isinstance(s, HubSpec) for s in specs) else []),
              "Freeze by blocks: schedule.stages.N.train=head | all | top:N | from:BLOCK"]
    return text_table(HEADER, [_row(s) for s in specs]) + "\n" + "\n".join(notes)


def markdown_table(specs: list[BackboneSpec] | None = None) -> str:
    """README's backbone table (tests/test_backbone_registry.py checks README.md holds exactly this)."""
    specs = all_specs() if specs is None else specs
    lines = ["| backbone | keras.applications | params | size (min) | input contract: RGB 0-255, then | blocks | "
             "ImageNet weights (Keras cache file) |", "|---|---|---|---|---|---|---|"]
    for s in specs:
        contract = f"`{s.preprocess}`" + (f"; the backbone's own: {s.builtin_preprocess}" if s.builtin_preprocess else "")
        lines.append(f"| `{s.name}` | {s.constructor} | {format_count(s.params)} | {s.default_size} ({s.min_size}) | "
                     f"{contract} | {len(s.blocks)} | `{s.weights_file(s.default_size)}` |")
    return "\n".join(lines)


def hub_markdown_table(specs: list[HubSpec] | None = None) -> str:
    """README's table of the named KerasHub backbones (tests/test_hub.py checks README.md holds exactly this)."""
    specs = catalogue_specs() if specs is None else specs
    lines = ["| backbone | keras_hub | params | size (min with its weights; multiples of) | patch | input contract: RGB "
             "0-255, then | pooling | blocks | weights (KerasHub preset, Kaggle handle) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in specs:
        pooling = "class token" if s.pooling == "cls" else "mean over tokens"
        lines.append(f"| `{s.name}` | {s.constructor.rsplit('.', 1)[-1]} | {format_count(s.params)} | "
                     f"{s.default_size} ({s.min_size}; {s.size_step}) | {s.patch_size} | `{s.preprocess}`: the "
                     "preset's image converter, in the model "
                     f"| {pooling} | {len(s.blocks)} | `{s.preset}` (`{s.weights_file(s.default_size)}`) |")
    return "\n".join(lines)
