"""Elastic batch normalisation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import _check_size


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the first ``active_features`` channels.

    Scale, shift and running statistics are prefixes of the full buffers, so training a subnet
    updates the running statistics of its own channels only (OFA's dynamic batch norm). With
    ``momentum=None`` the running statistics are a cumulative average, as ``supernet.bn`` uses to
    recalibrate one subnet.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, **kwargs):
        super().__init__(num_features, eps=eps, momentum=momentum, **kwargs)
        self.active_features = num_features

    def set_active(self, num_features: int) -> None:
        self.active_features = _check_size("num_features", num_features, self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.active_features
        factor = 0.0
        if self.training:  # nn.BatchNorm2d's rule, on the prefix
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(x, self.running_mean[:n], self.running_var[:n], self.weight[:n], self.bias[:n],
                            self.training, factor, self.eps)

    def to_static(self) -> nn.BatchNorm2d:
        n = self.active_features
        static = nn.BatchNorm2d(n, eps=self.eps, momentum=self.momentum, device=self.weight.device,
                                dtype=self.weight.dtype)
        with torch.no_grad():
            static.weight.copy_(self.weight[:n])
            static.bias.copy_(self.bias[:n])
            static.running_mean.copy_(self.running_mean[:n])
            static.running_var.copy_(self.running_var[:n])
            static.num_batches_tracked.copy_(self.num_batches_tracked)
        return static

    def extra_repr(self) -> str:
        return super().extra_repr() + f", active={self.active_features}"
