"""What the freezing tests read off a Freezer: which blocks a stage left trainable."""
from __future__ import annotations


def trainable_blocks(freezer) -> list:
    """The blocks with a trainable weight-bearing layer, in block order."""
    return [name for name, layers in freezer.blocks.items()
            if any(layer.trainable and layer.weights for layer in layers)]
