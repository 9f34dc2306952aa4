"""Quality of lightly trained predictors: on a trained digits supernet, or on HELP's GPU latencies.

    python scripts/bench_predictors.py [--supernet runs/train/vit-digits/supernet.pt] [--seed 0]
    python scripts/bench_predictors.py --data help [--folder ../shared/benchmarks/help_ofa] [--seeds 5]
    python scripts/bench_predictors.py --data timing     # fit time of each predictor on 1,000 rows

``--data help``: HELP's measured latencies of 5,000 OFA MobileNetV3 w1.2 subnets on four GPU settings
(``scripts/help_bench.py``); writes ``runs/bench/predictors_help.json``.

Accuracy: 400 distinct subnets evaluated for real on the validation split; each predictor is fit on
100 and scored on the other 300. Latency: 300 subnets exported and timed on ``local_cpu``; fit on 100,
scored on 200. Baseline: a linear fit on MACs alone. Reports Kendall tau and MAPE per model; writes
``runs/bench/predictors.json``.

A latency predictor cannot beat the noise of its labels, so the same 300 subnets are timed a second
time (``repeat``: MAPE between the two timings, and each predictor's MAPE against the second), and
60 of them are timed twice more with four protocols (``protocols``): one model at a time vs. all 60
in interleaved rounds, each summarised by the median or the fastest pass.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw_profiles import load_profile, measure_models  # noqa: E402
from hw_profiles.timing import time_interleaved  # noqa: E402
from predictors import create_predictor, report  # noqa: E402
from search.features import objective_features  # noqa: E402
from supernet.checkpoint import load_supernet, save_json  # noqa: E402
from supernet.data import build_data, calibration_loader  # noqa: E402
from supernet.evaluate import accuracy  # noqa: E402

MODELS = ("xgboost", "ridge", "mlp", "gp")


def latency_options(name: str) -> dict:
    return {"loss": "relative"} if name in ("xgboost", "ridge", "auto") else {}


def distinct_archs(space, n: int, rng) -> list[dict]:
    seen, archs = set(), []
    while len(archs) < n:
        arch = space.canonical(space.sample(rng))
        if space.key(arch) not in seen:
            seen.add(space.key(arch))
            archs.append(arch)
    return archs


def score(X, y, n_fit: int, macs_column: int, y_again=None, X_latency=None) -> dict:
    """Each model fit on the first ``n_fit`` rows, scored on the rest; with ``y_again`` (the same
    rows measured a second time) also its MAPE against that second measurement."""
    rows = {}
    for name in MODELS:
        start = time.perf_counter()
        if X_latency is None:
            predictor = create_predictor(name).fit(X[:n_fit], y[:n_fit])
            predicted = predictor.predict(X[n_fit:])
        else:  # latency: structural features and a relative loss where the model takes one
            predictor = create_predictor(name, **latency_options(name)).fit(X_latency[:n_fit], y[:n_fit])
            predicted = predictor.predict(X_latency[n_fit:])
        rows[name] = {**report(y[n_fit:], predicted), "fit_s": time.perf_counter() - start}
        if y_again is not None:
            rows[name]["mape_vs_second_timing"] = report(y_again[n_fit:], predicted)["mape"]
    # the same fits as before this change: latency on the accuracy features with the squared loss,
    # the GP with sklearn's unbounded optimiser (at most 15,000 L-BFGS steps)
    before = {f"{name} (before)": (name, {}) for name in MODELS} if X_latency is not None else {
        "gp (before)": ("gp", {"max_iter": 15000})}
    for label, (name, options) in before.items():
        predicted = create_predictor(name, **options).fit(X[:n_fit], y[:n_fit]).predict(X[n_fit:])
        rows[label] = report(y[n_fit:], predicted)
        if y_again is not None:
            rows[label]["mape_vs_second_timing"] = report(y_again[n_fit:], predicted)["mape"]
    baseline = create_predictor("ridge", alpha=1e-6).fit(X[:n_fit, [macs_column]], y[:n_fit])
    rows["macs_only_linear"] = report(y[n_fit:], baseline.predict(X[n_fit:, [macs_column]]))
    return rows


def time_subnets(net, archs: list[dict], profile, desc: str) -> np.ndarray:
    """Latency of each arch with the profile's protocol (interleaved rounds, fastest pass)."""
    models = ((a, net.export(a), (net.in_chans, a["resolution"], a["resolution"])) for a in tqdm(archs, desc=desc))
    return np.array([row["latency_ms"] for row in measure_models(models, profile, progress=False)])


def protocol_floors(net, archs: list[dict], profile) -> dict[str, float]:
    """MAPE between two timings of the same archs, per protocol: the noise any predictor inherits.

    "one at a time" is the protocol before interleaving (50 passes of one model, then the next);
    "interleaved" times all archs together in the profile's rounds. Each is summarised by the
    median pass (as before) and by the fastest pass (as now).
    """
    models = [(net.export(a), (net.in_chans, a["resolution"], a["resolution"])) for a in archs]
    options = dict(device="cpu", backend="torch", threads=profile.threads, warmup=profile.warmup,
                   repeats=profile.repeats, batch_size=1)
    protocols = {"one at a time": lambda: [time_interleaved([m], rounds=1, **options)[0] for m in models],
                 "interleaved": lambda: time_interleaved(models, rounds=profile.rounds, **options)}
    floors = {}
    for name, protocol in tqdm(protocols.items(), desc="protocol repeatability"):
        first, second = protocol(), protocol()
        for statistic in (np.median, np.min):
            a, b = (np.array([statistic(times) for times in timing]) for timing in (first, second))
            floors[f"{name}, {statistic.__name__}"] = report(a, b)["mape"]
    return floors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("digits", "help", "timing"), default="digits")
    parser.add_argument("--folder", default=str(ROOT.parent / "shared" / "benchmarks" / "help_ofa"),
                        help="HELP's data (--data help / timing)")
    parser.add_argument("--seeds", type=int, default=5, help="random fit/test splits (--data help)")
    parser.add_argument("--fit", type=int, default=100, help="fit rows (--data help)")
    parser.add_argument("--supernet", default=str(ROOT / "runs" / "train" / "vit-digits" / "supernet.pt"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="override local_cpu's thread count")
    parser.add_argument("--out", default=None, help="default: runs/bench/predictors[_help|_timing].json")
    args = parser.parse_args()
    if args.data != "digits":
        from help_bench import main_help, main_timing
        suffix = "_" + args.data
        out = args.out or str(ROOT / "runs" / "bench" / f"predictors{suffix}.json")
        (main_help if args.data == "help" else main_timing)(args, out)
        return
    args.out = args.out or str(ROOT / "runs" / "bench" / "predictors.json")
    net = load_supernet(args.supernet)
    space, rng = net.space, np.random.default_rng(args.seed)
    data_cfg = dict(net.train_config["data"])
    data = build_data(data_cfg.pop("name"), **data_cfg)
    val, calib = DataLoader(data.val, batch_size=512), calibration_loader(data, 2000, 512)
    macs_column = space.feature_names().index("macs")

    archs = distinct_archs(space, 400, rng)
    X = np.stack([space.features(a) for a in archs])
    acc = np.array([accuracy(net, a, val, calib_loader=calib) for a in tqdm(archs, desc="true accuracy")])
    results = {"accuracy": score(X, acc, 100, macs_column)}

    # eager, as its figures were measured: onnxruntime (local_cpu's default) exports each subnet first
    profile = load_profile("local_cpu", backend="torch", **({} if args.threads is None else {"threads": args.threads}))
    lat_archs = archs[:300]
    first, second = (time_subnets(net, lat_archs, profile, f"local_cpu latency, timing {i}") for i in (1, 2))
    X_latency = objective_features(space, lat_archs, "latency_ms")
    results["latency_ms"] = score(X[:300], first, 100, macs_column, y_again=second, X_latency=X_latency)
    results["repeat"] = {key: value for key, value in report(first[100:], second[100:]).items()
                         if key in ("kendall_tau", "mape")}
    results["protocols"] = protocol_floors(net, lat_archs[100:160], profile)
    results["timings_ms"] = {"first": first.tolist(), "second": second.tolist()}
    results["setup"] = {"supernet": args.supernet, "threads": profile.threads, "repeats": profile.repeats,
                        "rounds": profile.rounds, "accuracy_fit_test": [100, 300], "latency_fit_test": [100, 200],
                        "accuracy_range": [float(acc.min()), float(acc.max())],
                        "latency_range_ms": [float(first.min()), float(first.max())]}
    save_json(results, args.out)
    for target in ("accuracy", "latency_ms"):
        print(f"{target}: {'model':18} {'kendall tau':>11} {'MAPE %':>8}")
        for name, r in results[target].items():
            print(f"{'':{len(target) + 2}}{name:18} {r['kendall_tau']:11.3f} {r['mape']:8.2f}")
    print(f"latency timed twice: MAPE {results['repeat']['mape']:.2f}% between the two timings")
    for name, floor in results["protocols"].items():
        print(f"  {name:28} repeat MAPE {floor:6.2f}%")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
