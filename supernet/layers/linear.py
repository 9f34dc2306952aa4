"""Elastic linear layers: the active sub-layer is a prefix (or grouped prefix) of the full weight."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import InferenceCache
from .quant import Quantizable


def _check_size(what: str, value: int, maximum: int) -> int:
    if not 0 < value <= maximum:
        raise ValueError(f"{what}={value} is outside 1..{maximum}")
    return int(value)


def _copy_into(static: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    with torch.no_grad():
        static.weight.copy_(weight)
        if bias is not None:
            static.bias.copy_(bias)
    return static


class ActivePrefix:
    """For a layer whose active sub-layer is the first ``active_out`` x ``active_in`` block of its
    ``weight`` (and the first ``active_out`` of its ``bias``); a subclass may pick other rows by
    overriding ``active_weight`` / ``active_bias``."""

    def active_weight(self) -> torch.Tensor:
        return self.weight[: self.active_out, : self.active_in]

    def active_bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self.bias[: self.active_out]

    def active_params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The active (fake-quantized) weight and bias; with autograd off, computed once per size,
        bit width and weight version (``self._cache``)."""
        return self._cache.get((self.active_in, self.active_out, self.bits), (self.weight, self.bias),
                               self._contiguous)

    def _contiguous(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        bias = self.active_bias()
        return self.quantize_weight(self.active_weight().contiguous()), None if bias is None else bias.contiguous()


class ElasticLinear(ActivePrefix, Quantizable, nn.Linear):
    """``nn.Linear`` that runs its first ``active_in`` inputs and ``active_out`` outputs.

    Slicing a prefix keeps the kept weights a view of the shared weight, so every subnet trains the
    same parameters; at full size and 32 bits the forward is exactly ``nn.Linear``'s. With a
    quantizer (``quant``) the input and the active weight are fake-quantized at its active width.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs):
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.active_in, self.active_out = in_features, out_features
        self._cache = InferenceCache()
        self._init_quant()

    def set_active(self, in_features: int, out_features: int) -> None:
        self.active_in = _check_size("in_features", in_features, self.in_features)
        self.active_out = _check_size("out_features", out_features, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.active_params()
        return F.linear(self.quantize_input(x), weight, bias)

    def to_static(self) -> nn.Linear:
        """A plain ``nn.Linear`` (a ``QuantLinear`` below 32 bits) of the active size holding copies of
        the active weights."""
        static = self.static_class(nn.Linear)(self.active_in, self.active_out, bias=self.bias is not None,
                                              device=self.weight.device, dtype=self.weight.dtype)
        return self.freeze_scales(_copy_into(static, self.active_weight(), self.active_bias()))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", active=({self.active_in}, {self.active_out})"


class ElasticQKV(ElasticLinear):
    """The fused query/key/value projection of attention, ``out = 3 * attn_dim``.

    Its rows are three groups (q, k, v); a smaller attention width keeps the same prefix of each
    group, so the layout stays timm's ``qkv`` and a subnet's heads are the first heads of the net.
    """

    def __init__(self, in_features: int, attn_dim: int, bias: bool = True, **kwargs):
        super().__init__(in_features, 3 * attn_dim, bias=bias, **kwargs)
        self.attn_dim = attn_dim

    def set_active(self, in_features: int, attn_dim: int) -> None:
        _check_size("attn_dim", attn_dim, self.attn_dim)
        super().set_active(in_features, 3 * attn_dim)

    def active_weight(self) -> torch.Tensor:
        a = self.active_out // 3
        return self.weight.view(3, self.attn_dim, self.in_features)[:, :a, : self.active_in].reshape(3 * a, -1)

    def active_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        return self.bias.view(3, self.attn_dim)[:, : self.active_out // 3].reshape(-1)
