"""Predictor-guided multi-objective search over a supernet's subnets, per hardware profile.

    from search import run_search
    result = run_search(space, evaluate, ("accuracy", "latency_ms"), budget=100)
    result.pareto  # the non-dominated real evaluations

``python -m search.run hw=jetson`` is the command line over it (``search/run.py``).
"""
from .loop import SearchResult, run_search
from .objectives import DIRECTIONS, SearchConfigError
from .problem import ALGORITHMS

__all__ = ["ALGORITHMS", "DIRECTIONS", "SearchConfigError", "SearchResult", "run_search"]
