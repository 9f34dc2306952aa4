import json
import subprocess
import sys

import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import model_config

import supernet.export as export_mod
from supernet import create_supernet_from_config
from supernet.checkpoint import CheckpointError, save_checkpoint
from supernet.export import cpu_has_vnni, load_subnet, save_subnet, uint8_qdq
from supernet.layers import QuantLinear


def export_vit(tmp_path_factory, bits: list[int], bits_choices=(4, 8, 32)):
    """The digits ViT exported at a mid-sized arch at 12 px with per-block ``bits``, with its
    input and the supernet's own output (elastic layers: autograd on bypasses the static cache)."""
    net = create_supernet_from_config({**model_config("vit"), "bits": list(bits_choices)}, num_classes=10)
    arch = {**net.space.sample(4), "resolution": 12, "depth": 3, "bits": bits}
    x = torch.randn(3, 1, 12, 12)
    net.set_active(arch)
    net.train()(x)  # a training batch sets the input scales of each width from the data
    net.eval()
    out = save_subnet(net, arch, tmp_path_factory.mktemp("subnets") / "s0", metrics={"accuracy": 0.5},
                      supernet_path="runs/train/x/supernet.pt")
    return net, arch, out, x, net(x).detach()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One float subnet, shared by the tests."""
    return export_vit(tmp_path_factory, [32] * 4)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """One subnet with 8-bit, 4-bit and float blocks."""
    return export_vit(tmp_path_factory, [8, 4, 32, 8])


def test_subnet_directory_holds_the_contract_files(exported):
    net, arch, out, _, _ = exported
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "model.onnx", "model.pt", "model.pt2"]
    meta = json.loads((out / "arch.json").read_text())
    assert meta["model"] == "vit" and meta["arch"] == net.space.validate(arch)
    assert meta["metrics"] == {"accuracy": 0.5} and meta["supernet"] == "runs/train/x/supernet.pt"
    assert meta["created"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_pt2_runs_in_a_fresh_process_that_never_imports_the_project(exported, tmp_path):
    _, _, out, x, expected = exported
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch\n"
        f"m = torch.export.load({str(out / 'model.pt2')!r}).module()\n"
        f"y = m(torch.load({str(tmp_path / 'x.pt')!r}))\n"
        f"torch.save(y, {str(tmp_path / 'y.pt')!r})\n"
        "assert not [k for k in sys.modules if k.split('.')[0] in ('supernet', 'search', 'predictors')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=300)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected, atol=1e-5, rtol=0)


def test_onnx_matches_torch(exported):
    _, _, out, x, expected = exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x.numpy()})  # a batch of 3, traced on 2: the batch axis is dynamic
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)
    graph = onnx.load(out / "model.onnx").graph
    assert [(v.name, v.type.tensor_type.shape.dim[0].dim_param) for v in (*graph.input, *graph.output)] == \
        [("input", "batch"), ("logits", "batch")]


@pytest.mark.parametrize("subnet", ["exported", "quantized"])
def test_load_subnet_rebuilds_the_module(subnet, request):
    net, arch, out, x, expected = request.getfixturevalue(subnet)
    module = load_subnet(out / "model.pt")
    assert module.arch == net.space.validate(arch)
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, atol=1e-6, rtol=0)
    assert type(module) is type(net.export(arch))
    quantized = [b < 32 for b in arch["bits"][:arch["depth"]]]
    assert [isinstance(b.mlp.fc1, QuantLinear) for b in module.blocks] == quantized


def test_quantized_blocks_export_as_quantize_dequantize_pairs(quantized):
    _, arch, out, _, _ = quantized
    model = onnx.load(out / "model.onnx")
    assert model.opset_import[0].version == 21
    nodes = model.graph.node
    zero_points = {t.name: t.data_type for t in model.graph.initializer}
    # the integer type: an int8 pair's zero point (written out, explicit_zero_points), else output_dtype
    widths = {n.output[0]: zero_points[n.input[2]] if len(n.input) > 2 else
              next(a.i for a in n.attribute if a.name == "output_dtype")
              for n in nodes if n.op_type == "QuantizeLinear"}
    # per quantized linear layer (4 per block) one pair on its input and one on its weight; block 0 at
    # 8 bits, 1 at 4, 2 float (3 idle). 8-bit weights are stored as their int8 integers (a quarter of
    # the float bytes), so their pairs are a DequantizeLinear of a constant
    int8, int4 = onnx.TensorProto.INT8, onnx.TensorProto.INT4
    assert sorted(widths.values()) == [int8] * 4 + [int4] * 8
    weights = {t.name: t.data_type for t in model.graph.initializer if t.name.endswith("weight_int8")}
    assert sorted(weights.values()) == [int8] * 4
    dequantized = [n.input[0] for n in nodes if n.op_type == "DequantizeLinear"]
    assert sorted(dequantized) == sorted([*widths, *weights])  # every QuantizeLinear feeds a DequantizeLinear


def test_quantized_onnx_and_pt2_match_the_fake_quantized_supernet(quantized, tmp_path):
    net, arch, out, x, expected = quantized
    # onnxruntime runs the same integers and scales (dequantize, then float matrix products), so it
    # differs from torch only by float summation order (~1e-6), as the float export does: same tolerance.
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)
    program = torch.export.load(out / "model.pt2").module()
    torch.testing.assert_close(program(x), expected, atol=1e-6, rtol=0)
    # for x86 onnxruntime: uint8 activation pairs fuse into integer matrix products, still exact with
    # the weights this CPU's kernel is exact with (int8 as stored with VNNI, uint8 without)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    deployed = uint8_qdq(onnx.load(out / "model.onnx"), uint8_weights=not cpu_has_vnni())
    session = ort.InferenceSession(deployed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (fused,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(fused), expected, atol=1e-4, rtol=0)
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert ops.count("MatMulIntegerToFloat") + ops.count("QLinearMatMul") == 4  # the 8-bit block's linears


def test_other_widths_export_as_clipped_int8_pairs(tmp_path_factory):
    net, arch, out, x, expected = export_vit(tmp_path_factory, [3, 6, 32, 32], bits_choices=(3, 6, 32))
    ops = [n.op_type for n in onnx.load(out / "model.onnx").graph.node]
    assert ops.count("QuantizeLinear") == ops.count("Clip") == 16
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)


def test_failed_save_keeps_the_previous_subnet(exported, monkeypatch):
    net, arch, out, _, _ = exported
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export_mod, "_write_onnx", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        save_subnet(net, net.space.smallest(), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_missing_truncated_and_foreign_checkpoints_give_one_line_errors(exported, tmp_path):
    _, _, out, _, _ = exported
    with pytest.raises(CheckpointError, match="does not exist"):
        load_subnet(tmp_path / "nope.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((out / "model.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_subnet(truncated)
    assert "\n" not in str(err.value)
    foreign = save_checkpoint({"format": "someone-else", "weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an ofa-nas/subnet checkpoint"):
        load_subnet(foreign)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not an ofa-nas/subnet checkpoint"):
        load_subnet(tmp_path / "list.pt")
