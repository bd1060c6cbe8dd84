"""Build a KerasHub preset as a tlkit backbone, and find its blocks (the spec comes from tlkit.backbones.hub).

keras_hub is imported inside the functions that need it: tlkit imports and runs without it.

The backbone tlkit calls is a small functional model around the keras_hub Backbone: images in (already
preprocessed: the preset's converter is tlkit's "preprocess" sub-model), the preset's own features out. For a
class-token preset (ViT, DINOv2) the wrapper keeps token 0 only (Cropping1D), so the model's "pool" layer, a global
average over what is left, is exactly the class token; other presets average over every token or position. Both are
core Keras layers: the saved model loads with keras.models.load_model once keras_hub is imported (it registers the
backbone classes), and converts to TFLite.
"""
from __future__ import annotations

import keras

from tlkit.backbones.hub import PRESET_WEIGHTS, HubSpec
from tlkit.errors import TlkitError, WeightsError

CLASS_TOKEN_LAYER = "class_token"


class HubBlockError(TlkitError, ValueError):
    """A KerasHub backbone's layers do not fit the blocks its spec names."""


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise WeightsError("a KerasHub backbone needs keras_hub: pip install 'tlkit[hub]' (keras-hub>=0.32)") from error
    return keras_hub


def build_hub_backbone(spec: HubSpec, image_size: int, weights: str | None) -> keras.Model:
    """spec's keras_hub Backbone at image_size (weights: "preset" loads the preset's, None initialises randomly),
    wrapped so that its output is what the pooling layer averages (see the module docstring)."""
    keras_hub = _keras_hub()
    backbone_class = getattr(keras_hub.models, spec.constructor.rsplit(".", 1)[-1])
    shape = (image_size, image_size, 3)
    if weights == PRESET_WEIGHTS:
        try:
            hub = backbone_class.from_preset(spec.preset_dir, image_shape=shape)
        except Exception as error:
            raise WeightsError(f"KerasHub preset {spec.preset!r} ({spec.preset_dir}) did not load at {image_size} px: "
                               f"{error}") from error
    else:
        config = {k: v for k, v in (spec.hub_config or {}).items() if k not in ("name", "dtype", "trainable")}
        hub = backbone_class.from_config({**config, "image_shape": list(shape)})
    if spec.family == "dinov2":
        hub = _dinov2_positions_at_input_size(hub)
    images = keras.Input(shape=shape, name="images")
    features = hub(images)
    if spec.pooling == "cls":
        tokens = features.shape[1]
        features = keras.layers.Cropping1D((0, tokens - 1), name=CLASS_TOKEN_LAYER)(features)
    return keras.Model(images, features, name=f"hub_{spec.family}")


def _dinov2_positions_at_input_size(hub: keras.Model) -> keras.Model:
    """`hub` rebuilt with its grid of position embeddings at its input size, holding the ones it uses.

    A DINOv2 keeps its position embeddings on a grid (position_embedding_shape: 518 px for the presets) and uses a copy
    interpolated to its input size; saving interpolates the copy back onto the grid and loading forward again, so a
    model fine-tuned at another size would not reload as it was trained. With the grid at the input size both
    interpolations are copies, and hub_ready_to_save keeps the grid equal to the copy."""
    shape = tuple(int(d) for d in hub.image_shape)
    if tuple(int(d) for d in hub.position_embedding_shape[:2]) == shape[:2]:
        return hub
    config = {k: v for k, v in hub.get_config().items() if k not in ("name", "dtype", "trainable")}
    rebuilt = type(hub).from_config({**config, "position_embedding_shape": list(shape)})
    used = hub.embeddings.interpolated_position_embeddings
    for target, source in zip(rebuilt.weights, hub.weights, strict=True):
        target.assign(used if target is rebuilt.embeddings.position_embeddings else source)
    return rebuilt


def hub_ready_to_save(backbone: keras.Model, spec: HubSpec) -> None:
    """Before the model holding `backbone` is saved: a DINOv2's grid of position embeddings := the fine-tuned ones it
    uses (the same shape: _dinov2_positions_at_input_size). keras_hub 0.32 writes them back only when their change
    sums to more than zero, so otherwise model.keras would reload with the position embeddings of the preset."""
    if spec.family == "dinov2":
        embeddings = inner_hub_backbone(backbone).embeddings
        embeddings.position_embeddings.assign(embeddings.interpolated_position_embeddings)


def hub_pooling(backbone: keras.Model, name: str = "pool") -> keras.layers.Layer:
    """The global average over the wrapper's output: the class token (one left), the tokens, or the positions."""
    if len(backbone.output.shape) == 4:
        return keras.layers.GlobalAveragePooling2D(name=name)
    return keras.layers.GlobalAveragePooling1D(name=name)


def inner_hub_backbone(backbone: keras.Model) -> keras.Model:
    """The keras_hub Backbone inside tlkit's wrapper."""
    found = [layer for layer in backbone.layers if isinstance(layer, keras.Model)]
    if len(found) != 1:
        raise HubBlockError(f"{backbone.name}: expected one keras_hub Backbone inside, found {len(found)}")
    return found[0]


def _family_layers(hub: keras.Model, spec: HubSpec) -> tuple[list, list, list]:
    """(stem layers, one layer per middle block, top layers) of a keras_hub backbone, as keras_hub builds them."""
    if spec.family == "vit":
        encoder = hub.get_layer("vit_encoder")
        return ([hub.get_layer("vit_patching_and_embedding")], list(encoder.encoder_layers),
                [encoder.layer_norm, encoder.dropout])
    if spec.family == "dinov2":
        return [hub.embeddings], list(hub.encoder.layers), [hub.layernorm]
    if spec.family == "swin":
        return [hub.patch_embedding, hub.get_layer("pos_drop")], list(hub.stages), [hub.norm]
    raise HubBlockError(f"{spec.name}: tlkit has no block layout for the {spec.family} family")


def hub_blocks(backbone: keras.Model, spec: HubSpec) -> dict[str, list[keras.layers.Layer]]:
    """Every weight of the keras_hub backbone in exactly one block of `spec`: stem, each transformer layer (Swin:
    stage), top (the final norm). The layers are keras_hub's sub-layers; setting one's `trainable` freezes it."""
    stem, middle, top = _family_layers(inner_hub_backbone(backbone), spec)
    names = spec.block_names
    if len(middle) != len(names) - 2:
        raise HubBlockError(f"{spec.name}: the spec has {len(names) - 2} transformer blocks, the model {len(middle)}")
    blocks = {names[0]: stem, **{name: [layer] for name, layer in zip(names[1:-1], middle)}, names[-1]: top}
    owner: dict[int, str] = {}
    for name, layers in blocks.items():
        for weight in (w for layer in layers for w in layer.weights):
            if id(weight) in owner:
                raise HubBlockError(f"{spec.name}: weight {weight.path} is in blocks {owner[id(weight)]} and {name}")
            owner[id(weight)] = name
    missing = [w.path for w in backbone.weights if id(w) not in owner]
    if missing:
        raise HubBlockError(f"{spec.name}: weights in no block: {missing[:5]}")
    return blocks


def import_keras_hub_for(path) -> None:
    """Import keras_hub (it registers its classes with Keras) when the model.keras at `path` holds one of them, so
    keras.models.load_model can rebuild it; a plain Keras model never pays for the import."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            needs_hub = b"keras_hub" in archive.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return  # not a .keras archive: Keras says what is wrong with it
    if needs_hub:
        _keras_hub()
