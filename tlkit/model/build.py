"""From a config to a Keras model that is right by construction.

    image (RGB float 0-255) -> preprocess (the backbone's mode, core Keras layers) -> backbone
    (include_top=False) -> global pooling -> head -> N logits   (N >= 2, binary included)

Training uses the logits with sparse categorical cross-entropy from logits; the saved
model appends a softmax so it ends in probabilities. Keras only (no TensorFlow import),
so the same code runs under KERAS_BACKEND=jax.
"""
from __future__ import annotations

import keras

from tlkit.backbones.build import build_backbone
from tlkit.backbones.hub import HubSpec
from tlkit.backbones.hub_build import build_hub_backbone, hub_pooling, hub_ready_to_save
from tlkit.backbones.spec import BackboneSpec
from tlkit.config.schema import BackboneConfig, HeadConfig, Pooling, Preprocess
from tlkit.errors import ConfigError
from tlkit.model.preprocessing import PREPROCESS_LAYER, preprocessing_model

BACKBONE_LAYER = "backbone"
LOGITS_LAYER = "logits"
PROBABILITIES_LAYER = "probabilities"
MODEL_NAME_PREFIX = "tlkit_"  # a tlkit model is named tlkit_<backbone name> (tlkit.tools.gradcam reads it back)


def preprocess_mode(spec: BackboneSpec, backbone_cfg: BackboneConfig) -> str:
    """`auto` means the backbone's own mode; anything else is an explicit (expert) override."""
    chosen = Preprocess(backbone_cfg.preprocess)
    return spec.preprocess if chosen == Preprocess.auto else chosen.value


def build_model(
    spec: BackboneSpec,
    backbone_cfg: BackboneConfig,
    head_cfg: HeadConfig,
    num_classes: int,
    image_size: int,
) -> keras.Model:
    """The training model: RGB 0-255 images in, `num_classes` logits out."""
    if num_classes < 2:
        raise ConfigError(
            "num_classes", num_classes, "at least 2 classes",
            hint="a binary task is 2 classes (2 logits + softmax), never 1 unit with softmax",
        )
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    # float32 whatever the policy: 0-255 values lose precision in bfloat16 before the mean subtraction.
    # Core Keras only, so model.keras loads with plain keras.models.load_model (no tlkit needed).
    x = preprocessing_model(preprocess_mode(spec, backbone_cfg), name=PREPROCESS_LAYER)(inputs)
    if isinstance(spec, HubSpec):  # a KerasHub preset: its converter is the preprocess layer above
        backbone = build_hub_backbone(spec, image_size, backbone_cfg.weights)
        pooling = hub_pooling(backbone)  # the preset's: its class token, or the mean over tokens
    else:
        from tlkit.model.pretrain import resolve_weights  # tlkit:TASK weights are made on first use

        backbone = build_backbone(spec, image_size, resolve_weights(spec, backbone_cfg.weights))
        pooling = _pooling(head_cfg)
    backbone.name = BACKBONE_LAYER  # one stable name, whatever the Keras constructor called it
    x = backbone(x)
    x = pooling(x)
    logits = _head(head_cfg, num_classes)(x)
    return keras.Model(inputs, logits, name=f"{MODEL_NAME_PREFIX}{spec.name}")


def _pooling(head_cfg: HeadConfig) -> keras.layers.Layer:
    if Pooling(head_cfg.pooling) == Pooling.max:
        return keras.layers.GlobalMaxPooling2D(name="pool")
    return keras.layers.GlobalAveragePooling2D(name="pool")


def _head(head_cfg: HeadConfig, num_classes: int) -> keras.Sequential:
    layers = []
    for i, width in enumerate(head_cfg.hidden):
        if head_cfg.dropout:
            layers.append(keras.layers.Dropout(head_cfg.dropout, name=f"head_dropout_{i}"))
        layers.append(keras.layers.Dense(width, activation="relu", name=f"head_dense_{i}"))
    if head_cfg.dropout:
        layers.append(keras.layers.Dropout(head_cfg.dropout, name="head_dropout"))
    # Zero-initialised logits (BiT): the first loss is exactly log(N) and the pretrained
    # features are not hit by large random gradients in the first steps.
    init = "zeros" if head_cfg.zero_init else "glorot_uniform"
    # float32 logits keep the softmax and loss stable under mixed precision.
    layers.append(keras.layers.Dense(num_classes, kernel_initializer=init, dtype="float32", name=LOGITS_LAYER))
    return keras.Sequential(layers, name="head")


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_LAYER)


def head_of(model: keras.Model) -> keras.Model:
    return model.get_layer("head")


def ready_to_save(model: keras.Model, spec: BackboneSpec) -> None:
    """Call before saving `model` (or a model on its layers, such as with_probabilities'): a KerasHub DINOv2 syncs
    the position embeddings it saves with those it fine-tuned (tlkit.backbones.hub_build.hub_ready_to_save)."""
    if isinstance(spec, HubSpec):
        hub_ready_to_save(backbone_of(model), spec)


TEMPERATURE_LAYER = "temperature"


def with_probabilities(model: keras.Model, temperature: float = 1.0, multilabel: bool = False) -> keras.Model:
    """The model users save and serve: the same layers, ending in a softmax (`multilabel`: a sigmoid per class,
    task=multilabel).

    temperature: tlkit.training.calibration's T; other than 1, the logits are divided by it first (a core Keras
    Rescaling layer, so model.keras still loads with plain keras.models.load_model).
    """
    logits = model.outputs[0]
    if temperature != 1.0:
        logits = keras.layers.Rescaling(1.0 / float(temperature), name=TEMPERATURE_LAYER, dtype="float32")(logits)
    if multilabel:
        probabilities = keras.layers.Activation("sigmoid", name=PROBABILITIES_LAYER, dtype="float32")(logits)
        return keras.Model(model.inputs, probabilities, name=model.name)
    probabilities = keras.layers.Softmax(name=PROBABILITIES_LAYER, dtype="float32")(logits)
    return keras.Model(model.inputs, probabilities, name=model.name)
