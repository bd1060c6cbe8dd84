"""Backbone registry: one spec per backbone (tlkit.backbones.zoo), blocks, building."""
from tlkit.backbones.spec import BackboneSpec, Block
from tlkit.backbones.zoo import all_specs, get_spec, register

__all__ = ["BackboneSpec", "Block", "all_specs", "get_spec", "register"]
