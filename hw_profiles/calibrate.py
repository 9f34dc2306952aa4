"""Calibrate a roofline profile to latencies measured on the device.

The roofline (`hw_profiles.roofline`) gives each layer `max(compute, memory) / efficiency[op] +
launch_overhead`, so a subnet's latency is linear in the unknowns:

    latency = launch_overhead_ms * n_layers + sum over op kinds k of (1 / efficiency[k]) * T_k

where `T_k` is the summed `max(compute, memory)` time (ms, at the profile's peaks, bandwidth and
batch size) of the subnet's layers of kind k. Given N measured subnets, `calibrate` fits the launch
overhead (>= 0) and the inverse efficiency of each op kind present (>= 1, an efficiency <= 1) by
least absolute relative error, i.e. minimal MAPE, which a few slow outlier measurements do not pull
(iteratively reweighted bounded least squares). Peaks and bandwidth stay: they are data-sheet facts,
and only their ratio to the efficiencies matters.

Works on plain cost records (`net.layer_costs(arch)`); imports neither `supernet` nor `search`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import optimize, stats

from hw_profiles.errors import ProfileError
from hw_profiles.files import write_text_atomic
from hw_profiles.profile import HardwareProfile
from hw_profiles.roofline import Roofline

IRLS_STEPS = 30
ROOFLINE_FIELDS = ("peak_gmacs", "memory_gbps", "efficiency", "launch_overhead_ms")


@dataclass(frozen=True)
class Calibration:
    launch_overhead_ms: float
    efficiency: dict[str, float]  # the profile's efficiencies with the fitted op kinds replaced
    fitted_ops: tuple[str, ...]  # op kinds whose efficiency was fitted (the others kept)
    fit_mape: float  # on the calibration rows, percent
    fit_kendall_tau: float
    before_mape: float  # the uncalibrated profile on the same rows
    before_kendall_tau: float
    rows: int


def roofline_of(profile: HardwareProfile) -> Roofline:
    if profile.peak_gmacs is None or profile.memory_gbps is None or profile.efficiency is None:
        raise ProfileError(f"{profile.origin}: profile {profile.name!r} has no roofline fields "
                           f"({', '.join(ROOFLINE_FIELDS)}) to calibrate; use an estimated profile")
    return Roofline(profile.peak_gmacs, profile.memory_gbps, profile.efficiency, profile.launch_overhead_ms or 0.0)


def design_matrix(roofline: Roofline, subnets: Sequence[Sequence[Mapping[str, Any]]], batch_size: int,
                  ops: Sequence[str]) -> np.ndarray:
    """Per subnet: `[n_layers, T_op for op in ops]`, the terms the latency is linear in."""
    unit = Roofline(roofline.peak_gmacs, roofline.memory_gbps, {"default": 1.0}, 0.0)
    column = {op: 1 + i for i, op in enumerate(ops)}
    A = np.zeros((len(subnets), 1 + len(ops)))
    for row, layers in enumerate(subnets):
        if not layers:
            raise ValueError(f"subnet {row}: layer_costs is empty: expected one record per layer")
        A[row, 0] = len(layers)
        for layer in layers:
            A[row, column[layer["op"]]] += unit.layer_ms(layer, batch_size)
    return A


def calibrate(profile: HardwareProfile, subnets: Sequence[Sequence[Mapping[str, Any]]],
              latencies_ms: Sequence[float]) -> Calibration:
    """Fit `profile`'s launch overhead and per-op efficiencies to measured subnets.

    `subnets[i]` is the cost records of subnet i (`net.layer_costs(arch)`), `latencies_ms[i]` its
    latency measured on the device at the profile's batch size."""
    roofline = roofline_of(profile)
    y = np.asarray(latencies_ms, dtype=np.float64)
    if y.ndim != 1 or len(y) != len(subnets):
        raise ValueError(f"got {len(subnets)} subnets but {y.size} latencies")
    if len(y) < 2:
        raise ValueError(f"calibration needs at least 2 measured subnets, got {len(y)}")
    if not (np.isfinite(y).all() and (y > 0).all()):
        bad = int(np.flatnonzero(~(np.isfinite(y) & (y > 0)))[0])
        raise ValueError(f"latency of row {bad} must be a positive number, got {float(y[bad])!r}")
    ops = tuple(sorted({layer["op"] for layers in subnets for layer in layers}))
    A = design_matrix(roofline, subnets, profile.batch_size, ops)
    fitted = tuple(op for i, op in enumerate(ops) if A[:, 1 + i].any())  # an op with no time: nothing to fit
    keep = [0] + [1 + ops.index(op) for op in fitted]
    A = A[:, keep]
    before = A @ np.array([roofline.launch_overhead_ms] + [1 / _efficiency(roofline, op) for op in fitted])
    # min sum |A x - y| / y with launch >= 0 and every inverse efficiency >= 1: start from the
    # relative least-squares fit, then reweight each row by 1 / its last relative error.
    lower = np.array([0.0] + [1.0] * len(fitted))
    weights = 1.0 / y
    for _ in range(IRLS_STEPS):
        x = optimize.lsq_linear(A * weights[:, None], y * weights, bounds=(lower, np.inf)).x
        relative_error = np.abs(A @ x - y) / y
        weights = 1.0 / (y * np.sqrt(np.maximum(relative_error, 1e-6)))
    predicted = A @ x
    efficiency = dict(roofline.efficiency)
    efficiency.update({op: float(1.0 / inverse) for op, inverse in zip(fitted, x[1:], strict=True)})
    return Calibration(float(x[0]), efficiency, fitted, _mape(y, predicted), _tau(y, predicted),
                       _mape(y, before), _tau(y, before), len(y))


def calibrated_fields(profile: HardwareProfile, result: Calibration, *, table: str, space: str,
                      name: str | None = None) -> dict[str, Any]:
    """The calibrated profile as YAML-ready fields: the original ones, the fitted values, and a
    `calibration` record of what it was fitted on and how well."""
    fields: dict[str, Any] = {"name": name or f"{profile.name}_calibrated"}
    fields["description"] = (f"{profile.description or profile.name}, calibrated on {result.rows} subnets "
                             f"of {table} (fit MAPE {result.fit_mape:.2f}%)")
    fields["kind"] = "estimated"
    fields["batch_size"] = profile.batch_size
    fields["peak_gmacs"] = dict(profile.peak_gmacs)
    fields["memory_gbps"] = profile.memory_gbps
    fields["efficiency"] = {op: _round(value) for op, value in result.efficiency.items()}
    fields["launch_overhead_ms"] = _round(result.launch_overhead_ms)
    if profile.table is not None:
        fields["table"] = str(profile.table)
    fields["calibration"] = {
        "from_profile": profile.origin, "table": table, "space": space, "rows": result.rows,
        "fitted": ["launch_overhead_ms", *(f"efficiency.{op}" for op in result.fitted_ops)],
        "fit_mape": _round(result.fit_mape), "fit_kendall_tau": _round(result.fit_kendall_tau),
        "before_mape": _round(result.before_mape), "before_kendall_tau": _round(result.before_kendall_tau),
    }
    return fields


def write_profile(fields: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a profile YAML atomically (temp file in the same folder, fsync, rename)."""
    header = ("# Written by `python -m search.measure --calibrate`: a roofline profile whose launch overhead\n"
              "# and per-op efficiencies were fitted to measured latencies (see `calibration`).\n")
    return write_text_atomic(path, header + yaml.safe_dump(dict(fields), sort_keys=False))


def _efficiency(roofline: Roofline, op: str) -> float:
    return roofline.efficiency.get(op, roofline.efficiency["default"])


def _mape(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(100.0 * np.mean(np.abs(predicted - y) / y))


def _tau(y: np.ndarray, predicted: np.ndarray) -> float:
    if np.ptp(y) == 0 or np.ptp(predicted) == 0:
        return float("nan")
    return float(stats.kendalltau(y, predicted).statistic)


def _round(value: float) -> float:
    return float(f"{value:.6g}") if math.isfinite(value) else value

