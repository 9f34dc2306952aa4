"""Accuracy of one subnet of a supernet on a data loader."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from .bn import recalibrate_bn
from .layers.cache import inference_cache


@torch.no_grad()
def accuracy(net: nn.Module, arch: dict, loader: DataLoader, device: torch.device | str = "cpu",
             calib_loader: DataLoader | None = None) -> float:
    """Top-1 accuracy (0..1) of ``arch`` on ``loader``; leaves the net's mode and active arch as found.

    With ``calib_loader``, the batch norms ``arch`` uses are first re-estimated on all of its batches
    (OFA: shared statistics do not fit any one subnet); a net without batch norm ignores it.
    """
    previous, was_training = net.active_arch, net.training
    net.set_active(arch)
    if calib_loader is not None:
        recalibrate_bn(net, arch, calib_loader, num_batches=len(calib_loader))
    net.eval()
    correct = total = 0
    try:
        with inference_cache():  # the weights stay as they are while this subnet is evaluated
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                correct += (net(x).argmax(dim=1) == y).sum().item()
                total += y.numel()
    finally:
        net.set_active(previous)
        net.train(was_training)
    if total == 0:
        raise ValueError("cannot measure accuracy on an empty loader")
    return correct / total
