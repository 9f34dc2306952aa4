"""Batch-norm recalibration: running statistics re-estimated for one subnet.

The running statistics a supernet accumulates in training mix every subnet drawn; a subnet's own
activations have other means and variances (fewer channels summed, other kernels, no skipped
blocks), so evaluated with the shared statistics it scores far below what its weights can do. OFA
re-estimates them per subnet on a few thousand training images before every evaluation.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(net: nn.Module, arch: dict, loader: Iterable, num_batches: int) -> int:
    """Re-estimates the running statistics of the batch norms ``arch`` uses from ``num_batches``
    batches of ``loader`` (``(images, labels)`` pairs or image tensors), and returns the number of
    images seen (0 for a net without batch norm, which is left alone).

    The statistics are reset and re-estimated as a cumulative average over the batches
    (``momentum=None``, OFA's ``set_running_statistics``). Elastic batch norms write only the active
    channels: the rest of the supernet's statistics stay as they were. ``arch`` stays active, so
    ``net.export(arch)`` carries the recalibrated statistics. Nothing else changes: no gradient,
    each module's train/eval mode and each norm's momentum are restored, dropout does not run.
    Use the same images for every subnet (a fixed, cached subset) so that evaluations compare.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    net.set_active(arch)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    modes = {m: m.training for m in net.modules()}
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    device = next(net.parameters()).device
    seen = 0
    try:
        net.eval()
        for m in norms:
            m.train()
            m.momentum = None  # cumulative average: batch k is weighted 1/k, the first overwrites
            m.num_batches_tracked.zero_()
        for i, batch in enumerate(loader):
            if i == num_batches:
                break
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            net(images.to(device))
            seen += len(images)
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)
        for m, training in modes.items():
            m.training = training
    if seen == 0:
        raise ValueError("recalibrate_bn: the loader yielded no batches")
    return seen
