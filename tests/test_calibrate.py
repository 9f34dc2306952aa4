"""Roofline calibration: recovers known parameters from a table a profile with those parameters made;
the command writes a profile that loads and says what it was fitted on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hw_profiles import ProfileError, load_profile, write_table
from hw_profiles.calibrate import calibrate, calibrated_fields, write_profile
from search.benchmarks import ofa_w12_space
from search.measure import main as measure_main

HELP = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "help_ofa"
BASE = {"name": "gpu", "kind": "estimated", "batch_size": 1, "peak_gmacs": {"fp32": 6000.0}, "memory_gbps": 600.0,
        "efficiency": {"conv": 0.6, "dwconv": 0.3, "linear": 0.6, "default": 0.4}, "launch_overhead_ms": 0.01}
# the "device": slower launches, other efficiencies; what calibration has to find
TRUTH = {**BASE, "efficiency": {"conv": 0.35, "dwconv": 0.12, "linear": 0.8, "act": 0.5, "add": 0.25, "pool": 0.4,
                                "default": 0.4}, "launch_overhead_ms": 0.08}


@pytest.fixture(scope="module")
def space():
    return ofa_w12_space((128, 160, 192, 224))


def sampled(space, n: int, seed: int = 0, batch_size: int = 1):
    rng = np.random.default_rng(seed)
    archs = [space.canonical(space.sample(rng)) for _ in range(n)]
    truth = load_profile({**TRUTH, "batch_size": batch_size})
    costs = [space.layer_costs(a) for a in archs]
    return archs, costs, np.array([truth.estimate_ms(c) for c in costs])


@pytest.mark.parametrize("batch_size", [1, 64])
def test_calibration_recovers_the_parameters_that_made_the_table(space, batch_size):
    _, costs, latency = sampled(space, 40, batch_size=batch_size)
    result = calibrate(load_profile({**BASE, "batch_size": batch_size}), costs, latency)

    assert result.launch_overhead_ms == pytest.approx(TRUTH["launch_overhead_ms"], rel=1e-3)
    for op in ("conv", "dwconv", "linear", "add", "pool"):
        assert result.efficiency[op] == pytest.approx(TRUTH["efficiency"][op], rel=1e-2), op
    assert result.fitted_ops == ("act", "add", "conv", "dwconv", "linear", "pool")
    assert result.fit_mape < 0.01 and result.before_mape > 20
    assert result.efficiency["default"] == 0.4  # no op kind of the table uses it: kept


def test_calibration_is_not_pulled_by_slow_outliers(space):
    _, costs, latency = sampled(space, 60, seed=1)
    slow = np.random.default_rng(0).random(len(latency)) < 0.15
    result = calibrate(load_profile(BASE), costs, np.where(slow, 1.3, 1.0) * latency)
    assert result.launch_overhead_ms == pytest.approx(TRUTH["launch_overhead_ms"], rel=0.02)
    assert result.efficiency["conv"] == pytest.approx(TRUTH["efficiency"]["conv"], rel=0.05)


def test_calibrated_profile_round_trips_through_yaml(space, tmp_path):
    _, costs, latency = sampled(space, 20)
    result = calibrate(load_profile(BASE), costs, latency)
    path = write_profile(calibrated_fields(load_profile(BASE), result, table="t.csv", space="ofa_mbv3_w12"),
                         tmp_path / "gpu_calibrated.yaml")
    profile = load_profile(path)
    assert profile.name == "gpu_calibrated" and profile.kind == "estimated"
    assert profile.calibration["rows"] == 20 and profile.calibration["table"] == "t.csv"
    assert profile.calibration["fit_mape"] < 0.01
    estimates = np.array([profile.estimate_ms(c) for c in costs])
    np.testing.assert_allclose(estimates, latency, rtol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_calibrated.yaml"]  # no temp file left


def test_calibration_refuses_bad_input(space):
    _, costs, latency = sampled(space, 5)
    with pytest.raises(ProfileError, match="no roofline fields"):
        calibrate(load_profile("local_cpu"), costs, latency)
    with pytest.raises(ValueError, match="got 5 subnets but 4 latencies"):
        calibrate(load_profile(BASE), costs, latency[:4])
    with pytest.raises(ValueError, match="latency of row 2 must be a positive number, got -1.0"):
        calibrate(load_profile(BASE), costs, np.array([1.0, 2.0, -1.0, 3.0, 4.0]))
    with pytest.raises(ProfileError, match="field 'calibration' must be a mapping"):
        load_profile({**BASE, "calibration": "yes"})


def test_measure_calibrate_command_writes_a_calibrated_profile(space, tmp_path, capsys):
    archs, _, latency = sampled(space, 25, seed=2)
    table = write_table([{"arch": a, "latency_ms": float(v)} for a, v in zip(archs, latency, strict=True)],
                        tmp_path / "device.csv")
    profile = write_profile(BASE, tmp_path / "gpu.yaml")
    out = measure_main(["--calibrate", str(profile), str(table), "--space", "ofa_mbv3_w12",
                        "--out", str(tmp_path / "cal.yaml")])
    fields = yaml.safe_load(out.read_text())
    assert fields["launch_overhead_ms"] == pytest.approx(TRUTH["launch_overhead_ms"], rel=1e-3)
    assert fields["calibration"]["space"] == "ofa_mbv3_w12" and fields["calibration"]["rows"] == 25
    assert "calibrated gpu on 25 subnets" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown space 'mbv3'; known spaces: ofa_mbv3_w12"):
        measure_main(["--calibrate", str(profile), str(table), "--space", "mbv3"])
    with pytest.raises(SystemExit, match="profile file not found"):
        measure_main(["--calibrate", str(tmp_path / "none.yaml"), str(table), "--space", "ofa_mbv3_w12"])


@pytest.mark.skipif(not HELP.is_dir(), reason="HELP's measurements (../shared/benchmarks/help_ofa) are absent")
def test_on_help_calibration_and_layer_counts_rank_batch_1_far_better_than_macs():
    help_space = ofa_w12_space(tuple(range(128, 225, 4)))
    raw = json.loads((HELP / "archs.json").read_text())[:400]
    y = np.array(json.loads((HELP / "titan_rtx_1.json").read_text()))[:400]
    archs = [{"resolution": a["r"], "ks": a["ks"], "expand": [float(e) for e in a["e"]], "depth": a["d"],
              "bits": [32] * 20} for a in raw]
    names = help_space.feature_names("latency")
    X = np.stack([help_space.features(a, "latency") for a in archs])
    from predictors.metrics import kendall_tau
    assert kendall_tau(y, X[:, names.index("layers")]) > kendall_tau(y, X[:, names.index("macs")]) + 0.4
    costs = [help_space.layer_costs(a) for a in archs]
    result = calibrate(load_profile(BASE), costs[:50], y[:50])
    calibrated = load_profile(calibrated_fields(load_profile(BASE), result, table="help", space="ofa_mbv3_w12"))
    estimate = np.array([calibrated.estimate_ms(c) for c in costs[50:]])
    before = np.array([load_profile(BASE).estimate_ms(c) for c in costs[50:]])
    mape = lambda p: 100 * np.mean(np.abs(p - y[50:]) / y[50:])  # noqa: E731
    assert mape(estimate) < 10 < mape(before)
    assert kendall_tau(y[50:], estimate) > 0.6
