"""Grad-CAM (Selvaraju et al. 2017) on a tlkit model: which part of the image made it decide.

    cam = GradCam(model, spec)                 # model: RGB 0-255 in, probabilities (or logits) out
    maps, probabilities = cam.heatmaps(images)          # maps [N, H, W] in 0..1, at the model's input size

The feature map is the output of one block of the backbone spec (tlkit.backbones.spec: blocks run stem to top, the
last block's output is the feature map the head pools), found by graph position (tlkit.backbones.blocks), never by
guessing layer names. By default it is the deepest block whose map is at least MIN_SIDE x MIN_SIDE cells (7 x 7): the
last block from 224 px up (most backbones shrink 32-fold), an earlier, finer one below, where the last map is a few
cells (1 x 1 at 32 px) and says little about where. The class score is the logit (before the softmax), as in the
paper; the map is ReLU(sum over channels of the channel's mean gradient x its activation), scaled to a peak of 1.

The images go through the model's own "preprocess" sub-model, so they are RGB 0-255 like everywhere else in tlkit.
Gradients are taken with tf.GradientTape: TensorFlow backend only (other backends get an ExplainError).
A KerasHub transformer backbone hands on tokens, not feature maps: tlkit.tools.gradcam_hub explains those (its
grad_cam(model, spec, block) picks GradCam or HubGradCam for the spec).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tlkit.backbones.blocks import BlockError, LayerGraph, block_boundaries, walk_back
from tlkit.backbones.spec import BackboneSpec
from tlkit.errors import TlkitError

MIN_SIDE = 7  # the automatic block's map has at least this many cells per side: the last map's size at 224 px
OVERLAY_ALPHA = 0.45  # weight of the heat map's colour over the image
COLORMAP = "jet"  # Grad-CAM's usual colours: blue = no evidence, red = the most


class ExplainError(TlkitError, ValueError):
    """Grad-CAM does not apply to this model, backbone, block or backend."""


def spec_of(model) -> BackboneSpec:
    """The registered backbone spec the tlkit model's own name gives. A run's spec comes from its config instead
    (tlkit.config.validate.backbone_spec, as the trainer reads it), the only way for a KerasHub backbone."""
    from tlkit.backbones.hub import is_hub
    from tlkit.backbones.zoo import get_spec
    from tlkit.model.build import MODEL_NAME_PREFIX

    if not model.name.startswith(MODEL_NAME_PREFIX):
        raise ExplainError(f"model {model.name!r} is not a tlkit model (tlkit names its models "
                           f"{MODEL_NAME_PREFIX}<backbone>): Grad-CAM needs to know its backbone's blocks")
    backbone_name = model.name[len(MODEL_NAME_PREFIX):]
    if is_hub(backbone_name):
        raise ExplainError(f"model {model.name!r} has a KerasHub backbone, whose blocks are read from the preset its "
                           "run's config.yaml names (backbone.preset), not from the model: explain it from its run")
    return get_spec(backbone_name)


def block_outputs(backbone, spec: BackboneSpec) -> dict:
    """{block name: the Keras tensor the block hands to the next one (the last block: the backbone's output)}.

    A block's output is the one tensor that operations upstream of the next block's start pass to the operations
    after it (tlkit.backbones.blocks.block_boundaries); a block that passes on several (NASNet's cells take the two
    cells before them) has no single feature map and is left out.
    """
    boundaries = block_boundaries(backbone, spec)
    outputs = {}
    for index, block in enumerate(spec.blocks[:-1]):
        crossing = _crossing_tensors(backbone, boundaries[index + 1])
        if len(crossing) == 1:
            outputs[block.name] = crossing[0]
    outputs[spec.blocks[-1].name] = backbone.outputs[0]
    return outputs


def _crossing_tensors(backbone, upstream: set) -> list:
    """The tensors made by the operations in `upstream` (ids) and used by the operations after them: walking back
    from the outputs, where the walk first meets that part of the graph."""
    model_inputs = {id(tensor) for tensor in backbone.inputs}
    crossing = {}

    def visit(tensor, operation, parents) -> bool:
        if id(operation) in upstream or id(tensor) in model_inputs:
            crossing[id(tensor)] = tensor
            return False
        return True

    walk_back(backbone.outputs, backbone.inputs, visit)
    return list(crossing.values())


def check_block_name(spec: BackboneSpec, block: Optional[str]) -> None:
    """ExplainError unless `block` is None or one of the spec's block names (checked with no model built)."""
    if block is not None and block not in spec.block_names:
        raise ExplainError(f"block={block!r} is not a block of backbone {spec.name!r}; its blocks are "
                           f"{', '.join(spec.block_names)}")


def choose_block(outputs: dict, spec: BackboneSpec, block: Optional[str] = None, min_side: int = MIN_SIDE) -> str:
    """`block` if given (checked), else the deepest block whose feature map is at least min_side x min_side."""
    spatial = {name: tensor for name, tensor in outputs.items() if len(tensor.shape) == 4}
    if block is not None:
        check_block_name(spec, block)
        if block not in spatial:
            raise ExplainError(f"block={block!r} of backbone {spec.name!r} hands no single spatial feature map to the "
                               f"next block; choose one of {', '.join(spatial)}")
        return block
    if not spatial:
        raise ExplainError(f"backbone {spec.name!r} has no block with a spatial (H x W x C) feature map: Grad-CAM "
                           "needs one (it applies to convolutional backbones)")
    big_enough = [name for name, tensor in spatial.items() if min(tensor.shape[1], tensor.shape[2]) >= min_side]
    return big_enough[-1] if big_enough else next(iter(spatial))  # tiny inputs: the finest map there is


class GradCam:
    """Grad-CAM of a tlkit model at one backbone block (see the module's docstring).

    model: a tlkit model (RGB 0-255 in; preprocess, backbone, pooling and head in a chain; probabilities or logits
    out). spec: its backbone's spec (the run's, or spec_of). block: a block name of the spec, None for the automatic
    choice.
    """

    def __init__(self, model, spec: BackboneSpec, block: Optional[str] = None):
        import keras

        self.before, backbone, self.after = split_model(model)
        if len(backbone.outputs[0].shape) != 4:
            raise ExplainError(f"backbone {spec.name!r} hands on shape {tuple(backbone.outputs[0].shape)} (tokens or "
                               "vectors), not an H x W x C feature map: Grad-CAM applies to convolutional backbones")
        try:
            outputs = block_outputs(backbone, spec)
        except BlockError as error:  # e.g. a backbone whose layers sit inside a nested model (KerasHub)
            raise ExplainError(f"Grad-CAM cannot find the blocks of backbone {spec.name!r} in the model: {error}") \
                from error
        self.spec, self.block = spec, choose_block(outputs, spec, block)
        self.feature_shape = tuple(int(d) for d in outputs[self.block].shape[1:3])
        self.input_shape = tuple(int(d) for d in model.input_shape[1:3])
        # One forward pass gives the block's map and the backbone's output computed from it (no graph copied).
        self.backbone = keras.Model(backbone.inputs, [outputs[self.block], backbone.outputs[0]])

    def _forward(self, images, tape):
        """(the block's feature map, watched by `tape`; the logits) of preprocessed-in-model images."""
        x = images
        for layer in self.before:
            x = layer(x, training=False)
        features, x = self.backbone(x, training=False)
        tape.watch(features)
        for layer in self.after:
            x = layer(x, training=False)
        return features, x

    def heatmaps(self, images, classes: Optional[Sequence[int]] = None):
        """(maps, probabilities) of float32 RGB 0-255 images [N, H, W, 3] at the model's input size.

        maps: float32 [N, H, W] in 0..1 (1 at each image's peak; all 0 when nothing speaks for the class),
        upsampled bilinearly to the input size. classes: the class index to explain for each image; None: the
        predicted one. probabilities: float64 [N, num_classes], the model's softmax.
        """
        import keras
        import tensorflow as tf

        images = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
        with tf.GradientTape() as tape:
            features, x = self._forward(images, tape)
            logits = tf.cast(x, tf.float32)
            chosen = tf.argmax(logits, axis=1) if classes is None else tf.constant(np.asarray(classes, np.int64))
            scores = tf.gather(logits, chosen, axis=1, batch_dims=1)
        gradients = tape.gradient(scores, features)  # images are independent: d(sum)/dA_i = d(score_i)/dA_i
        features = tf.cast(features, tf.float32)
        weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2), keepdims=True)  # per channel
        cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))  # [N, h, w]
        peaks = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
        cams = tf.math.divide_no_nan(cams, peaks)
        maps = keras.ops.image.resize(cams[..., None], self.input_shape, interpolation="bilinear")[..., 0]
        probabilities = tf.nn.softmax(logits, axis=-1).numpy().astype(np.float64)
        return np.clip(np.asarray(maps), 0.0, 1.0).astype(np.float32), probabilities

    def describe(self) -> str:
        height, width = self.feature_shape
        return f"Grad-CAM at block {self.block!r} of {self.spec.name} ({height}x{width} map)"


def split_model(model) -> tuple[list, object, list]:
    """(the layers before the backbone: preprocess; the backbone sub-model; the layers after it up to the logits:
    pooling, head) of a tlkit model, which must be a chain; ExplainError when it is not, or not on TensorFlow."""
    import keras

    from tlkit.model.build import BACKBONE_LAYER, PROBABILITIES_LAYER

    if keras.backend.backend() != "tensorflow":
        raise ExplainError(f"Grad-CAM needs the TensorFlow backend (gradients by tf.GradientTape); this is "
                           f"KERAS_BACKEND={keras.backend.backend()!r}")
    chain = _layer_chain(model)
    names = [layer.name for layer in chain]
    if BACKBONE_LAYER not in names:
        raise ExplainError(f"model {model.name!r} has no {BACKBONE_LAYER!r} sub-model: not a tlkit model")
    split = names.index(BACKBONE_LAYER)
    return chain[:split], chain[split], [layer for layer in chain[split + 1:] if layer.name != PROBABILITIES_LAYER]


def _layer_chain(model) -> list:
    """The model's layers after its input, checked to form a chain (each fed by the one before, in the model's own
    graph), as tlkit.model.build builds them: preprocess, backbone, pooling, head (and the softmax)."""
    graph = LayerGraph(model)
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    previous = model.layers[0]
    for layer in layers:
        parents = graph.parents.get(id(layer), [])
        if len(parents) != 1 or parents[0] is not previous:
            raise ExplainError(f"model {model.name!r} is not a chain of layers at {layer.name!r} (fed by "
                               f"{[p.name for p in parents]}): not a tlkit model")
        previous = layer
    return layers


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """uint8 RGB: `image` (RGB 0-255, any size) with `heatmap` (0..1, any size, resized to it) in COLORMAP."""
    from matplotlib import colormaps

    image = np.clip(np.asarray(image, dtype=np.float32), 0, 255)
    heat = resize_map(heatmap, *image.shape[:2])
    colours = colormaps[COLORMAP](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    return np.round((1.0 - alpha) * image + alpha * colours).astype(np.uint8)


def resize_map(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [height, width]: a heat map stretched bilinearly onto an image of that size (the model saw the whole
    image resized, so this maps each cell back onto the pixels it came from)."""
    from PIL import Image

    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape == (height, width):
        return heat
    return np.asarray(Image.fromarray(heat, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)
