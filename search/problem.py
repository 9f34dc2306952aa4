"""The pymoo side of the search: a vectorised `Problem` over integer genes and the algorithms.

The problem scores a whole population with one call of ``estimate(archs) -> {name: values}``
(predictors and exact analytic quantities), as pymoo's `_evaluate(X, out)` expects.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pymoo.core.problem import Problem
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.util.ref_dirs import get_reference_directions

from .objectives import SearchConfigError, minimised, violation

ALGORITHMS = ("nsga2", "agemoea", "unsga3", "ctaea", "random")


class ArchProblem(Problem):
    """Minimise the objectives (accuracy negated) of archs given as choice-index genes. Where
    ``estimate`` returns an ``optimistic`` entry (``{name: values}``), those objectives are scored on
    it; the constraints always on the plain columns (the predicted means)."""

    def __init__(self, space, objectives: Sequence[str], constraints: Mapping[str, float],
                 estimate: Callable[[list[dict]], Mapping[str, np.ndarray]]):
        super().__init__(n_var=space.num_genes, n_obj=len(objectives), n_ieq_constr=len(constraints),
                         xl=np.zeros(space.num_genes), xu=space.gene_upper_bounds(), vtype=int)
        self.space, self.objectives, self.constraints, self.estimate = space, tuple(objectives), constraints, estimate

    def _evaluate(self, X, out, *args, **kwargs):
        columns = self.estimate([self.space.decode(genes) for genes in X])
        scored = {**columns, **columns.get("optimistic", {})}
        out["F"] = np.stack([minimised(name, scored[name]) for name in self.objectives], axis=1)
        if self.constraints:
            out["G"] = violation(self.constraints, columns)


def make_algorithm(name: str, num_objectives: int, population: int, initial: np.ndarray, seed: int):
    """A pymoo algorithm for integer genes: SBX and polynomial mutation on floats, rounded back
    (DyNAS-T's operators), starting from ``initial`` (rows of genes); None for ``random``."""
    if name not in ALGORITHMS:
        raise SearchConfigError(f"unknown algorithm {name!r}; algorithms: {', '.join(ALGORITHMS)}")
    if name == "random":
        return None
    operators = dict(sampling=initial.astype(np.float64),
                     crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                     # a low eta mutates by whole choices often enough to leave the current ones
                     mutation=PM(eta=3, vtype=float, repair=RoundingRepair()),
                     eliminate_duplicates=True)
    if name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2
        return NSGA2(pop_size=population, **operators)
    if name == "agemoea":
        from pymoo.algorithms.moo.age import AGEMOEA
        return AGEMOEA(pop_size=population, **operators)
    ref_dirs = reference_directions(num_objectives, population, seed)
    if name == "unsga3":
        from pymoo.algorithms.moo.unsga3 import UNSGA3
        return UNSGA3(ref_dirs=ref_dirs, pop_size=population, **operators)
    from pymoo.algorithms.moo.ctaea import CTAEA
    # C-TAEA's population is its set of reference directions
    return CTAEA(ref_dirs=ref_dirs, **operators)


def reference_directions(num_objectives: int, count: int, seed: int) -> np.ndarray:
    if num_objectives == 2:  # evenly spaced on the segment
        return get_reference_directions("das-dennis", 2, n_partitions=count - 1)
    return get_reference_directions("energy", num_objectives, count, seed=seed)
