"""Per-layer lookup-table profiles (kind: lut) and the OFA Note10 problem.

The check values are those of ../shared/benchmarks/README.md (OFA's own figures); the tests that
need OFA's files skip when that folder is absent (a clean clone without the shared data).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hw_profiles import ProfileError, load_profile
from hw_profiles.lut import LookupTable, layer_key, write_lut

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
