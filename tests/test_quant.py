"""Elastic bit widths: FakeQuantize exact at 32 bits and within a derived bound at 8, one input scale
per width, the ``bits`` dimension in every family, bad widths rejected, unsigned grids."""
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import model_config
from torch import nn

from supernet import ArchError, create_supernet_from_config
from supernet.errors import ConfigError
from supernet.export import onnx_model
from supernet.layers import (
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    ElasticLinear,
    FakeQuantize,
    QuantConv2d,
    QuantLinear,
    attach_quantizers,
)
from supernet.layers.quant import quant_range
from supernet.train import param_groups

FAMILIES = ["vit", "mobilenetv3", "resnet"]  # the digits-sized config of each family


def quantized_linear(in_features=256, out_features=64, bits_choices=(4, 8, 32)):
    layer = ElasticLinear(in_features, out_features)
    attach_quantizers(layer, bits_choices)
    return layer


def set_input_scale(quant: FakeQuantize, bits: int, scale: float) -> None:
    with torch.no_grad():
        quant.log_input_scale[quant.widths.index(bits)] = math.log(scale)
        quant.initialised[quant.widths.index(bits)] = True


def net_of(family: str, **overrides):
    return create_supernet_from_config(model_config(family), num_classes=10, **overrides)


def quantizers(net) -> list[FakeQuantize]:
    return [m for m in net.modules() if isinstance(m, FakeQuantize)]


def test_32_bits_is_bit_exact_with_the_float_layer():
    layer = quantized_linear()
    static = nn.Linear(256, 64)
    static.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("quant.")})
    x = torch.randn(8, 256)
    layer.quant.set_active(32)
    assert torch.equal(layer(x), static(x))
    assert type(layer.to_static()) is nn.Linear
    layer.quant.set_active(8)
    assert not torch.equal(layer(x), static(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_float_arch_is_bit_exact_with_a_float_only_supernet(family):
    # The same weights with and without the bits dimension: quantizers at 32 bits change nothing.
    quant_net, float_net = net_of(family), net_of(family, bits=[32])
    assert quantizers(quant_net) and not quantizers(float_net)
    float_net.load_state_dict(quant_net.state_dict(), strict=False)
    arch = quant_net.space.largest()
    x = torch.randn(2, 1, arch["resolution"], arch["resolution"])
    float_net.set_active(arch)
    quant_net.eval(), float_net.eval()
    assert torch.equal(quant_net(x), float_net(x))


def test_8_bit_error_of_a_random_linear_layer_is_within_the_derived_bound():
    """y = x W^T + b against y' = Q(x) Q(W)^T + b, with Q(x) = x + dx and Q(W) = W + dW. Unclipped
    rounding errs by at most half a step: |dx_i| <= s_x / 2 (s_x = max|x| / 127 clips nothing) and
    |dW_ji| <= s_j / 2 (the observed per-channel scale s_j = max_i |W_ji| / 127). Then
        e_j = sum_i x_i dW_ji + dx_i W_ji + dx_i dW_ji
        |e_j| <= s_j / 2 ||x||_1 + s_x / 2 ||W_j||_1 + n s_x s_j / 4          (worst case),
    and, rounding errors being independent and uniform (variance s^2 / 12),
        E[e_j^2] = s_j^2 / 12 ||x||^2 + s_x^2 / 12 ||W_j||^2 + n s_x^2 s_j^2 / 144.
    For unit Gaussian inputs and W ~ N(0, 1/n) that is an error near 1.3% of the output's RMS."""
    torch.manual_seed(1)
    n, m = 256, 64
    layer = quantized_linear(n, m)
    with torch.no_grad():
        layer.weight.normal_(0, n ** -0.5)
        layer.bias.normal_()
    x = torch.randn(32, n)
    with torch.no_grad():
        exact = x.double() @ layer.weight.double().T + layer.bias.double()
        s_x = x.abs().max().item() / 127
        set_input_scale(layer.quant, 8, s_x)
        layer.quant.set_active(8)
        error = layer(x).double() - exact
    s_x = layer.quant.input_scale().item()  # the float32 scale in force
    s_w = (layer.weight.abs().amax(1) / 127).double()
    w_l1, w_l2 = layer.weight.double().abs().sum(1), layer.weight.double().square().sum(1)
    x_l1, x_l2 = x.double().abs().sum(1, keepdim=True), x.double().square().sum(1, keepdim=True)
    worst = s_w / 2 * x_l1 + s_x / 2 * w_l1 + n * s_x * s_w / 4
    assert (error.abs() <= worst + 1e-5).all()  # (+ float32 accumulation)
    expected_rms = (s_w ** 2 / 12 * x_l2 + s_x ** 2 / 12 * w_l2 + n * s_x ** 2 * s_w ** 2 / 144).mean().sqrt()
    rms = error.square().mean().sqrt()
    assert 0.8 < rms / expected_rms < 1.2
    assert rms / exact.square().mean().sqrt() < 0.02
    # 4 bits: 16 times coarser steps, about 16 times the error
    with torch.no_grad():
        set_input_scale(layer.quant, 4, x.abs().max().item() / 7)
        layer.quant.set_active(4)
        coarse = (layer(x).double() - exact).square().mean().sqrt()
    assert 10 < coarse / rms < 25


def test_weights_are_symmetric_per_output_channel_and_inputs_per_tensor():
    layer = quantized_linear(16, 4)
    with torch.no_grad():
        layer.weight.mul_(torch.tensor([1.0, 10.0, 0.1, 0.0]).unsqueeze(1))  # very unequal channels (one all zero)
    for bits in (4, 8):
        layer.quant.set_active(bits)
        _, qmax = quant_range(bits)
        w = layer.quant.quantize_weight(layer.weight)
        steps = layer.weight.abs().amax(1, keepdim=True).clamp_min(1e-8) / qmax
        levels = w / steps
        assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= qmax + 1e-4
        torch.testing.assert_close(w.abs().amax(1), layer.weight.abs().amax(1))  # each channel's largest weight is kept
        assert (w[3] == 0).all()
        set_input_scale(layer.quant, bits, 0.5)
        x = torch.linspace(-100, 100, 801)
        q = layer.quant.quantize_input(x)
        assert torch.equal(q / 0.5, (q / 0.5).round())  # one scale for the tensor, zero point 0
        assert q.min() == -(qmax + 1) * 0.5 and q.max() == qmax * 0.5  # clipped to the signed grid


def test_switching_bits_keeps_the_other_widths_scales():
    net = net_of("vit").train()
    space = net.space
    optimizer = torch.optim.AdamW(param_groups(net, 0.05), lr=1e-2)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    eight, four = {**space.largest(), "bits": [8] * 4}, {**space.largest(), "bits": [4] * 4}
    for arch in (eight, four):  # the first training batch of each width initialises its scales
        net.set_active(arch)
        net(x)
    qs = quantizers(net)
    assert qs and all(q.initialised.all() for q in qs)
    before = torch.stack([q.log_input_scale.detach().clone() for q in qs])
    weight = net.blocks[0].mlp.fc1.weight.detach().clone()
    net.set_active(four)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    after = torch.stack([q.log_input_scale.detach() for q in qs])
    i4, i8 = qs[0].widths.index(4), qs[0].widths.index(8)
    assert torch.equal(after[:, i8], before[:, i8])  # the 8-bit scales are untouched
    assert (after[:, i4] != before[:, i4]).all()  # the 4-bit ones learned
    assert not torch.equal(net.blocks[0].mlp.fc1.weight, weight)  # the float weights are shared


def test_first_training_batch_initialises_a_width_by_least_squared_error():
    layer = quantized_linear(64, 8).train()
    x = torch.randn(256, 64)
    x[0, 0] = 40.0  # an outlier: covering it would waste most levels
    layer.quant.set_active(4)
    layer(x)
    assert layer.quant.initialised.tolist() == [True, False]
    scale = layer.quant.input_scale().item()
    assert 0.2 < scale * 7 < 10  # clips the outlier, covers the Gaussian bulk
    layer.eval()
    layer.quant.set_active(8)
    layer(x)
    assert layer.quant.initialised.tolist() == [True, False]  # evaluation never initialises


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_the_bits_dimension(family):
    net = net_of(family)
    space = net.space
    assert "bits" in space.keys and space.choices()["bits"] == [4, 8, 32]
    assert set(space.largest()["bits"]) == {32} and set(space.smallest()["bits"]) == {4}
    assert any(n.startswith("bits[") for n in space.feature_names())
    arch = space.sample(3)
    costs = space.layer_costs(arch)
    assert {c["bits"] for c in costs} <= {4, 8, 32}
    assert space.model_size_bytes(arch) == sum(c["params"] * c["bits"] // 8 for c in costs)
    assert space.macs({**arch, "bits": space.largest()["bits"]}) == space.macs(arch)  # bits change no MACs
    eight = {**space.largest(), "bits": [8] * len(arch["bits"])}
    assert space.model_size_bytes(eight) < space.model_size_bytes(space.largest())
    # the layers the cost table puts at a block's width are the ones the exported net quantizes
    static = net.export(eight)
    quantized_layers = [m for m in static.modules() if isinstance(m, (QuantLinear, QuantConv2d))]
    assert quantized_layers and all(m.bits == 8 for m in quantized_layers)
    assert len(quantized_layers) == sum(c["bits"] == 8 for c in space.layer_costs(eight))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bit_width_outside_the_choices_raises_arch_error(family):
    net = net_of(family)
    arch = net.space.largest()
    bits = list(arch["bits"])
    bits[1] = 6
    with pytest.raises(ArchError, match=r"'bits\[1\]': got 6, allowed: \[4, 8, 32\]"):
        net.set_active({**arch, "bits": bits})
    assert net.active_arch == arch


@pytest.mark.parametrize("choices, message", [([4, 16, 32], "16 is not allowed"), ([4, 8], "32 \\(float\\) is missing"),
                                              ([1, 32], "1 is not allowed")])
def test_bad_bits_choices_name_the_value_and_what_is_allowed(choices, message):
    with pytest.raises(ConfigError, match=f"bits choices .*{message}; allowed: integers 2..8 and 32"):
        net_of("vit", bits=choices)


def test_quantized_convolutions_export_their_quantization():
    for layer in (ElasticConv2d(8, 16, 3, padding=1), ElasticDepthwiseConv2d(8, [3, 5])):
        attach_quantizers(layer, (4, 8, 32))
        layer.eval().quant.set_active(4)
        x = torch.randn(2, 8, 6, 6)
        static = layer.to_static()
        assert isinstance(static, QuantConv2d) and static.bits == 4
        with torch.no_grad():
            assert torch.equal(static(x), layer(x))


def test_other_widths_than_4_and_8_export_exactly():
    net = net_of("vit", bits=[3, 6, 32]).eval()
    arch = {**net.space.largest(), "bits": [3, 6, 32, 3]}
    net.set_active(arch)
    x = torch.randn(2, 1, 16, 16)
    expected = net(x).detach()
    with torch.no_grad():
        assert torch.equal(net.export(arch)(x), expected)
    assert np.isfinite(expected.numpy()).all()


def test_an_unsigned_input_grid_clips_at_zero_with_twice_the_levels_and_exports_exactly(tmp_path):
    """``signed=False`` (``unsigned_after_relu``): inputs rounded to ``[0, 2^b - 1] * scale``, the
    static layer keeps the grid, and ONNX holds it as uint4 / uint8 pairs (a Clip of the uint8
    integers for other widths) that onnxruntime computes as PyTorch does."""
    layer = ElasticConv2d(8, 16, 3, padding=1)
    attach_quantizers(layer, (3, 4, 8, 32), signed=False)
    x = torch.linspace(-200, 200, 1601)
    for bits in (3, 4, 8):
        layer.quant.set_active(bits)
        set_input_scale(layer.quant, bits, 0.5)
        q = layer.quant.quantize_input(x)
        assert torch.equal(q / 0.5, (q / 0.5).round())
        assert q.min() == 0 and q.max() == (2 ** bits - 1) * 0.5
    images = torch.randn(2, 8, 6, 6).relu()
    for bits, dtype in ((3, onnx.TensorProto.UINT8), (4, onnx.TensorProto.UINT4), (8, onnx.TensorProto.UINT8)):
        layer.eval().quant.set_active(bits)
        static = layer.to_static()
        assert isinstance(static, QuantConv2d) and not static.signed
        with torch.no_grad():
            expected = layer(images)
            assert torch.equal(static(images), expected)
        model = onnx_model(static, images)
        types = [next(a.i for a in n.attribute if a.name == "output_dtype") for n in model.graph.node
                 if n.op_type == "QuantizeLinear" and n.input[0] == "input"]
        assert types == [dtype]
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        torch.testing.assert_close(torch.from_numpy(session.run(None, {"input": images.numpy()})[0]), expected,
                                   atol=1e-4, rtol=0)
