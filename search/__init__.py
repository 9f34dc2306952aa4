"""Predictor-guided multi-objective search over a supernet's subnets, per hardware profile.

    from search import run_search
    result = run_search(space, evaluate, ("accuracy", "latency_ms"), budget=100)
    result.pareto  # the non-dominated real evaluations

``python -m search.run hw=jetson`` is the command line over it (``search/run.py``).
"""
import importlib

# Imported on first use, so that ``python -m search.measure`` on a device (a Jetson, a Raspberry Pi)
# loads neither pymoo nor the predictors' libraries, which it does not need.
_EXPORTS = {"run_search": "loop", "SearchResult": "loop", "DIRECTIONS": "objectives",
            "SearchConfigError": "objectives", "ALGORITHMS": "problem"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
