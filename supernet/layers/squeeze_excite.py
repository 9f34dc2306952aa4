"""Squeeze-and-excitation (MobileNetV3 style), static and elastic."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from torch import nn

from .conv import ElasticConv2d


def se_width(channels: int, divisor: int = 8, reduction: int = 4) -> int:
    """Hidden width of the excitation for ``channels`` inputs (OFA's rule)."""
    return make_divisible(channels // reduction, divisor)


class SqueezeExcite(nn.Module):
    """``x * hardsigmoid(conv_expand(relu(conv_reduce(mean(x)))))``, the convs 1x1 with bias.

    The squeeze is an adaptive average pool, which fvcore counts (one MAC per input element) as
    the analytic cost model does.
    """

    def __init__(self, conv_reduce: nn.Conv2d, conv_expand: nn.Conv2d):
        super().__init__()
        self.conv_reduce, self.conv_expand = conv_reduce, conv_expand
        self.act, self.gate = nn.ReLU(inplace=True), nn.Hardsigmoid(inplace=True)  # on fresh conv outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act(self.conv_reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * self.gate(scale)


class ElasticSqueezeExcite(SqueezeExcite):
    """Squeeze-excitation of an elastic number of channels; the hidden width follows ``se_width``."""

    def __init__(self, channels: int, divisor: int = 8):
        hidden = se_width(channels, divisor)
        super().__init__(ElasticConv2d(channels, hidden, 1), ElasticConv2d(hidden, channels, 1))
        self.divisor = divisor

    def set_active(self, channels: int) -> None:
        hidden = se_width(channels, self.divisor)
        self.conv_reduce.set_active(channels, hidden)
        self.conv_expand.set_active(hidden, channels)

    def to_static(self) -> SqueezeExcite:
        return SqueezeExcite(self.conv_reduce.to_static(), self.conv_expand.to_static())
