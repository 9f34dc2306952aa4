"""Elastic normalisation layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import InferenceCache
from .linear import _check_size, _copy_into


class ElasticLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the first ``active_features`` channels (statistics over those only)."""

    def __init__(self, num_features: int, eps: float = 1e-5, **kwargs):
        super().__init__(num_features, eps=eps, **kwargs)
        self.active_features = num_features
        self._cache = InferenceCache()

    def set_active(self, num_features: int) -> None:
        self.active_features = _check_size("num_features", num_features, self.normalized_shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.active_features
        weight, bias = self._cache.get((n,), (self.weight, self.bias),
                                       lambda: (self.weight[:n].contiguous(), self.bias[:n].contiguous()))
        return F.layer_norm(x, (n,), weight, bias, self.eps)

    def to_static(self) -> nn.LayerNorm:
        n = self.active_features
        static = nn.LayerNorm(n, eps=self.eps, device=self.weight.device, dtype=self.weight.dtype)
        return _copy_into(static, self.weight[:n], self.bias[:n])
