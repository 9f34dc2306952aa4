"""The predictor-guided search loop (DyNAS-T's LINAS), independent of any supernet or CLI.

    result = run_search(space, evaluate, ("accuracy", "latency_ms"), budget=100)

1. evaluate ``init`` subnets for real (random, plus the largest and the smallest);
2. fit one predictor per objective that only ``evaluate`` can tell (features: ``space.features``,
   for latency its structural set, fitted on relative error: ``search.features``);
3. run a pymoo algorithm for ``generations`` on the predictors (exact objectives stay exact), each
   predicted objective scored optimistically where the predictor has a posterior (``gp_linear``):
   ``optimism`` standard deviations towards its better side (an upper confidence bound: a subnet far
   from every evaluated one gets the benefit of the doubt); bounds are checked on the mean;
4. evaluate for real ``per_iteration`` new candidates: the most spread of its predicted front
   (``select="spread"``), or those adding the most predicted hypervolume to the real front (``hvi``);
5. refit and repeat until ``budget`` real evaluations. No default depends on ``budget``: the first
   n evaluations of a run are those of a run with a larger budget.

``search_log.csv`` scores the predictors on the candidates they proposed (``<name>_kendall_tau``) and,
by predictors fitted without them, on a fixed random sample of the initial evaluations
(``<name>_sample_kendall_tau``): candidates span the front, where ranking is easy; the sample is
what the predictor sees of the space as a whole.

``evaluate(archs) -> {name: values}`` is any callable: a supernet on a validation split, a lookup
table, a remote device. It returns every objective and constraint that is not in ``exact``, and
may return more columns (e.g. ``latency_source``); they are kept in the evaluation rows.

With ``out_dir`` the loop writes ``evaluations.csv`` after every chunk of real evaluations and
``search_log.csv`` after every iteration, and resumes: it replays the (deterministic) loop and
takes each real evaluation it already has from ``evaluations.csv`` instead of repeating it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.optimize import minimize
from tqdm import tqdm

from predictors import create_predictor, predictor_options, report

from .features import feature_set, objective_features
from .objectives import DIRECTIONS, SearchConfigError, check_constraints, check_objectives, minimised, pareto_mask
from .problem import ALGORITHMS, ArchProblem, make_algorithm
from .report import columns_of, plot_pareto, read_rows, write_rows

log = logging.getLogger(__name__)

ANALYTIC = ("macs", "params", "model_size_bytes")  # exact from the space, always computed
# The library's defaults, the same as conf/search.yaml's (a test checks it); none depends on the budget.
DEFAULTS = {"init": 20, "per_iteration": 10, "generations": 40, "population": 100, "algorithm": "nsga2",
            "predictor": "gp_linear", "select": "hvi", "score_sample": 10, "refine": 0, "optimism": 1.0}
TOP_UP_FACTOR = 4  # random archs added to a short candidate pool: k x this, so that enough are feasible


@dataclass
class SearchResult:
    evaluations: list[dict]  # every real evaluation: id, arch, metrics, iteration
    pareto: list[dict]  # the non-dominated feasible evaluations
    log: list[dict]  # one row per iteration: evaluations so far, hypervolume, predictor quality
    objectives: tuple[str, ...] = ()
    constraints: dict = field(default_factory=dict)
    predictors: dict = field(default_factory=dict)  # the last fitted predictor per predicted quantity
    out_dir: Path | None = None

    def best(self, constraints: Mapping[str, float] | None = None, by: str | None = None) -> dict:
        """The evaluated subnet with the best ``by`` (default: accuracy, else the first objective)
        within ``constraints`` (``{"latency_ms": 5}``: upper bounds; a lower bound for accuracy).
        Raises ``SearchConfigError`` naming the nearest evaluated subnets when none is within."""
        from .pick import best_row

        return best_row(self.evaluations, constraints or {}, by or ("accuracy" if "accuracy" in self.objectives
                                                                     else self.objectives[0]))


SELECTIONS = ("hvi", "spread")


def run_search(space, evaluate: Callable[[list[dict]], Mapping[str, Sequence]],
               objectives: Sequence[str] = ("accuracy", "latency_ms"), *, budget: int = 100,
               init: int = DEFAULTS["init"], per_iteration: int = DEFAULTS["per_iteration"],
               generations: int = DEFAULTS["generations"], population: int = DEFAULTS["population"],
               algorithm: str = DEFAULTS["algorithm"], predictor: str = DEFAULTS["predictor"],
               predictor_options: Mapping | None = None, select: str = DEFAULTS["select"],
               score_sample: int = DEFAULTS["score_sample"], refine: int = DEFAULTS["refine"],
               optimism: float = DEFAULTS["optimism"], constraints: Mapping[str, float] | None = None,
               exact: Mapping[str, Callable[[list[dict]], Sequence[float]]] | None = None,
               initial: Sequence[dict] | None = None,
               callback: Callable[[dict, SearchResult], None] | None = None,
               seed: int = 0, out_dir: str | Path | None = None, chunk_size: int = 8,
               progress: bool = True) -> SearchResult:
    """Searches ``space`` for the Pareto front of ``objectives`` with ``budget`` real evaluations.

    The defaults (``DEFAULTS``, the same as ``conf/search.yaml``'s) do not depend on ``budget``: a
    run's first n evaluations are those of any run with a larger budget (anytime behaviour).
    ``initial``: archs evaluated first (before the largest, the smallest and random ones, ``init`` in
    all with them); ``predictor_options``: keyword arguments of ``create_predictor``; ``select``:
    ``hvi`` (greedy predicted hypervolume improvement over the real front) or ``spread`` (the
    predicted front, spread along the first objective); ``score_sample``: that many (at most half)
    of the initial random archs are held out of a second fit per iteration that scores the predictors on them
    (``search_log.csv``: ``<name>_sample_kendall_tau``, ``<name>_sample_mape``), 0 to skip;
    ``refine``: that many one-gene neighbours of the algorithm's final population join the
    candidate pool (a local search on the predictors); ``optimism``: the algorithm and the candidate
    choice score each predicted objective at its predicted mean plus that many posterior standard
    deviations towards the better side (predictors with ``has_std``; the others: the mean);
    ``callback(entry, result)`` after each iteration, with its log entry and the result so far.
    """
    objectives, constraints = check_objectives(objectives), check_constraints(constraints)
    if algorithm not in ALGORITHMS:
        raise SearchConfigError(f"unknown algorithm {algorithm!r}; algorithms: {', '.join(ALGORITHMS)}")
    if select not in SELECTIONS:
        raise SearchConfigError(f"unknown select {select!r}; allowed: {', '.join(SELECTIONS)}")
    for name, value, low in (("init", init, 2), ("per_iteration", per_iteration, 1), ("budget", budget, 1),
                             ("score_sample", score_sample, 0), ("refine", refine, 0),
                             ("generations", generations, 1), ("population", population, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise SearchConfigError(f"{name}={value!r}: allowed: an integer >= {low}")
    if isinstance(optimism, bool) or not isinstance(optimism, (int, float, np.number)) or not optimism >= 0:
        raise SearchConfigError(f"optimism={optimism!r}: allowed: a number >= 0 (standard deviations)")
    if budget > space.cardinality():
        raise SearchConfigError(f"budget={budget} is more real evaluations than the space has subnets "
                                f"({space.cardinality()}); allowed: at most {space.cardinality()}")
    initial = [space.validate(arch) for arch in (initial or [])]
    init = min(init, budget)
    exact = exact_quantities(space, exact)
    check_reachable(space, constraints, exact)
    options = dict(predictor_options or {})
    create_predictor(predictor, **{**_seeded(predictor, seed), **options})  # a bad name or option fails here
    search = _Search(space, evaluate, objectives, constraints, exact, predictor, seed,
                     None if out_dir is None else Path(out_dir), chunk_size, progress)
    search.select, search.predictor_options, search.refine = select, options, refine
    search.optimism = float(optimism)

    rng = np.random.default_rng(seed)
    first = initial_archs(space, max(init, len(initial)), rng, initial)
    search.evaluate_real(first, iteration=0)
    search.set_reference()
    known = {space.key(a) for a in initial} | {space.key(space.largest()), space.key(space.smallest())}
    randoms = [space.key(a) for a in first if space.key(a) not in known]
    search.sample_keys = randoms[:min(score_sample, len(randoms) // 2)]  # at most half: the rest fit
    iteration = 0
    while len(search.rows) < budget:
        iteration += 1
        k = min(per_iteration, budget - len(search.rows))
        predicted = search.fit_predictors()
        # always ``per_iteration`` proposed, the first k evaluated: a smaller budget cuts the trace short
        # without changing it
        candidates = search.propose(algorithm, per_iteration, generations, population, iteration, rng)[:k]
        estimates = search.estimate(candidates) if predicted else {}
        search.evaluate_real(candidates, iteration)
        search.log_iteration(iteration, candidates, estimates)
        if callback is not None:
            callback(search.log[-1], search.result())
    if not search.log:
        search.log_iteration(0, [], {})
    return search.finish()


def initial_archs(space, count: int, rng: np.random.Generator, first: Sequence[dict] = ()) -> list[dict]:
    """``first``, the largest, the smallest and distinct random archs: the extremes anchor the front."""
    archs, seen = [], set()
    for arch in (*first, space.largest(), space.smallest()):
        if space.key(arch) not in seen:
            seen.add(space.key(arch))
            archs.append(arch)
    for _ in range(100 * count):
        if len(archs) >= count:
            break
        arch = space.sample(rng)
        if space.key(arch) not in seen:
            seen.add(space.key(arch))
            archs.append(arch)
    return archs[:count]


def check_reachable(space, constraints: Mapping[str, float], exact: Mapping[str, Callable]) -> None:
    """An exact quantity's bound that even the subnet at its extreme breaks can never be met."""
    for name, bound in constraints.items():
        if name not in exact:
            continue
        extreme = space.smallest() if DIRECTIONS[name] > 0 else space.largest()
        value = float(exact[name]([extreme])[0])
        if DIRECTIONS[name] * (value - bound) > 0:
            raise SearchConfigError(f"constraint {name}{'<=' if DIRECTIONS[name] > 0 else '>='}{bound:g} is met "
                                    f"by no subnet: the nearest, {'smallest' if DIRECTIONS[name] > 0 else 'largest'}"
                                    f", has {name}={value:g}")


def exact_quantities(space, exact: Mapping[str, Callable] | None = None) -> dict[str, Callable]:
    """The analytic quantities of the space (MACs, params, model size), plus the caller's ``exact``."""
    def analytic(method):
        return lambda archs: np.array([method(arch) for arch in archs], dtype=np.float64)

    return {**{name: analytic(getattr(space, name)) for name in ANALYTIC}, **(exact or {})}


def pick_hvi(F: np.ndarray, front: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` rows of ``F`` chosen greedily by the hypervolume each adds to ``front`` and
    the rows chosen before it (all normalised, minimised, reference point 1.1); rows that add none
    follow, least dominated by those first (additive epsilon: the shift that would make a row
    non-dominated)."""
    hv = HV(ref_point=np.full(F.shape[1], 1.1))
    chosen: list[int] = []
    current = front
    base = hv(current) if len(current) else 0.0
    remaining = list(range(len(F)))
    while remaining and len(chosen) < k:
        gains = np.array([hv(np.vstack([current, F[i]])) - base for i in remaining])
        best = int(np.argmax(gains))
        if gains[best] <= 1e-12:
            break
        chosen.append(remaining.pop(best))
        current = np.vstack([current, F[chosen[-1]]])
        base += gains[best]
    if len(chosen) < k and remaining:
        rest = np.array(remaining)
        if len(current):  # against the front and the rows already chosen
            epsilon = np.max(np.min(F[rest][:, None, :] - current[None, :, :], axis=2), axis=1)
        else:
            epsilon = np.zeros(len(rest))
        chosen += [int(i) for i in rest[np.argsort(epsilon, kind="stable")][:k - len(chosen)]]
    return np.array(chosen, dtype=np.int64)


def pick_spread(F: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` rows of a front spread evenly along its first objective."""
    order = np.argsort(F[:, 0], kind="stable")
    if len(order) <= k:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, k).round().astype(int))]


class _Search:
    """The state of one search: real evaluations, predictors, the per-iteration log."""

    def __init__(self, space, evaluate, objectives, constraints, exact, predictor, seed, out_dir, chunk_size,
                 progress):
        self.space, self.evaluate_fn, self.objectives = space, evaluate, objectives
        self.constraints, self.exact, self.predictor_name, self.seed = constraints, exact, predictor, seed
        self.out_dir, self.chunk_size, self.progress = out_dir, chunk_size, progress
        self.needed = tuple(dict.fromkeys([*objectives, *constraints]))
        self.predicted = tuple(name for name in self.needed if name not in exact)
        self.rows: list[dict] = []
        self.log: list[dict] = []
        self.predictors: dict = {}
        self.keys: set[str] = set()
        self._features: dict[tuple[str, str], np.ndarray] = {}
        self.cached = {}  # resumed evaluations by arch key, used as the replay asks for them
        if out_dir is not None and (out_dir / "evaluations.csv").exists():
            self.cached = {space.key(row["arch"]): row for row in read_rows(out_dir / "evaluations.csv")}
            log.info("resuming %s: %d real evaluations on file", out_dir, len(self.cached))
        self.reference: tuple[np.ndarray, np.ndarray] | None = None
        self.fit_seconds = 0.0  # the last iteration's predictor fitting, logged
        self.select = "spread"  # how candidates are chosen from the predicted pool: spread | hvi
        self.predictor_options: dict = {}
        self.refine = 0  # one-gene neighbours of the algorithm's final population added to the pool
        self.optimism = 0.0  # posterior standard deviations added to predicted objectives when proposing
        self.sample_keys: list[str] = []  # the fixed random sample the predictors are scored on
        self.sample_scores: dict[str, float] = {}
        self.score_seconds = 0.0
        self.chosen: dict[str, str] = {}  # predictor=auto's pick per quantity

    # -- real evaluations ----------------------------------------------------------------------
    def evaluate_real(self, archs: list[dict], iteration: int) -> None:
        todo = []
        for arch in archs:
            key = self.space.key(arch)
            if key in self.keys:
                continue
            self.keys.add(key)
            if key in self.cached:
                self.rows.append({**self.cached.pop(key), "id": len(self.rows)})
            else:
                todo.append(arch)
        bar = tqdm(total=len(todo), desc=f"iteration {iteration}: real evaluations", disable=not self.progress,
                   leave=False)
        for start in range(0, len(todo), self.chunk_size):
            chunk = todo[start:start + self.chunk_size]
            exact = {name: self.exact[name](chunk) for name in self.exact if name in ANALYTIC or name in self.needed}
            columns = self._call_evaluate(chunk)
            for i, arch in enumerate(chunk):
                row = {"id": len(self.rows), "arch": self.space.canonical(arch)}
                row.update({name: int(v[i]) if name in ANALYTIC else float(v[i]) for name, v in exact.items()})
                row.update({name: _plain(values[i]) for name, values in columns.items()})
                row["iteration"] = iteration
                self.rows.append(row)
            self.save()
            bar.update(len(chunk))
        bar.close()

    def _call_evaluate(self, archs: list[dict]) -> dict:
        columns = self.evaluate_fn(archs)
        missing = [name for name in self.predicted if name not in columns]
        if missing:
            raise SearchConfigError(f"evaluate() returned {sorted(columns)} but the search needs {missing[0]!r}")
        for name, values in columns.items():
            if len(values) != len(archs):
                raise SearchConfigError(f"evaluate() returned {len(values)} values of {name!r} for {len(archs)} archs")
        return columns

    def save(self) -> None:
        if self.out_dir is not None:  # rows replayed so far, then resumed ones the replay has not reached
            write_rows(self.out_dir / "evaluations.csv", [*self.rows, *self.cached.values()])

    # -- predictors -----------------------------------------------------------------------------
    def features(self, archs: list[dict], name: str) -> np.ndarray:
        """The feature rows of ``archs`` for the predictor of ``name``: a latency predictor sees the
        structural set (layer counts, MACs, bytes: what sets the time), accuracy the genes."""
        for_, out = feature_set(name), []
        for arch in archs:
            key = (for_, self.space.key(arch))
            if key not in self._features:
                self._features[key] = objective_features(self.space, [arch], name)[0]
            out.append(self._features[key])
        return np.stack(out)

    def fit_predictors(self) -> bool:
        """One predictor per quantity that only the real evaluation gives; False if there is none."""
        start = time.perf_counter()
        archs = [row["arch"] for row in self.rows]
        for name in self.predicted:
            y = np.array([row[name] for row in self.rows], dtype=np.float64)
            self.predictors[name] = self._new_predictor(name).fit(self.features(archs, name), y)
            chosen = getattr(self.predictors[name], "chosen", None)
            if chosen is not None:  # predictor=auto: say which model it picked, and why
                scores = ", ".join(f"{n} {t:.3f}" for n, t in self.predictors[name].cv_kendall_tau.items())
                log.info("%s predictor: auto chose %s (cross-validated Kendall tau: %s)", name, chosen, scores)
                self.chosen[name] = chosen
        self.fit_seconds = time.perf_counter() - start
        self.sample_scores = self._score_sample(archs)
        return bool(self.predicted)

    def _new_predictor(self, name: str):
        """The predictor of ``name``; an xgboost (or auto) latency one fits relative error unless the
        options say otherwise (latencies span 10x: squared error would fit the slowest subnets only).
        Ridge keeps squared error: its relative fit (least absolute error) on a few dozen rows of the
        front interpolates some rows and misses the others (toy space: Kendall tau 0.80 and 17%
        MAPE on unseen archs, squared 0.97 and 1.6%)."""
        options = {**_seeded(self.predictor_name, self.seed), **self.predictor_options}
        relative = (feature_set(name) == "latency" and self.predictor_name != "ridge"
                    and "loss" in predictor_options(self.predictor_name))
        if relative and "loss" not in options:
            options["loss"] = "relative"
        return create_predictor(self.predictor_name, **options)

    def _score_sample(self, archs: list[dict]) -> dict[str, float]:
        """Predictors fitted without the fixed random sample, scored on it: quality over the whole
        space, not only on the candidates (which the search picks where the predictor is confident)."""
        if len(self.sample_keys) < 2 or not self.predicted:
            return {}
        keys = [self.space.key(row["arch"]) for row in self.rows]
        held = np.isin(keys, self.sample_keys)
        if (~held).sum() < 2:
            return {}
        start, scores = time.perf_counter(), {}
        for name in self.predicted:
            y = np.array([row[name] for row in self.rows], dtype=np.float64)
            X = self.features(archs, name)
            quality = report(y[held], self._new_predictor(name).fit(X[~held], y[~held]).predict(X[held]))
            scores[f"{name}_sample_kendall_tau"] = quality["kendall_tau"]
            scores[f"{name}_sample_mape"] = quality["mape"]
        self.score_seconds = time.perf_counter() - start
        return scores

    def estimate(self, archs: list[dict], optimism: float = 0.0) -> dict:
        """Exact and predicted quantities of ``archs`` (predicted: the mean). With ``optimism``, an
        ``optimistic`` entry holds the objectives to score instead: mean + optimism x the posterior
        standard deviation towards the better side, for predictors that have one."""
        columns = {name: np.asarray(fn(archs), dtype=np.float64) for name, fn in self.exact.items()
                   if name in self.needed}
        optimistic = {}
        for name in self.predicted:
            X, predictor = self.features(archs, name), self.predictors[name]
            if optimism > 0 and predictor.has_std and name in self.objectives:
                columns[name], std = predictor.predict_with_std(X)
                optimistic[name] = columns[name] - DIRECTIONS[name] * optimism * std
            else:
                columns[name] = predictor.predict(X)
        if optimistic:
            columns["optimistic"] = optimistic
        return columns

    # -- proposing candidates ---------------------------------------------------------------------
    def propose(self, algorithm: str, k: int, generations: int, population: int, iteration: int,
                rng: np.random.Generator) -> list[dict]:
        """The ``k`` most spread not yet evaluated archs of the front the algorithm finds on the estimates."""
        problem = ArchProblem(self.space, self.objectives, self.constraints,
                              lambda archs: self.estimate(archs, self.optimism))
        if algorithm == "random":
            X = np.stack([self.space.encode(self.space.sample(rng)) for _ in range(population * generations)])
        else:
            X = self._run_algorithm(problem, algorithm, generations, population, iteration, rng)
        if self.refine and len(X):  # one-gene neighbours of the final population: a local search
            upper = self.space.gene_upper_bounds()
            rows = np.asarray(X, dtype=np.float64).round().astype(np.int64)
            picks = rows[rng.integers(len(rows), size=self.refine)]
            genes = rng.integers(len(upper), size=self.refine)
            picks[np.arange(self.refine), genes] = rng.integers(upper[genes] + 1)
            X = np.concatenate([rows, picks])
        archs, seen = [], set(self.keys)
        for genes in X:
            arch = self.space.decode(genes)
            if self.space.key(arch) not in seen:
                seen.add(self.space.key(arch))
                archs.append(arch)
        # the algorithm may have converged on evaluated archs: unseen ones top the pool up, half of
        # them random, half one gene away from a feasible evaluated arch (a tight bound admits few
        # random archs, but the neighbours of feasible ones mostly stay feasible)
        feasible = [self.space.encode(row["arch"]) for row in self.feasible(self.rows)] if self.constraints else []
        upper = self.space.gene_upper_bounds()
        for attempt in range(100 * k):
            if len(archs) >= k * TOP_UP_FACTOR:
                break
            if feasible and attempt % 2:
                genes = feasible[rng.integers(len(feasible))].copy()
                gene = rng.integers(len(genes))
                genes[gene] = rng.integers(upper[gene] + 1)
                arch = self.space.decode(genes)
            else:
                arch = self.space.sample(rng)
            if self.space.key(arch) not in seen:
                seen.add(self.space.key(arch))
                archs.append(arch)
        if not archs:
            return []
        out = problem.evaluate(np.stack([self.space.encode(a) for a in archs]), return_as_dictionary=True)
        for _ in range(5 if self.constraints else 0):  # too few predicted feasible: their neighbours too
            ok = np.flatnonzero((out["G"] <= 0).all(axis=1))
            if len(ok) >= k or not (len(ok) or feasible):
                break
            parents = [self.space.encode(archs[i]) for i in ok] + feasible
            more = []
            for _ in range(k * TOP_UP_FACTOR):
                genes = parents[rng.integers(len(parents))].copy()
                gene = rng.integers(len(genes))
                genes[gene] = rng.integers(upper[gene] + 1)
                arch = self.space.decode(genes)
                if self.space.key(arch) not in seen:
                    seen.add(self.space.key(arch))
                    more.append(arch)
            if not more:
                break
            extra = problem.evaluate(np.stack([self.space.encode(a) for a in more]), return_as_dictionary=True)
            archs += more
            out = {name: np.concatenate([out[name], extra[name]]) for name in ("F", "G")}
        # predicted feasible first, front by front, each spread along the first objective; only when
        # fewer than k are feasible, the least infeasible (sum of relative violations) fill up
        bounds = np.maximum(np.abs(list(self.constraints.values())), 1e-12) if self.constraints else 1.0
        excess = (np.clip(out["G"], 0, None) / bounds).sum(axis=1) if self.constraints else np.zeros(len(archs))
        chosen: list[int] = []
        remaining = np.flatnonzero(excess == 0)
        if self.select == "hvi" and remaining.size:
            low, scale = self.reference
            front = self._minimised(self.pareto()) if self.pareto() else np.zeros((0, len(self.objectives)))
            chosen += [int(remaining[i]) for i in pick_hvi((out["F"][remaining] - low) / scale,
                                                           (front - low) / scale, k)]
            remaining = remaining[:0]
        while remaining.size and len(chosen) < k:
            front = remaining[pareto_mask(out["F"][remaining])]
            chosen += [int(front[i]) for i in pick_spread(out["F"][front], k - len(chosen))]
            remaining = np.setdiff1d(remaining, front)
        if len(chosen) < k:
            infeasible = np.flatnonzero(excess > 0)
            chosen += [int(i) for i in infeasible[np.argsort(excess[infeasible], kind="stable")][:k - len(chosen)]]
        return [archs[i] for i in chosen]

    def _run_algorithm(self, problem, algorithm, generations, population, iteration, rng) -> np.ndarray:
        # warm start: the evaluated archs (front first), topped up with random ones
        F = np.stack([minimised(name, [row[name] for row in self.rows]) for name in self.objectives], axis=1)
        order = np.argsort(~pareto_mask(F), kind="stable")
        initial = [self.space.encode(self.rows[i]["arch"]) for i in order[:population]]
        initial += [self.space.encode(self.space.sample(rng)) for _ in range(population - len(initial))]
        method = make_algorithm(algorithm, len(self.objectives), population, np.stack(initial),
                                int(rng.integers(2**31)))
        bar = tqdm(total=generations, desc=f"iteration {iteration}: {algorithm} on predictors",
                   disable=not self.progress, leave=False)
        result = minimize(problem, method, ("n_gen", generations), seed=int(rng.integers(2**31)),
                          callback=lambda _: bar.update(1), verbose=False)
        bar.close()
        return np.atleast_2d(result.pop.get("X"))

    # -- reporting ----------------------------------------------------------------------------------
    def set_reference(self) -> None:
        """Hypervolume is measured in units of the initial evaluations' range, with the reference
        point 10% beyond their worst values, fixed for the whole search so iterations compare."""
        F = self._minimised(self.rows)
        self.reference = (F.min(axis=0), np.maximum(F.max(axis=0) - F.min(axis=0), 1e-12))

    def _minimised(self, rows) -> np.ndarray:
        return np.stack([minimised(name, [row[name] for row in rows]) for name in self.objectives], axis=1)

    def feasible(self, rows) -> list[dict]:
        return [row for row in rows if all(DIRECTIONS[n] * (row[n] - bound) <= 0 for n, bound in
                                           self.constraints.items())]

    def hypervolume(self) -> float:
        rows = self.feasible(self.rows)
        if not rows:
            return 0.0
        low, scale = self.reference
        return float(HV(ref_point=np.full(len(self.objectives), 1.1))((self._minimised(rows) - low) / scale))

    def log_iteration(self, iteration: int, candidates: list[dict], estimates: dict) -> None:
        entry = {"iteration": iteration, "evaluations": len(self.rows), "hypervolume": self.hypervolume(),
                 "front_size": len(self.pareto()), "fit_seconds": round(self.fit_seconds, 4),
                 "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        entry.update({f"{name}_predictor": chosen for name, chosen in self.chosen.items()})
        if self.sample_scores:
            entry.update(self.sample_scores)
            entry["score_fit_seconds"] = round(self.score_seconds, 4)
        # predictor quality on the candidates it proposed, before they were evaluated: out of sample
        by_key = {self.space.key(row["arch"]): row for row in self.rows}
        if self.constraints:  # how many real evaluations the constraints' bounds admit, so far and this time
            entry["feasible_share"] = len(self.feasible(self.rows)) / max(len(self.rows), 1)
            if candidates:
                rows = [by_key[self.space.key(a)] for a in candidates]
                entry["candidates_feasible_share"] = len(self.feasible(rows)) / len(rows)
        for name in self.predicted:
            if name in estimates and len(candidates) >= 2:
                truth = np.array([by_key[self.space.key(a)][name] for a in candidates])
                quality = report(truth, estimates[name])
                entry[f"{name}_kendall_tau"] = quality["kendall_tau"]
                entry[f"{name}_mape"] = quality["mape"]
        self.log.append(entry)
        log.info("iteration %d: %d real evaluations, hypervolume %.4f, front %d", iteration, entry["evaluations"],
                 entry["hypervolume"], entry["front_size"])
        if self.out_dir is not None:
            write_rows(self.out_dir / "search_log.csv", self.log, list(dict.fromkeys(k for e in self.log for k in e)))

    def pareto(self) -> list[dict]:
        rows = self.feasible(self.rows)
        if not rows:
            return []
        return [row for row, keep in zip(rows, pareto_mask(self._minimised(rows)), strict=True) if keep]

    def result(self) -> SearchResult:
        return SearchResult(self.rows, self.pareto(), self.log, self.objectives, dict(self.constraints),
                            dict(self.predictors), self.out_dir)

    def finish(self) -> SearchResult:
        if self.cached:  # the replay went elsewhere: keep the real evaluations it did not reach
            self.rows += [{**row, "id": len(self.rows) + i} for i, row in enumerate(self.cached.values())]
            self.cached = {}
            self.save()
        result = self.result()
        if self.out_dir is not None:
            write_rows(self.out_dir / "pareto.csv", result.pareto, columns_of(self.rows))
            y = "accuracy" if "accuracy" in self.objectives else self.objectives[1]
            x = next(name for name in self.objectives if name != y)
            bounds = ", ".join(f"{n} {'<=' if DIRECTIONS[n] > 0 else '>='} {b:g}" for n, b in self.constraints.items())
            plot_pareto(self.out_dir / "pareto.png", self.rows, result.pareto, x, y, constraints=self.constraints,
                        title=f"{len(self.rows)} real evaluations, {len(result.pareto)} on the front"
                              + (f" ({bounds})" if bounds else ""))
        return result


def _seeded(name: str, seed: int) -> dict:
    return {} if name == "ridge" else {"seed": seed}  # ridge is deterministic and takes no seed


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
