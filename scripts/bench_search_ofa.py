"""``python scripts/bench_search.py --problem ofa-note10``: the search on a real offline problem.

OFA's MobileNetV3 w1.2 ImageNet space; top-1 from OFA's accuracy predictor is the expensive, metered
objective (each new distinct subnet costs one evaluation); Note10 latency from OFA's per-layer lookup
table (``hw=note10``, ``kind: lut``) is exact and free. Methods, each on ``--seeds``, up to ``--budget``:
- ``loop``: ``search.run_search`` with its defaults (the public API, as a user calls it), one run of
  ``--budget``; its trace does not depend on the budget, so the first 200 evaluations of a 500 run are a
  200 run (checked with ``--check-budget``);
- ``random``: distinct uniformly drawn subnets;
- ``nsga2_real``: NSGA-II (population 20) on real evaluations only.

Reference front: 20,000 random subnets, NSGA-II on the true objectives (population 200, 500
generations: 100,000 evaluations), then single-gene local refinement of the front until it no longer
changes (cached in ``runs/bench/ofa_note10_reference.json``). Hypervolume (pymoo) of (-top1, latency)
in units of the reference front's range, reference point 10% beyond its worst values.
Reports HV / HV_ref at 50, 100, ... evaluations, evaluations to 95 / 98 / 99 %, the top-1 gap to the
reference front under latency bounds, and predictor fitting time. Writes
``runs/bench/search_ofa_note10.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.core.problem import Problem
from pymoo.indicators.hv import HV
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.optimize import minimize
from pymoo.termination import get_termination

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search import run_search  # noqa: E402
from search.benchmarks import DEFAULT_FOLDER, ofa_note10  # noqa: E402
from search.objectives import pareto_mask  # noqa: E402

STEPS = tuple(range(50, 501, 50))
LATENCY_BOUNDS = (15, 20, 25, 30, 40, 50, 60, 80)
FRACTIONS = (0.95, 0.98, 0.99)


class Metered:
    """The problem's accuracy, counting each distinct subnet once, in the order first asked for."""

    def __init__(self, problem):
        self.problem, self.order, self.memo = problem, [], {}

    def __call__(self, archs):
        space = self.problem.space
        keys = [space.key(a) for a in archs]
        new = [(k, a) for k, a in {k: a for k, a in zip(keys, archs, strict=True)}.items() if k not in self.memo]
        if new:
            accuracy = self.problem.accuracy([a for _, a in new])
            latency = self.problem.latency([a for _, a in new])
            for (k, _), acc, lat in zip(new, accuracy, latency, strict=True):
                self.memo[k] = (float(acc), float(lat))
                self.order.append(self.memo[k])
        return {"accuracy": [self.memo[k][0] for k in keys], "latency_ms": [self.memo[k][1] for k in keys]}


class TrueProblem(Problem):
    """(-top1, latency) of genes, both from the benchmark's truth (for the reference front and NSGA-II)."""

    def __init__(self, problem, oracle=None):
        space = problem.space
        super().__init__(n_var=space.num_genes, n_obj=2, xl=np.zeros(space.num_genes),
                         xu=space.gene_upper_bounds(), vtype=int)
        self.problem, self.oracle = problem, oracle

    def _evaluate(self, X, out, *args, **kwargs):
        archs = [self.problem.space.decode(g) for g in X]
        if self.oracle is not None:
            columns = self.oracle(archs)
            out["F"] = np.stack([-np.asarray(columns["accuracy"]), np.asarray(columns["latency_ms"])], axis=1)
        else:
            out["F"] = np.stack([-self.problem.accuracy(archs), self.problem.latency(archs)], axis=1)


def operators():
    return dict(crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                mutation=PM(eta=3, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)


def front_of(archs, F):
    keep = pareto_mask(F)
    return [a for a, k in zip(archs, keep, strict=True) if k], F[keep]


def reference_front(problem, cache: Path, seed: int = 12345) -> tuple[list[dict], np.ndarray]:
    if cache.is_file():
        data = json.loads(cache.read_text())
        return data["archs"], np.array(data["F"])
    space, rng = problem.space, np.random.default_rng(seed)
    start = time.time()
    archs = [space.sample(rng) for _ in range(20000)]
    F = np.stack([-problem.accuracy(archs), problem.latency(archs)], axis=1)
    archs, F = front_of(archs, F)
    print(f"reference: 20,000 random -> front of {len(archs)} ({time.time() - start:.0f} s)")
    initial = np.stack([space.encode(a) for a in archs][:200] +
                       [space.encode(space.sample(rng)) for _ in range(max(0, 200 - len(archs)))])
    result = minimize(TrueProblem(problem), NSGA2(pop_size=200, sampling=initial.astype(float), **operators()),
                      ("n_gen", 500), seed=seed, verbose=False)
    more = [space.decode(g) for g in np.atleast_2d(result.pop.get("X"))]
    archs, F = merge(problem, archs, F, more)
    print(f"reference: + NSGA-II 100,000 -> front of {len(archs)} ({time.time() - start:.0f} s)")
    for round_ in range(50):  # single-gene local refinement, to a fixed point
        keys = {space.key(a) for a in archs}
        neighbours = []
        bounds = space.gene_upper_bounds()
        for arch in archs:
            genes = space.encode(arch)
            for g in range(len(genes)):
                for value in range(bounds[g] + 1):
                    if value != genes[g]:
                        changed = genes.copy()
                        changed[g] = value
                        neighbours.append(space.decode(changed))
        archs, F = merge(problem, archs, F, neighbours)
        print(f"reference: refinement round {round_ + 1} -> front of {len(archs)} ({time.time() - start:.0f} s)")
        if {space.key(a) for a in archs} == keys:
            break
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"archs": [space.canonical(a) for a in archs], "F": F.tolist()}))
    os.replace(tmp, cache)
    return archs, F


def merge(problem, archs, F, more):
    space = problem.space
    seen = {space.key(a) for a in archs}
    new = list({space.key(a): a for a in more if space.key(a) not in seen}.values())
    if not new:
        return archs, F
    G = np.stack([-problem.accuracy(new), problem.latency(new)], axis=1)
    return front_of(archs + new, np.concatenate([F, G]))


def loop_run(problem, seed, budget, options):
    metered = Metered(problem)
    start = time.process_time()
    result = run_search(problem.space, metered, ("accuracy", "latency_ms"), budget=budget, exact=problem.exact,
                        seed=seed, progress=False, **options)
    seconds = time.process_time() - start
    rows = [(r["accuracy"], r["latency_ms"]) for r in result.evaluations]
    fit = float(sum(entry.get("fit_seconds", 0.0) for entry in result.log))
    return rows, {"fit_seconds": fit, "cpu_seconds": seconds, "log": result.log}


def loop_seed(folder, budget, options, seed):
    """One loop run in a worker process (``--jobs``): its wall time with its rows."""
    start = time.time()
    rows, info = loop_run(ofa_note10(folder), seed, budget, options)
    return rows, {**info, "wall_seconds": time.time() - start}


def random_run(problem, seed, budget):
    metered, rng = Metered(problem), np.random.default_rng([seed, 1])
    while len(metered.order) < budget:
        metered([problem.space.sample(rng)])
    return metered.order[:budget]


def nsga2_run(problem, seed, budget, population=20):
    metered = Metered(problem)
    true = TrueProblem(problem, metered)
    algorithm = NSGA2(pop_size=population, sampling=IntegerRandomSampling(), **operators())
    algorithm.setup(true, termination=get_termination("n_gen", 10**6), seed=seed, verbose=False)
    while len(metered.order) < budget:
        offspring = algorithm.ask()
        Evaluator().eval(true, offspring)
        algorithm.tell(infills=offspring)
    return metered.order[:budget]


class Scorer:
    def __init__(self, F_ref):
        self.low, self.scale = F_ref.min(axis=0), F_ref.max(axis=0) - F_ref.min(axis=0)
        self.hv = HV(ref_point=np.array([1.1, 1.1]))
        self.reference = self(F_ref)
        self.F_ref = F_ref

    def __call__(self, F):
        F = np.asarray(F, dtype=np.float64)
        return float(self.hv((F[pareto_mask(F)] - self.low) / self.scale))

    def curve(self, rows, steps):
        F = np.array([(-a, t) for a, t in rows])
        return [self(F[:n]) / self.reference for n in steps if n <= len(F)]

    def evaluations_to(self, rows, fraction, step=10):
        F = np.array([(-a, t) for a, t in rows])
        for n in range(step, len(F) + 1, step):
            if self(F[:n]) >= fraction * self.reference:
                return n
        return None

    def gaps(self, rows, n):
        """Top-1 points lost to the reference front under each latency bound (after n evaluations)."""
        F = np.array([(-a, t) for a, t in rows[:n]])
        out = []
        for bound in LATENCY_BOUNDS:
            best_ref = -self.F_ref[self.F_ref[:, 1] <= bound, 0].min()
            inside = F[F[:, 1] <= bound]
            best = -inside[:, 0].min() if len(inside) else np.nan
            out.append(100 * (best_ref - best))
        return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bench_search.py --problem ofa-note10", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_FOLDER), help="OFA's Note10 files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--methods", nargs="+", default=["loop", "random", "nsga2_real"])
    parser.add_argument("--loop", default="{}", help="JSON of run_search options (default: the library's)")
    parser.add_argument("--jobs", type=int, default=1, help="loop runs (one per seed) in this many processes")
    parser.add_argument("--check-budget", type=int, default=0,
                        help="also run the loop with this budget on the first seed and check it is a prefix")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "search_ofa_note10.json"))
    args = parser.parse_args(argv)
    options = json.loads(args.loop)
    problem = ofa_note10(args.data)
    _, F_ref = reference_front(problem, ROOT / "runs" / "bench" / "ofa_note10_reference.json")
    scorer = Scorer(F_ref)
    steps = [n for n in STEPS if n <= args.budget]
    print(f"reference front: {len(F_ref)} subnets, hypervolume {scorer.reference:.4f}")

    runs, extra = {m: [] for m in args.methods}, {"loop": []}
    loops = {}
    if "loop" in args.methods:  # the slow method first, its seeds side by side with --jobs
        job = functools.partial(loop_seed, args.data, args.budget, options)
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                loops = dict(zip(args.seeds, pool.map(job, args.seeds), strict=True))
        else:
            loops = {seed: job(seed) for seed in args.seeds}
    for seed in args.seeds:
        for method in args.methods:
            start = time.time()
            if method == "loop":
                rows, info = loops[seed]
                extra["loop"].append({"fit_seconds": info["fit_seconds"], "cpu_seconds": info["cpu_seconds"]})
                sample_tau = [e.get("accuracy_sample_kendall_tau") for e in info["log"]]
                if sample_tau and sample_tau[-1] is not None:
                    extra["loop"][-1]["last_sample_kendall_tau"] = sample_tau[-1]
            elif method == "random":
                rows = random_run(problem, seed, args.budget)
            else:
                rows = nsga2_run(problem, seed, args.budget)
            runs[method].append(rows)
            curve = scorer.curve(rows, steps)
            seconds = info["wall_seconds"] if method == "loop" else time.time() - start
            print(f"seed {seed} {method:10} " + " ".join(f"{v:.3f}" for v in curve) +
                  f"  ({seconds:.0f} s" + (f", fit {extra['loop'][-1]['fit_seconds']:.1f} s"
                                                        if method == "loop" else "") + ")", flush=True)
    prefix_check = None
    if args.check_budget and "loop" in runs:
        short, _ = loop_run(problem, args.seeds[0], args.check_budget, options)
        prefix_check = short == runs["loop"][0][:args.check_budget]
        print(f"budget {args.check_budget} run == first {args.check_budget} of the budget {args.budget} run: "
              f"{prefix_check}")

    summary = {}
    for method, method_runs in runs.items():
        curves = np.array([scorer.curve(rows, steps) for rows in method_runs])
        summary[method] = {
            "mean": curves.mean(axis=0).round(4).tolist(), "min": curves.min(axis=0).round(4).tolist(),
            "per_seed": curves.round(4).tolist(),
            "evaluations_to": {f"{f:.2f}": [scorer.evaluations_to(rows, f) for rows in method_runs]
                               for f in FRACTIONS},
            "top1_gap_points": {str(n): np.nanmean([scorer.gaps(rows, n) for rows in method_runs], axis=0)
                                .round(3).tolist() for n in (200, 500) if n <= args.budget},
        }
    results = {"steps": steps, "seeds": args.seeds, "loop_options": options, "reference_size": len(F_ref),
               "reference_hypervolume": scorer.reference, "latency_bounds_ms": list(LATENCY_BOUNDS),
               "summary": summary, "loop_runs": extra["loop"], "budget_prefix_check": prefix_check}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out)
    plot(results, out.with_suffix(".png"))
    print("HV / HV_ref (mean, worst seed):")
    print("evaluations " + " ".join(f"{n:>11}" for n in steps))
    for method, s in summary.items():
        print(f"{method:11} " + " ".join(f"{m:.3f}/{w:.3f}" for m, w in zip(s["mean"], s["min"], strict=True)))
        print(f"{'':11} evaluations to 95/98/99%: " +
              ", ".join(f"{f}: {v}" for f, v in s["evaluations_to"].items()))
    if extra["loop"]:
        fits = [e["fit_seconds"] for e in extra["loop"]]
        print(f"loop predictor fitting per search: mean {np.mean(fits):.1f} s, max {np.max(fits):.1f} s")
    print(f"wrote {out}")


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for method, s in results["summary"].items():
        ax.plot(results["steps"], s["mean"], marker="o", label=f"{method} (mean)")
        ax.fill_between(results["steps"], s["min"], s["mean"], alpha=0.15)
    for level in (0.95, 0.98):
        ax.axhline(level, c="0.5", ls="--", lw=1)
    ax.set_xlabel("real evaluations (distinct subnets scored by OFA's accuracy predictor)")
    ax.set_ylabel("hypervolume / reference")
    low = min(min(s["min"]) for s in results["summary"].values())
    ax.set_ylim(np.floor(low * 20) / 20, 1.0)
    ax.set_title("OFA MobileNetV3 w1.2, top-1 vs Samsung Note10 latency (LUT)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
