"""Grad-CAM on a KerasHub transformer backbone (tlkit.backbones.hub): a block's patch tokens, on their grid, as the map.

    cam = grad_cam(model, spec)    # HubGradCam for a KerasHub backbone, tlkit.tools.gradcam.GradCam for the others

A KerasHub backbone runs its blocks inside nested keras_hub layers (ViT's encoder loops over its transformer layers in
one call), so their tokens are no tensors of the model's graph, and the backbone hands on tokens, not an H x W x C map.
Here the blocks' layers (tlkit.backbones.hub_build.hub_blocks: stem, each transformer layer or Swin stage, the final
norm) run one after another, as keras_hub's own call runs them at inference. That chain is checked against the
model's backbone on one image first: a keras_hub whose call differs gets an ExplainError, never a wrong map.

The map is the chosen block's output: its patch tokens (the class and register tokens left out) reshaped to their grid
(ViT, DINOv2: the input size over the patch size per side; Swin: its stage's grid), then Grad-CAM as for a CNN's map.
The default block:
- class-token models (ViT, DINOv2): the input of the last transformer layer (the output of the block before it). The
  head reads the class token, which takes in the patch tokens only through the last layer's attention: the last
  layer's own patch tokens never reach it (their gradient is zero), so that layer and top are refused as blocks.
- mean-pooled models (Swin): the last stage's output, like a CNN's last feature map (the final norm is per token).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from tlkit.backbones.hub import HubSpec
from tlkit.backbones.spec import BackboneSpec
from tlkit.tools.gradcam import ExplainError, GradCam, check_block_name, split_model

CHAIN_TOLERANCE = 1e-4  # the chained blocks against the model's backbone, relative to the largest output


def grad_cam(model, spec: BackboneSpec, block: Optional[str] = None) -> GradCam:
    """Grad-CAM of a tlkit model at `block` (None: the automatic choice), for any backbone tlkit builds."""
    return (HubGradCam if isinstance(spec, HubSpec) else GradCam)(model, spec, block)


def choose_hub_block(spec: HubSpec, block: Optional[str] = None) -> str:
    """`block` if its patch tokens reach what the head pools, else ExplainError; None: the default (see the module's
    docstring)."""
    names = spec.block_names
    unreached = names[-2:] if spec.pooling == "cls" else ()  # the last transformer layer and top
    if block is None:
        return names[-3] if spec.pooling == "cls" else names[-2]
    check_block_name(spec, block)
    if block in unreached:
        raise ExplainError(f"block={block!r} of {spec.name}: its patch tokens never reach the class token the head "
                           f"reads (only the class token goes on after the last transformer layer); choose one of "
                           f"{', '.join(name for name in names if name not in unreached)}")
    return block


def check_block(spec: BackboneSpec, block: Optional[str]) -> None:
    """ExplainError unless `block` is None or a block Grad-CAM can explain, with no model built."""
    if isinstance(spec, HubSpec):
        choose_hub_block(spec, block)
    else:
        check_block_name(spec, block)


class HubGradCam(GradCam):
    """GradCam's interface (heatmaps, describe, feature_shape) on a KerasHub backbone's tokens."""

    def __init__(self, model, spec: HubSpec, block: Optional[str] = None):
        from tlkit.backbones.hub_build import hub_blocks, inner_hub_backbone

        self.before, backbone, self.after = split_model(model)
        hub = inner_hub_backbone(backbone)
        self.blocks = list(hub_blocks(backbone, spec).items())  # stem first: keras_hub's call order
        self.wrapper = backbone.layers[backbone.layers.index(hub) + 1:]  # the class token's crop, if any
        self.spec, self.block = spec, choose_hub_block(spec, block)
        self.input_shape = tuple(int(d) for d in model.input_shape[1:3])
        self.feature_shape = self._check_chain(backbone)

    def _check_chain(self, backbone) -> tuple[int, int]:
        """The chain's output on one image against the model's backbone (ExplainError when they differ); returns
        the chosen block's grid."""
        import keras

        x = np.random.default_rng(0).uniform(0, 255, (1, *self.input_shape, 3)).astype(np.float32)
        for layer in self.before:
            x = layer(x, training=False)
        grids = []

        def record(tokens):
            grids.append(self._split(tokens)[1].shape[1:3])
            return tokens

        chained = self._blocks_forward(x, record)
        chained, expected = (keras.ops.convert_to_numpy(keras.ops.cast(t, "float32"))
                             for t in (chained, backbone(x, training=False)))
        off = float(np.max(np.abs(chained - expected))) if chained.shape == expected.shape else math.inf
        if not off <= CHAIN_TOLERANCE * max(1.0, float(np.max(np.abs(expected)))):
            raise ExplainError(f"Grad-CAM cannot follow the blocks of {self.spec.name} one by one: run in turn, they "
                               f"give another output than its backbone ({off:.3g} off; keras_hub's call may have "
                               "changed)")
        return tuple(int(d) for d in grids[0])

    def _blocks_forward(self, x, at_block):
        """x (preprocessed) through the keras_hub blocks, `at_block(tokens) -> tokens` on the chosen block's output,
        then the wrapper's crop: what the backbone hands the pooling."""
        for name, layers in self.blocks:
            for layer in layers:
                x = layer(x, training=False)
            if name == self.block:
                x = at_block(x)
        for layer in self.wrapper:
            x = layer(x, training=False)
        return x

    def _split(self, tokens):
        """(the tokens before the patches: class, registers; the patch tokens [N, h, w, C]) of [N, L, C] tokens."""
        import tensorflow as tf

        count = int(tokens.shape[1])
        if self.spec.family == "swin":  # every token is a position of the stage's square grid
            height = width = math.isqrt(count)
        else:
            height, width = (side // self.spec.patch_size for side in self.input_shape)
        extra = count - height * width
        if extra < 0 or (self.spec.family == "swin" and extra):
            raise ExplainError(f"block {self.block!r} of {self.spec.name} hands on {count} tokens, not a "
                               f"{height} x {width} grid of patches")
        return tokens[:, :extra], tf.reshape(tokens[:, extra:], (-1, height, width, int(tokens.shape[-1])))

    def _forward(self, images, tape):
        import tensorflow as tf

        x = images
        for layer in self.before:
            x = layer(x, training=False)
        watched = []

        def watch(tokens):  # the grid is watched, and the tokens after it are computed from it
            prefix, grid = self._split(tokens)
            tape.watch(grid)
            watched.append(grid)
            return tf.concat([prefix, tf.reshape(grid, (-1, grid.shape[1] * grid.shape[2], grid.shape[3]))], axis=1)

        x = self._blocks_forward(x, watch)
        for layer in self.after:
            x = layer(x, training=False)
        return watched[0], x

    def describe(self) -> str:
        height, width = self.feature_shape
        return f"Grad-CAM at block {self.block!r} of {self.spec.name} ({height}x{width} patch tokens)"
