"""Per-layer lookup-table profiles (kind: lut), the table builder (search.measure --lut), a search
with a lut profile, and the OFA Note10 problem.

The check values are those of ../shared/benchmarks/README.md (OFA's own figures); the tests that
need OFA's files skip when that folder is absent (a clean clone without the shared data).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from conftest import ROOT, model_config

from hw_profiles import PROFILE_DIR, ProfileError, load_profile
from hw_profiles.lut import LookupTable, layer_key, write_lut
from supernet import ModelConfigError, create_supernet_from_config, space_from_config
from supernet.checkpoint import SUPERNET_FORMAT, save_checkpoint

NOTE10 = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "ofa_note10"
needs_note10 = pytest.mark.skipif(not NOTE10.is_dir(), reason=f"OFA Note10 data not found at {NOTE10}")
RESOLUTIONS = (160, 176, 192, 208, 224)


@pytest.fixture(scope="module")
def note10():
    from search.benchmarks import ofa_note10

    return ofa_note10(NOTE10)


def at(arch, resolution):
    return {**arch, "resolution": resolution}


@needs_note10
def test_note10_lut_reproduces_ofa_check_values(note10):
    from search.lut import lut_layers

    space, profile = note10.space, note10.profile
    largest = [47.77, 58.04, 67.56, 81.19, 92.40]
    smallest = [9.89, 11.72, 13.33, 15.83, 17.77]
    for r, big, small in zip(RESOLUTIONS, largest, smallest, strict=True):
        result = profile.latency_ms(layers=lut_layers(space, at(space.largest(), r)), resolution=r)
        assert (result.source, result.profile) == ("lut", "note10")
        assert result.ms == pytest.approx(big, abs=0.005)
        assert profile.latency_ms(layers=lut_layers(space, at(space.smallest(), r)), resolution=r).ms == \
            pytest.approx(small, abs=0.005)
    # the exact objective the search uses is the same sum
    assert note10.latency([at(space.largest(), 160)])[0] == pytest.approx(47.77, abs=0.005)


@needs_note10
def test_ofa_accuracy_predictor_reproduces_check_values(note10):
    space = note10.space
    largest = [0.8075, 0.8195, 0.8271, 0.8332, 0.8359]
    smallest = [0.7531, 0.7625, 0.7704, 0.7749, 0.7774]
    archs = [at(space.largest(), r) for r in RESOLUTIONS] + [at(space.smallest(), r) for r in RESOLUTIONS]
    got = note10.evaluate(archs)["accuracy"]
    assert got == pytest.approx(largest + smallest, abs=5e-5)


@needs_note10
def test_every_subnet_of_the_space_has_its_layers_in_the_table(note10):
    import numpy as np

    rng = np.random.default_rng(0)
    latencies = note10.latency([note10.space.sample(rng) for _ in range(200)])
    assert ((latencies > 9.89 - 1e-6) & (latencies < 92.40 + 1e-6)).all()


@needs_note10
def test_note10_layer_keys_are_ofas(note10):
    from search.lut import lut_layers

    keys = [layer_key(layer) for layer in lut_layers(note10.space, at(note10.space.largest(), 224))]
    assert keys[:2] == ["Conv-input:224x224x3-output:112x112x24",
                        "expanded_conv-input:112x112x24-output:112x112x24-expand:24-kernel:3-stride:1-idskip:1"
                        "-se:0-hs:0"]
    assert keys[2] == "expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:7-stride:2-idskip:0-se:0-hs:0"
    assert keys[-4:] == ["Conv_1-input:7x7x192-output:7x7x1152", "AvgPool2D-input:7x7x1152-output:1x1x1152",
                         "Conv_2-input:1x1x1152-output:1x1x1536", "Logits-input:1x1x1536-output:1000"]
    assert len(keys) == 2 + 20 + 4


@needs_note10
def test_the_builder_would_time_exactly_the_layers_ofa_measured_on_the_note10(note10):
    from search.lut import lut_cover, lut_layers

    for r in RESOLUTIONS:  # OFA's table of a resolution: one entry per layer geometry of the w1.2 space
        ours = {layer_key(layer) for arch in lut_cover(note10.space) if arch["resolution"] == r
                for layer in lut_layers(note10.space, arch)}
        assert ours == set(note10.profile.lookup_table.table_for(r)), r


def test_missing_layer_names_the_key(tmp_path):
    path = write_lut(tmp_path / "t.yaml", {"Conv-input:8x8x3-output:4x4x8": {"count": 3, "mean": 1.5, "std": 0.1}})
    table = LookupTable.load(path)
    assert table.latency_ms(["Conv-input:8x8x3-output:4x4x8"]) == 1.5
    with pytest.raises(ProfileError, match=r"layer 'Logits-input:1x1x8-output:10' is not in the lookup table"):
        table.latency_ms([{"op": "Conv", "input": (8, 8, 3), "output": (4, 4, 8)},
                          {"op": "Logits", "input": [1, 1, 8], "output": 10}])


def test_a_folder_holds_one_table_per_resolution(tmp_path):
    for r, ms in ((32, 1.0), (64, 4.0)):
        write_lut(tmp_path / f"{r}_lookup_table.yaml", {f"Conv-input:{r}x{r}x3": {"count": 1, "mean": ms, "std": 0}})
    table = LookupTable.load(tmp_path)
    assert table.resolutions == [32, 64]
    assert table.latency_ms(["Conv-input:64x64x3"], resolution=64) == 4.0
    with pytest.raises(ProfileError, match="no table for resolution 48; resolutions: 32, 64"):
        table.latency_ms(["Conv-input:64x64x3"], resolution=48)
    with pytest.raises(ProfileError, match="pass resolution="):
        table.latency_ms(["Conv-input:64x64x3"])


def test_lut_profile_validation(tmp_path):
    path = write_lut(tmp_path / "t.yaml", {"Conv": {"count": 1, "mean": 2.0, "std": 0}})
    profile = load_profile({"name": "mine", "kind": "lut", "lut": str(path)})
    assert profile.latency_ms(layers=["Conv", "Conv"]).ms == 4.0
    with pytest.raises(ProfileError, match="missing field 'lut' \\(required for kind 'lut'\\)"):
        load_profile({"name": "mine", "kind": "lut"})
    with pytest.raises(ProfileError, match="field 'lut': not found"):
        load_profile({"name": "mine", "kind": "lut", "lut": str(tmp_path / "nothing")})
    with pytest.raises(ProfileError, match="pass layers="):
        profile.latency_ms(arch={"resolution": 32})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"Conv": {"count": 1, "mean": "fast"}}))
    with pytest.raises(ProfileError, match="entry 'Conv' needs a finite mean >= 0"):
        load_profile({"name": "mine", "kind": "lut", "lut": str(bad)}).latency_ms(layers=["Conv"])


def test_packaged_note10_profile_names_the_shared_folder():
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "hw" / "note10.yaml").read_text())
    assert (config["name"], config["kind"], config["lut"]) == ("note10", "lut", "../shared/benchmarks/ofa_note10")


# -- building a table on this machine: python -m search.measure --lut --------------------------------
TINY_VIT = dict(name="vit", resolution=[8, 16], patch_size=4, in_chans=1, depth=[1, 2], embed_dim=[16, 24],
                num_heads=[1, 2], head_dim=8, mlp_ratio=[1.0, 2.0])
TINY_MBV3 = dict(name="mobilenetv3", resolution=[8, 12], in_chans=1, ks=[3, 5], expand=[3, 6], depth=[1, 2],
                 bits=[8, 32], base_widths=[8, 8, 16, 16, 24, 32, 48, 64, 96], strides=[1, 1, 2, 2, 2, 1, 1])


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny digits ViT supernet, saved as training saves it (the search reads its data config)."""
    torch.manual_seed(0)
    net = create_supernet_from_config(TINY_VIT, num_classes=10)
    checkpoint = {"format": SUPERNET_FORMAT, "version": 1, "model": dict(net.config), "space": net.space.to_dict(),
                  "state_dict": net.state_dict(), "train_state": {}, "metrics": {},
                  "config": {"data": {"name": "digits", "img_size": 16, "val_fraction": 0.15, "test_fraction": 0.15,
                                      "max_shift": 1, "seed": 0}}}
    return save_checkpoint(checkpoint, tmp_path_factory.mktemp("train") / "tiny" / "supernet.pt")


@pytest.fixture(scope="module")
def quick_cpu_yaml(tmp_path_factory):
    """local_cpu with few passes, as a profile file (what --hw takes besides a name)."""
    config = yaml.safe_load((PROFILE_DIR / "local_cpu.yaml").read_text())
    # eager: the table's logic does not depend on the backend, and exporting 56 layers to ONNX would
    # take minutes here (the onnxruntime path: test_an_onnxruntime_table_times_each_layers_export)
    config.update(name="quick_cpu", threads=1, warmup=2, repeats=6, rounds=3, backend="torch")
    path = tmp_path_factory.mktemp("hw") / "quick_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def tiny_lut(tiny_checkpoint, quick_cpu_yaml, tmp_path_factory):
    from search.measure import main

    return main(["--lut", "--supernet", str(tiny_checkpoint), "--hw", str(quick_cpu_yaml),
                 "--out", str(tmp_path_factory.mktemp("tables") / "tiny_lut.yaml")])


def test_the_builder_times_every_layer_of_the_space_once(tiny_lut):
    from search.lut import lut_layers

    document = yaml.safe_load(tiny_lut.read_text())
    assert tiny_lut.read_text().startswith("# per-layer latency lookup table, python -m search.measure --lut")
    # counted from the space's choices: per resolution and width one PatchEmbed and one Head; a Block per
    # resolution, width, heads, MLP ratio and bits (2 x 2 x 2 x 2 x 3 = 48)
    ops = [key.split("-")[0] for key in document]
    assert (ops.count("PatchEmbed"), ops.count("Head"), ops.count("Block"), len(ops)) == (4, 4, 48, 56)
    assert all(entry["count"] == 6 and entry["mean"] > 0 and entry["iqr"] >= 0 for entry in document.values())
    space = space_from_config(TINY_VIT, num_classes=10)
    rng = np.random.default_rng(0)
    for _ in range(200):  # every subnet's layers are in the table
        assert {layer_key(layer) for layer in lut_layers(space, space.sample(rng))} <= set(document)


@pytest.mark.parametrize("config", [TINY_VIT, TINY_MBV3], ids=["vit", "mobilenetv3"])
def test_the_timed_layers_run_back_to_back_compute_the_subnet(config):
    from search.lut import lut_cover, lut_layers, lut_modules

    net = create_supernet_from_config(config, num_classes=10).eval()
    rng = np.random.default_rng(1)
    keys = {layer_key(layer) for arch in lut_cover(net.space) for layer in lut_layers(net.space, arch)}
    for arch in [net.space.largest(), net.space.smallest(), *(net.space.sample(rng) for _ in range(4))]:
        assert {layer_key(layer) for layer in lut_layers(net.space, arch)} <= keys
        x = torch.randn(2, net.in_chans, arch["resolution"], arch["resolution"])
        y = x
        with torch.no_grad():
            for layer, module, shape in lut_modules(net, arch):
                assert tuple(y.shape[1:]) == shape, layer
                y = module(y)
            torch.testing.assert_close(y, net.export(arch)(x), rtol=0, atol=0)


def test_quantized_mobilenetv3_blocks_have_their_own_keys():
    from search.lut import lut_layers

    space = space_from_config(TINY_MBV3, num_classes=10)
    quantized, floating = ({**space.largest(), "bits": [bits] * 10} for bits in (8, 32))
    keys = [layer_key(layer) for layer in lut_layers(space, quantized)]
    assert keys[2].endswith("-se:0-hs:0-bits:8") and "bits" not in keys[1]  # the fixed first block is float
    assert [layer_key(layer) for layer in lut_layers(space, floating)][2] == keys[2].removesuffix("-bits:8")


def test_the_table_sum_tracks_end_to_end_timing(tiny_checkpoint, tiny_lut, quick_cpu_yaml):
    """The independent reference: the whole subnet timed end to end on the same machine."""
    from search.lut import lut_layers
    from supernet.checkpoint import load_supernet

    net = load_supernet(tiny_checkpoint)
    table = LookupTable.load(tiny_lut)
    profile = load_profile(quick_cpu_yaml, repeats=20, rounds=5)
    # both in float: the smallest arch is also the fewest bits, whose fake quantization is slower in
    # eager than float, and a full suite once timed it above the 4 float blocks of the largest
    largest = net.space.largest()
    archs = [largest, {**net.space.smallest(), "bits": largest["bits"]}]
    summed = [table.latency_ms(lut_layers(net.space, arch)) for arch in archs]
    timed = [r.ms for r in profile.measure_many([(net.export(a), (1, a["resolution"], a["resolution"]))
                                                  for a in archs])]
    assert summed[0] > summed[1]
    for s, t in zip(summed, timed, strict=True):  # bench_lut: the sum is 0.89 of end to end on this CPU
        assert 0.5 * t < s < 2 * t, (summed, timed)


def test_a_space_without_lookup_table_layers_is_a_one_line_error(tmp_path):
    from search.lut import lut_cover

    space = space_from_config(model_config("resnet"), num_classes=10)
    with pytest.raises(ValueError, match="lookup tables know the layers of mobilenetv3, vit spaces; got a 'resnet'"):
        lut_cover(space)


def test_measure_layers_times_each_geometry_once(quick_cpu_yaml):
    from hw_profiles.measure import measure_layers

    layer = ({"op": "Linear", "input": (4, 8)}, torch.nn.Linear(8, 8), (4, 8))
    entries = measure_layers([layer], load_profile(quick_cpu_yaml), progress=False)
    assert list(entries) == ["Linear-input:4x8"] and entries["Linear-input:4x8"]["count"] == 6
    with pytest.raises(ValueError, match="layer 'Linear-input:4x8' given twice"):
        measure_layers([layer, layer], load_profile(quick_cpu_yaml), progress=False)


# -- a search with a lut profile: python -m search.run hw=note10 hw.lut=... -----------------------------
def test_search_run_reads_latency_from_a_lut_profile(tiny_checkpoint, tiny_lut, tmp_path):
    from hydra import compose, initialize_config_dir

    from search.lut import lut_layers
    from search.run import run

    overrides = [f"supernet={tiny_checkpoint}", f"out_dir={tmp_path}", "budget=8", "init=4", "per_iteration=4",
                 "generations=3", "population=10", "export.max_subnets=1", "export.onnx=false",
                 "hw=note10", f"hw.lut={tiny_lut}", "hw.name=tiny_lut"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        out = run(compose(config_name="search", overrides=overrides))
    rows = list(csv.DictReader(open(out / "evaluations.csv")))
    assert len(rows) == 8 and {(r["latency_source"], r["profile"]) for r in rows} == {("lut", "tiny_lut")}
    # each latency is the sum of the table file's entries of the subnet's layers
    entries = yaml.safe_load(tiny_lut.read_text())
    space = space_from_config(TINY_VIT, num_classes=10)
    for row in rows:
        expected = sum(entries[layer_key(layer)]["mean"] for layer in lut_layers(space, json.loads(row["arch"])))
        assert float(row["latency_ms"]) == pytest.approx(expected, rel=1e-12)
    (subnet,) = (out / "subnets").iterdir()
    assert json.loads((subnet / "arch.json").read_text())["metrics"]["latency_source"] == "lut"


# -- the library as an outside user meets it --------------------------------------------------------------
def test_space_from_config_is_the_supernets_space_without_weights():
    config = model_config("vit")
    space = space_from_config(config, num_classes=10)
    net = create_supernet_from_config(config, num_classes=10)
    assert space.to_dict() == net.space.to_dict()
    assert space.macs(space.largest()) == net.space.macs(net.space.largest())


@pytest.mark.parametrize(("name", "mmacs"), [("mobilenetv3_w12", (843.10, 193.08)), ("resnet50", (7491.64, 962.19))])
def test_space_from_config_of_ofas_imagenet_spaces(name, mmacs):
    # OFA's own counter (ofa.utils.count_net_flops) gives these for the largest and smallest subnets at
    # 224 px; the space is there without building the 10-30M weights
    space = space_from_config(model_config(name), num_classes=1000)
    assert tuple(round(space.macs({**arch, "resolution": 224}) / 1e6, 2)
                 for arch in (space.largest(), space.smallest())) == mmacs


def test_a_model_config_without_num_classes_is_a_one_line_error():
    with pytest.raises(ModelConfigError) as info:
        create_supernet_from_config(model_config("vit"))
    message = str(info.value)
    assert message.startswith("model 'vit' needs option 'num_classes', which the config lacks; pass it") and \
        "\n" not in message
    with pytest.raises(ModelConfigError, match="model 'mobilenetv3' needs option 'num_classes'"):
        space_from_config(model_config("mobilenetv3"))


def test_an_onnxruntime_table_times_each_layers_export():
    """With local_cpu's default backend each layer is timed as it deploys: its ONNX export, an 8-bit
    block with integer kernels (the module path of hw_profiles knows no quantized export)."""
    from hw_profiles.measure import measure_layers
    from search.lut import lut_modules
    from search.measure import for_backend

    net = create_supernet_from_config(TINY_MBV3, num_classes=10).eval()
    arch = {**net.space.smallest(), "bits": [8] * len(net.space.smallest()["bits"])}
    profile = load_profile("local_cpu", warmup=1, repeats=3, rounds=1)
    assert profile.backend == "onnxruntime"
    layers = [(layer, for_backend(module, shape, profile), shape)
              for layer, module, shape in lut_modules(net, arch)[:3]]
    assert all(isinstance(model, bytes) for _, model, _ in layers)
    assert any("QuantizeLinear" in str(onnx.load_from_string(model).graph.node) for _, model, _ in layers)
    entries = measure_layers(layers, profile, progress=False)
    assert len(entries) == 3 and all(e["mean"] > 0 and e["count"] == 3 for e in entries.values())
