"""Roofline latency estimate for a device we cannot run on, from per-layer cost records.

Each layer takes the longer of its compute time (MACs at the peak of its precision) and its
memory time (weights + activations at the memory bandwidth), divided by the efficiency its op
kind reaches in practice, plus a fixed launch overhead. Layers run one after another, so the
model's latency is the sum.

A layer record is the plain dict that `net.layer_costs(arch)` returns:
`{"name", "op", "macs", "params", "weight_bytes", "act_bytes", "bits"}`, with MACs and activation
bytes at batch 1 and weight bytes at the layer's bit width.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral
from typing import Any

OP_KINDS = ("conv", "dwconv", "linear", "matmul", "norm", "act", "add", "pool", "embed")
PRECISIONS = ("fp32", "fp16", "int8")
BITS = (32, 16, 8, 4)
_INTEGER_KEYS = ("macs", "weight_bytes", "act_bytes", "bits")


@dataclass(frozen=True)
class Roofline:
    peak_gmacs: Mapping[str, float]  # precision -> 10^9 multiply-accumulates per second
    memory_gbps: float  # 10^9 bytes per second
    efficiency: Mapping[str, float]  # op kind (or "default") -> fraction of the roofline reached
    launch_overhead_ms: float  # per layer: kernel launch / operator dispatch

    def precision(self, bits: int) -> str:
        """The peak a layer of `bits` runs at: the narrowest the device has that fits the bits."""
        if bits <= 8 and "int8" in self.peak_gmacs:
            return "int8"
        if bits <= 16 and "fp16" in self.peak_gmacs:
            return "fp16"
        return "fp32"

    def layer_ms(self, layer: Mapping[str, Any], batch_size: int = 1) -> float:
        _check_layer(layer)
        peak_macs_per_s = self.peak_gmacs[self.precision(layer["bits"])] * 1e9
        compute_s = layer["macs"] * batch_size / peak_macs_per_s
        # Weights are read once per batch; activations grow with it.
        memory_s = (layer["weight_bytes"] + layer["act_bytes"] * batch_size) / (self.memory_gbps * 1e9)
        factor = self.efficiency.get(layer["op"], self.efficiency["default"])
        return max(compute_s, memory_s) / factor * 1e3 + self.launch_overhead_ms

    def total_ms(self, layers: Iterable[Mapping[str, Any]], batch_size: int = 1) -> float:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        layers = list(layers)
        if not layers:
            raise ValueError("layer_costs is empty: expected one record per layer")
        return sum(self.layer_ms(layer, batch_size) for layer in layers)


def _check_layer(layer: Mapping[str, Any]) -> None:
    name = layer.get("name", "<unnamed>")
    missing = [key for key in ("op", *_INTEGER_KEYS) if key not in layer]
    if missing:
        raise ValueError(f"layer {name!r}: cost record lacks {', '.join(missing)}")
    for key in _INTEGER_KEYS:
        value = layer[key]
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise ValueError(f"layer {name!r}: {key} must be a non-negative int, got {value!r}")
    if layer["bits"] not in BITS:
        raise ValueError(f"layer {name!r}: bits must be one of {BITS}, got {layer['bits']}")
