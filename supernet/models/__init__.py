"""Supernet families, created by name through the registry."""
from . import mobilenetv3  # noqa: F401  (registers the family)
from . import resnet  # noqa: F401  (registers the family)
from . import vit  # noqa: F401  (registers the family)
from .registry import ModelConfigError, create_supernet, create_supernet_from_config, list_supernets, register_supernet

__all__ = ["ModelConfigError", "create_supernet", "create_supernet_from_config", "list_supernets", "register_supernet"]
