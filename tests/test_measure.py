"""search.measure: a device table made on this machine, read back through a profile's `table:`."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml
from conftest import ROOT, model_config

from hw_profiles import PROFILE_DIR, load_profile, read_table
from search.evaluator import SupernetEvaluator
from search.measure import default_chunk, main
from supernet import create_supernet_from_config
from supernet.checkpoint import SUPERNET_FORMAT, load_supernet, save_checkpoint


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A random tiny ViT supernet saved as supernet.pt, as training would save it."""
    net = create_supernet_from_config(
        dict(name="vit", resolution=[8, 16], patch_size=4, in_chans=3, depth=[1, 2], embed_dim=[16, 24],
             num_heads=[1, 2], head_dim=8, mlp_ratio=[1.0, 2.0]), num_classes=5)
    checkpoint = {"format": SUPERNET_FORMAT, "version": 1, "model": dict(net.config),
                  "space": net.space.to_dict(), "state_dict": net.state_dict()}
    return save_checkpoint(checkpoint, tmp_path / "supernet.pt")


@pytest.fixture
def quick_cpu_yaml(tmp_path):
    """local_cpu with few passes, as a profile file (what --hw takes besides a name)."""
    config = yaml.safe_load((PROFILE_DIR / "local_cpu.yaml").read_text())
    # eager: a table's round trip does not depend on the backend (test_lut times an onnxruntime table)
    config.update(name="quick_cpu", threads=1, warmup=1, repeats=4, rounds=2, backend="torch")
    path = tmp_path / "quick_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_table_round_trip_through_a_device_profile(tiny_checkpoint, quick_cpu_yaml, tmp_path):
    out = main(["--supernet", str(tiny_checkpoint), "--hw", str(quick_cpu_yaml), "--n", "4", "--seed", "3",
                "--chunk", "3", "--out", str(tmp_path / "tables" / "device.csv")])
    net = load_supernet(tiny_checkpoint)
    space = net.space
    rows = read_table(out)
    archs = [row.arch for row in rows]
    assert len(rows) == 6 and archs[:2] == [space.canonical(space.largest()), space.canonical(space.smallest())]
    assert len({space.key(arch) for arch in archs}) == 6 and all(space.canonical(a) == a for a in archs)
    assert all(row.latency_ms > 0 and row.n == 4 for row in rows)

    # The device's own profile (an estimate) with the table: the search reads the measured rows.
    jetson = load_profile("jetson", table=str(out))
    assert jetson.table_rows() == (archs, [row.latency_ms for row in rows])
    result = jetson.lookup(archs[3])
    assert (result.ms, result.source, result.profile) == (rows[3].latency_ms, "table", "jetson")
    evaluator = SupernetEvaluator(net, jetson, loader=None)
    assert evaluator.latency(archs[4]) == (rows[4].latency_ms, "table")


@pytest.mark.parametrize(("hw", "message"), [
    ("jetsn", "unknown hardware profile 'jetsn'"),
    ("jetson", "'jetson' is 'estimated': it cannot time models here. Run this command on that device with --hw "
               "local_cpu"),
])
def test_a_profile_that_cannot_time_here_is_a_one_line_error(tiny_checkpoint, capsys, hw, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--supernet", str(tiny_checkpoint), "--hw", hw])
    assert message in str(exit_info.value.code) and "\n" not in str(exit_info.value.code)


def test_missing_and_foreign_supernets_are_one_line_errors(tmp_path):
    foreign = save_checkpoint({"format": "someone-else"}, tmp_path / "foreign.pt")
    with pytest.raises(SystemExit, match="is not an ofa-nas/supernet checkpoint"):
        main(["--supernet", str(foreign)])
    # The module runs as a program: non-zero exit and the reason on one stderr line, nothing written.
    missing = tmp_path / "nowhere.pt"
    done = subprocess.run([sys.executable, "-m", "search.measure", "--supernet", str(missing), "--out",
                           str(tmp_path / "t.csv")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr == f"error: checkpoint {str(missing)!r} does not exist\n"
    assert not (tmp_path / "t.csv").exists()


def test_bad_counts_are_rejected_by_the_parser(tiny_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--supernet", str(tiny_checkpoint), "--n", "0"])
    assert exit_info.value.code == 2 and "--n: must be an integer >= 1, got '0'" in capsys.readouterr().err


def test_default_chunk_keeps_about_a_gibibyte_of_weights_in_memory():
    def space_of(params: int):
        return SimpleNamespace(largest=dict, params=lambda arch: params)

    assert default_chunk(space_of(10_000)) == 100  # small subnets: many at once, capped
    assert default_chunk(space_of(86_000_000)) == 3  # ViT-B: 344 MB each
    assert default_chunk(space_of(2**30)) == 1  # never zero


def test_the_device_command_loads_only_what_a_device_install_has():
    # on a Jetson or a Raspberry Pi: torch (the device's own build), timm, numpy, pyyaml, tqdm
    code = ("import sys, search.measure; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    search_only = {"pymoo", "xgboost", "sklearn", "scipy", "pandas", "onnxruntime", "openvino", "onnx", "onnxscript",
                   "fvcore", "hydra", "omegaconf", "matplotlib", "tensorboard", "numba", "mlxtend"}
    assert not loaded & search_only, sorted(loaded & search_only)


def test_a_lookup_table_of_a_family_without_table_layers_is_a_one_line_error(tmp_path):
    net = create_supernet_from_config(model_config("resnet"), num_classes=10)
    path = save_checkpoint({"format": SUPERNET_FORMAT, "version": 1, "model": dict(net.config),
                            "space": net.space.to_dict(), "state_dict": net.state_dict()}, tmp_path / "supernet.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(["--lut", "--supernet", str(path), "--out", str(tmp_path / "lut.yaml")])
    message = str(exit_info.value.code)
    assert message == ("error: per-layer lookup tables know the layers of mobilenetv3, vit spaces; "
                       "got a 'resnet' space")
    assert not (tmp_path / "lut.yaml").exists()
