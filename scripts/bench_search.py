"""Hypervolume against real evaluations: the predictor-guided loop vs. random search vs. NSGA-II on
real evaluations only.

    python scripts/bench_search.py --problem ofa-note10 [--seeds 0 1 2 3 4]   (scripts/bench_search_ofa.py)
    python scripts/bench_search.py [--problem digits] [--supernet runs/train/vit-digits/supernet.pt] [--seeds 0 1 2]

``--problem digits`` (the default, a smoke test): a trained digits ViT, objectives accuracy
(validation split) and ``local_cpu`` latency (measured).

Every subnet is evaluated for real once (accuracy, then latency timed with the ``local_cpu``
profile) and memoised, so all methods see the same truth and a method that asks again for an arch
still pays one real evaluation. The reference front is that of ``--reference`` random real
evaluations plus everything any method found; hypervolume is measured in units of its range with
the reference point 10% beyond its worst values. Writes ``runs/bench/search.json`` and
``runs/bench/search.png``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.indicators.hv import HV
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.termination import get_termination
from torch.utils.data import DataLoader
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw_profiles import load_profile  # noqa: E402
from search import run_search  # noqa: E402
from search.loop import initial_archs  # noqa: E402
from search.objectives import pareto_mask  # noqa: E402
from search.problem import ArchProblem  # noqa: E402
from supernet.checkpoint import load_supernet, save_json  # noqa: E402
from supernet.data import build_data, calibration_loader  # noqa: E402
from supernet.evaluate import accuracy  # noqa: E402

BUDGETS = (25, 50, 75, 100, 125, 150, 175, 200)


class Oracle:
    """Real accuracy and measured latency of each arch, computed once and memoised; the archs of one
    call are timed together in interleaved rounds, as the search's evaluator does."""

    def __init__(self, net, val, calib, profile):
        self.net, self.val, self.calib, self.profile = net, val, calib, profile
        self.truth: dict[str, tuple[float, float]] = {}

    def __call__(self, archs):
        new = list({self.net.space.key(a): a for a in archs if self.net.space.key(a) not in self.truth}.items())
        models = [(self.net.export(a).eval(), (self.net.in_chans, a["resolution"], a["resolution"])) for _, a in new]
        for (key, arch), timed in zip(new, self.profile.measure_many(models) if models else [], strict=True):
            self.truth[key] = (accuracy(self.net, arch, self.val, calib_loader=self.calib), timed.ms)
        values = [self.truth[self.net.space.key(a)] for a in archs]
        return {"accuracy": [a for a, _ in values], "latency_ms": [t for _, t in values]}


def loop_run(space, oracle, seed, budget, init, per_iteration):
    result = run_search(space, oracle, ("accuracy", "latency_ms"), budget=budget, init=init,
                        per_iteration=per_iteration, generations=40, population=100, seed=seed, progress=False)
    return [(r["accuracy"], r["latency_ms"]) for r in result.evaluations]


def random_run(space, oracle, seed, budget):
    """``budget`` distinct archs drawn uniformly (the extremes are not given to it)."""
    rng, archs, seen = np.random.default_rng([seed, 1]), [], set()
    while len(archs) < budget:
        arch = space.sample(rng)
        if space.key(arch) not in seen:
            seen.add(space.key(arch))
            archs.append(arch)
    return list(zip(*oracle(archs).values(), strict=True))


def nsga2_run(space, oracle, seed, budget, population=20):
    """NSGA-II asking the oracle for every individual it evaluates (ask/tell), ``budget`` in all."""
    problem = ArchProblem(space, ("accuracy", "latency_ms"), {}, oracle)
    algorithm = NSGA2(pop_size=population, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                      mutation=PM(eta=3, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    algorithm.setup(problem, termination=get_termination("n_eval", budget), seed=seed, verbose=False)
    rows = []
    while algorithm.has_next() and len(rows) < budget:
        offspring = algorithm.ask()
        offspring = offspring[:budget - len(rows)]
        Evaluator().eval(problem, offspring)
        rows += [(-f[0], f[1]) for f in offspring.get("F")]
        algorithm.tell(infills=offspring)
    return rows


def hypervolume_curve(rows, low, scale):
    hv = HV(ref_point=np.array([1.1, 1.1]))
    F = np.array([(-a, t) for a, t in rows])
    return [float(hv((F[:n][pareto_mask(F[:n])] - low) / scale)) for n in BUDGETS if n <= len(F)]


def main_digits(argv) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", default=str(ROOT / "runs" / "train" / "vit-digits" / "supernet.pt"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--init", type=int, default=50, help="the loop's first real evaluations")
    parser.add_argument("--per-iteration", type=int, default=25, help="the loop's real evaluations per iteration")
    parser.add_argument("--reference", type=int, default=2000, help="random real evaluations of the reference front")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "search.json"))
    args = parser.parse_args(argv)

    net = load_supernet(args.supernet)
    space = net.space
    data_cfg = dict(net.train_config["data"])
    data = build_data(data_cfg.pop("name"), **data_cfg)
    # eager, as its figures were measured: onnxruntime (local_cpu's default) exports each subnet first
    oracle = Oracle(net, DataLoader(data.val, batch_size=512), calibration_loader(data, 2000, 512),
                    load_profile("local_cpu", backend="torch"))

    reference_archs = initial_archs(space, args.reference, np.random.default_rng(12345))
    reference = []
    for start in tqdm(range(0, len(reference_archs), 25), desc="reference: random real evaluations (x25)"):
        columns = oracle(reference_archs[start:start + 25])
        reference += list(zip(columns["accuracy"], columns["latency_ms"], strict=True))
    runs = {"loop": [], "random": [], "nsga2_real": []}
    for seed in tqdm(args.seeds, desc="seeds"):
        runs["loop"].append(loop_run(space, oracle, seed, args.budget, args.init, args.per_iteration))
        runs["random"].append(random_run(space, oracle, seed, args.budget))
        runs["nsga2_real"].append(nsga2_run(space, oracle, seed, args.budget))

    everything = reference + [row for method in runs.values() for run in method for row in run]
    F = np.array([(-a, t) for a, t in everything])
    low, scale = F.min(axis=0), F.max(axis=0) - F.min(axis=0)
    best = float(HV(ref_point=np.array([1.1, 1.1]))((F[pareto_mask(F)] - low) / scale))
    curves = {name: [hypervolume_curve(run, low, scale) for run in method] for name, method in runs.items()}
    summary = {name: {"mean_fraction_of_reference": (np.mean(c, axis=0) / best).round(4).tolist(),
                      "min_fraction_of_reference": (np.min(c, axis=0) / best).round(4).tolist()}
               for name, c in curves.items()}
    results = {"budgets": [n for n in BUDGETS if n <= args.budget], "reference_hypervolume": best,
               "reference_evaluations": len(reference), "distinct_real_evaluations": len(oracle.truth),
               "seeds": args.seeds, "loop": {"init": args.init, "per_iteration": args.per_iteration},
               "summary": summary, "curves": curves, "supernet": args.supernet}
    save_json(results, args.out)
    plot(results, Path(args.out).with_suffix(".png"))
    print(f"hypervolume / reference ({best:.4f}), mean over seeds {args.seeds}:")
    print("budget      " + " ".join(f"{n:>6}" for n in results["budgets"]))
    for name, s in summary.items():
        print(f"{name:11} " + " ".join(f"{v:6.3f}" for v in s["mean_fraction_of_reference"]))
    print(f"wrote {args.out}")


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, s in results["summary"].items():
        ax.plot(results["budgets"], s["mean_fraction_of_reference"], marker="o", label=name)
    ax.axhline(0.95, c="0.5", ls="--", lw=1, label="95% of reference")
    ax.set_xlabel("real evaluations")
    ax.set_ylabel("hypervolume / reference")
    ax.set_title("digits ViT, accuracy vs local_cpu latency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--problem", choices=("digits", "ofa-note10"), default="digits")
    known, rest = parser.parse_known_args()
    if known.problem == "digits":
        main_digits(rest)
    else:
        from bench_search_ofa import main as main_ofa

        main_ofa(rest)


if __name__ == "__main__":
    main()
