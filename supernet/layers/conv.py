"""Elastic convolutions."""
from __future__ import annotations

import torch
from torch import nn

from .cache import InferenceCache
from .linear import ActivePrefix, _check_size, _copy_into
from .quant import Quantizable


class ElasticConv2d(ActivePrefix, Quantizable, nn.Conv2d):
    """A dense ``nn.Conv2d`` that runs its first ``active_in`` / ``active_out`` channels (input and
    weight fake-quantized by ``quant`` below 32 bits)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        if self.groups != 1:
            raise ValueError(f"ElasticConv2d slices dense convolutions only, got groups={self.groups}")
        self.active_in, self.active_out = in_channels, out_channels
        self._cache = InferenceCache()
        self._init_quant()

    def set_active(self, in_channels: int, out_channels: int) -> None:
        self.active_in = _check_size("in_channels", in_channels, self.in_channels)
        self.active_out = _check_size("out_channels", out_channels, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.active_params()
        return self._conv_forward(self.quantize_input(x), weight, bias)

    def to_static(self) -> nn.Conv2d:
        static = self.static_class(nn.Conv2d)(
            self.active_in, self.active_out, self.kernel_size, stride=self.stride, padding=self.padding,
            dilation=self.dilation, bias=self.bias is not None, padding_mode=self.padding_mode,
            device=self.weight.device, dtype=self.weight.dtype)
        return self.freeze_scales(_copy_into(static, self.active_weight(), self.active_bias()))
