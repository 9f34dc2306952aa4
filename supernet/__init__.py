"""Elastic supernets: search spaces, elastic layers, model families, export."""
from .layers.cache import inference_cache
from .models import ModelConfigError, create_supernet, create_supernet_from_config, list_supernets, space_from_config
from .space import ArchError, Dim, SearchSpace

__all__ = ["ArchError", "Dim", "ModelConfigError", "SearchSpace", "create_supernet",
           "create_supernet_from_config", "inference_cache", "list_supernets", "space_from_config"]
