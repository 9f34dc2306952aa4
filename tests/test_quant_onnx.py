"""8-bit subnets in onnxruntime and OpenVINO (issue 19): the exported ``model.onnx`` runs its
quantized convolutions and matrix products as integer kernels once onnxruntime has optimized it (or
OpenVINO compiled it), and still computes the fake-quantized PyTorch subnet.

Tolerance. Per layer (tested on small stacks): where a conv's output reaches the next quantizer
through ReLU or max pool the integers are the fake-quantized ones exactly (both commute with
rounding); through hard-swish (or a residual sum) the integer graph rounds once more before
it, so each integer the next layer reads is within one step of the fake-quantized one, and the
next layer's outputs within ``step * sum_i |W_ji|`` (weights dequantized). Whole networks: random
8-bit networks are chaotic (a 1e-6 relative change of the input moves the digits ResNet's logits by
15-20% of quantization's own effect), so one-step differences anywhere spread; the test asks that
the integer graph's logits are nearer the fake-quantized subnet's than those are to the float
subnet's (RMS; measured: 2-13% of it for MobileNetV3 and ViT, ~70% for the chaotic ResNet).
Predicted classes are not compared: random logits are near ties.
"""
import json

import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import model_config
from torch import nn

import supernet.export as export_mod
from hw_profiles.timing import openvino_compiled, openvino_layer_precisions
from supernet import create_supernet_from_config
from supernet.bn import recalibrate_bn
from supernet.export import implicit_zero_points, save_subnet, uint8_qdq
from supernet.layers import QuantConv2d, QuantLinear, quantized_skip
from supernet.layers.squeeze_excite import SqueezeExcite
from supernet.models.resnet import Bottleneck, Projection, Residual

INTEGER_OPS = ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat")


def bits_arch(net, bits: int) -> dict:
    arch = net.space.largest()
    return {**arch, "bits": [bits] * len(arch["bits"])}


def export_8_bit(family: str, out_dir, **options) -> tuple:
    """The family's digits-sized supernet (random weights; ``options`` over its conf/model file) with
    every block at 8 bits: input scales set by a training batch, batch norms recalibrated for the
    8-bit subnet (as evaluation does), exported; with the fake-quantized and the float subnet's
    logits on test images."""
    torch.manual_seed(0)
    net = create_supernet_from_config({**model_config(family), **options}, num_classes=10)
    arch = bits_arch(net, 8)
    res = arch["resolution"]
    images = [torch.randn(32, 1, res, res) for _ in range(3)]
    net.set_active(arch)
    net.train()(images[0])
    recalibrate_bn(net, arch, images[1:2], 1)
    net.eval()
    static = net.export(arch)
    with torch.no_grad():
        fake_quantized = static(images[2])
        floating = net.export(bits_arch(net, 32))(images[2])
    out = save_subnet(net, arch, out_dir / "s8")
    return family, static, out / "model.onnx", images[2], fake_quantized, floating


@pytest.fixture(scope="module")
def once(tmp_path_factory):
    """``once(make, family, **options)``: ``make(family, out_dir, **options)`` (``export_8_bit`` or
    ``saved_8_bit``) run once per distinct model config in this module, as several tests read the
    same export (5-20 s of ONNX export each). Tests read the files, nets and tensors; none changes them."""
    cache = {}

    def get(make, family: str, **options):
        key = (make.__name__, json.dumps({**model_config(family), **options}, sort_keys=True))
        if key not in cache:
            cache[key] = make(family, tmp_path_factory.mktemp(family), **options)
        return cache[key]

    return get


@pytest.fixture(scope="module", params=["mobilenetv3", "resnet", "vit"])
def exported(request, once):
    return once(export_8_bit, request.param)


def optimized_session(model: onnx.ModelProto, path) -> tuple[ort.InferenceSession, list[str]]:
    """A session with onnxruntime's graph optimizations (the default: all), and the op types of the
    graph it optimized to."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3  # not the warning that the optimized model is machine-specific
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, [n.op_type for n in onnx.load(path).graph.node]


def expected_integer_nodes(static) -> int:
    """Every 8-bit conv and linear layer of the subnet but squeeze-excitation's expansion, whose
    output (gated, then multiplied) reaches no quantizer and has no batch norm to range it."""
    expansions = {id(m.conv_expand) for m in static.modules() if isinstance(m, SqueezeExcite)}
    return sum(isinstance(m, (QuantConv2d, QuantLinear)) and m.bits == 8 and id(m) not in expansions
               for m in static.modules())


def float_convs_outside_blocks(family: str, static) -> int:
    """The convs outside the quantized blocks, which stay float: MobileNetV3's stem, first block and
    final expansion (4; its feature mix is a matrix product), the ViT's patch embedding (1), ResNet's
    stem (3) unless ``quantize_stem`` made it 8-bit."""
    if family == "resnet":
        return sum(isinstance(m, nn.Conv2d) and not isinstance(m, QuantConv2d) for m in static.stem.modules())
    return {"mobilenetv3": 4, "vit": 1}[family]


def test_every_8_bit_conv_and_matmul_runs_as_an_integer_kernel(exported, tmp_path):
    family, static, path, _, _, _ = exported
    _, ops = optimized_session(uint8_qdq(onnx.load(path)), tmp_path / "optimized.onnx")
    counts = {op: ops.count(op) for op in INTEGER_OPS if op in ops}
    assert sum(counts.values()) == expected_integer_nodes(static) > 0, counts
    if family != "vit":
        # convolutions as QLinearConv, and no conv of a quantized block left in float but the
        # squeeze-excitations' expansions
        assert counts == {"QLinearConv": expected_integer_nodes(static)}
        float_convs = sum(op in ("Conv", "FusedConv") for op in ops)
        expansions = sum(isinstance(m, SqueezeExcite) for m in static.modules())
        assert float_convs == float_convs_outside_blocks(family, static) + expansions


@pytest.mark.parametrize("exported", ["mobilenetv3"], indirect=True)
def test_hard_swishes_and_squeeze_excitations_of_8_bit_blocks_run_on_integers(exported, tmp_path):
    """Each hard-swish of an 8-bit block and each squeeze-excitation's product with its gate run as
    QLinearMul on integers, its pool as QLinearGlobalAveragePool; only the float layers outside the
    blocks keep a float hard-swish."""
    _, static, path, _, _, _ = exported
    blocks = [b for b in static.blocks if any(isinstance(m, QuantConv2d) and m.bits == 8 for m in b.modules())]
    hard_swishes = sum(isinstance(m, nn.Hardswish) for b in blocks for m in b.modules())
    gates = sum(isinstance(m, SqueezeExcite) for b in blocks for m in b.modules())
    deployed = uint8_qdq(onnx.load(path))
    float_hard_swishes = sum(isinstance(m, nn.Hardswish) for m in static.modules()) - hard_swishes
    assert [n.op_type for n in deployed.graph.node].count("HardSwish") == float_hard_swishes
    _, ops = optimized_session(deployed, tmp_path / "optimized.onnx")
    assert ops.count("QLinearMul") == hard_swishes + gates > 0
    assert ops.count("QLinearGlobalAveragePool") == gates


def hard_swish_between_quantizers(scale: float, output_scale: float | None = None) -> onnx.ModelProto:
    """``input -> int8 pair -> HardSwish -> int8 pair -> output``, as the exporter writes them; the
    second pair on the first's grid unless ``output_scale`` is given."""
    h = onnx.helper
    nodes = [h.make_node("QuantizeLinear", ["input", "scale"], ["q"], output_dtype=onnx.TensorProto.INT8),
             h.make_node("DequantizeLinear", ["q", "scale"], ["x"]),
             h.make_node("HardSwish", ["x"], ["y"]),
             h.make_node("QuantizeLinear", ["y", "output_scale"], ["q2"], output_dtype=onnx.TensorProto.INT8),
             h.make_node("DequantizeLinear", ["q2", "output_scale"], ["output"])]
    scales = [h.make_tensor("scale", onnx.TensorProto.FLOAT, [], [scale]),
              h.make_tensor("output_scale", onnx.TensorProto.FLOAT, [], [output_scale or scale])]
    graph = h.make_graph(nodes, "hard_swish", [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 256])],
                         [h.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 256])], scales)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])


def test_a_hard_swish_read_on_another_grid_stays_float_and_rounds_once(tmp_path):
    """A quantizer of another grid after the hard-swish: the product on the input's grid would be
    rounded twice, so the float hard-swish stays, and the output is torch's rounded once."""
    scale, output_scale = 0.05, 0.03
    n = torch.arange(-128, 128, dtype=torch.float32)
    expected = (nn.functional.hardswish(n * scale) / output_scale).round().clamp(-128, 127) * output_scale
    deployed = uint8_qdq(hard_swish_between_quantizers(scale, output_scale))
    assert "HardSwish" in [node.op_type for node in deployed.graph.node]
    session, _ = optimized_session(deployed, tmp_path / "optimized.onnx")
    (y,) = session.run(None, {"input": (n * scale).view(1, -1).numpy()})
    error = (torch.from_numpy(y).view(-1) - expected).abs()
    # torch and onnxruntime compute hard-swish in different float orders: a near-tie may round apart
    assert error.max() <= output_scale * (1 + 1e-4) and (error > 1e-6).sum() <= 2


@pytest.mark.parametrize("scale", [0.05, 0.07, 0.3, 0.02])
def test_integer_hard_swish_is_within_a_step_of_torch_on_every_integer_of_the_grid(scale, tmp_path):
    """Every int8 input: the deployed hard-swish (a product of integers, its gate ``clip(q, -k, k)``
    on a grid of step 1 / 2k, ``k = round(3 / s)``) against torch's hard-swish rounded onto the grid:
    within one step, equal where both gates saturate. At 0.02 the grid does not reach 3 (k = 150):
    the float hard-swish stays, and is torch's exactly."""
    n = torch.arange(-128, 128, dtype=torch.float32)
    expected = (nn.functional.hardswish(n * scale) / scale).round().clamp(-128, 127) * scale
    deployed = uint8_qdq(hard_swish_between_quantizers(scale))
    session, ops = optimized_session(deployed, tmp_path / "optimized.onnx")
    (y,) = session.run(None, {"input": (n * scale).view(1, -1).numpy()})
    error = (torch.from_numpy(y).view(-1) - expected).abs()
    k = round(3 / scale)
    if k > 127:  # zero point 128: the gate's integers 128 +- k must be uint8
        assert "HardSwish" in [node.op_type for node in deployed.graph.node] and "QLinearMul" not in ops
        assert error.max() <= 1e-6
        return
    assert ops.count("QLinearMul") == 1 and "HardSigmoid" not in ops
    assert error.max() <= scale * (1 + 1e-4)
    saturated = (n * scale >= max(3, k * scale)) | (n * scale <= min(-3, -k * scale))
    assert error[saturated].max() <= 1e-6


def test_integer_graph_computes_the_fake_quantized_subnet(exported, tmp_path):
    """On the graph whose integer kernels are exact on this CPU: u8 x s8 convs with VNNI, u8 x u8
    without (there u8 x s8 pair sums saturate: measured on an AVX2-only AMD EPYC, logits 1.4 off)."""
    _, _, path, x, fake_quantized, floating = exported
    vnni = export_mod.cpu_has_vnni()
    session, _ = optimized_session(uint8_qdq(onnx.load(path), uint8_weights=not vnni), tmp_path / "optimized.onnx")
    (logits,) = session.run(None, {"input": x.numpy()})
    logits = torch.from_numpy(logits)

    def rms(t):
        return t.square().mean().sqrt().item()

    for ours in (logits, int8_logits(path, x, tmp_path)):
        assert rms(ours - fake_quantized) <= rms(fake_quantized - floating)
    # the other conv weight type: the same integer kernels; on VNNI also the same integers
    other, ops = optimized_session(uint8_qdq(onnx.load(path), uint8_weights=vnni), tmp_path / "other.onnx")
    assert ops.count("QLinearConv") == sum(op == "QLinearConv" for op in optimized_session(
        uint8_qdq(onnx.load(path), uint8_weights=not vnni), tmp_path / "optimized.onnx")[1])
    if vnni:
        torch.testing.assert_close(torch.from_numpy(other.run(None, {"input": x.numpy()})[0]), logits,
                                   atol=1e-5, rtol=0)


def test_openvino_runs_every_8_bit_layer_on_integers_and_computes_the_fake_quantized_subnet(exported):
    """model.onnx as saved (int8 pairs, no uint8_qdq): OpenVINO picks int8 kernels for every 8-bit
    conv and linear layer (squeeze-excitation's expansions too: it needs only the input and weight
    pairs), leaves the float layers outside the blocks in float, and its logits (float32 elsewhere,
    not its bf16 default) are as near the fake-quantized subnet's as onnxruntime's must be."""
    pytest.importorskip("openvino")
    family, static, path, x, fake_quantized, floating = exported
    compiled = openvino_compiled(str(path), tuple(x.shape), threads=1, precision="f32")
    quantized = sum(isinstance(m, (QuantConv2d, QuantLinear)) and m.bits == 8 for m in static.modules())
    matrix_products = 2 if family == "mobilenetv3" else 1  # the classifier, and the MobileNetV3's feature mix
    float_layers = float_convs_outside_blocks(family, static) + matrix_products
    assert openvino_layer_precisions(compiled) == {"integer": quantized, "float": float_layers}
    logits = torch.from_numpy(compiled.create_infer_request().infer([x.numpy()])[0].copy())

    def rms(t):
        return t.square().mean().sqrt().item()

    assert rms(logits - fake_quantized) <= rms(fake_quantized - floating)


def test_model_onnx_as_saved_gives_its_int8_pairs_a_zero_point_and_runs_integer_convs(exported, tmp_path):
    """``model.onnx`` writes each int8 pair's zero point out (``explicit_zero_points``): without it
    onnxruntime's fusions assumed uint8 ones, ran every conv of the file as written in float and
    failed to load the ResNet with ``quantize_projection`` (QLinearAveragePool of int8 and uint8)."""
    family, _, path, _, _, _ = exported
    model = onnx.load(path)
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers and all(len(q.input) == 3 for q in quantizers)
    _, ops = optimized_session(model, tmp_path / "as_saved.onnx")
    if family != "vit":
        assert ops.count("QLinearConv") > 0
    assert uint8_qdq(onnx.load(path)).SerializeToString() == uint8_qdq(implicit_zero_points(model)).SerializeToString()


def saved_8_bit(family: str, out_dir, **options):
    """The family's digits-sized supernet with ``options`` over its conf/model file (random weights),
    its largest arch at 8 bits with input scales from a training batch: (net, arch, that batch,
    model.onnx)."""
    torch.manual_seed(0)
    net = create_supernet_from_config({**model_config(family), **options}, num_classes=10)
    arch = bits_arch(net, 8)
    x = torch.randn(8, 1, arch["resolution"], arch["resolution"])
    net.set_active(arch)
    net.train()(x)
    net.eval()
    return net, arch, x, save_subnet(net, arch, out_dir / "s8") / "model.onnx"


def test_a_stem_max_pool_runs_on_the_integers_of_the_next_quantizer(once, tmp_path, monkeypatch):
    """OFA's ResNet stem ends in a 3x3 max pool that the first block reads through its 8-bit input
    quantizer: the deployed graph pools those uint8 integers channels-last (NhwcMaxPool), and its
    logits are onnxruntime's own for the graph that leaves the pool alone (where onnxruntime moves
    the quantizer above the pool itself and pools with its generic NCHW kernel). A float stem: after an
    8-bit one (``quantize_stem``) onnxruntime pools the integers channels-last by itself."""
    _, _, x, path = once(saved_8_bit, "resnet", stem_pool=True, quantize_stem=False)
    weights = not export_mod.cpu_has_vnni()
    session, ops = optimized_session(uint8_qdq(onnx.load(path), uint8_weights=weights), tmp_path / "pooled.onnx")
    assert ops.count("NhwcMaxPool") == 1 and "MaxPool" not in ops
    monkeypatch.setattr(export_mod, "_integer_max_pools", lambda model, quantizers: None)
    reference, ops = optimized_session(uint8_qdq(onnx.load(path), uint8_weights=weights), tmp_path / "plain.onnx")
    assert ops.count("MaxPool") == 1 and "NhwcMaxPool" not in ops
    torch.testing.assert_close(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]),
                               torch.from_numpy(reference.run(None, {"input": x.numpy()})[0]), atol=0, rtol=0)


def test_an_8_bit_stem_is_requantized_once_onto_the_first_blocks_grid_through_relu_and_max_pool(once, tmp_path):
    """``quantize_stem`` with OFA's stem pool: the stem's last conv -> ReLU -> max pool is read by the
    first block's unsigned quantizer. ReLU and max pool commute with rounding, so the conv's output goes
    onto that grid directly (the ReLU is its clipping, the pool runs on its integers) instead of a grid
    of its own and then the block's: onnxruntime runs QLinearConv -> NhwcMaxPool, and the one
    QuantizeLinear left is the image's. (Exactness: the relu-pool stacks below.)"""
    net, _, _, path = once(saved_8_bit, "resnet", stem_pool=True)
    assert net.config["quantize_stem"] and net.config["unsigned_after_relu"]
    _, ops = optimized_session(uint8_qdq(onnx.load(path), uint8_weights=not export_mod.cpu_has_vnni()),
                               tmp_path / "optimized.onnx")
    assert ops.count("NhwcMaxPool") == 1 and ops.count("QuantizeLinear") == 1


@pytest.mark.parametrize("quantize_skip,quantize_projection", [(True, True), (True, False), (False, False)])
def test_residual_sums_between_8_bit_resnet_blocks_run_on_integers(quantize_skip, quantize_projection, once, tmp_path):
    """With ``quantize_skip`` (conf/model/resnet.yaml) an 8-bit block adds its input on conv1's grid,
    so every sum that the next block reads only through its 8-bit quantizers is an integer QLinearAdd
    in the deployed graph; with ``quantize_projection`` too (opt-in: docs/quantization.md) a projection block
    pools its input from that grid as well, so every sum between blocks is integer and the pools are
    QLinearAveragePool. A supernet trained without them (older checkpoints) keeps float sums and
    pools, as it computes. The stem's residual sum, of two 8-bit convs' ReLU outputs (``quantize_stem``)
    that only the stem's last 8-bit conv reads, is integer whatever the blocks' options."""
    net, arch, _, path = once(saved_8_bit, "resnet", quantize_skip=quantize_skip,
                                 quantize_projection=quantize_projection)
    _, ops = optimized_session(uint8_qdq(onnx.load(path)), tmp_path / "optimized.onnx")
    static = net.export(arch)
    blocks = [m for m in static.modules() if isinstance(m, Bottleneck)]
    identity = sum(isinstance(b.downsample, nn.Identity) for b in blocks[1:])
    projections = len(blocks) - 1 - identity
    pools = sum(isinstance(b.downsample, Projection) and isinstance(b.downsample.pool, nn.AvgPool2d)
                for b in blocks)
    assert identity > 0 and projections > 0 and pools > 0
    stem_sum = isinstance(static.stem.residual, Residual) and isinstance(static.stem.residual.fn.conv, QuantConv2d)
    assert ops.count("QLinearAdd") == quantize_skip * identity + quantize_projection * projections + stem_sum
    assert ops.count("QLinearAveragePool") == quantize_projection * pools


def test_unsigned_grids_after_relu_leave_no_relu_op_between_8_bit_resnet_blocks(once, tmp_path):
    """``unsigned_after_relu`` (conf/model/resnet.yaml): every 8-bit conv input but the image follows
    a ReLU and is rounded to an unsigned grid (0..255), so the deployed graph runs the ReLUs as the
    clipping of its uint8 requantizations: no integer ``Max`` but the stem branch's (its ReLU feeds a
    sum, on a signed grid) where the symmetric grids need one per ReLU. ``model.onnx`` as saved
    (uint8 pairs beside the int8 ones) loads in onnxruntime, and both graphs compute the
    fake-quantized subnet."""
    maxes = {}
    for unsigned in (False, True):
        net, arch, x, path = once(saved_8_bit, "resnet", unsigned_after_relu=unsigned)
        convs = [m for m in net.export(arch).modules() if isinstance(m, QuantConv2d)]
        assert [m.signed for m in convs] == [True] + [not unsigned] * (len(convs) - 1)  # the first reads the image
        session, ops = optimized_session(uint8_qdq(onnx.load(path)), tmp_path / "optimized.onnx")
        assert ops.count("QLinearConv") == len(convs)
        maxes[unsigned] = ops.count("Max")
        with torch.no_grad():
            fake_quantized, floating = net.export(arch)(x), net.export(bits_arch(net, 32))(x)
        saved, _ = optimized_session(onnx.load(path), tmp_path / "saved.onnx")
        for graph in (session, saved):  # as near as the test of whole networks above asks
            logits = torch.from_numpy(graph.run(None, {"input": x.numpy()})[0])
            assert (logits - fake_quantized).square().mean() <= (fake_quantized - floating).square().mean()
    relus = sum(isinstance(m, nn.ReLU) for m in net.export(arch).modules())  # three per block, three in the stem
    assert maxes == {False: relus - 1, True: 1}  # signed: all but the last block's (a float sum the head reads)


def convs_after_relu(static: nn.Module) -> dict:
    """Each quantized conv of a static MobileNetV3's blocks -> whether its input is a ReLU's output
    (or, for a projection after squeeze-excitation, a ReLU's output times a gate in [0, 1])."""
    after_relu = {}
    for block in [b for b in static.blocks if any(isinstance(m, QuantConv2d) for m in b.modules())]:
        relu_dw = isinstance(block.conv_dw.act, nn.ReLU)
        after_relu.update({block.conv_pw.conv: False, block.conv_dw.conv: isinstance(block.conv_pw.act, nn.ReLU),
                           block.conv_pwl.conv: relu_dw})
        if isinstance(block.se, SqueezeExcite):
            after_relu.update({block.se.conv_reduce: relu_dw, block.se.conv_expand: isinstance(block.se.act, nn.ReLU)})
    return {m: relu for m, relu in after_relu.items() if isinstance(m, QuantConv2d)}


def smallest_conv_inputs(static: nn.Module, x: torch.Tensor) -> dict:
    """Each quantized conv of ``static`` -> the smallest value of its input on ``x``."""
    smallest = {}

    def record(module, args, output):  # returns None: the output stays
        smallest[module] = args[0].min().item()

    hooks = [m.register_forward_hook(record) for m in static.modules() if isinstance(m, QuantConv2d)]
    with torch.no_grad():
        static(x)
    for hook in hooks:
        hook.remove()
    return smallest


def test_unsigned_grids_after_relu_leave_no_relu_op_in_a_mobilenetv3_but_before_a_float_pool(once, tmp_path):
    """MobileNetV3's ``unsigned_after_relu`` (conf/model/mobilenetv3.yaml): the 8-bit conv inputs
    that are non-negative (after a ReLU, or a ReLU's output times a gate) are on unsigned grids, the
    others signed; the deployed graph then needs an integer ``Max`` only for a ReLU whose output
    reaches no conv directly (a ReLU-stage squeeze-excitation's input, pooled in float), against
    one per ReLU with signed grids; and it computes the fake-quantized subnet."""
    maxes = {}
    for unsigned in (False, True):
        _, static, path, x, fake_quantized, floating = once(export_8_bit, "mobilenetv3",
                                                                    unsigned_after_relu=unsigned)
        after_relu = convs_after_relu(static)
        assert {m: m.signed for m in after_relu} == {m: not (unsigned and relu) for m, relu in after_relu.items()}
        smallest_inputs = smallest_conv_inputs(static, x)
        assert all(smallest_inputs[m] >= 0 for m in after_relu if not m.signed)
        session, ops = optimized_session(uint8_qdq(onnx.load(path)), tmp_path / "optimized.onnx")
        maxes[unsigned] = ops.count("Max")
        logits = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        assert (logits - fake_quantized).square().mean() <= (fake_quantized - floating).square().mean()
    blocks = [b for b in static.blocks if any(isinstance(m, QuantConv2d) for m in b.modules())]
    relus = sum(isinstance(m, nn.ReLU) for b in blocks for m in b.modules())
    relu_gated = sum(isinstance(b.se, SqueezeExcite) and isinstance(b.conv_dw.act, nn.ReLU) for b in blocks)
    assert maxes == {False: relus, True: relu_gated} and 0 < relu_gated < relus


def test_a_quantized_stem_follows_the_first_block_and_runs_on_integers(once, tmp_path):
    """``quantize_stem`` (conf/model/resnet.yaml): the stem's three convs run at 8 bits when the first
    block is quantized (4 bits too), in float otherwise, where the subnet computes what a supernet
    without the option does; the space counts their bits; onnxruntime runs them as QLinearConv."""
    net, arch, x, path = once(saved_8_bit, "resnet", quantize_stem=True)
    stem_convs = [m for m in net.export(arch).stem.modules() if isinstance(m, nn.Conv2d)]
    assert len(stem_convs) == 3 and all(isinstance(m, QuantConv2d) and m.bits == 8 for m in stem_convs)
    four = {**arch, "bits": [4] + arch["bits"][1:]}
    assert all(m.bits == 8 for m in net.export(four).stem.modules() if isinstance(m, QuantConv2d))
    floating = {**arch, "bits": [32] + arch["bits"][1:]}
    assert not any(isinstance(m, QuantConv2d) for m in net.export(floating).stem.modules())
    stem_bits = {c["name"]: c["bits"] for c in net.space.layer_costs(arch) if c["name"].startswith("stem.")}
    assert stem_bits == {"stem.conv1": 8, "stem.residual.fn": 8, "stem.residual.add": 32, "stem.conv2": 8}
    assert all(c["bits"] == 32 for c in net.space.layer_costs(floating) if c["name"].startswith("stem.conv"))

    _, ops = optimized_session(uint8_qdq(onnx.load(path)), tmp_path / "optimized.onnx")
    assert ops.count("QLinearConv") == expected_integer_nodes(net.export(arch)) and "Conv" not in ops

    logits = []  # float subnets: the option changes nothing (fresh supernets: no 8-bit batch moved their norms)
    for option in (True, False):
        torch.manual_seed(0)
        model = create_supernet_from_config({**model_config("resnet"), "quantize_stem": option}, num_classes=10)
        model.eval().set_active(model.space.largest())
        with torch.no_grad():
            logits.append(model(x))
    torch.testing.assert_close(logits[0], logits[1], atol=0, rtol=0)


def int8_logits(path, x, tmp_path) -> torch.Tensor:
    """``model.onnx`` as written (int8 pairs, for TensorRT or an onnxruntime that fuses int8)."""
    session, _ = optimized_session(onnx.load(path), tmp_path / "int8.onnx")
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def quantized_stack(activation: nn.Module, depthwise: bool, signed: bool = True) -> nn.Sequential:
    """8-bit conv -> batch norm (negative scales among its gammas) -> activation -> 8-bit conv
    (whose input grid is unsigned with ``signed=False``)."""
    torch.manual_seed(0)
    first = QuantConv2d(8, 8 if depthwise else 16, 3, padding=1, groups=8 if depthwise else 1, bias=False, bits=8)
    bn = nn.BatchNorm2d(first.out_channels)
    second = QuantConv2d(first.out_channels, 4, 1, bits=8, signed=signed)
    with torch.no_grad():
        bn.weight.uniform_(-2, 2), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
        first.set_scales(torch.tensor(0.03))
        second.set_scales(torch.tensor(0.07))  # 3 / s not an integer (hard-swish's gate)
    return nn.Sequential(first, bn, activation, second).eval()


def relu_max_pool() -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, 2, 1))  # as OFA's ResNet stem ends


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("activation,signed", [(nn.ReLU(), True), (nn.ReLU(), False), (relu_max_pool(), True),
                                               (relu_max_pool(), False), (nn.Hardswish(), True)],
                         ids=["relu", "relu-unsigned", "relu-pool", "relu-pool-unsigned", "hardswish"])
def test_a_requantized_conv_is_exact_through_relu_and_within_a_step_through_hardswish(activation, signed, depthwise,
                                                                                   tmp_path):
    """An unsigned input grid after the ReLU (``unsigned_after_relu``): the ReLU is the grid's own
    clipping, so the deployed graph has no op for it (on a signed grid: an integer ``Max``). A max
    pool after the ReLU commutes with rounding too: the conv goes onto the next grid at once, and
    the pool runs on its integers."""
    stack = quantized_stack(activation, depthwise, signed)
    x = torch.randn(4, 8, 6, 6)
    export_mod._write_onnx(stack, x, tmp_path / "stack.onnx")
    exact_here = uint8_qdq(onnx.load(tmp_path / "stack.onnx"), uint8_weights=not export_mod.cpu_has_vnni())
    session, ops = optimized_session(exact_here, tmp_path / "optimized.onnx")
    assert ops.count("QLinearConv") == 1  # the first; the second's output reaches no quantizer
    exact = not isinstance(activation, nn.Hardswish)
    if exact:
        assert ops.count("Max") == signed and "Relu" not in ops
        assert ops.count("NhwcMaxPool") == isinstance(activation, nn.Sequential)
    else:
        assert ops.count("QLinearMul") == 1 and "HardSigmoid" not in ops
    (y,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = stack(x)
    second = stack[3]
    if exact:
        torch.testing.assert_close(torch.from_numpy(y), expected, atol=1e-5, rtol=0)
    else:
        bound = second.input_scale * second.quantized_weight().abs().sum((1, 2, 3))  # one step per input
        assert ((torch.from_numpy(y) - expected).abs() <= bound.view(1, -1, 1, 1) + 1e-5).all()


class ReadOnTwoGrids(nn.Module):
    """8-bit conv -> batch norm -> ReLU (-> max pool), read by two 8-bit convs of different input
    grids: a narrow one first (range 2.5), then a wide one (range 12.7)."""

    def __init__(self, pool: bool):
        super().__init__()
        self.pool = pool
        torch.manual_seed(0)
        self.first = QuantConv2d(8, 16, 3, padding=1, bias=False, bits=8)
        self.bn = nn.BatchNorm2d(16)
        self.narrow, self.wide = QuantConv2d(16, 4, 1, bits=8), QuantConv2d(16, 4, 1, bits=8)
        with torch.no_grad():
            self.bn.weight.uniform_(-2, 2), self.bn.bias.normal_(), self.bn.running_var.uniform_(0.5, 2)
            self.first.set_scales(torch.tensor(0.03))
            self.narrow.set_scales(torch.tensor(0.02))
            self.wide.set_scales(torch.tensor(0.1))

    def forward(self, x):
        h = torch.relu(self.bn(self.first(x)))
        h = F.max_pool2d(h, 3, 2, 1) if self.pool else h
        return torch.cat([self.narrow(h), self.wide(h)], 1)


@pytest.mark.parametrize("pool", [False, True], ids=["relu", "relu-pool"])
def test_a_conv_read_on_two_grids_keeps_its_own_grid(pool, tmp_path):
    """Requantized onto the narrow reader's grid, the conv's output would reach the wide reader
    clipped at 2.5; where quantizers of two grids read it (through ReLU, or a max pool whose readers
    are not one grid's), the conv keeps its own (batch-norm) grid and the wide reader's outputs stay
    within a step per input of the fake-quantized ones: one rounding of that grid and one of the
    reader's."""
    stack = ReadOnTwoGrids(pool).eval()
    x = torch.randn(4, 8, 8, 8)
    export_mod._write_onnx(stack, x, tmp_path / "stack.onnx")
    deployed = uint8_qdq(onnx.load(tmp_path / "stack.onnx"), uint8_weights=not export_mod.cpu_has_vnni())
    session, _ = optimized_session(deployed, tmp_path / "optimized.onnx")
    (y,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = stack(x)
    reach = (stack.bn.bias.abs() + 6 * stack.bn.weight.abs()).max()  # the conv's own grid (integer_convs)
    weights = stack.wide.quantized_weight().abs().sum((1, 2, 3))
    bound = (reach / 127 / 2 + stack.wide.input_scale) * weights
    error = (torch.from_numpy(y[:, 4:]) - expected[:, 4:]).abs()
    assert (error <= bound.view(1, -1, 1, 1) + 1e-5).all()


class UnsignedSum(nn.Module):
    """``relu(bn(conv(x)) + x) -> conv``, 8-bit on unsigned grids, the skip read on the first conv's
    grid: a ResNet block's sum with ``unsigned_after_relu`` and ``quantize_skip``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first = QuantConv2d(8, 8, 3, padding=1, bits=8, signed=False)
        self.bn = nn.BatchNorm2d(8)
        self.second = QuantConv2d(8, 4, 1, bits=8, signed=False)
        with torch.no_grad():
            self.bn.weight.uniform_(-2, 2), self.bn.bias.normal_(), self.bn.running_var.uniform_(0.5, 2)
            self.first.set_scales(torch.tensor(0.02))
            self.second.set_scales(torch.tensor(0.03))

    def forward(self, x):
        x = x.relu()
        return self.second(torch.relu(self.bn(self.first(x)) + quantized_skip(self.first, x)))


def test_a_conv_before_a_sum_onto_an_unsigned_grid_is_within_a_step(tmp_path):
    """The conv's own output has a sign, so until the sum it goes on the signed grid of the unsigned
    grid's range (step 2 s); the sum (QLinearAdd) then rounds onto the unsigned grid, whose clipping
    is the ReLU: each integer the next conv reads is within one step of the fake-quantized one."""
    stack = UnsignedSum().eval()
    x = torch.randn(4, 8, 6, 6)
    export_mod._write_onnx(stack, x, tmp_path / "stack.onnx")
    deployed = uint8_qdq(onnx.load(tmp_path / "stack.onnx"), uint8_weights=not export_mod.cpu_has_vnni())
    session, ops = optimized_session(deployed, tmp_path / "optimized.onnx")
    assert ops.count("QLinearConv") == ops.count("QLinearAdd") == 1 and "Max" not in ops and "Relu" not in ops
    (y,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = stack(x)
    bound = stack.second.input_scale * stack.second.quantized_weight().abs().sum((1, 2, 3))
    error = (torch.from_numpy(y) - expected).abs()
    assert (error <= bound.view(1, -1, 1, 1) + 1e-5).all() and error.max() > 0  # a step, and not exact


def test_an_onnxruntime_profile_times_the_integer_export_not_fake_quantization(tmp_path):
    """Issue 19 item 2: a `backend: onnxruntime` profile times what deploys. The model it is handed
    for an 8-bit subnet is the export with integer kernels (before: the module, which onnxruntime
    ran as fake quantization in float), and a search's evaluator and a device table time it."""
    from hw_profiles import load_profile
    from search.evaluator import SupernetEvaluator
    from search.measure import deployable

    torch.manual_seed(0)
    net = create_supernet_from_config(model_config("mobilenetv3"), num_classes=10).eval()
    # the smallest subnet (10 blocks, all 8-bit): each dynamo ONNX export here costs seconds per block
    arch = {**net.space.smallest(), "bits": [8] * len(net.space.smallest()["bits"])}
    profile = load_profile("local_cpu", warmup=1, repeats=3, rounds=1)  # onnxruntime: the default
    model, shape = deployable(net, arch, profile)
    assert isinstance(model, bytes) and shape == (1, arch["resolution"], arch["resolution"])
    _, ops = optimized_session(onnx.load_from_string(model), tmp_path / "optimized.onnx")
    assert sum(o in INTEGER_OPS for o in ops) == expected_integer_nodes(net.export(arch))
    assert isinstance(deployable(net, arch, load_profile("local_cpu", backend="torch"))[0], nn.Module)

    images = torch.randn(8, 1, arch["resolution"], arch["resolution"])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(8, dtype=torch.long)),
                                         batch_size=8)
    result = SupernetEvaluator(net, profile, loader)([arch])
    assert result["latency_source"] == ["measured"] and result["latency_ms"][0] > 0


def test_an_openvino_profile_times_model_onnx_with_its_integer_layers(monkeypatch):
    """``backend: openvino``: the model a search's evaluator times for an 8-bit subnet is ``model.onnx``
    as saved, which OpenVINO, compiled as the profile compiles it, runs with int8 kernels."""
    pytest.importorskip("openvino")
    import hw_profiles.timing as timing
    from hw_profiles import load_profile
    from search.evaluator import SupernetEvaluator
    from search.measure import deployable

    torch.manual_seed(0)
    net = create_supernet_from_config(model_config("vit"), num_classes=10).eval()
    arch = bits_arch(net, 8)
    profile = load_profile("local_cpu", backend="openvino", warmup=1, repeats=3, rounds=1)
    model, shape = deployable(net, arch, profile)
    assert isinstance(model, bytes) and shape == (1, arch["resolution"], arch["resolution"])
    counts = openvino_layer_precisions(openvino_compiled(model, (1, *shape), profile.threads))
    assert counts["integer"] == sum(isinstance(m, QuantLinear) and m.bits == 8 for m in net.export(arch).modules()) > 0

    timed = []
    runner = timing._openvino_runner
    monkeypatch.setattr(timing, "_openvino_runner", lambda m, *a: timed.append(m) or runner(m, *a))
    images = torch.randn(8, *shape)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(8, dtype=torch.long)),
                                         batch_size=8)
    result = SupernetEvaluator(net, profile, loader)([arch])
    assert result["latency_source"] == ["measured"] and result["latency_ms"][0] > 0
    assert timed == [model]  # the evaluator timed that export in OpenVINO
