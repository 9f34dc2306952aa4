"""MACs and parameters measured by tracing (fvcore), counted as the papers count them.

MACs are multiply-accumulates (one fused multiply-add = 1) of convolutions, linear layers and
matrix products, attention's two matmuls included: the convention of OFA's ``count_net_flops``,
torchvision's model metadata (``_ops``) and the papers. Norms, activations, adds, pooling and
resampling are not MACs. fvcore counts norms, average pools and upsampling by default and skips
``scaled_dot_product_attention``: the handles below undo the first and count the second, so that
this count is the same function as the analytic ``SearchSpace.macs`` (the tests hold them equal).
"""
from __future__ import annotations

import logging
from math import prod
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis, parameter_count
from fvcore.nn.jit_handles import get_shape
from torch import nn


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    # q: (..., Nq, d), k: (..., Nk, d), v: (..., Nk, dv): q @ k^T then attn @ v.
    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _no_macs(inputs: list[Any], outputs: list[Any]) -> int:
    return 0


# fvcore's element-wise defaults that are not MACs, counted as 0 (a None handle would leave fvcore's
# own in place: fvcore 0.1.5 only adds the name to its ignore list); attention's matmuls counted.
NOT_MACS = ("aten::batch_norm", "aten::group_norm", "aten::layer_norm", "aten::instance_norm",
            "aten::upsample_nearest2d", "aten::upsample_bilinear2d", "aten::adaptive_avg_pool2d",
            "aten::grid_sampler")
EXTRA_HANDLES = {"aten::scaled_dot_product_attention": _sdpa_macs, **dict.fromkeys(NOT_MACS, _no_macs)}


def count_macs(model: nn.Module, inputs: torch.Tensor | tuple) -> int:
    """MACs of one forward of ``model`` on ``inputs``: convolutions, linear layers and matmuls."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, inputs).set_op_handle(**EXTRA_HANDLES)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        return int(analysis.total())
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> int:
    return int(parameter_count(model)[""])
