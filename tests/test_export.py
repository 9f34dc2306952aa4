import json
import subprocess
import sys

import onnxruntime as ort
import pytest
import torch

import supernet.export as export_mod
from supernet.checkpoint import CheckpointError, save_checkpoint
from supernet.export import load_subnet, save_subnet


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One exported subnet of the digits ViT (a mid-sized arch at 12 px), shared by the tests."""
    import yaml
    from conftest import ROOT

    from supernet import create_supernet_from_config

    net = create_supernet_from_config(yaml.safe_load((ROOT / "conf/model/vit.yaml").read_text()), num_classes=10)
    net.eval()
    arch = {**net.space.sample(4), "resolution": 12, "depth": 3}
    out = save_subnet(net, arch, tmp_path_factory.mktemp("subnets") / "s0", metrics={"accuracy": 0.5},
                      supernet_path="runs/train/x/supernet.pt")
    x = torch.randn(3, 1, 12, 12)
    net.set_active(arch)
    expected = net(x).detach()  # the elastic layers (autograd on bypasses the static cache)
    return net, arch, out, x, expected


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
    (logits,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)


def test_load_subnet_rebuilds_the_module(exported):
    net, arch, out, x, expected = exported
    module = load_subnet(out / "model.pt")
    assert module.arch == net.space.validate(arch)
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, atol=1e-6, rtol=0)
    assert type(module) is type(net.export(arch))


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
