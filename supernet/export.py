"""Standalone subnets: ``save_subnet`` writes one directory, ``load_subnet`` rebuilds the module.

``subnets/<id>/``: ``arch.json`` (arch, metrics, provenance), ``model.pt`` (state dict + arch +
model config, for fine-tuning with this package), ``model.pt2`` (``torch.export`` program, loads
with torch alone) and ``model.onnx``. The directory is assembled beside its destination and
renamed into place, so a reader never sees a half-written subnet.

``model.onnx`` is opset 21: a quantized block's fake quantization becomes QuantizeLinear /
DequantizeLinear pairs, int8 at 8 bits and int4 at 4 bits (opset 21 added int4), other widths an
int8 pair with a Clip of the integers to the width's range; an unsigned input grid (a model's
``unsigned_after_relu``) uint8 / uint4 pairs the same way. onnxruntime fuses the int8 pairs
around matrix products into integer kernels; int4 pairs run as dequantize + float kernels on CPU.
8-bit convolutions are rewritten for integer kernels (``integer_convs``): batch norm folded into
their int8 weights and an int32 bias, and their output requantized onto the grid of the quantizer
it flows into; 8-bit linear weights are stored as int8 constants too (``int8_weights``).
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxscript import ir
from onnxscript import opset21 as op
from torch import nn

from .checkpoint import (
    SUBNET_FORMAT,
    atomic_write,
    build_from_config,
    default_permissions,
    load_checkpoint,
    load_weights,
    reporting_full_disk,
    save_checkpoint,
    save_json,
)
from .models import create_supernet_from_config


def example_input(net: nn.Module, arch: dict, batch_size: int = 1) -> torch.Tensor:
    """A random batch of the subnet's input shape."""
    res = arch["resolution"]
    return torch.randn(batch_size, net.in_chans, res, res)


def exported_program(static: nn.Module, x: torch.Tensor) -> torch.export.ExportedProgram:
    """``static`` traced by ``torch.export`` on the example batch ``x``, its batch dimension dynamic
    (the program serves any batch size): the one trace that ``model.pt2`` and ``model.onnx`` are
    written from (tracing is 2-3 s of a digits MobileNetV3's 15 s ONNX export)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(static, (x,), dynamic_shapes=({0: batch},))


def _write_pt2(program: torch.export.ExportedProgram, path: Path) -> None:
    def write(f):
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        f.write(buffer.getvalue())

    atomic_write(path, write)


ONNX_OPSET = 21  # the first with int4 QuantizeLinear / DequantizeLinear


def _qdq(x, scale, quant_min: int, quant_max: int, axis: int = 1):
    """``DequantizeLinear(QuantizeLinear(x))``: int4 / uint4 for the 4-bit ranges, else int8 / uint8
    (an unsigned grid: ``quant_min`` 0), whose integers are clipped to the range when it is narrower
    (2, 3, 5, 6, 7 bits; onnxruntime clips no int4)."""
    if quant_min == 0 < quant_max <= 255:
        byte, nibble = ir.DataType.UINT8, ir.DataType.UINT4
    elif -128 <= quant_min < quant_max <= 127:
        byte, nibble = ir.DataType.INT8, ir.DataType.INT4
    else:
        raise NotImplementedError(f"no ONNX integer type holds the quantization range [{quant_min}, {quant_max}]")
    dtype = nibble if (quant_min, quant_max) in ((-8, 7), (0, 15)) else byte
    q = op.QuantizeLinear(x, scale, axis=axis, output_dtype=dtype)
    if dtype == byte and (quant_min, quant_max) not in ((-128, 127), (0, 255)):
        q = op.Clip(q, op.Constant(value=ir.tensor(quant_min, dtype=byte)),
                    op.Constant(value=ir.tensor(quant_max, dtype=byte)))
    return op.DequantizeLinear(q, scale, axis=axis)


def _onnx_fake_quantize_per_tensor(self, scale, zero_point, quant_min: int, quant_max: int):
    return _qdq(self, scale, quant_min, quant_max)  # zero point: always 0 in this package


def _onnx_fake_quantize_per_channel(self, scale, zero_point, axis: int, quant_min: int, quant_max: int):
    return _qdq(self, scale, quant_min, quant_max, axis)


# torch's own translations cover 8 bits only; these add int4 and the other widths.
ONNX_TRANSLATIONS = {torch.ops.aten.fake_quantize_per_tensor_affine.tensor_qparams: _onnx_fake_quantize_per_tensor,
                     torch.ops.aten.fake_quantize_per_channel_affine.default: _onnx_fake_quantize_per_channel}


def onnx_model(static: nn.Module | torch.export.ExportedProgram, x: torch.Tensor) -> onnx.ModelProto:
    """The graph of ``model.onnx`` for the static subnet ``static``, or its ``exported_program``
    (``x``: an example batch; the batch dimension stays dynamic)."""
    with warnings.catch_warnings(), _quiet_loggers("onnx_ir", "onnxscript", "torch.onnx"):
        warnings.simplefilter("ignore")
        program = static if isinstance(static, torch.export.ExportedProgram) else exported_program(static, x)
        # from a traced program the exporter only names the dynamic axis ("batch", as the trace's Dim)
        onnx_program = torch.onnx.export(program, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                                         dynamic_shapes=({0: "batch"},), opset_version=ONNX_OPSET,
                                         custom_translation_table=ONNX_TRANSLATIONS, verbose=False)
    return int8_weights(integer_convs(onnx_program.model_proto))


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (AVX-512 or AVX): onnxruntime's u8 x s8 kernels are exact only
    there. Read from /proc/cpuinfo (Linux); elsewhere False, the safe answer (u8 x u8 is exact
    everywhere)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def deployed_onnx(static: nn.Module, x: torch.Tensor, device: str = "cpu") -> bytes:
    """The serialized ONNX that onnxruntime would run on ``device``: ``model.onnx``'s graph, on a
    CPU with uint8 activation pairs (``uint8_qdq``: there only they become integer kernels) and
    int8 weights (convs and linears) where that kernel is exact (VNNI), else uint8 ones. What a
    profile with ``backend: onnxruntime`` times, so that a search times the integer kernels a user
    deploys, not PyTorch's fake quantization."""
    model = onnx_model(static, x)
    return (uint8_qdq(model, uint8_weights=not cpu_has_vnni()) if device == "cpu" else model).SerializeToString()


def saved_onnx(static: nn.Module | torch.export.ExportedProgram, x: torch.Tensor) -> onnx.ModelProto:
    """The graph ``save_subnet`` writes as ``model.onnx``: ``onnx_model``'s, with its 8-bit pairs'
    zero points written out (``explicit_zero_points``)."""
    return explicit_zero_points(onnx_model(static, x))


def _write_onnx(static: nn.Module | torch.export.ExportedProgram, x: torch.Tensor, path: Path) -> None:
    model = saved_onnx(static, x)
    atomic_write(path, lambda f: f.write(model.SerializeToString()))


def _constant_per_shape(graph, prefix: str, value: int, dtype) -> Callable[[str], str]:
    """A function from a scale's name to the name of a constant ``value`` of ``dtype`` shaped as that
    scale (a zero point), added to ``graph`` once per shape."""
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    names: dict[tuple, str] = {}

    def constant(scale: str) -> str:
        shape = shapes.get(scale, ())
        if shape not in names:
            names[shape] = f"{prefix}{len(names)}"
            graph.initializer.append(onnx.numpy_helper.from_array(np.full(shape, value, dtype), names[shape]))
        return names[shape]

    return constant


# The prefixes of the zero-point constants (0) explicit_zero_points adds, per integer type.
_ZERO_POINTS = {onnx.TensorProto.INT8: ("int8_zero_point_", np.int8),
                onnx.TensorProto.UINT8: ("unsigned_zero_point_", np.uint8)}


def explicit_zero_points(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with the zero point (0) of every int8 (and uint8: an unsigned
    grid) QuantizeLinear -> DequantizeLinear pair written out, as ``model.onnx`` is saved. The
    exporter gives the pairs none (``output_dtype: int8`` instead), and onnxruntime's QDQ fusions
    then assume a uint8 zero point: an int8 pool between two pairs became a QLinearAveragePool of
    int8 and uint8 that failed to load (the ResNet's ``quantize_projection``), and its int8 convs
    stayed float. The same numbers, and TensorRT's form for int8 (zero point 0). The graph passes
    here match pairs without one: ``implicit_zero_points`` undoes it."""
    graph = model.graph
    consumers = _consumers(graph)
    zero_points = {dtype: _constant_per_shape(graph, prefix, 0, np_type)
                   for dtype, (prefix, np_type) in _ZERO_POINTS.items()}
    for q in graph.node:
        dtype = next((a for a in q.attribute if a.name == "output_dtype"), None)
        if q.op_type != "QuantizeLinear" or dtype is None or dtype.i not in zero_points or len(q.input) > 2:
            continue
        zero_point = zero_points[dtype.i]
        q.attribute.remove(dtype)  # the zero point's type sets the output type
        for node in [q, *(n for n in consumers.get(q.output[0], []) if n.op_type == "DequantizeLinear")]:
            if len(node.input) == 2:
                node.input.append(zero_point(node.input[1]))
    return model


def implicit_zero_points(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with the zero points ``explicit_zero_points`` wrote taken out again
    (``output_dtype`` back on the quantizers): the form the graph passes here match."""
    graph = model.graph
    zeros = {t.name: dtype for t in graph.initializer for dtype, (prefix, _) in _ZERO_POINTS.items()
             if t.name.startswith(prefix)}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) == 3 and node.input[2] in zeros:
            dtype = zeros[node.input[2]]
            del node.input[2]
            if node.op_type == "QuantizeLinear":
                node.attribute.append(onnx.helper.make_attribute("output_dtype", dtype))
    kept = [t for t in graph.initializer if t.name not in zeros]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


_SIGNED, _BYTES = (onnx.TensorProto.INT8,), (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)  # 8-bit grids

# Ops between a conv and the quantizer of the next layer through which that quantizer's grid also
# fits the conv's output: they keep magnitudes (ReLU and hard-swish are the identity on large
# positive values and bounded below; a residual sum is of the same order as its branch; a max pool
# picks one of its inputs). Not Mul: squeeze-excitation's gate shrinks its input, whose range the
# product's grid would clip. ReLU and max pool also commute with rounding and clipping (monotone):
# rounded before them, the values they pass on are the ones rounded after them.
_GRID_KEEPING_OPS = ("Relu", "MaxPool", "HardSwish", "Add")
_COMMUTING_OPS = ("Relu", "MaxPool")


def integer_convs(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with every 8-bit convolution in the form onnxruntime runs as an
    integer kernel (QLinearConv: 8-bit input, int8 weight, int32 bias, a QuantizeLinear on its output).

    The fake-quantized conv computes ``bn(conv(Q(x), Q(W)))``, then an activation, and its value
    is next rounded by the input quantizer of the layer it flows into (scale ``s``, learned in QAT).
    Here: a following batch norm is folded into the per-channel weight scales (``Q(W) * a`` has the
    same integers at scale ``s_w * |a|``, so this is exact) and into a bias, rounded to int32 at the
    accumulator's scale ``s_x * s_w`` (an error far below a step of the output); the conv's output
    is requantized onto ``s`` itself. After a ReLU or a max pool, which commute with rounding on a
    symmetric grid (and on an unsigned grid with its clipping at 0), the result is the fake-quantized
    one exactly; after hard-swish or a residual sum it is within one step of ``s`` (the extra rounding
    before them; a sum that reaches an unsigned grid gets the signed grid of its range, step ``2 s``,
    as the conv's own output has a sign). A conv whose output reaches no 8-bit
    quantizer through such ops (a squeeze-excitation block's depthwise conv, whose output the gate
    shrinks; the last block before the float head) is requantized onto a grid its batch norm's
    statistics give, as no quantizer of the model fits it and ``save_subnet`` has no data to
    calibrate one; without a batch norm either (squeeze-excitation's expansion, 1x1 pixels) it
    keeps a float output. Weights are stored as their int8 integers.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)

    def const(name: str) -> np.ndarray | None:
        return onnx.numpy_helper.to_array(inits[name]) if name in inits else None

    def byte_pair(dq, types=_BYTES) -> tuple[str, np.ndarray] | None:
        """(input of the QuantizeLinear, scale) of an unclipped 8-bit pair (of ``types``) ending in ``dq``."""
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or _output_dtype(q) not in types or len(q.input) > 2:
            return None
        scale = const(q.input[1])
        return None if scale is None else (q.input[0], scale.astype(np.float32))

    def next_grid(name: str) -> tuple[str, int, bool] | None:
        """The scale and integer type of the first 8-bit input quantizer that ``name`` reaches through
        grid-keeping ops, and whether only ReLUs and max pools lie between; None where quantizers of
        two grids are reached first (one grid would clip or round again what the other reads)."""
        frontier = [(name, True)]
        for _ in range(3):
            users = [(u, relus) for n, relus in frontier for u in consumers.get(n, [])]
            reached = [(q, relus) for q, relus in users if q.op_type == "QuantizeLinear" and
                       consumers.get(q.output[0]) and all(byte_pair(dq) for dq in consumers[q.output[0]]) and
                       const(q.input[1]) is not None and const(q.input[1]).ndim == 0]
            if reached:
                if len({(float(const(q.input[1])), _output_dtype(q)) for q, _ in reached}) > 1:
                    return None
                q, relus = reached[0]
                return q.input[1], _output_dtype(q), relus
            # a max pool only where all it feeds is one grid's quantizers (two grids: None above); a
            # float reader of the pool would get that grid's rounding and clipping too
            frontier = [(u.output[0], relus and u.op_type in _COMMUTING_OPS) for u, relus in users
                        if u.op_type in _GRID_KEEPING_OPS and
                        (u.op_type != "MaxPool" or _one_grid_reads(u.output[0], consumers, inits))]
        return None

    def add(name: str, array: np.ndarray) -> str:
        graph.initializer.append(onnx.numpy_helper.from_array(array, name))
        return name

    rewritten: dict[int, list] = {}  # id(conv) -> the nodes that replace it
    dropped: set[int] = set()
    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        x_pair, w_pair = byte_pair(producer.get(conv.input[0])), byte_pair(producer.get(conv.input[1]), _SIGNED)
        weight = w_pair and const(w_pair[0])
        if x_pair is None or weight is None or x_pair[1].ndim != 0:
            continue
        w_scale = w_pair[1].reshape(-1, *[1] * (weight.ndim - 1))
        integers = np.clip(np.rint(weight / w_scale), -128, 127)  # QuantizeLinear's rounding: half to even
        bias = const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(len(weight), np.float32)
        if bias is None:
            continue
        w_scale, out = w_scale.reshape(-1), conv.output[0]
        users, bn = consumers.get(out, []), None
        if len(users) == 1 and users[0].op_type == "BatchNormalization" and \
                all(const(n) is not None for n in users[0].input[1:]):
            bn = users[0]
            gamma, beta, mean, var = (const(n).astype(np.float64) for n in bn.input[1:5])
            eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
            a = gamma / np.sqrt(var + eps)
            bias = (bias - mean) * a + beta
            sign = np.where(a < 0, -1.0, 1.0)  # scales stay positive; the integers (|n| <= 127) flip
            integers = integers * sign.reshape(w_scale.shape + (1,) * (weight.ndim - 1))
            w_scale = np.maximum(w_scale * np.abs(a), np.finfo(np.float32).tiny)
            dropped.add(id(bn))
            out = bn.output[0]
        weight_dq = producer[conv.input[1]]  # the weight's pair: constant integers from here on
        dropped.update({id(weight_dq), id(producer[weight_dq.input[0]])})
        prefix = conv.output[0]
        w_int = add(f"{prefix}.weight_int8", integers.astype(np.int8))
        w_s = add(f"{prefix}.weight_scale", w_scale.astype(np.float32))
        nodes = [onnx.helper.make_node("DequantizeLinear", [w_int, w_s], [f"{prefix}.weight"], axis=0)]
        grid, dtype = next_grid(out), onnx.TensorProto.INT8
        scale = grid and grid[0]
        if grid and grid[1] == onnx.TensorProto.UINT8 and grid[2] and \
                all(u.op_type in _COMMUTING_OPS for u in consumers.get(out, [])):
            dtype = grid[1]  # read through ReLUs and max pools only: the unsigned grid clips what ReLUs zero
        elif grid and grid[1] == onnx.TensorProto.UINT8:
            # an unsigned grid reached through a residual sum or hard-swish: the conv's own output has
            # a sign, so it goes on the signed grid of the same range (twice the step) until then
            scale = add(f"{prefix}.output_scale", 2 * const(scale).astype(np.float32))
        if scale is None and bn is not None:
            # No quantizer downstream, but a batch norm: on the training data its output has mean
            # beta and standard deviation |gamma| per channel, so that the grid reaching 6 of them
            # above the largest mean holds it (data-free, as DFQ ranges activations).
            reach = np.max(np.abs(beta) + 6 * np.abs(gamma))
            scale = add(f"{prefix}.output_scale", np.array(max(reach / 127, 1e-8), np.float32))
        if scale is None:
            b = add(f"{prefix}.bias", bias.astype(np.float32))
            conv_out = out
        else:
            acc_scale = (x_pair[1] * w_scale).astype(np.float32)
            b_int = add(f"{prefix}.bias_int32", np.rint(bias / acc_scale).clip(-2 ** 31, 2 ** 31 - 1).astype(np.int32))
            b_s = add(f"{prefix}.bias_scale", acc_scale)
            nodes.append(onnx.helper.make_node("DequantizeLinear", [b_int, b_s], [f"{prefix}.bias"], axis=0))
            b, conv_out = f"{prefix}.bias", f"{prefix}.accumulated"
        new_conv = onnx.helper.make_node("Conv", [conv.input[0], f"{prefix}.weight", b], [conv_out], name=conv.name)
        new_conv.attribute.extend(conv.attribute)
        nodes.append(new_conv)
        if scale is not None:
            nodes += [onnx.helper.make_node("QuantizeLinear", [conv_out, scale], [f"{prefix}.requantized"],
                                            output_dtype=dtype),
                      onnx.helper.make_node("DequantizeLinear", [f"{prefix}.requantized", scale], [out])]
        rewritten[id(conv)] = nodes
    kept = [n for node in graph.node if id(node) not in dropped for n in rewritten.get(id(node), [node])]
    _replace_nodes(graph, kept)
    return model


def integer_sums(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with a residual sum of two 8-bit grids (a requantized conv output
    and a skip read through a quantizer, ``quantize_skip``) rounded onto the grid of the 8-bit
    quantizer it reaches, directly or through ReLU: ``QuantizeLinear -> DequantizeLinear`` after the
    Add, which onnxruntime then runs as QLinearAdd (and ``uint8_qdq`` the ReLU as an integer Max, or
    as nothing on an unsigned grid). Exact: every reader rounds the sum onto that grid anyway, and
    ReLU commutes with the symmetric rounding (an unsigned grid's rounding includes it). A sum with
    any other reader (a float layer, a 4-bit block, a projection's pool that reads the float sum:
    without ``quantize_projection``) stays float. Part of ``uint8_qdq`` only: ``model.onnx`` keeps the
    float Add, which its readers round the same way (before ``explicit_zero_points``, an int8 sum
    there made onnxruntime 1.32 build a QLinearAdd of int8 and uint8 inputs and fail to load it)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)

    def on_8_bit_grid(name: str) -> bool:
        dq = producer.get(name)
        q = dq is not None and dq.op_type == "DequantizeLinear" and producer.get(dq.input[0])
        return bool(q) and q.op_type == "QuantizeLinear" and q.input[0] not in inits and _output_dtype(q) in _BYTES

    inserted: dict[int, list] = {}
    for add in [n for n in graph.node if n.op_type == "Add"]:
        if not all(on_8_bit_grid(name) for name in add.input):
            continue
        readers = consumers.get(add.output[0], [])
        relu = readers[0] if len(readers) == 1 and readers[0].op_type == "Relu" else None
        grid = _one_grid_reads(relu.output[0] if relu else add.output[0], consumers, inits)
        if grid is None:
            continue
        scale, dtype = grid
        total = add.output[0]
        add.output[0] = f"{total}.unrounded"
        inserted[id(add)] = [add,
                             onnx.helper.make_node("QuantizeLinear", [add.output[0], scale], [f"{total}.requantized"],
                                                   output_dtype=dtype),
                             onnx.helper.make_node("DequantizeLinear", [f"{total}.requantized", scale], [total])]
    if inserted:
        _replace_nodes(graph, [n for node in graph.node for n in inserted.get(id(node), [node])])
    return model


def _one_grid_reads(name: str, consumers: dict, inits: dict) -> tuple[str, int] | None:
    """The scale and integer type of the one unclipped 8-bit per-tensor quantizer every reader of
    ``name`` is (None if a reader is anything else, or two grids read it)."""
    readers = consumers.get(name, [])
    if not readers or any(
            q.op_type != "QuantizeLinear" or len(q.input) != 2 or q.input[1] not in inits or
            _output_dtype(q) not in _BYTES or
            any(dq.op_type != "DequantizeLinear" for dq in consumers.get(q.output[0], []))
            for q in readers):
        return None
    grids = {(q.input[1], _output_dtype(q)) for q in readers}
    if len(grids) != 1:
        return None
    grid = grids.pop()
    return grid if not inits[grid[0]].dims else None


def _consumers(graph) -> dict[str, list]:
    """Each value's name -> the nodes that read it."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _output_dtype(node) -> int | None:
    """A QuantizeLinear's ``output_dtype`` attribute (None where it has none)."""
    return next((a.i for a in node.attribute if a.name == "output_dtype"), None)


def _replace_nodes(graph, nodes: list) -> None:
    """``graph`` with ``nodes`` as its nodes, less the initializers and shape records no node uses."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    stale = {v.name for v in graph.value_info} - {out for node in graph.node for out in node.output}
    kept_info = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)


def int8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with every remaining 8-bit weight pair (a linear layer's:
    ``integer_convs`` already did the convs') stored as its int8 integers and a DequantizeLinear:
    the same numbers, a quarter of the bytes, and the weights onnxruntime's u8 x s8 matrix kernel
    reads as they are. Left as ``QuantizeLinear(W) -> DequantizeLinear``, ``uint8_qdq`` would turn
    them into uint8 with zero point 128 like the activations, and u8 x u8 products with a zero
    point per column run about 2x slower: an 8-bit ViT-Ti at the float model's speed instead of
    half its time (docs/quantization.md)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers = _consumers(graph)
    dropped: set[int] = set()
    for q in graph.node:
        dtype = _output_dtype(q)
        dqs = consumers.get(q.output[0], [])
        if q.op_type != "QuantizeLinear" or dtype != onnx.TensorProto.INT8 or len(q.input) > 2 or \
                q.input[0] not in inits or q.input[1] not in inits or \
                not dqs or any(dq.op_type != "DequantizeLinear" for dq in dqs):
            continue  # not an unclipped int8 pair on a constant
        weight = onnx.numpy_helper.to_array(inits[q.input[0]]).astype(np.float32)
        scale = onnx.numpy_helper.to_array(inits[q.input[1]]).astype(np.float32)
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1) % weight.ndim
        if scale.ndim:  # per channel along ``axis``
            scale = scale.reshape([-1 if d == axis else 1 for d in range(weight.ndim)])
        integers = np.clip(np.rint(weight / scale), -128, 127).astype(np.int8)  # QuantizeLinear's rounding
        name = f"{q.input[0]}_int8"
        graph.initializer.append(onnx.numpy_helper.from_array(integers, name))
        for dq in dqs:
            dq.input[0] = name
        dropped.add(id(q))
    kept = [n for n in graph.node if id(n) not in dropped]
    _replace_nodes(graph, kept)
    return model


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """The exporter logs a line per deduplicated initializer at INFO: keep those out of a CLI's output."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def uint8_qdq(model: onnx.ModelProto, uint8_weights: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` whose int8 QuantizeLinear -> DequantizeLinear pairs are uint8 with zero
    point 128 (uint8 pairs of unsigned grids keep zero point 0): the same numbers, for onnxruntime
    on x86 CPUs. There it leaves int8 activations in
    float (onnxruntime 1.32, also with VNNI); with uint8 ones it fuses each pair-fed matrix product
    and conv into an integer kernel (MatMulIntegerToFloat / QLinearMatMul / QLinearConv), a ReLU
    after a pair becomes an integer ``Max`` (nothing on an unsigned grid: ``_integer_relus``);
    residual sums of two grids that reach an 8-bit quantizer are rounded onto its grid
    (``integer_sums``: QLinearAdd), a hard-swish on a grid becomes a product of integers
    (``_integer_hard_swishes``), a squeeze-excitation's product with its gate one too
    (``_quantized_gates``: QLinearMul) and its pool a mean of integers (``_integer_mean_pools``:
    QLinearGlobalAveragePool). Weights (int8 constants since
    ``integer_convs`` and ``int8_weights``) turn uint8 only with ``uint8_weights``: u8 x s8 is
    onnxruntime's default and fast kernel, exact on VNNI CPUs, while without VNNI its int16 pair
    sums may saturate (onnxruntime's advice: u8 x u8 there, which on a VNNI CPU made the convs of a
    MobileNetV3 and a ResNet ~2x slower and the linears of a ViT-Ti too, measured). ``model.onnx``
    keeps int8 pairs at zero point 0 (TensorRT's only form; it reads no unsigned grid).
    """
    model = integer_sums(implicit_zero_points(copy.deepcopy(model)))  # model.onnx as saved, or onnx_model's
    graph = model.graph
    consumers = _consumers(graph)
    zero_point = _constant_per_shape(graph, "uint8_zero_point_", 128, np.uint8)
    unsigned_zero = _constant_per_shape(graph, _ZERO_POINTS[onnx.TensorProto.UINT8][0], 0, np.uint8)

    retyped, unsigned = set(), set()
    for q in graph.node:
        dtype = next((a for a in q.attribute if a.name == "output_dtype"), None)
        pairs = consumers.get(q.output[0], [])
        if q.op_type != "QuantizeLinear" or dtype is None or dtype.i not in _BYTES or \
                not pairs or any(n.op_type != "DequantizeLinear" for n in pairs):
            continue
        # the zero point's type sets the output type: int8 grids become uint8 ones around 128,
        # unsigned grids keep theirs (0)
        signed = dtype.i == onnx.TensorProto.INT8
        q.attribute.remove(dtype)
        for node in [q, *pairs]:
            del node.input[2:]
            node.input.append((zero_point if signed else unsigned_zero)(node.input[1]))
        (retyped if signed else unsigned).add(q.output[0])
    inits = {t.name: t for t in graph.initializer}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]:
        weight = inits[dq.input[0]]  # a layer's int8 weight (integer_convs, int8_weights), one per layer
        if uint8_weights and weight.data_type == onnx.TensorProto.INT8:
            shifted = onnx.numpy_helper.to_array(weight).astype(np.int16) + 128
            weight.CopyFrom(onnx.numpy_helper.from_array(shifted.astype(np.uint8), weight.name))
            del dq.input[2:]
            dq.input.append(zero_point(dq.input[1]))
    kept = [v for v in graph.value_info if v.name not in retyped]  # recorded as int8: let onnxruntime infer
    del graph.value_info[:]
    graph.value_info.extend(kept)
    _integer_max_pools(model, retyped | unsigned)
    _integer_relus(graph)
    _integer_hard_swishes(graph)
    _quantized_gates(graph)
    _integer_mean_pools(model)
    return model


def _integer_max_pools(model: onnx.ModelProto, uint8_quantizers: set[str]) -> None:
    """``MaxPool -> QuantizeLinear`` becomes ``QuantizeLinear -> NhwcMaxPool`` (onnxruntime's uint8
    pool in the channels-last layout of its integer convs, between two Transposes that its layout
    optimizer cancels against its own): the same integers, as rounding and clipping never reorder
    values. onnxruntime moves the quantizer above the pool by itself, but then pools uint8 in NCHW
    with its generic kernel: the ResNet stem's max pool took 2.5 ms of an 8-bit ResNet50's 25 (one
    thread, batch 1), 10% of the whole (docs/quantization.md). Only where every reader of the pool is
    a uint8 quantizer (``uint8_quantizers``: their outputs) and the pool is 2-D."""
    graph = model.graph
    consumers = _consumers(graph)
    rewritten: dict[int, list] = {}
    for pool in [n for n in graph.node if n.op_type == "MaxPool"]:
        qs = consumers.get(pool.output[0], [])
        attributes = [a for a in pool.attribute if a.name != "storage_order"]  # NhwcMaxPool has none
        kernel = next((a.ints for a in attributes if a.name == "kernel_shape"), [])
        if len(pool.output) > 1 and pool.output[1] or len(kernel) != 2 or not qs or \
                any(q.op_type != "QuantizeLinear" or q.output[0] not in uint8_quantizers for q in qs):
            continue
        rewritten[id(pool)] = []
        for q in qs:
            pooled = q.output[0]
            q.input[0], q.output[0] = pool.input[0], f"{pooled}.before_max_pool"
            nhwc_pool = onnx.helper.make_node("NhwcMaxPool", [f"{pooled}.nhwc"], [f"{pooled}.pooled_nhwc"],
                                              name=f"{pool.name}.{pooled}", domain="com.microsoft")
            nhwc_pool.attribute.extend(attributes)
            to_nhwc = onnx.helper.make_node("Transpose", [q.output[0]], [f"{pooled}.nhwc"], perm=[0, 2, 3, 1])
            to_nchw = onnx.helper.make_node("Transpose", [f"{pooled}.pooled_nhwc"], [pooled], perm=[0, 3, 1, 2])
            rewritten[id(q)] = [q, to_nhwc, nhwc_pool, to_nchw]
    if not rewritten:
        return
    _replace_nodes(graph, [n for node in graph.node for n in rewritten.get(id(node), [node])])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))


def _integer_relus(graph) -> None:
    """``DequantizeLinear -> Relu`` (a requantized conv output or sum, then ReLU) becomes
    ``Max(q, zero point) -> DequantizeLinear``: the same numbers, as ReLU keeps a grid's values on
    it, without a round trip through float that costs as much as the integer conv before it; on an
    unsigned grid (zero point 0 of uint8) the ReLU is the identity and goes. A reader that is a
    quantizer of that same grid reads the integers directly; any other reader (a residual sum: the
    ResNet stem's) reads them dequantized, which onnxruntime fuses into its integer kernel
    (QLinearAdd)."""
    producer = {out: node for node in graph.node for out in node.output}
    inits = {t.name: t for t in graph.initializer}
    consumers = _consumers(graph)
    outputs = {v.name for v in graph.output}  # kept under their names

    def unsigned_zero(name: str) -> bool:
        t = inits.get(name)
        return t is not None and t.data_type == onnx.TensorProto.UINT8 and not onnx.numpy_helper.to_array(t).any()

    moved, dropped, renamed = {}, set(), {}
    for relu in [n for n in graph.node if n.op_type == "Relu"]:
        dq = producer.get(relu.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or \
                len(consumers[dq.output[0]]) != 1 or relu.output[0] in outputs:
            continue
        readers = consumers.get(relu.output[0], [])
        same_grid = [q for q in readers if q.op_type == "QuantizeLinear" and q.input[1:] == dq.input[1:] and
                     q.output[0] not in outputs]
        floats = len(readers) > len(same_grid)
        if unsigned_zero(dq.input[2]):  # the identity
            integers = dq.input[0]
            dropped.add(id(relu))
            renamed[relu.output[0]] = dq.output[0]
        else:
            relu.op_type, relu.input[:] = "Max", [dq.input[0], dq.input[2]]
            integers = relu.output[0]
            if floats:  # Max -> DequantizeLinear -> the float readers, under the ReLU's output name
                integers = f"{relu.output[0]}.integer"
                dq.input[0], dq.output[0], relu.output[0] = integers, relu.output[0], integers
                moved[id(dq)], moved[id(relu)] = [], [relu, dq]
        if not floats:
            dropped.add(id(dq))
        for q in same_grid:
            dropped.add(id(q))
            renamed[q.output[0]] = integers

    def resolved(name: str) -> str:  # a renamed value may itself be renamed (chained ReLUs)
        while name in renamed:
            name = renamed[name]
        return name

    kept = [n for node in graph.node if id(node) not in dropped for n in moved.get(id(node), [node])]
    for node in kept:
        node.input[:] = [resolved(name) for name in node.input]
    retyped = {n.output[0] for n in kept if n.op_type == "Max"}  # float before, uint8 now
    kept_info = [v for v in graph.value_info if v.name not in retyped]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    _replace_nodes(graph, kept)  # and the records of the values no node makes now


def _integer_hard_swishes(graph) -> None:
    """``DequantizeLinear -> HardSwish`` on a uint8 grid (scale ``s``, zero point ``z``: a requantized
    conv output) becomes a product of integers that onnxruntime runs as QLinearMul, onto the same grid:
    ``x * g`` with the gate ``g = clip(x / 6 + 1/2, 0, 1)`` read off the integers ``q`` themselves as
    ``clip(q, z - k, z + k)`` on the grid of step ``1 / 2k`` from ``z - k``, ``k = round(3 / s)``. The gate
    saturates exactly (0 below ``-k s``, 1 above ``k s``); between, ``k s`` is 3 within ``s / 2``, which
    moves the gate by at most ``s / 12`` and the product by at most ``s / 4 + s^2 / 24`` before its
    rounding: the output is within one step of hard-swish of the input's integers. Where the grid
    does not reach +-3 (``k > z`` or ``z + k > 255``), or a reader quantizes onto another grid (which
    would round twice), the float hard-swish stays. Float before, it took a dequantize, HardSigmoid,
    Mul and quantize per element: a sixth of an 8-bit MobileNetV3's time (docs/quantization.md).
    Readers that quantize onto the same grid read the product's integers; others (and a graph
    output) read them dequantized."""
    producer = {out: node for node in graph.node for out in node.output}
    inits = {t.name: t for t in graph.initializer}
    consumers = _consumers(graph)
    outputs = {v.name for v in graph.output}

    def scalar(name: str, dtype) -> float | None:
        t = inits.get(name)
        a = None if t is None else onnx.numpy_helper.to_array(t)
        return None if a is None or a.ndim or a.dtype != dtype else a.item()

    def add(name: str, value, dtype) -> str:
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(value, dtype), name))
        return name

    replaced, dropped, renamed = {}, set(), {}
    for hswish in [n for n in graph.node if n.op_type == "HardSwish"]:
        dq = producer.get(hswish.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or len(consumers[dq.output[0]]) != 1:
            continue
        scale, zero = scalar(dq.input[1], np.float32), scalar(dq.input[2], np.uint8)
        if scale is None or zero is None:
            continue
        k = round(3 / scale)
        out = hswish.output[0]
        readers = consumers.get(out, [])
        quantizers = [q for q in readers if q.op_type == "QuantizeLinear"]
        on_grid = [len(q.input) == 3 and (scalar(q.input[1], np.float32), scalar(q.input[2], np.uint8)) ==
                   (scale, zero) for q in quantizers]
        if not 1 <= k <= zero <= 255 - k or not all(on_grid):
            continue
        same_grid = [q for q in quantizers if q.output[0] not in outputs]
        low, high = add(f"{out}.gate_min", zero - k, np.uint8), add(f"{out}.gate_max", zero + k, np.uint8)
        gate_scale = add(f"{out}.gate_scale", 1 / (2 * k), np.float32)
        nodes = [dq,
                 onnx.helper.make_node("Clip", [dq.input[0], low, high], [f"{out}.gate_integers"]),
                 onnx.helper.make_node("DequantizeLinear", [f"{out}.gate_integers", gate_scale, low], [f"{out}.gate"]),
                 onnx.helper.make_node("Mul", [dq.output[0], f"{out}.gate"], [f"{out}.product"]),
                 onnx.helper.make_node("QuantizeLinear", [f"{out}.product", *dq.input[1:]], [f"{out}.integers"])]
        if len(readers) > len(same_grid) or out in outputs:  # float readers: the integers dequantized
            nodes.append(onnx.helper.make_node("DequantizeLinear", [f"{out}.integers", *dq.input[1:]], [out]))
        replaced[id(dq)] = nodes
        dropped.add(id(hswish))
        for q in same_grid:
            dropped.add(id(q))
            renamed[q.output[0]] = f"{out}.integers"
    kept = [n for node in graph.node if id(node) not in dropped for n in replaced.get(id(node), [node])]
    for node in kept:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    _replace_nodes(graph, kept)


_GATES = ("HardSigmoid", "Sigmoid")  # outputs in [0, 1]


def _quantized_gates(graph) -> None:
    """A product ``x * gate`` (squeeze-excitation) of an 8-bit ``x`` and a float gate in [0, 1], whose
    readers all quantize it, gets the gate rounded onto the uint8 grid of step 1/255 (a gate error of
    at most 1/510, ``|x| / 510`` in the product), so that onnxruntime runs the product as QLinearMul
    on integers instead of dequantizing ``x``, multiplying in float and quantizing the result."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    inits = {t.name: t for t in graph.initializer}

    def uint8_quantizer(node) -> bool:
        zero = inits.get(node.input[2]) if node.op_type == "QuantizeLinear" and len(node.input) > 2 else None
        return zero is not None and zero.data_type == onnx.TensorProto.UINT8

    scale, zero = "gate_scale_1_255", "gate_zero_point"
    inserted = {}
    for mul in [n for n in graph.node if n.op_type == "Mul"]:
        first, second = (producer.get(name) for name in mul.input)
        kinds = [None if n is None else n.op_type for n in (first, second)]
        gate_first = kinds[0] in _GATES and kinds[1] == "DequantizeLinear"
        readers = consumers.get(mul.output[0], [])
        if not (gate_first or kinds[1] in _GATES and kinds[0] == "DequantizeLinear") or \
                not readers or not all(uint8_quantizer(r) for r in readers):
            continue
        if gate_first:  # the gate second
            mul.input[:] = list(reversed(mul.input))
        gate = first if gate_first else second
        integers = f"{mul.input[1]}.integers"
        inserted[id(gate)] = [gate, onnx.helper.make_node("QuantizeLinear", [gate.output[0], scale, zero], [integers]),
                              onnx.helper.make_node("DequantizeLinear", [integers, scale, zero], [f"{integers}.dq"])]
        mul.input[1] = f"{integers}.dq"
    if inserted:
        graph.initializer.extend([onnx.numpy_helper.from_array(np.array(value), name)
                                  for name, value in ((scale, np.float32(1 / 255)), (zero, np.uint8(0)))
                                  if name not in inits])
        _replace_nodes(graph, [n for node in graph.node for n in inserted.get(id(node), [node])])


def _integer_mean_pools(model: onnx.ModelProto) -> None:
    """A mean over the height and width of a dequantized 4-D grid whose readers all quantize it (a
    squeeze-excitation's squeeze: the exporter writes ``adaptive_avg_pool2d(x, 1)`` as ReduceMean)
    becomes GlobalAveragePool, the same mean, which onnxruntime fuses with the pairs around it into
    QLinearGlobalAveragePool on the integers (it fuses no ReduceMean): 5-7% of an 8-bit
    MobileNetV3's time, with the dequantization before the pool."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    candidates = []
    for mean in [n for n in graph.node if n.op_type == "ReduceMean"]:
        axes = onnx.numpy_helper.to_array(inits[mean.input[1]]) if mean.input[1:] and mean.input[1] in inits else None
        dq, readers = producer.get(mean.input[0]), consumers.get(mean.output[0], [])
        keepdims = next((a.i for a in mean.attribute if a.name == "keepdims"), 1)
        if axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3] and keepdims and \
                dq is not None and dq.op_type == "DequantizeLinear" and \
                readers and all(r.op_type == "QuantizeLinear" for r in readers):
            candidates.append(mean)
    if not candidates:
        return
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for mean in [m for m in candidates if ranks.get(m.input[0]) == 4]:
        mean.op_type = "GlobalAveragePool"
        del mean.input[1:], mean.attribute[:]
    _replace_nodes(graph, list(graph.node))  # less the axes no node reads now


def save_subnet(net: nn.Module, arch: dict, out_dir: str | os.PathLike, *, metrics: dict | None = None,
                supernet_path: str | None = None, onnx: bool = True, preprocessing: dict | None = None) -> Path:
    """Exports ``arch`` from the supernet ``net`` into ``out_dir`` (replaced if it exists);
    ``preprocessing`` (``Data.preprocessing``) goes into arch.json's ``input`` beside its shape."""
    out_dir = Path(out_dir)
    arch = net.space.validate(arch)
    static = net.export(arch)
    x = example_input(net, arch, batch_size=2)
    with reporting_full_disk(out_dir):  # the temp directory and the renames, beside atomic_write's files
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):  # of a save killed mid-way (kill -9)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
        try:
            save_checkpoint({"format": SUBNET_FORMAT, "version": 1, "model": dict(net.config), "arch": arch,
                             "state_dict": static.state_dict()}, tmp / "model.pt")
            program = exported_program(static, x)
            _write_pt2(program, tmp / "model.pt2")
            if onnx:
                _write_onnx(program, x, tmp / "model.onnx")
            res = arch["resolution"]
            save_json({"model": net.config["name"], "arch": arch, "metrics": metrics or {},
                       "input": {"shape": [1, net.in_chans, res, res], **(preprocessing or {})},
                       "supernet": None if supernet_path is None else str(supernet_path),
                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
                      tmp / "arch.json")
            default_permissions(tmp)
            if out_dir.exists():  # swap: the old directory is removed only once the new one is in place
                old = out_dir.with_name(f".{out_dir.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out_dir, old)
                os.replace(tmp, out_dir)
                shutil.rmtree(old)
            else:
                os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir


def load_subnet(path: str | os.PathLike) -> nn.Module:
    """Rebuilds the static subnet saved in ``model.pt`` (a file, or the subnet directory).

    The module's structure comes from the supernet's own ``export`` run on the meta device (no
    memory, no weights), so it is the exported structure by construction; the weights come from
    the file. The returned module carries ``.arch`` and ``.model_config``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    ckpt = load_checkpoint(path, SUBNET_FORMAT)
    with torch.device("meta"):
        static = build_from_config(ckpt["model"], path,
                                   lambda model: create_supernet_from_config(model).export(ckpt["arch"]))
    static = static.to_empty(device="cpu")
    load_weights(static, ckpt["state_dict"], path)
    static.arch, static.model_config = ckpt["arch"], ckpt["model"]
    return static.eval()


class ExportError(ValueError):
    """A bad command-line value of ``supernet.export``."""


def check_out_dir(out: Path) -> None:
    """``--out`` must be a folder, or a path where one can be made: refused before any work."""
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise ExportError(f"--out {str(out)!r}: {str(existing)!r} is a file; allowed: a folder (made if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"--out {str(out)!r}: {str(existing)!r} is not writable; allowed: a folder you can write")


def parse_archs(space, texts: list[str]) -> list[tuple[str, dict]]:
    """``--arch`` values as (folder name, validated arch); a bad one is named with what is allowed."""
    import json

    from .ofa_arch import parse_arch
    from .space import ArchError

    named = {"largest": space.largest, "smallest": space.smallest, "median": space.median}
    archs = []
    for text in texts:
        if text in named:
            archs.append((text, named[text]()))
            continue
        try:
            arch = parse_arch(space, json.loads(text))
        except json.JSONDecodeError:
            raise ExportError(f"--arch {text!r}; allowed: largest, smallest, median or an arch as JSON (a dict with "
                              f"keys {', '.join(space.keys)}, or OFA's ks, e, d, r)") from None
        except ArchError as err:
            raise ExportError(f"--arch {text!r}: {err}") from None
        archs.append((f"arch{len(archs)}", arch))
    return archs


def main(argv: list[str] | None = None) -> None:
    """``python -m supernet.export SUPERNET [--arch largest|smallest|median|JSON ...] [--out DIR]``:
    exports subnets of a trained supernet, with their test accuracy, MACs and params in arch.json."""
    import argparse
    import signal
    import sys

    from torch.utils.data import DataLoader

    from .checkpoint import CheckpointError, load_supernet
    from .data import DataError, build_data
    from .evaluate import accuracy

    parser = argparse.ArgumentParser(prog="python -m supernet.export", description=main.__doc__)
    parser.add_argument("supernet", help="path of a trained supernet.pt")
    parser.add_argument("--arch", nargs="+", default=["largest", "median", "smallest"],
                        help="largest, smallest, median (median MACs of 200 sampled) or an arch as JSON, in this "
                        "project's form or OFA's ({\"ks\": [...], \"e\": [...], \"d\": [...], \"r\": [224]})")
    parser.add_argument("--out", default=None, help="output folder (default: <supernet dir>/subnets)")
    args = parser.parse_args(argv)

    received = []

    def terminate(signum, frame):  # a scheduler's stop ends the export as Ctrl-C does
        received.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    out = Path(args.out) if args.out else Path(args.supernet).parent / "subnets"
    try:
        check_out_dir(out)
        net = load_supernet(args.supernet)
        archs = parse_archs(net.space, args.arch)
        data_cfg = dict(net.train_config.get("data") or {})
        if "name" not in data_cfg:
            raise CheckpointError(f"{args.supernet!r} does not say which data it was trained on (config.data)")
        data = build_data(data_cfg.pop("name"), **data_cfg)
        test = DataLoader(data.test, batch_size=256)
        print(f"{'subnet':10} {'MACs':>10} {'params':>9} {'test acc':>9}  folder")
        for name, arch in archs:
            metrics = {"accuracy": accuracy(net, arch, test), "macs": net.space.macs(arch),
                       "params": net.space.params(arch)}
            # each subnet folder is renamed into place whole: an interrupt keeps the ones printed above
            folder = save_subnet(net, arch, out / name, metrics=metrics, supernet_path=args.supernet,
                                 preprocessing=data.preprocessing)
            print(f"{name:10} {metrics['macs'] / 1e6:9.2f}M {metrics['params'] / 1e3:8.1f}K "
                  f"{100 * metrics['accuracy']:8.2f}%  {folder}")
    except (CheckpointError, DataError, ExportError) as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        print("\ninterrupted: the subnets listed above are complete; run the command again for the others",
              file=sys.stderr)
        sys.exit(128 + (received[0] if received else signal.SIGINT))


if __name__ == "__main__":
    main()
