"""What every supernet family shares, whatever its layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.cache import InferenceCache, caching
from ..space import arch_key


class Supernet(nn.Module):
    """Base of the elastic families: subclasses set ``space`` and ``active_arch`` (in ``set_active``)
    and define ``forward_features`` / ``forward_head`` / ``_static_subnet``."""

    def __init__(self):
        super().__init__()
        self._static_cache = InferenceCache()
        self._tensors: tuple[torch.Tensor, ...] | None = None  # parameters and buffers, for the cache key
        self._norms: tuple[nn.Module, ...] | None = None
        self._keyed_arch: tuple[dict | None, str] = (None, "")

    def layer_costs(self, arch: dict) -> list[dict]:
        """Per-layer cost records of ``arch`` (analytic), for hardware latency estimates."""
        return self.space.layer_costs(arch)

    def resize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Images at the active arch's resolution: one loader can feed every resolution of the space."""
        res = self.active_arch["resolution"]
        if x.shape[-2:] != (res, res):
            x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not caching() or self.training or any(m.training for m in self._batch_norms()):
            return self.forward_head(self.forward_features(x))
        # Inference inside ``inference_cache()`` (evaluation, search): run the exported static subnet,
        # rebuilt only when the scope, the arch, a weight or a BatchNorm statistic changes, so that
        # repeated forwards of one subnet cost what the static model costs. Versions grow with in-place
        # updates (optimizer steps, load_state_dict, BN recalibration, which runs with its norms in
        # training mode and so takes the elastic path); a move to another device or dtype clears the
        # cache in _apply; storage swapped through ``.data`` is caught by data pointers.
        static = self._static_cache.get((self._active_key(),), self._state_tensors(), self._export_active)
        return static(self.resize_input(x))

    def _state_tensors(self) -> tuple[torch.Tensor, ...]:
        if self._tensors is None:
            self._tensors = (*self.parameters(), *self.buffers())
        return self._tensors

    def _batch_norms(self) -> tuple[nn.Module, ...]:
        if self._norms is None:
            self._norms = tuple(m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
        return self._norms

    def _active_key(self) -> str:
        if self._keyed_arch[0] is not self.active_arch:
            self._keyed_arch = (self.active_arch, arch_key(self.active_arch))
        return self._keyed_arch[1]

    def _apply(self, fn, *args, **kwargs):
        self._static_cache.clear()
        self._tensors = None  # buffers are replaced, not updated in place
        return super()._apply(fn, *args, **kwargs)

    def _export_active(self) -> nn.Module:
        with torch.inference_mode(False), torch.no_grad():  # parameters that outlive an inference-mode caller
            return self._static_subnet().eval()

    @torch.no_grad()
    def export(self, arch: dict) -> nn.Module:
        """The subnet ``arch`` as plain static modules (copied weights, eval mode); the active arch
        is left as it was."""
        previous = self.active_arch
        self.set_active(arch)
        try:
            static = self._static_subnet()
        finally:
            self.set_active(previous)
        return static.eval()

    def _static_subnet(self) -> nn.Module:
        """The active arch built from static modules holding copies of the active weights."""
        raise NotImplementedError
