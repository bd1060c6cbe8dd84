"""KerasHub presets as backbones: `backbone=hub backbone.preset=NAME|PATH`, and named ones (`backbone=vit_base`).

Pure Python (no keras_hub, no Keras, no TensorFlow): a preset is a folder of JSON files and weights
(`Backbone.save_to_preset(folder)` writes config.json, metadata.json and model.weights.h5, and
`ImageConverter.save_to_preset(folder)` image_converter.json), so its spec is read from those files
before anything heavy starts. A preset is:
- a local folder holding config.json;
- a Kaggle handle (kaggle://owner/model/keras/variant[/version]) already in the kagglehub cache
  ($KAGGLEHUB_CACHE, else ~/.cache/kagglehub);
- a KerasHub preset name (vit_base_patch16_224_imagenet): its handle is read from keras_hub's preset tables.
Anything else fails here, with one message naming the handle, the cache folder and how to make a local preset.

The preset's image converter (x * scale + offset per channel, resize to its image size) is folded into tlkit's
in-model preprocessing: its scale and offset must be one of tlkit's modes (tf: ViT's 0.5/0.5, torch: ImageNet
mean/std), so the saved model takes RGB 0-255 and the converter is never applied in the data pipeline too.
tlkit.backbones.hub_build builds the model; its blocks are the transformer layers (or Swin's stages).
"""
from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tlkit.backbones.spec import BackboneSpec, Block, fixed_file
from tlkit.errors import ConfigError, WeightsError
from tlkit.preprocessing_modes import TORCH_MEAN, TORCH_STD

HUB = "hub"  # backbone.name=hub: the preset is backbone.preset
PRESET_WEIGHTS = "preset"  # backbone.weights=preset: the preset's own weights (null: its architecture, random)
KAGGLE_PREFIX = "kaggle://"
CONFIG_FILE, CONVERTER_FILE, METADATA_FILE = "config.json", "image_converter.json", "metadata.json"

# Per family (the keras_hub backbone class): its short family name, how it pools, whether its position embeddings
# fix the input size once pretrained weights are loaded (ViT's do; DINOv2 interpolates its own; Swin has none, only
# a bias per window: its weights take any size whose stages its windows tile, the multiples of its size step), and
# why, in words (what tlkit tells users about the sizes its pretrained weights take).
_FAMILIES = {
    "ViTBackbone": ("vit", "cls", True, "its position embeddings are fixed"),
    "DINOV2Backbone": ("dinov2", "cls", False, "it interpolates its position embeddings"),
    "SwinTransformerBackbone": ("swin", "avg", False, "it has no position embeddings, only a bias per window"),
}
_SAVE_HINT = ("make a local preset folder on a machine that has the preset: "
              "keras_hub.models.Backbone.from_preset(HANDLE).save_to_preset(FOLDER) and "
              "keras_hub.layers.ImageConverter.from_preset(HANDLE).save_to_preset(FOLDER), "
              "then backbone.preset=FOLDER")


@dataclass(frozen=True)
class HubSpec(BackboneSpec):
    """A BackboneSpec read from a KerasHub preset (or, for listing, from tlkit's catalogue of named ones)."""

    preset: str = ""  # as configured: a folder, a kaggle:// handle or a KerasHub preset name
    preset_dir: str | None = None  # the local folder it resolved to; None in the catalogue (nothing read)
    # The backbone's config.json "config" (what keras_hub rebuilds it from); a dict, so out of hash and equality.
    hub_config: dict | None = field(default=None, hash=False, compare=False)
    patch_size: int = 16
    pooling: str = "cls"  # cls: the class token (index 0); avg: the mean over tokens / positions
    fixed_size: bool = True  # pretrained position embeddings hold only the preset's own input size

    @property
    def weights_source(self) -> str:
        return f"hub:{self.preset}"

    @property
    def input_contract(self) -> str:
        return f"{self.preprocess} (the preset's image converter, folded into the model)"


@dataclass(frozen=True)
class CatalogueEntry:
    """A named hub backbone (backbone=NAME): its preset and the facts listed before anything is downloaded."""

    name: str
    preset: str  # KerasHub preset name
    handle: str  # where its weights come from
    backbone_class: str
    size: int
    patch: int
    layers: int  # transformer layers (Swin: stages)
    features: int
    params: int  # keras_hub's preset metadata
    preprocess: str  # the converter's mode, as the preset's source model documents it (checked when loaded)
    window: int = 0  # Swin's window size (its size step); 0 for the others


CATALOGUE = {entry.name: entry for entry in (
    CatalogueEntry("vit_base", "vit_base_patch16_224_imagenet",
                   "kaggle://keras/vit/keras/vit_base_patch16_224_imagenet/4", "ViTBackbone", 224, 16, 12, 768,
                   85_798_656, "tf"),
    CatalogueEntry("dinov2_small", "dinov2_small", "kaggle://keras/dinov2/keras/dinov2_small/1", "DINOV2Backbone",
                   224, 14, 12, 384, 22_582_656, "torch"),
    CatalogueEntry("swin_tiny", "swin_tiny_patch4_window7_224",
                   "kaggle://keras/swin-transformer/keras/swin_tiny_patch4_window7_224/1", "SwinTransformerBackbone",
                   224, 4, 4, 768, 27_519_354, "torch", window=7),
)}


def is_hub(name: str) -> bool:
    """backbone.name is hub, or a named hub backbone of the catalogue."""
    return name == HUB or name in CATALOGUE


def _blocks(backbone_class: str, layers: int) -> tuple[Block, ...]:
    """stem, then one block per transformer layer (layer1..N; Swin: stage0..N-1), then top (the final norm).

    starts_at names the keras_hub sub-layer each block is (tlkit.backbones.hub_build resolves them)."""
    if backbone_class == "SwinTransformerBackbone":
        middle = tuple(Block(f"stage{i}", starts_at=f"stage_{i}") for i in range(layers))
    else:
        middle = tuple(Block(f"layer{i + 1}", starts_at=f"layer:{i}") for i in range(layers))
    return (Block("stem"), *middle, Block("top", starts_at="norm"))


def catalogue_spec(entry: CatalogueEntry) -> HubSpec:
    """The listed facts of a named hub backbone (no file read), its sizes with the preset's weights (its config's
    default, backbone.weights=preset)."""
    family, pooling, fixed, _ = _FAMILIES[entry.backbone_class]
    step = _size_step(entry.backbone_class, entry.patch, entry.window, entry.layers)
    return HubSpec(
        name=entry.name, constructor=f"keras_hub.models.{entry.backbone_class}", family=family,
        preprocess=entry.preprocess, default_size=entry.size, features=entry.features,
        min_size=_min_size(entry.backbone_class, entry.size, step, pretrained=True),
        blocks=_blocks(entry.backbone_class, entry.layers), weights_file=fixed_file(entry.handle),
        has_batch_norm=False, params=entry.params, size_step=step, preset=entry.preset,
        patch_size=entry.patch, pooling=pooling, fixed_size=fixed)


def catalogue_specs() -> list[HubSpec]:
    return [catalogue_spec(CATALOGUE[name]) for name in sorted(CATALOGUE)]


# --------------------------------------------------------------------------- finding a preset offline


def kagglehub_cache() -> Path:
    """Where kagglehub keeps downloads (kagglehub.config.get_cache_folder): $KAGGLEHUB_CACHE, else ~/.cache/kagglehub."""
    return Path(os.environ.get("KAGGLEHUB_CACHE") or Path.home() / ".cache" / "kagglehub")


def _builtin_handle(name: str) -> str | None:
    """The kaggle:// handle keras_hub's preset tables give `name`, read as text (importing keras_hub starts
    TensorFlow): every keras_hub/src/models/*/*_presets.py is a literal dict `backbone_presets`."""
    import importlib.util

    named = [entry.handle for entry in CATALOGUE.values() if entry.preset == name]
    if named:
        return named[0]
    found = importlib.util.find_spec("keras_hub")
    if found is None or not found.submodule_search_locations:
        return None
    for path in sorted(Path(next(iter(found.submodule_search_locations)), "src", "models").glob("*/*_presets.py")):
        try:
            tree = ast.parse(path.read_text())
        except (OSError, SyntaxError):
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "backbone_presets" for t in node.targets):
                try:
                    table = ast.literal_eval(node.value)
                except ValueError:
                    continue
                if name in table:
                    return table[name].get("kaggle_handle")
    return None


def _cached_kaggle_dir(handle: str) -> Path | None:
    """The kagglehub cache folder of kaggle://owner/model/framework/variation[/version] (the newest version when
    none is given), if it holds the preset's config.json."""
    parts = handle[len(KAGGLE_PREFIX):].strip("/").split("/")
    if len(parts) not in (4, 5):
        return None
    base = kagglehub_cache().joinpath("models", *parts[:4])
    versions = [parts[4]] if len(parts) == 5 else sorted(
        (p.name for p in base.glob("*") if p.name.isdigit()), key=int, reverse=True)
    for version in versions:
        if (base / version / CONFIG_FILE).is_file():
            return base / version
    return None


def resolve_preset(preset: str) -> tuple[Path, str]:
    """(the local folder holding `preset`, where it came from), or a WeightsError that says what to do."""
    text = str(preset).strip()
    local = Path(text).expanduser()
    if local.is_dir():
        if not (local / CONFIG_FILE).is_file():
            raise WeightsError(f"backbone.preset={text!r}: the folder {local.resolve()} has no {CONFIG_FILE}, so it is "
                               f"not a KerasHub preset; {_SAVE_HINT}")
        return local.resolve(), f"local folder {local.resolve()}"
    handle = text if text.startswith(KAGGLE_PREFIX) else _builtin_handle(text)
    cached = _cached_kaggle_dir(handle) if handle else None
    if cached is not None:
        return cached, f"{handle}, from the kagglehub cache {cached}"
    what = (f"the Kaggle handle {handle!r}" if handle else
            "neither a local folder, a kaggle:// handle nor a KerasHub preset name"
            + ("" if _keras_hub_installed() else " (keras_hub is not installed: pip install 'tlkit[hub]')"))
    raise WeightsError(
        f"backbone.preset={text!r}: {what} is not in the kagglehub cache ({kagglehub_cache()}; set KAGGLEHUB_CACHE "
        f"to use another), and tlkit does not download presets. Download it once where there is internet access "
        f"(keras_hub.models.Backbone.from_preset({handle or text!r})), or {_SAVE_HINT}")


def _keras_hub_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("keras_hub") is not None


# --------------------------------------------------------------------------- a preset's spec


def _read_json(folder: Path, name: str) -> dict:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"KerasHub preset {folder}: cannot read {name} ({error}); {_SAVE_HINT}") from None


def converter_mode(scale, offset) -> str | None:
    """The tlkit preprocessing mode that x * scale + offset (per channel) is, within float32 rounding, or None."""
    def channels(value, neutral):
        value = neutral if value is None else value
        return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3

    scale, offset = channels(scale, 1.0), channels(offset, 0.0)
    modes = {"tf": ([1 / 127.5] * 3, [-1.0] * 3), "none": ([1.0] * 3, [0.0] * 3),
             "torch": ([1 / (255 * s) for s in TORCH_STD], [-m / s for m, s in zip(TORCH_MEAN, TORCH_STD)])}
    for mode, (want_scale, want_offset) in modes.items():
        if all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(scale + offset, want_scale + want_offset)):
            return mode
    return None


def _size_of(config: dict) -> int:
    shape = config.get("image_shape") or (224, 224, 3)
    return int(shape[0])


def _patch_of(config: dict) -> int:
    patch = config.get("patch_size", 16)
    return int(patch[0] if isinstance(patch, (list, tuple)) else patch)


def _size_step(backbone_class: str, patch: int, window: int, stages: int) -> int:
    """Input sizes are multiples of this: the patch size; Swin's windows must tile every stage's resolution, so its
    inputs are multiples of patch * window * 2^(stages-1) (224 for swin_tiny)."""
    if backbone_class == "SwinTransformerBackbone":
        return patch * window * 2 ** (stages - 1)
    return patch


def _min_size(backbone_class: str, size: int, step: int, pretrained: bool) -> int:
    """The smallest input: the preset's own size where pretrained position embeddings fix it (ViT), else one step."""
    return size if pretrained and _FAMILIES[backbone_class][2] else step


def pretrained_sizes(spec: HubSpec) -> str:
    """The input sizes the preset's pretrained weights take, and why (its family's), in words."""
    _, _, fixed, why = _FAMILIES[spec.constructor.rsplit(".", 1)[-1]]
    sizes = f"only {spec.default_size} px" if fixed else f"any multiple of {spec.size_step} px"
    return f"{sizes}: {why}"


def _architecture(backbone_class: str, config: dict) -> tuple[int, int, int, str]:
    """(blocks between stem and top, features, input size step, pooling) from the backbone's config.json."""
    patch = _patch_of(config)
    if backbone_class == "SwinTransformerBackbone":
        stages = len(config["depths"])
        step = _size_step(backbone_class, patch, int(config["window_size"]), stages)
        return stages, int(config["embed_dim"]) * 2 ** (stages - 1), step, "avg"
    pooling = "cls" if config.get("use_class_token", True) else "avg"
    return int(config["num_layers"]), int(config["hidden_dim"]), _size_step(backbone_class, patch, 0, 1), pooling


def hub_spec(name: str, preset: str | None, weights: str | None) -> HubSpec:
    """The spec of `preset` (backbone.name=hub) or of the named hub backbone `name`, read from its files.

    weights: backbone.weights, preset (the preset's) or None (random init); with the preset's weights a family whose
    position embeddings are fixed takes only the preset's input size (min_size = default_size)."""
    if name != HUB and not preset:
        preset = CATALOGUE[name].preset
    if not preset:
        raise ConfigError("backbone.preset", preset, "a KerasHub preset for backbone=hub: a local preset folder, a "
                          "kaggle:// handle or a KerasHub preset name", hint=f"e.g. backbone=hub "
                          f"backbone.preset=/path/to/folder, or a named one: backbone={' | '.join(sorted(CATALOGUE))}")
    if weights not in (PRESET_WEIGHTS, None):
        raise ConfigError("backbone.weights", weights, f"{PRESET_WEIGHTS} (the preset's own weights) or null (its "
                          "architecture, randomly initialised) for a KerasHub backbone")
    folder, origin = resolve_preset(preset)
    saved = _read_json(folder, CONFIG_FILE)
    backbone_class, config = saved.get("class_name", "?"), saved.get("config", {})
    if backbone_class not in _FAMILIES:
        raise ConfigError("backbone.preset", preset, f"a preset of one of {', '.join(sorted(_FAMILIES))} (tlkit "
                          f"knows their blocks and pooling); {origin} holds a {backbone_class}")
    if not (folder / CONVERTER_FILE).is_file():
        raise WeightsError(f"backbone.preset={preset!r}: {origin} has no {CONVERTER_FILE}, so its input contract "
                           f"(resize, scale, offset) is unknown; {_SAVE_HINT}")
    converter = _read_json(folder, CONVERTER_FILE).get("config", {})
    mode = converter_mode(converter.get("scale"), converter.get("offset"))
    if mode is None:
        raise ConfigError("backbone.preset", preset, "a preset whose image converter is one of tlkit's preprocessing "
                          "modes (tf: x / 127.5 - 1, torch: ImageNet mean/std, none)",
                          hint=f"its converter has scale={converter.get('scale')}, offset={converter.get('offset')}")
    family, _, fixed, _ = _FAMILIES[backbone_class]
    layers, features, step, pooling = _architecture(backbone_class, config)
    size = _size_of(config)
    params = _read_json(folder, METADATA_FILE).get("parameter_count") if (folder / METADATA_FILE).is_file() else None
    return HubSpec(
        name=name, constructor=f"keras_hub.models.{backbone_class}", family=family,
        preprocess=mode, builtin_preprocess="none: the preset's converter leaves 0-255 as is" if mode == "none" else "",
        default_size=size, min_size=_min_size(backbone_class, size, step, weights is not None), features=features,
        blocks=_blocks(backbone_class, layers), weights_file=fixed_file(str(folder)), has_batch_norm=False,
        params=params, size_step=step, preset=str(preset), preset_dir=str(folder), hub_config=config,
        patch_size=_patch_of(config), pooling=pooling, fixed_size=fixed and weights is not None)


def check_hub_size(spec: HubSpec, size: int) -> None:
    """data.image_size against what the preset can take: a multiple of its size step (the patch size), and the
    preset's own size when its pretrained position embeddings are fixed."""
    if spec.fixed_size and size != spec.default_size:
        raise ConfigError("data.image_size", size, f"{spec.default_size}: {spec.name}'s pretrained position embeddings "
                          f"({spec.family}, patch {spec.patch_size}) hold {spec.default_size} px inputs only",
                          hint=f"data.image_size={spec.default_size}, or backbone.weights=null (random init) for "
                               "another size")
    if size % spec.size_step:
        raise ConfigError("data.image_size", size, f"a multiple of {spec.size_step} for {spec.name} "
                          f"({spec.family}: patch {spec.patch_size})",
                          hint=f"data.image_size={max(spec.size_step, size - size % spec.size_step)}")
