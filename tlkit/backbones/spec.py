"""What tlkit must know about a backbone: its input contract and its blocks.

A spec is plain data (no TensorFlow, no Keras import), so configs can be validated
against it before any heavy import happens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from tlkit.preprocessing_modes import BACKBONE_MODES

# What the backbone's own `preprocess_input` can do to RGB 0-255 input: the modes of the one
# table (tlkit.preprocessing_modes) that are some backbone's contract.
PREPROCESS_MODES = BACKBONE_MODES


@dataclass(frozen=True)
class Block:
    """A contiguous stage of the backbone, from `starts_at` up to the next block's start.

    `starts_at` names a layer whose name Keras keeps stable; the first block (the stem)
    starts at the input and leaves it None. Layers with automatic names (Xception's
    shortcut convolutions, MobileNetV3's activations) are assigned by graph position,
    not by name: see tlkit.backbones.blocks.
    """

    name: str
    starts_at: str | None = None
    # For blocks with no single first layer (InceptionV3's modules open with parallel,
    # auto-named branches): the block ends at (and includes) this stably named layer; the
    # next block starts right after it, and, without starts_at, this block starts where
    # the branches this layer merges split off. Helper field added for InceptionV3.
    ends_at: str | None = None


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # the config name: backbone=<name>
    constructor: str  # attribute of keras.applications, e.g. "ResNet50"
    family: str  # keras.applications submodule holding preprocess_input, e.g. "resnet50"
    preprocess: str  # one of PREPROCESS_MODES
    default_size: int
    min_size: int
    features: int  # channels of the last feature map
    blocks: tuple[Block, ...]
    # Keras cache file name of the ImageNet no-top weights for a given input size.
    weights_file: Callable[[int], str]
    builder_kwargs: Mapping[str, object] = field(default_factory=dict)
    # Whether the backbone holds BatchNormalization layers (schedule.bn matters, their statistics can be measured and
    # re-estimated): what the doctor and the run set-up ask, with no model built. tests/test_backbones.py checks it
    # against tlkit.backbones.build.batch_norm_layers of the real model.
    has_batch_norm: bool = True
    # Parameters of the include_top=False backbone (input-size independent), computed once from the built model and
    # stored so that `tlkit backbones` never builds one; tests/test_backbones.py checks it against count_params().
    params: int | None = None
    # For preprocess="none": what the backbone's own first layers do to RGB 0-255 (Keras's include_preprocessing,
    # or the Rescaling/Normalization the family always has), so its in-model preprocessing is stated and is never
    # applied twice. Empty for the others: tlkit's preprocess layer does it all.
    builtin_preprocess: str = ""
    # Input sizes must be multiples of this (a vision transformer's patch size; tlkit.backbones.hub): 1 for CNNs.
    size_step: int = 1

    def __post_init__(self):
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"{self.name}: preprocess={self.preprocess!r}, expected one of {PREPROCESS_MODES}")
        if not self.blocks or self.blocks[0].starts_at is not None:
            raise ValueError(f"{self.name}: the first block is the stem and must have starts_at=None")
        for previous, block in zip(self.blocks, self.blocks[1:]):
            if not (block.starts_at or block.ends_at or previous.ends_at):
                raise ValueError(
                    f"{self.name}: block {block.name!r} needs starts_at, or ends_at on it or on the block before"
                )
        if (self.preprocess == "none") != bool(self.builtin_preprocess):
            raise ValueError(f"{self.name}: builtin_preprocess states what a preprocess='none' backbone does inside "
                             "itself, and only then")
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: block names repeat: {names}")

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    @property
    def weights_source(self) -> str:
        """Where backbone.weights=imagenet comes from: the file Keras caches (at the default size)."""
        return f"keras:{self.weights_file(self.default_size)}"

    @property
    def input_contract(self) -> str:
        """What the backbone's weights see, from the RGB 0-255 every tlkit model takes."""
        return f"in model: {self.builtin_preprocess}" if self.preprocess == "none" else self.preprocess


# --------------------------------------------------------------------------- helpers for the family modules


def fixed_file(file_name: str) -> Callable[[int], str]:
    """Most constructors ask for one file whatever the input size."""

    def weights_file(image_size: int) -> str:
        return file_name

    return weights_file


def stages(*starts: tuple[str, str | None]) -> tuple[Block, ...]:
    """Blocks from (name, starts_at) pairs, stem first (starts_at None)."""
    return tuple(Block(name, starts_at) for name, starts_at in starts)
