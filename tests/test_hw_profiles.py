"""hw_profiles: profile validation, roofline estimates, local timing and device tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from hw_profiles import (
    PROFILE_DIR,
    ArchNotInTableError,
    HardwareProfile,
    LatencyResult,
    ProfileError,
    known_profiles,
    load_profile,
    measure_models,
    write_table,
)

PACKAGED = ("jetson", "jetson_agx", "local_cpu", "local_gpu", "rpi4", "rpi5")


def quick_cpu(**overrides) -> HardwareProfile:
    """local_cpu with few repeats, so timing tests stay fast."""
    return load_profile("local_cpu", **{"warmup": 2, "repeats": 9, **overrides})


def mlp(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers)


def vit_layer_costs(width: int, depth: int = 4, tokens: int = 65, bits: int = 32) -> list[dict]:
    """Cost records shaped like a ViT's: per block a norm, qkv, attention matmuls, proj, MLP."""
    act = bits // 8 if bits >= 8 else 1

    def linear(name: str, fan_in: int, fan_out: int) -> dict:
        params = fan_in * fan_out + fan_out
        return {
            "name": name,
            "op": "linear",
            "macs": tokens * fan_in * fan_out,
            "params": params,
            "weight_bytes": params * bits // 8,
            "act_bytes": tokens * (fan_in + fan_out) * act,
            "bits": bits,
        }

    def elementwise(name: str, op: str, params: int = 0) -> dict:
        return {
            "name": name,
            "op": op,
            "macs": tokens * width,
            "params": params,
            "weight_bytes": params * 4,
            "act_bytes": 2 * tokens * width * act,
            "bits": bits,
        }

    records = []
    for block in range(depth):
        prefix = f"blocks.{block}"
        records += [
            elementwise(f"{prefix}.norm1", "norm", 2 * width),
            linear(f"{prefix}.attn.qkv", width, 3 * width),
            {
                "name": f"{prefix}.attn.matmuls",
                "op": "matmul",
                "macs": 2 * tokens * tokens * width,
                "params": 0,
                "weight_bytes": 0,
                "act_bytes": 4 * tokens * width * act,
                "bits": bits,
            },
            linear(f"{prefix}.attn.proj", width, width),
            elementwise(f"{prefix}.add1", "add"),
            elementwise(f"{prefix}.norm2", "norm", 2 * width),
            linear(f"{prefix}.mlp.fc1", width, 4 * width),
            elementwise(f"{prefix}.mlp.act", "act"),
            linear(f"{prefix}.mlp.fc2", 4 * width, width),
            elementwise(f"{prefix}.add2", "add"),
        ]
    return records


def write_profile(folder: Path, config: dict, name: str = "profile.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def packaged_config(name: str) -> dict:
    return yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())


# --- packaged profiles and validation ------------------------------------------------------------


def test_packaged_profiles_load_and_are_named_after_their_file():
    assert set(PACKAGED) <= set(known_profiles())
    for name in PACKAGED:
        profile = load_profile(name)
        assert profile.name == name  # the Hydra choice `hw=<name>` and the run folder agree
        assert profile.origin == str(PROFILE_DIR / f"{name}.yaml")


def test_hydra_composes_the_hw_group_into_a_loadable_profile():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(version_base=None, config_dir=str(PROFILE_DIR.parent)):
        config = compose(overrides=["+hw=rpi5", "hw.batch_size=4"])
    profile = load_profile(OmegaConf.to_container(config.hw, resolve=True))
    assert (profile.name, profile.kind, profile.batch_size) == ("rpi5", "estimated", 4)
    assert profile.peak_gmacs["int8"] == pytest.approx(307.2)


def test_a_path_loads_that_file(tmp_path):
    path = write_profile(tmp_path, {**packaged_config("local_cpu"), "name": "mine", "threads": 1})
    profile = load_profile(path)
    assert (profile.name, profile.threads, profile.origin) == ("mine", 1, str(path))
    assert load_profile(str(path)).name == "mine"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"repeats": None}, "repeats"),  # missing
        ({"threads": "two"}, "threads"),
        ({"threads": True}, "threads"),
        ({"device": "tpu"}, "device"),
        ({"kind": "guessed"}, "kind"),
        ({"batch_size": 0}, "batch_size"),
        ({"repeat": 5}, "repeat"),  # typo of a known field
    ],
)
def test_bad_measured_field_names_field_and_file(tmp_path, change, field):
    config = {**packaged_config("local_cpu"), **change}
    config = {key: value for key, value in config.items() if value is not None}
    path = write_profile(tmp_path, config)
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    message = str(error.value)
    assert f"'{field}'" in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"memory_gbps": None}, "memory_gbps"),
        ({"memory_gbps": "fast"}, "memory_gbps"),
        ({"peak_gmacs": {"fp16": 100.0}}, "peak_gmacs"),  # fp32 is required
        ({"peak_gmacs": {"fp32": 10.0, "fp64": 5.0}}, "peak_gmacs"),
        ({"efficiency": {"default": 1.5}}, "efficiency"),
        ({"efficiency": {"conv": 0.5}}, "efficiency"),  # default is required
        ({"launch_overhead_ms": -1}, "launch_overhead_ms"),
    ],
)
def test_bad_estimated_field_names_field_and_file(tmp_path, change, field):
    config = {**packaged_config("rpi4"), **change}
    config = {key: value for key, value in config.items() if value is not None}
    path = write_profile(tmp_path, config)
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    assert f"'{field}'" in str(error.value) and str(path) in str(error.value)


def test_unknown_name_lists_known_profiles():
    with pytest.raises(ProfileError) as error:
        load_profile("jetsn")
    assert "'jetsn'" in str(error.value)
    for name in PACKAGED:
        assert name in str(error.value)


def test_nonexistent_path_and_broken_yaml(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ProfileError, match="not found") as error:
        load_profile(missing)
    assert str(missing) in str(error.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError) as error:
        load_profile(broken)
    assert str(broken) in str(error.value) and "\n" not in str(error.value)


def test_mapping_errors_name_the_field():
    with pytest.raises(ProfileError, match="'name'"):
        load_profile({"kind": "table", "table": __file__})
    with pytest.raises(ProfileError, match="'table'"):
        load_profile({"name": "t", "kind": "table"})


# --- roofline estimates ----------------------------------------------------------------------------


def test_estimate_grows_with_width_and_is_faster_on_agx_than_rpi4():
    jetson_agx, rpi4 = load_profile("jetson_agx"), load_profile("rpi4")
    widths = (64, 128, 192, 256, 384, 512)
    for profile in (jetson_agx, rpi4):
        estimates = [profile.estimate_ms(vit_layer_costs(width)) for width in widths]
        assert estimates == sorted(estimates) and len(set(estimates)) == len(estimates)
    for width in widths:
        records = vit_layer_costs(width)
        assert jetson_agx.estimate_ms(records) < rpi4.estimate_ms(records)


def test_estimate_uses_int8_peak_and_scales_with_batch():
    rpi5, rpi4 = load_profile("rpi5"), load_profile("rpi4")
    float_records, int8_records = vit_layer_costs(384), vit_layer_costs(384, bits=8)
    assert rpi5.estimate_ms(int8_records) < rpi5.estimate_ms(float_records) / 2
    # rpi4 has no int8 peak: 8-bit layers only save memory traffic, so the gain is smaller.
    rpi4_gain = rpi4.estimate_ms(float_records) / rpi4.estimate_ms(int8_records)
    rpi5_gain = rpi5.estimate_ms(float_records) / rpi5.estimate_ms(int8_records)
    assert 1 <= rpi4_gain < rpi5_gain
    one, eight = rpi5.estimate_ms(float_records), rpi5.estimate_ms(float_records, batch_size=8)
    assert one < eight <= 8 * one  # weights are read once per batch


def test_estimated_latency_result_and_its_errors():
    jetson = load_profile("jetson")
    result = jetson.latency_ms(layer_costs=vit_layer_costs(192))
    assert (result.source, result.profile, result.n, result.iqr_ms) == ("estimated", "jetson", 0, None)
    assert result.ms == pytest.approx(jetson.estimate_ms(vit_layer_costs(192)))
    with pytest.raises(ProfileError, match="layer_costs"):
        jetson.latency_ms(mlp(8, 1), (8,))
    unknown_op = [{**vit_layer_costs(64)[1], "op": "fancy"}]  # falls back to the default efficiency
    assert jetson.estimate_ms(unknown_op) > jetson.estimate_ms(vit_layer_costs(64)[1:2])
    with pytest.raises(ValueError, match="bits"):
        jetson.estimate_ms([{**vit_layer_costs(64)[1], "bits": 7}])
    with pytest.raises(ValueError, match="macs"):
        jetson.estimate_ms([{"name": "x", "op": "conv", "weight_bytes": 1, "act_bytes": 1, "bits": 8}])


# --- measured latency ------------------------------------------------------------------------------


def test_bigger_model_measures_slower_and_state_is_restored():
    small = mlp(32, 2)  # ~2k MACs
    big = mlp(512, 8)  # ~2M MACs: 1000x more
    big.train()
    threads_before = torch.get_num_threads()
    profile = quick_cpu(threads=1)
    small_result, big_result = profile.latency_ms(small, (32,)), profile.latency_ms(big, (512,))
    assert big_result.ms > small_result.ms > 0
    assert (big_result.source, big_result.profile, big_result.n) == ("measured", "local_cpu", 9)
    assert big_result.iqr_ms >= 0
    assert torch.get_num_threads() == threads_before and big.training


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_backends_time_a_module_through_its_export(backend):
    pytest.importorskip(backend)
    small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    big = nn.Sequential(nn.Conv2d(3, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1),
                        nn.Flatten(), nn.Linear(256 * 8 * 8, 10))  # ~200x the MACs
    small_result, big_result = (quick_cpu(backend=backend, batch_size=2).latency_ms(m, (3, 8, 8)) for m in (small, big))
    assert big_result.ms > small_result.ms > 0 and small_result.source == "measured" and small_result.n == 9


def test_openvino_times_on_the_cpu_only():
    with pytest.raises(ProfileError, match=r"local_cpu.yaml: backend 'openvino' times on the CPU only .*'cuda'"):
        quick_cpu(backend="openvino", device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_local_gpu_without_cuda_says_so():
    profile = load_profile("local_gpu")  # loading is fine anywhere
    with pytest.raises(ProfileError, match="no CUDA device is available"):
        profile.latency_ms(mlp(8, 1), (8,))


def test_interleaved_rounds_time_each_model_in_turn_and_restore_state():
    import gc

    from hw_profiles.timing import time_interleaved

    calls: list[str] = []

    class Logged(nn.Module):
        def __init__(self, name: str):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name.upper() if self.training else self.name)  # upper case: not in eval mode
            return x

    first, second = Logged("a").eval(), Logged("b").train()
    times = time_interleaved([(first, (2,)), (second, (2,))], device="cpu", backend="torch", threads=1,
                             warmup=1, repeats=5, rounds=2, batch_size=1)
    # Warm-up, then per round one untimed pass and that round's share of the 5 timed passes (3, then 2).
    assert "".join(calls) == "ab" + "aaaa" + "bbbb" + "aaa" + "bbb"
    assert [len(model_times) for model_times in times] == [5, 5] and min(times[0]) > 0
    assert second.training and not first.training and gc.isenabled()
    calls.clear()  # more rounds than passes: one pass per round, never an empty round
    times = time_interleaved([(first, (2,))], device="cpu", backend="torch", threads=1, warmup=0, repeats=2,
                             rounds=3, batch_size=1)
    assert "".join(calls) == "aa" and len(times[0]) == 2


def test_measured_latency_is_the_fastest_pass(monkeypatch):
    import hw_profiles.profile as profile_module

    monkeypatch.setattr(profile_module, "time_interleaved", lambda models, **_: [[3.0, 1.0, 2.0, 5.0]] * len(models))
    result = quick_cpu().latency_ms(mlp(8, 1), (8,))
    # Load from other processes only adds time: the fastest pass is the model's own cost.
    assert (result.ms, result.iqr_ms, result.n) == (1.0, pytest.approx(3.5 - 1.75), 4)


def test_measure_models_times_chunks_of_a_generator_together(monkeypatch):
    chunks = []

    def measure_many(self, models):
        chunks.append(len(models))
        return [LatencyResult(float(shape[0]), 0.0, "measured", self.name, 1) for _, shape in models]

    monkeypatch.setattr(HardwareProfile, "measure_many", measure_many)
    models = (({"width": width}, mlp(width, 1), (width,)) for width in (8, 16, 24, 32, 40))
    rows = measure_models(models, quick_cpu(), chunk=2, progress=False)
    assert chunks == [2, 2, 1]
    assert [(row["arch"]["width"], row["latency_ms"]) for row in rows] == [(w, w) for w in (8, 16, 24, 32, 40)]
    with pytest.raises(ValueError, match="chunk"):
        measure_models([], quick_cpu(), chunk=0)


# --- device tables ---------------------------------------------------------------------------------


def test_table_round_trip(tmp_path):
    archs = [{"width": 16, "depth": 1, "bits": [8]}, {"width": 64, "depth": 2, "bits": [32, 8]}]
    models = ((arch, mlp(arch["width"], arch["depth"]), (arch["width"],)) for arch in archs)
    rows = measure_models(models, quick_cpu(), progress=False)
    table = write_table(rows, tmp_path / "tables" / "cpu.csv")
    assert [path.name for path in table.parent.iterdir()] == ["cpu.csv"]  # no temp file left

    profile = load_profile(
        write_profile(tmp_path, {"name": "cpu_table", "kind": "table", "table": str(table)})
    )
    table_archs, latencies = profile.table_rows()
    assert table_archs == archs and latencies == [row["latency_ms"] for row in rows]
    reordered = {"bits": [32, 8], "depth": 2, "width": 64}  # key order must not matter
    result = profile.latency_ms(arch=reordered)
    assert (result.ms, result.source, result.profile) == (rows[1]["latency_ms"], "table", "cpu_table")
    assert (result.iqr_ms, result.n) == (rows[1]["iqr_ms"], rows[1]["n"])
    with pytest.raises(ArchNotInTableError, match="not in the device table"):
        profile.latency_ms(arch={"width": 32, "depth": 1, "bits": [8]})
    with pytest.raises(ProfileError, match="arch="):
        profile.latency_ms()


def test_measure_models_needs_a_measured_profile():
    with pytest.raises(ProfileError, match="measured"):
        measure_models([], load_profile("rpi4"))


def test_malformed_tables_name_file_and_line(tmp_path):
    no_latency = tmp_path / "no_latency.csv"
    no_latency.write_text('arch\n"{}"\n')
    with pytest.raises(ProfileError, match="latency_ms"):
        load_profile({"name": "t", "kind": "table", "table": str(no_latency)}).table_rows()
    bad_arch = tmp_path / "bad_arch.csv"
    write_table([{"arch": {"width": 8}, "latency_ms": 1.0}], bad_arch)
    bad_arch.write_text(bad_arch.read_text() + "not-json,2.0\n")
    with pytest.raises(ProfileError, match=f"{bad_arch}:3"):
        load_profile({"name": "t", "kind": "table", "table": str(bad_arch)}).table_rows()
    twice = tmp_path / "twice.csv"
    write_table([{"arch": {"w": 8}, "latency_ms": 1.0}, {"arch": {"w": 8}, "latency_ms": 2.0}], twice)
    with pytest.raises(ProfileError, match="twice"):
        load_profile({"name": "t", "kind": "table", "table": str(twice)}).latency_ms(arch={"w": 8})


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_an_onnx_backend_profile_without_its_runtime_installed_is_a_one_line_error(backend, monkeypatch):
    # a device install (a Raspberry Pi with torch only) times local_cpu's default backend: say what to do
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == backend else real(name, *a))
    with pytest.raises(ProfileError, match=rf"'{backend}' is not installed here; pip install {backend} .* "
                                           r"hw.backend=torch"):
        quick_cpu(backend=backend).latency_ms(mlp(4, 1), (4,))
    quick_cpu(backend="torch").latency_ms(mlp(4, 1), (4,))  # eager needs none of it
