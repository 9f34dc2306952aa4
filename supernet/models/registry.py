"""The supernet registry: one entry point per family, as timm's ``create_model``."""
from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
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


def with_option_defaults(cfg: dict) -> dict:
    """A model config (``name`` + options, e.g. a checkpoint's) with every option it lacks at the
    family's default: a run saved before an option existed compares equal to one that sets it to
    its default."""
    factory = _FACTORIES.get(cfg.get("name"))
    if factory is None:
        return dict(cfg)
    defaults = {p: v.default for p, v in _options(factory).items() if v.default is not inspect.Parameter.empty}
    return {**defaults, **cfg}


def _options(factory: Callable[..., nn.Module]) -> dict[str, inspect.Parameter]:
    """A family's options: its factory's parameters."""
    return {p: v for p, v in inspect.signature(factory).parameters.items() if p not in ("args", "kwargs")}


def create_supernet(name: str, **cfg) -> nn.Module:
    """``create_supernet("vit", num_classes=10, embed_dim=[32, 64], ...)``."""
    if name not in _FACTORIES:
        raise ModelConfigError(f"unknown model {name!r}; known models: {', '.join(list_supernets())}")
    factory = _FACTORIES[name]
    parameters = _options(factory)
    unknown = sorted(set(cfg) - set(parameters))
    if unknown:
        raise ModelConfigError(f"model {name!r} has no option {unknown[0]!r}; its options: {', '.join(parameters)}")
    # conf/model/*.yaml leave num_classes to the data (supernet.train adds it): a caller of the library
    # that forgets it gets this line rather than Python's TypeError
    missing = [p for p, v in parameters.items() if v.default is inspect.Parameter.empty and p not in cfg]
    if missing:
        raise ModelConfigError(f"model {name!r} needs option {missing[0]!r}, which the config lacks; pass it, e.g. "
                               f"create_supernet_from_config(cfg, {missing[0]}=...); its options: "
                               f"{', '.join(parameters)}")
    empty = [option for option, value in cfg.items() if isinstance(value, (list, tuple)) and not value]
    if empty:
        raise ModelConfigError(f"model {name!r}: {empty[0]}=[] has no choices; allowed: a non-empty list")
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


def space_from_config(cfg, **overrides):
    """The ``SearchSpace`` of a model config (as ``create_supernet_from_config`` takes it) without the
    supernet's weights: for what needs only the choices and the analytic costs (sampling, MACs,
    ``search.lut.lut_latency``), e.g. ``space_from_config(cfg, num_classes=1000)``."""
    cfg = {**dict(cfg), **overrides}
    for option in ("pretrained", "pretrained_path"):  # weights only: the space is the same without them
        cfg.pop(option, None)
    with torch.device("meta"):  # tensors without storage: no memory, no initialisation work
        return create_supernet_from_config(cfg).space
