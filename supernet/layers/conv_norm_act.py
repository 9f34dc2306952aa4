"""Convolution -> batch norm -> activation, the unit CNN supernets are made of."""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .batchnorm import ElasticBatchNorm2d
from .conv import ElasticConv2d
from .depthwise import ElasticDepthwiseConv2d


class ConvNormAct(nn.Module):
    """``act(bn(conv(x)))``; a missing norm or activation is ``nn.Identity``."""

    def __init__(self, conv: nn.Conv2d, bn: nn.Module | None = None, act: nn.Module | None = None):
        super().__init__()
        self.conv = conv
        self.bn = nn.Identity() if bn is None else bn
        self.act = nn.Identity() if act is None else act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def _static(self, conv: nn.Conv2d) -> ConvNormAct:
        bn = self.bn.to_static() if isinstance(self.bn, ElasticBatchNorm2d) else None
        return ConvNormAct(conv, bn, copy.deepcopy(self.act))


class ElasticConvNormAct(ConvNormAct):
    """A dense ``kxk`` conv (same padding, no bias) with elastic input and output channels, then
    an elastic batch norm (unless ``norm=False``) and ``act_layer`` (none if ``None``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 act_layer: Callable[[], nn.Module] | None = None, norm: bool = True):
        super().__init__(ElasticConv2d(in_channels, out_channels, kernel_size, stride=stride,
                                       padding=kernel_size // 2, bias=False),
                         ElasticBatchNorm2d(out_channels) if norm else None,
                         act_layer() if act_layer is not None else None)

    def set_active(self, in_channels: int, out_channels: int) -> None:
        self.conv.set_active(in_channels, out_channels)
        if isinstance(self.bn, ElasticBatchNorm2d):
            self.bn.set_active(out_channels)

    def to_static(self) -> ConvNormAct:
        return self._static(self.conv.to_static())


class ElasticDwConvNormAct(ConvNormAct):
    """An elastic depthwise conv (channels and kernel size), elastic batch norm, ``act_layer``."""

    def __init__(self, channels: int, kernel_sizes: Sequence[int], stride: int = 1,
                 act_layer: Callable[[], nn.Module] | None = None):
        super().__init__(ElasticDepthwiseConv2d(channels, kernel_sizes, stride), ElasticBatchNorm2d(channels),
                         act_layer() if act_layer is not None else None)

    def set_active(self, channels: int, kernel_size: int) -> None:
        self.conv.set_active(channels, kernel_size)
        self.bn.set_active(channels)

    def to_static(self) -> ConvNormAct:
        return self._static(self.conv.to_static())


def same_conv_size(size: int, stride: int) -> int:
    """Output side of a same-padded conv (or OFA's ceil-mode pools) of ``stride`` on a ``size`` side."""
    return -(-size // stride)


def conv_cost(name: str, in_channels: int, out_channels: int, kernel_size: int, in_size: int, stride: int = 1,
              groups: int = 1, norm: bool = True, bias: bool = False, bits: int = 32, op: str = "conv") -> tuple:
    """The analytic cost tuple ``(name, op, macs, params, act_elems, bits)`` of one conv -> BN -> act:
    MACs of the conv alone (the bias, the eval-mode batch norm and the activation are not MACs, as
    OFA's ``count_net_flops`` and the papers count them); ``act_elems`` is the input plus the output."""
    out_elems = out_channels * same_conv_size(in_size, stride) ** 2
    weights = out_channels * (in_channels // groups) * kernel_size ** 2
    macs = out_elems * weights // out_channels
    params = weights + (out_channels if bias else 0) + (2 * out_channels if norm else 0)
    return name, op, macs, params, in_channels * in_size ** 2 + out_elems, bits
