"""Which backbone layers belong to which block: by graph position, never by name or index.

Block i holds the layers that come before block i+1's start but not before block i's:
    block_i = before(i+1) - before(i)
where before(i) is the set of layers upstream of block i's first layer (its strict
ancestors in the model's graph), before(0) is empty and the last block takes the rest.
So a shortcut convolution with an automatic name (conv2d_7) lands in the block whose main
path it runs beside, whatever number Keras gave it in this process.
"""
from __future__ import annotations

from collections import OrderedDict

import keras

from tlkit.backbones.hub import HubSpec
from tlkit.backbones.hub_build import hub_blocks
from tlkit.backbones.spec import BackboneSpec, Block
from tlkit.errors import TlkitError


class BlockError(TlkitError, ValueError):
    """A backbone spec's blocks do not fit the model they are applied to."""


def walk_back(outputs, inputs, visit) -> None:
    """Visit each tensor upstream of `outputs` once, walking back through the Keras histories (the node that made each
    tensor): visit(tensor, operation, parent_tensors) returns whether to go on to those parents. The tensors in
    `inputs` have no parents here, so the walk stays inside the model that `outputs` and `inputs` belong to."""
    input_ids = {id(tensor) for tensor in inputs}
    seen: set[int] = set()
    pending = list(outputs)
    while pending:
        tensor = pending.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, node_index, _ = tensor._keras_history
        parents = [] if id(tensor) in input_ids else list(operation._inbound_nodes[node_index].input_tensors)
        if visit(tensor, operation, parents):
            pending.extend(parents)


class LayerGraph:
    """The operations of a functional model and, for each, its direct parents in this model.

    Walks back from the model's outputs through each tensor's Keras history (the node that
    produced it) and stops at the model's inputs, so nodes the same layers may have in other
    graphs (e.g. when the backbone is called inside a bigger model) are ignored.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.layers_by_name = {layer.name: layer for layer in model.layers}
        self.parents: dict[int, list] = {}  # id(operation) -> parent operations

        def record(tensor, operation, parent_tensors) -> bool:
            parents = self.parents.setdefault(id(operation), [])
            for parent_tensor in parent_tensors:
                parent = parent_tensor._keras_history.operation
                if parent is not None and not any(parent is p for p in parents):
                    parents.append(parent)
            return True

        walk_back(model.outputs, model.inputs, record)

    def layer(self, name: str, spec: BackboneSpec, block: Block, field: str) -> keras.layers.Layer:
        try:
            return self.layers_by_name[name]
        except KeyError:
            raise BlockError(
                f"backbone {spec.name!r} (Keras model {self.model.name!r}) has no layer {name!r}, "
                f"which block {block.name!r} names as its {field}; expected a model built by "
                f"keras.applications.{spec.constructor}(include_top=False). "
                f"It has {len(self.layers_by_name)} layers, e.g. {list(self.layers_by_name)[1:6]}"
            ) from None

    def ancestors(self, operation) -> set[int]:
        """ids of the operations upstream of `operation` (not including itself)."""
        found: set[int] = set()
        pending = list(self.parents.get(id(operation), ()))
        while pending:
            parent = pending.pop()
            if id(parent) in found:
                continue
            found.add(id(parent))
            pending.extend(self.parents.get(id(parent), ()))
        return found

    def up_to(self, operation) -> set[int]:
        """ids of `operation` and everything upstream of it."""
        return self.ancestors(operation) | {id(operation)}

    def branch_point(self, operation) -> set[int]:
        """ids of the operations upstream of every input of `operation` (or one of them):
        what comes before the parallel branches that `operation` merges."""
        parents = self.parents.get(id(operation), ())
        if not parents:
            return set()
        return set.intersection(*(self.up_to(parent) for parent in parents))


def _layers_before(graph: LayerGraph, spec: BackboneSpec, index: int) -> set[int]:
    """ids of the layers upstream of block `index` (index >= 1)."""
    block, previous = spec.blocks[index], spec.blocks[index - 1]
    if block.starts_at:
        return graph.ancestors(graph.layer(block.starts_at, spec, block, "starts_at"))
    if previous.ends_at:
        return graph.up_to(graph.layer(previous.ends_at, spec, previous, "ends_at"))
    if block.ends_at:
        return graph.branch_point(graph.layer(block.ends_at, spec, block, "ends_at"))
    raise BlockError(f"backbone {spec.name!r}: block {block.name!r} has no starts_at, and no ends_at on it or before it")


def block_boundaries(backbone: keras.Model, spec: BackboneSpec) -> list[set[int]]:
    """For each block, the ids of the layers upstream of it: nested, growing sets."""
    graph = LayerGraph(backbone)
    boundaries = [set()] + [_layers_before(graph, spec, i) for i in range(1, len(spec.blocks))]
    for i in range(1, len(boundaries)):
        earlier, later = boundaries[i - 1], boundaries[i]
        if not earlier < later:  # strict subset: block i-1 non-empty and in graph order
            raise BlockError(
                f"backbone {spec.name!r}: block {spec.blocks[i - 1].name!r} comes out empty or its start is "
                f"not upstream of block {spec.blocks[i].name!r}'s; spec.blocks must run stem to top in graph order"
            )
    return boundaries


def assign_blocks(backbone: keras.Model, spec: BackboneSpec) -> dict[str, list[keras.layers.Layer]]:
    """Every layer of `backbone` except its InputLayers, in exactly one block of `spec`.

    Ordered like spec.blocks, layers in the model's (topological) order within each block.
    """
    if isinstance(spec, HubSpec):  # transformer layers are sub-layers of one keras_hub layer, not graph nodes
        return hub_blocks(backbone, spec)
    boundaries = block_boundaries(backbone, spec)
    blocks: dict[str, list[keras.layers.Layer]] = OrderedDict((name, []) for name in spec.block_names)
    last = len(spec.blocks) - 1
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        # The first block whose successor's upstream set holds the layer; else the last block.
        index = next((i - 1 for i in range(1, last + 1) if id(layer) in boundaries[i]), last)
        blocks[spec.blocks[index].name].append(layer)
    return blocks


def parameter_count(layer: keras.layers.Layer) -> int:
    total = 0
    for weight in layer.weights:
        size = 1
        for dim in weight.shape:
            size *= int(dim)
        total += size
    return total
