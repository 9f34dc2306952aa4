"""Supernet families, created by name through the registry."""
from . import mobilenetv3, resnet, vit  # noqa: F401  (registers the families)
from .registry import (
    ModelConfigError,
    create_supernet,
    create_supernet_from_config,
    list_supernets,
    register_supernet,
    space_from_config,
    with_option_defaults,
)

__all__ = ["ModelConfigError", "create_supernet", "create_supernet_from_config", "list_supernets", "register_supernet",
           "space_from_config", "with_option_defaults"]
