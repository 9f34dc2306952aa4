"""MACs and parameters measured by tracing (fvcore), with the ops fvcore leaves out registered.

fvcore counts linear layers, convolutions and matmuls in MACs and norms at 5 per element, but
skips ``scaled_dot_product_attention`` (the attention matmuls, most of a ViT's sequence-dependent
cost), GELU, softmax and adds. The handles below count attention as its two matmuls and the
element-wise ops as one per output element: the same convention as the analytic
``SearchSpace.macs``, which the tests hold to within 1% of this count.
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


def _per_output_element(inputs: list[Any], outputs: list[Any]) -> int:
    return prod(get_shape(outputs[0]))


EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_macs,
    "aten::gelu": _per_output_element,
    "aten::softmax": _per_output_element,
    "aten::add": _per_output_element,
}


def count_macs(model: nn.Module, inputs: torch.Tensor | tuple) -> int:
    """MACs of one forward of ``model`` on ``inputs`` (fvcore + the handles above)."""
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
