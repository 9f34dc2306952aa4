"""Channel sorting: reorder a group of channels by importance so that every prefix a subnet keeps
holds the most important ones (OFA, before the expand and width phases).

A channel group is the set of tensors indexed by the same channels: the *producers* write them
(conv / linear rows, depthwise kernels, batch-norm entries) and the *consumers* read them (the
input columns of the next convs / linears). Permuting both alike leaves the full network's
function unchanged; only what the prefixes hold changes.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn


def input_importance(consumers: Iterable[nn.Module]) -> torch.Tensor:
    """L1 norm of the weights that read each input channel, summed over ``consumers``."""
    total = None
    for layer in consumers:
        dims = [d for d in range(layer.weight.dim()) if d != 1]
        norm = layer.weight.detach().abs().sum(dim=dims)
        total = norm if total is None else total + norm
    return total


def order_within_bands(importance: torch.Tensor, bands: Sequence[int] = ()) -> torch.Tensor:
    """Channel indices by decreasing importance, sorted only inside ``[0, b0), [b0, b1), ...``:
    with the widths of the already trained subnets as ``bands`` each of them keeps its channels."""
    order, start = [], 0
    for end in sorted({b for b in bands if 0 < b < len(importance)} | {len(importance)}):
        order.append(start + torch.argsort(importance[start:end], descending=True, stable=True))
        start = end
    return torch.cat(order)


@torch.no_grad()
def permute_channels(order: torch.Tensor, producers: Iterable[nn.Module], consumers: Iterable[nn.Module]) -> None:
    """Reorders one channel group in place (the parameters stay the same objects)."""
    for layer in producers:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            tensors = [layer.weight, layer.bias, layer.running_mean, layer.running_var]
        else:  # conv (dense or depthwise) or linear: the output channel is dim 0
            tensors = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
        for t in tensors:
            t.copy_(t.index_select(0, order))
    for layer in consumers:
        layer.weight.copy_(layer.weight.index_select(1, order))


def sort_channel_group(producers: Sequence[nn.Module], consumers: Sequence[nn.Module], bands: Sequence[int] = (),
                       ranked_by: Sequence[nn.Module] | None = None) -> torch.Tensor:
    """Sorts one channel group by the L1 importance of its consumers (or of ``ranked_by``, a part
    of them); returns the order applied."""
    order = order_within_bands(input_importance(consumers if ranked_by is None else ranked_by), bands)
    permute_channels(order, producers, consumers)
    return order
