"""What a search can optimise and constrain, and in which direction.

Every objective is stored in its natural units (accuracy in 0..1, latency in ms, ...); the
search minimises ``sign * value``, so ``sign`` is -1 for the one quantity that should grow.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# name -> +1 (minimise) or -1 (maximise)
DIRECTIONS = {"accuracy": -1, "latency_ms": 1, "macs": 1, "params": 1, "model_size_bytes": 1}


class SearchConfigError(ValueError):
    """A search option that does not exist or cannot be met (one-line message)."""


def check_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    objectives = tuple(objectives)
    unknown = [name for name in objectives if name not in DIRECTIONS]
    if unknown:
        raise SearchConfigError(f"unknown objective {unknown[0]!r}; objectives: {', '.join(DIRECTIONS)}")
    if len(objectives) < 2 or len(set(objectives)) != len(objectives):
        raise SearchConfigError(f"objectives={list(objectives)}: name two or more different objectives")
    return objectives


def check_constraints(constraints: Mapping[str, float] | None) -> dict[str, float]:
    """``{name: bound}``: an upper bound for a minimised quantity (``latency_ms=30``), a lower bound
    for accuracy (``accuracy=0.9``)."""
    constraints = dict(constraints or {})
    for name, bound in constraints.items():
        if name not in DIRECTIONS:
            raise SearchConfigError(f"unknown constraint {name!r}; constrainable: {', '.join(DIRECTIONS)}")
        if not isinstance(bound, (int, float)) or isinstance(bound, bool) or not np.isfinite(bound):
            raise SearchConfigError(f"constraint {name}={bound!r} is not a finite number")
    return {name: float(bound) for name, bound in constraints.items()}


def minimised(name: str, values) -> np.ndarray:
    """Values turned into a quantity to minimise."""
    return DIRECTIONS[name] * np.asarray(values, dtype=np.float64)


def violation(constraints: Mapping[str, float], columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """pymoo's G matrix (rows x constraints): > 0 where a row breaks a bound, <= 0 where it holds."""
    if not constraints:
        n = len(next(iter(columns.values())))
        return np.zeros((n, 0))
    return np.stack([minimised(name, columns[name]) - DIRECTIONS[name] * bound
                     for name, bound in constraints.items()], axis=1)


def pareto_mask(F: np.ndarray) -> np.ndarray:
    """Rows of ``F`` (all minimised) that no other row dominates; duplicates of a front point all stay."""
    F = np.asarray(F, dtype=np.float64)
    keep = np.ones(len(F), dtype=bool)
    for i in range(len(F)):
        dominated = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        keep[i] = not dominated.any()
    return keep
