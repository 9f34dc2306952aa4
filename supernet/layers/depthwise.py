"""Depthwise convolution with elastic channels and elastic kernel size (Once-for-All)."""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from .cache import InferenceCache
from .linear import _check_size
from .quant import Quantizable


class ElasticDepthwiseConv2d(Quantizable, nn.Conv2d):
    """A depthwise ``kxk`` conv (``groups == channels``, no bias, same padding) whose subnets run
    the first ``active_channels`` channels with any kernel size of ``kernel_sizes``.

    A smaller kernel is the centre of the next larger one passed through a learned
    ``k^2 x k^2`` transform, step by step (7 -> 5 -> 3 with 25x25 and 9x9 matrices, initialised to
    the identity): the small kernels share the large kernel's weights yet can learn their own
    distribution of them (OFA's kernel transformation).

    With autograd off the active kernel is cached (``InferenceCache``) and recomputed only when the
    active size or a weight changes, so evaluating a subnet costs the conv alone. Below 32 bits the
    input and the active kernel are fake-quantized by ``quant``.
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int], stride: int = 1):
        sizes = tuple(sorted(set(kernel_sizes)))
        if not sizes or any(k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(f"kernel sizes must be odd and positive, got {list(kernel_sizes)}")
        k = sizes[-1]
        super().__init__(channels, channels, k, stride=stride, padding=k // 2, groups=channels, bias=False)
        self.kernel_sizes = sizes
        self.kernel_transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small)) for small, big in pairwise(sizes)})
        self.active_channels, self.active_kernel_size = channels, k
        self._cache = InferenceCache()
        self._init_quant()

    def set_active(self, channels: int, kernel_size: int) -> None:
        if kernel_size not in self.kernel_sizes:
            raise ValueError(f"kernel_size={kernel_size} is not one of {list(self.kernel_sizes)}")
        self.active_channels = _check_size("channels", channels, self.in_channels)
        self.active_kernel_size = int(kernel_size)

    def kernel(self, kernel_size: int, channels: int | None = None) -> torch.Tensor:
        """The ``(channels, 1, k, k)`` kernel of size ``kernel_size`` (all channels by default)."""
        weight = self.weight if channels is None else self.weight[:channels]
        big = self.kernel_sizes[-1]
        for small in reversed(self.kernel_sizes[:-1]):
            if small < kernel_size:
                break
            start = (big - small) // 2
            centre = weight[:, :, start:start + small, start:start + small].reshape(-1, small * small)
            weight = F.linear(centre, self.kernel_transforms[f"{big}to{small}"]).view(-1, 1, small, small)
            big = small
        return weight

    def active_weight(self) -> torch.Tensor:
        c, k = self.active_channels, self.active_kernel_size
        return self._cache.get((c, k, self.bits), (self.weight, *self.kernel_transforms.values()),
                               lambda: self.quantize_weight(self.kernel(k, c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.active_kernel_size
        return F.conv2d(self.quantize_input(x), self.active_weight(), None, self.stride, k // 2, self.dilation,
                        self.active_channels)

    def to_static(self) -> nn.Conv2d:
        c, k = self.active_channels, self.active_kernel_size
        static = self.static_class(nn.Conv2d)(c, c, k, stride=self.stride, padding=k // 2, groups=c, bias=False,
                                              device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            static.weight.copy_(self.kernel(k, c))
        return self.freeze_scales(static)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernel_sizes={list(self.kernel_sizes)}, " \
            f"active=({self.active_channels}, {self.active_kernel_size})"
