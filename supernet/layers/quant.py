"""Fake quantization: the bit width of a block, the fifth elastic dimension (BatchQuant, LSQ, APQ).

A block runs at one of its ``bits`` choices; 32 is float. Below 32 every elastic linear and
convolution of the block rounds its input (per tensor) and its weight (per output channel) to a
symmetric signed grid ``[-2^(b-1), 2^(b-1) - 1] * scale`` (zero point 0) and computes in float on
the rounded values, as int8 / int4 hardware would compute exactly (integer products, one scale per
output). Rounding passes gradients straight through (STE). An input that a model knows to be
non-negative (it follows a ReLU) may use the unsigned grid ``[0, 2^b - 1] * scale`` instead
(``signed=False``): twice the resolution over the same range, and in an integer runtime the ReLU
before it is the grid's own clipping (no op).

The float weights are shared by every width. Weight scales are observed: each forward maps a
channel's largest magnitude to the top level, a function of the weights and the width alone.
Input scales are learned (LSQ), one per width, so training 4 bits leaves the 8-bit scale alone.

The static counterparts ``QuantLinear`` / ``QuantConv2d`` hold fixed scales and call the same
``torch.fake_quantize_*`` ops, so an exported subnet equals the supernet's bit for bit and exports
to ONNX as QuantizeLinear/DequantizeLinear pairs (``supernet.export``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

FLOAT_BITS = 32
DEFAULT_BITS = (4, 8, FLOAT_BITS)
MIN_BITS, MAX_BITS = 2, 8
_EPS = 1e-8  # smallest scale: an all-zero channel quantizes to 0 instead of 0 / 0


def check_bits_choices(choices: Sequence[int]) -> tuple[int, ...]:
    """The sorted bit-width choices of a model, or ConfigError: each 2..8 or 32, and 32 among them
    (the largest subnet is the float teacher of in-place distillation)."""
    bad = [b for b in choices if isinstance(b, bool) or b not in (*range(MIN_BITS, MAX_BITS + 1), FLOAT_BITS)]
    if bad or FLOAT_BITS not in choices:
        what = f"{bad[0]!r} is not allowed" if bad else "32 (float) is missing"
        raise ConfigError(f"bits choices {list(choices)}: {what}; allowed: integers {MIN_BITS}..{MAX_BITS} and "
                          f"{FLOAT_BITS} (float), with {FLOAT_BITS} among them")
    return tuple(sorted({int(b) for b in choices}))


def quant_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """The integer grid of ``bits``: ``(-2^(b-1), 2^(b-1) - 1)``, or ``(0, 2^b - 1)`` unsigned."""
    if not signed:
        return 0, 2 ** bits - 1
    half = 2 ** (bits - 1)
    return -half, half - 1


def weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per output channel (dim 0), float32: the channel's largest magnitude maps to the top level, so
    no weight is clipped (and per-channel scales survive folding batch norm into the conv)."""
    amax = weight.detach().abs().amax(dim=tuple(range(1, weight.dim())))
    return (amax.float() / quant_range(bits)[1]).clamp_min(_EPS)


def _register_fake_kernels() -> None:
    # torch.export (and so the ONNX exporter) traces with fake tensors; with a dynamic batch size the
    # kernels torch's fake-quantize ops decompose into need shape functions, which torch 2.14 lacks.
    def outputs(x, *args):
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)  # (output, in-range mask)

    for name in ("aten::_fake_quantize_per_tensor_affine_cachemask_tensor_qparams",
                 "aten::fake_quantize_per_channel_affine_cachemask"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(name, "Meta"):
            torch.library.register_fake(name, outputs)


_register_fake_kernels()


def fake_quantize_weight(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    qmin, qmax = quant_range(bits)
    zero = torch.zeros_like(scale, dtype=torch.int32)
    # float32 scales only, also for float64 weights (``.double()`` converts buffers)
    return torch.fake_quantize_per_channel_affine(weight, scale.float(), zero, 0, qmin, qmax)


def fake_quantize_input(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool = True) -> torch.Tensor:
    qmin, qmax = quant_range(bits, signed)
    return torch.fake_quantize_per_tensor_affine(x, scale, torch.zeros_like(scale, dtype=torch.int32), qmin, qmax)


class FakeQuantize(nn.Module):
    """The quantizer of one layer at any width of ``bits_choices`` (``set_active``); 32 leaves the
    input and the weight untouched, so the float layer is reproduced bit for bit.

    Input scales are learned with LSQ's gradient (``torch``'s learnable fake-quantize op), stored as
    logarithms so that they stay positive and Adam moves them by relative steps whatever the width.
    A width's scale is initialised from the first batch it sees in training, as LSQ does, but by the
    scale of least squared error rather than LSQ's ``2 mean|x| / sqrt(qmax)`` (at 4 bits that clips a
    Gaussian at 4.2 standard deviations, least squared error near 2.5); under DDP the ranks average
    it, so that they keep the same parameters. ``signed=False``: the input's unsigned grid (an input
    that follows a ReLU).
    """

    def __init__(self, bits_choices: Sequence[int] = DEFAULT_BITS, signed: bool = True):
        super().__init__()
        self.bits_choices = check_bits_choices(bits_choices)
        self.widths = [b for b in self.bits_choices if b != FLOAT_BITS]
        self.signed = signed
        # Before initialisation: the range +-4 (0..4 unsigned), which holds a unit-variance activation.
        init = [math.log(4.0 / quant_range(b, signed)[1]) for b in self.widths]
        self.log_input_scale = nn.Parameter(torch.tensor(init, dtype=torch.float32))
        self.register_buffer("initialised", torch.zeros(len(self.widths), dtype=torch.bool))
        self.active_bits = FLOAT_BITS

    def set_active(self, bits: int) -> None:
        if bits not in self.bits_choices:
            raise ValueError(f"bits={bits!r} is not one of {list(self.bits_choices)}")
        self.active_bits = int(bits)

    @property
    def quantized(self) -> bool:
        return self.active_bits != FLOAT_BITS

    def input_scale(self) -> torch.Tensor:
        """The active width's input scale, shape ``(1,)``."""
        i = self.widths.index(self.active_bits)
        return self.log_input_scale[i:i + 1].exp()

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return x
        bits = self.active_bits
        qmin, qmax = quant_range(bits, self.signed)
        i = self.widths.index(bits)
        if self.training and not self.initialised[i]:
            self._initialise(i, x)
        grad_factor = 1.0 / math.sqrt(x.numel() * qmax)  # LSQ: keeps the scale's gradient in step with the weights'
        zero = torch.zeros(1, device=x.device)
        # in float32 under autocast too: its backward takes float32 gradients only, and bf16 would move
        # the rounding boundaries (the next layer casts the result back to the autocast dtype)
        return torch._fake_quantize_learnable_per_tensor_affine(x.float(), self.input_scale(), zero, qmin, qmax,
                                                                grad_factor)

    def quantize_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return weight
        return fake_quantize_weight(weight, weight_scale(weight, self.active_bits), self.active_bits)

    @torch.no_grad()
    def _initialise(self, i: int, x: torch.Tensor) -> None:
        x = x.detach().float()
        bits = self.active_bits
        amax = x.abs().amax().clamp_min(_EPS)
        candidates = amax * torch.linspace(0.05, 1.0, 20, device=x.device) / quant_range(bits, self.signed)[1]
        errors = torch.stack([(fake_quantize_input(x, s, bits, self.signed) - x).square().mean() for s in candidates])
        log_scale = candidates[errors.argmin()].log()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(log_scale)
            log_scale /= dist.get_world_size()
        self.log_input_scale[i] = log_scale
        self.initialised[i] = True

    def extra_repr(self) -> str:
        return f"bits_choices={list(self.bits_choices)}, active_bits={self.active_bits}" + \
            ("" if self.signed else ", signed=False")


class Quantizable:
    """Mixin of the elastic layers a block quantizes: ``quant`` is their ``FakeQuantize`` (None in a
    float-only supernet, set by ``attach_quantizers``)."""

    def _init_quant(self) -> None:
        self.quant: FakeQuantize | None = None

    @property
    def bits(self) -> int:
        return FLOAT_BITS if self.quant is None else self.quant.active_bits

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.quant is None else self.quant.quantize_input(x)

    def quantize_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return weight if self.quant is None else self.quant.quantize_weight(weight)

    def static_class(self, float_class: type[nn.Module]):
        """The class of this layer's static copy: ``float_class`` at 32 bits, else its quantized version."""
        if self.bits == FLOAT_BITS:
            return float_class
        return partial({nn.Linear: QuantLinear, nn.Conv2d: QuantConv2d}[float_class], bits=self.bits,
                       signed=self.quant.signed)

    def freeze_scales(self, static: nn.Module) -> nn.Module:
        """Fixes the scales of a quantized static copy (its weights already copied in)."""
        if isinstance(static, QuantizedLayer):
            static.set_scales(self.quant.input_scale())
        return static


SKIP_BITS = 8


def quantized_skip(first_layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A residual block's skip input: ``x`` rounded by ``first_layer``'s input quantizer (the block's
    first conv, elastic or static) when the block runs at 8 bits, else ``x``. Then the residual
    stream between 8-bit blocks lives on the grid the next block reads, and an integer runtime adds
    it to the branch as integers (QLinearAdd) computing what training did; a float skip beside a
    clipped, rounded conv input has no integer form. At 4 bits the stream stays float: its 16
    levels would be the whole network's resolution. Used by the ResNet (``quantize_skip``, and
    ``quantize_projection`` for the input of a projection's pool); not by the MobileNetV3, whose
    8-bit subnets ran no faster with integer sums in onnxruntime or OpenVINO (docs/quantization.md)."""
    if getattr(first_layer, "bits", FLOAT_BITS) != SKIP_BITS:
        return x
    if isinstance(first_layer, QuantizedLayer):
        return fake_quantize_input(x, first_layer.input_scale, SKIP_BITS, first_layer.signed)
    return first_layer.quantize_input(x)


def attach_quantizers(module: nn.Module, bits_choices: Sequence[int], signed: bool = True) -> None:
    """Gives every elastic linear and convolution inside ``module`` (a block) a ``FakeQuantize``;
    none with float-only choices, so float supernets keep their parameters and state dicts.
    ``signed=False``: their inputs are non-negative (each follows a ReLU), on unsigned grids."""
    if tuple(bits_choices) == (FLOAT_BITS,):
        return
    for layer in [m for m in module.modules() if isinstance(m, Quantizable)]:
        layer.quant = FakeQuantize(bits_choices, signed)


def set_bits(module: nn.Module, bits: int) -> None:
    """Sets the width of every quantizer inside ``module`` (a block)."""
    for m in module.modules():
        if isinstance(m, FakeQuantize):
            m.set_active(bits)


class QuantizedLayer:
    """Mixin of the static quantized layers: ``bits``, and the fixed scales as buffers (float32)."""

    def _init_scales(self, bits: int, out_channels: int, device, *, signed: bool) -> None:
        self.bits, self.signed = bits, signed
        self.register_buffer("input_scale", torch.ones((), device=device))
        self.register_buffer("weight_scale", torch.ones(out_channels, device=device))

    @torch.no_grad()
    def set_scales(self, input_scale: torch.Tensor) -> None:
        self.input_scale.copy_(input_scale.reshape(()))
        self.weight_scale.copy_(weight_scale(self.weight, self.bits))

    def quantized_weight(self) -> torch.Tensor:
        return fake_quantize_weight(self.weight, self.weight_scale, self.bits)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bits={self.bits}" + ("" if self.signed else ", signed=False")


class QuantLinear(QuantizedLayer, nn.Linear):
    """A static ``nn.Linear`` whose input and weight are fake-quantized to ``bits`` with fixed scales."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, bits: int, signed: bool = True,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_scales(bits, out_features, device, signed=signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fake_quantize_input(x, self.input_scale, self.bits, self.signed)
        return F.linear(x, self.quantized_weight(), self.bias)


class QuantConv2d(QuantizedLayer, nn.Conv2d):
    """A static ``nn.Conv2d`` whose input and weight are fake-quantized to ``bits`` with fixed scales."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, *args, bits: int, signed: bool = True,
                 device=None, dtype=None, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, *args, device=device, dtype=dtype, **kwargs)
        self._init_scales(bits, out_channels, device, signed=signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fake_quantize_input(x, self.input_scale, self.bits, self.signed)
        return self._conv_forward(x, self.quantized_weight(), self.bias)
