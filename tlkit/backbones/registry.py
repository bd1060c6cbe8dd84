"""The backbone registry: every spec by its config name.

Beside nothing heavy: the family modules (tlkit/backbones/zoo_*.py) register their specs here, and
tlkit.backbones.zoo imports them all, so looking a backbone up never imports upwards.
"""
from __future__ import annotations

from tlkit.backbones.spec import BackboneSpec
from tlkit.errors import ConfigError

_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> BackboneSpec:
    """The registered spec called `name` (tlkit.backbones.zoo registers every built-in one when it loads)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError("backbone.name", name, f"known backbones are {', '.join(sorted(_REGISTRY))}") from None


def all_specs() -> list[BackboneSpec]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
