"""Predictor features per objective: a latency predictor also sees the profile's roofline estimate.

    X = objective_features(space, archs, "latency_ms", profile)   # structural + roofline columns
    names = objective_feature_names(space, "latency_ms", profile)

The structural part is ``space.features(arch, "latency")`` (``supernet``); the roofline estimate
comes from ``hw_profiles`` on the same cost records. Both meet here because ``supernet`` and
``hw_profiles`` must not import each other.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from supernet.space import latency_features


def feature_set(objective: str) -> str:
    """Which of ``space.features``'s sets predicts ``objective``: latency objectives get ``latency``."""
    return "latency" if "latency" in objective else "accuracy"


def has_roofline(profile) -> bool:
    return profile is not None and getattr(profile, "peak_gmacs", None) is not None


def objective_features(space, archs: Sequence[dict], objective: str, profile=None) -> np.ndarray:
    """Feature matrix (one row per arch) for a predictor of ``objective``. For a latency objective
    and a profile with roofline fields, a last column holds ``profile.estimate_ms`` of the arch."""
    for_ = feature_set(objective)
    rows = []
    for arch in archs:
        if for_ == "latency":
            costs = space.layer_costs(space.canonical(arch))
            row = latency_features(costs)  # = space.features(arch, "latency"), costs counted once
            if has_roofline(profile):
                row = np.append(row, profile.estimate_ms(costs))
        else:
            row = space.features(arch)
        rows.append(row)
    return np.stack(rows)


def objective_feature_names(space, objective: str, profile=None) -> list[str]:
    for_ = feature_set(objective)
    names = space.feature_names(for_)
    return names + ["roofline_ms"] if for_ == "latency" and has_roofline(profile) else names
