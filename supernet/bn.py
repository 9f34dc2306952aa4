"""Batch-norm recalibration: running statistics re-estimated for one subnet.

The running statistics a supernet accumulates in training mix every subnet drawn; a subnet's own
activations have other means and variances (fewer channels summed, other kernels, no skipped
blocks), so evaluated with the shared statistics it scores far below what its weights can do. OFA
re-estimates them per subnet on a few thousand training images before every evaluation.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .distributed import Dist


@torch.no_grad()
def recalibrate_bn(net: nn.Module, arch: dict, loader: Iterable, num_batches: int, dist: Dist | None = None) -> int:
    """Re-estimates the running statistics of the batch norms ``arch`` uses from ``num_batches``
    batches of ``loader`` (``(images, labels)`` pairs or image tensors), and returns the number of
    images seen (0 for a net without batch norm, which is left alone).

    The statistics are reset and re-estimated as the average of the batches' own statistics, every
    batch weighted alike (a cumulative average, OFA's ``set_running_statistics``), summed in float64
    in the loader's order. Elastic batch norms write only the active
    channels: the rest of the supernet's statistics stay as they were. ``arch`` stays active, so
    ``net.export(arch)`` carries the recalibrated statistics. Nothing else changes: no gradient,
    each module's train/eval mode and each norm's momentum are restored, dropout does not run.
    Use the same images for every subnet (a fixed, cached subset) so that evaluations compare.

    With ``dist`` (several processes), ``loader`` is the rank's share of the batches
    (``supernet.distributed.shard``; a rank may have none); each rank computes its batches'
    statistics, all of them are gathered, and every rank sums them in one process's batch order: the
    statistics one process computes from the same loader, bit for bit. (Reducing each rank's
    average instead would differ in the last bits from one process's, and under fake quantization
    that moves an image's prediction now and then; recalibrating every rank on all the batches
    would keep the calibration's cost from dividing over the ranks, as the evaluation's does.) The
    count returned is then the world's.
    """
    distributed = dist is not None and dist.world > 1
    if num_batches < (0 if distributed else 1):
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    net.set_active(arch)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    modes = {m: m.training for m in net.modules()}
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    device = next(net.parameters()).device
    buffers = [b for m in norms for b in (m.running_mean, m.running_var)]
    seen, batches, total, per_batch = 0, 0, None, []
    try:
        net.eval()
        for m in norms:
            m.train()
            m.momentum = 1.0  # after a forward the buffers hold that batch's statistics (unbiased variance)
        for i, batch in enumerate(loader):
            if i == num_batches:
                break
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            net(images.to(device))
            seen, batches = seen + len(images), batches + 1
            stats = torch.cat([b.flatten() for b in buffers])  # untouched channels: their old values
            if distributed:
                per_batch.append(stats)
            else:
                total = stats.double() if total is None else total + stats.double()
        if distributed:
            per_batch, seen = dist.gather_batches(per_batch, seen, width=sum(b.numel() for b in buffers),
                                                  dtype=buffers[0].dtype)
            batches = len(per_batch)
            for stats in per_batch:  # the order and the float64 sums of one process
                total = stats.double() if total is None else total + stats.double()
        if total is not None:
            mean = total / batches
            start = 0
            for b in buffers:
                b.copy_(mean[start:start + b.numel()].view_as(b).to(b.device, b.dtype))
                start += b.numel()
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)
        for m, training in modes.items():
            m.training = training
    if seen == 0:
        raise ValueError("recalibrate_bn: the loader yielded no batches")
    return seen
