"""Accuracy of one subnet of a supernet on a data loader."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from .bn import recalibrate_bn
from .layers.cache import inference_cache

if TYPE_CHECKING:
    from .distributed import Dist


@torch.no_grad()
def accuracy(net: nn.Module, arch: dict, loader: DataLoader, device: torch.device | str = "cpu",
             calib_loader: DataLoader | None = None, dist: Dist | None = None) -> float:
    """Top-1 accuracy (0..1) of ``arch`` on ``loader``; leaves the net's mode and active arch as found.

    With ``calib_loader``, the batch norms ``arch`` uses are first re-estimated on all of its batches
    (OFA: shared statistics do not fit any one subnet); a net without batch norm ignores it.

    With ``dist`` (several processes, every rank calling this for the same ``arch``), ``loader`` and
    ``calib_loader`` are the rank's shards (``supernet.distributed.shard``): the batch-norm statistics
    are gathered into one process's (``recalibrate_bn``) and the correct and total counts summed, so
    every rank returns the accuracy one process finds on the whole split.
    """
    previous, was_training = net.active_arch, net.training
    net.set_active(arch)
    if calib_loader is not None:
        recalibrate_bn(net, arch, calib_loader, num_batches=len(calib_loader), dist=dist)
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
    if dist is not None and dist.world > 1:
        correct, total = (int(v) for v in dist.sum(torch.tensor([correct, total], dtype=torch.int64)).tolist())
    if total == 0:
        raise ValueError("cannot measure accuracy on an empty loader")
    return correct / total
