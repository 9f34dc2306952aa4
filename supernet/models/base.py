"""What every supernet family shares, whatever its layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Supernet(nn.Module):
    """Base of the elastic families: subclasses set ``space`` and ``active_arch`` (in ``set_active``)
    and define ``forward_features`` / ``forward_head`` / ``_static_subnet``."""

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
        return self.forward_head(self.forward_features(x))

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
