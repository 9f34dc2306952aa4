"""The supernet registry: one entry point per family, as timm's ``create_model``."""
from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from ..errors import ConfigError

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


class ModelConfigError(ConfigError):
    """An unknown model name or an option the model does not take."""


def register_supernet(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers ``fn`` under its function name (``vit``, ``mobilenetv3`` ...)."""
    _FACTORIES[fn.__name__] = fn
    return fn


def list_supernets() -> list[str]:
    return sorted(_FACTORIES)


def create_supernet(name: str, **cfg) -> nn.Module:
    """``create_supernet("vit", num_classes=10, embed_dim=[32, 64], ...)``."""
    if name not in _FACTORIES:
        raise ModelConfigError(f"unknown model {name!r}; known models: {', '.join(list_supernets())}")
    factory = _FACTORIES[name]
    allowed = [p for p in inspect.signature(factory).parameters if p not in ("args", "kwargs")]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ModelConfigError(f"model {name!r} has no option {unknown[0]!r}; its options: {', '.join(allowed)}")
    return factory(**cfg)


def create_supernet_from_config(cfg, **overrides) -> nn.Module:
    """Builds a supernet from a model config mapping (``conf/model/*.yaml``: ``name`` + options; its
    ``schedule``, the progressive-shrinking phases, is the trainer's and ignored here)."""
    cfg = {**dict(cfg), **overrides}
    cfg.pop("schedule", None)
    name = cfg.pop("name", None)
    if name is None:
        raise ModelConfigError(f"the model config has no 'name'; known models: {', '.join(list_supernets())}")
    return create_supernet(name, **cfg)
