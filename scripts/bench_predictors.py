"""Quality of lightly trained predictors on a trained digits supernet.

    python scripts/bench_predictors.py [--supernet runs/train/vit-digits/supernet.pt] [--seed 0]

Accuracy: 400 distinct subnets evaluated for real on the validation split; each predictor is fit on
100 and scored on the other 300. Latency: 300 subnets exported and timed on ``local_cpu``; fit on 100,
scored on 200. Baseline: a linear fit on MACs alone. Reports Kendall tau and MAPE per model; writes
``runs/bench/predictors.json``.
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

from hw_profiles import load_profile  # noqa: E402
from predictors import create_predictor, report  # noqa: E402
from supernet.checkpoint import load_supernet, save_json  # noqa: E402
from supernet.data import build_data, calibration_loader  # noqa: E402
from supernet.evaluate import accuracy  # noqa: E402

MODELS = ("xgboost", "ridge", "mlp", "gp")


def distinct_archs(space, n: int, rng) -> list[dict]:
    seen, archs = set(), []
    while len(archs) < n:
        arch = space.canonical(space.sample(rng))
        if space.key(arch) not in seen:
            seen.add(space.key(arch))
            archs.append(arch)
    return archs


def score(X, y, n_fit: int, macs_column: int) -> dict:
    rows = {}
    for name in MODELS:
        start = time.perf_counter()
        predictor = create_predictor(name).fit(X[:n_fit], y[:n_fit])
        rows[name] = {**report(y[n_fit:], predictor.predict(X[n_fit:])), "fit_s": time.perf_counter() - start}
    baseline = create_predictor("ridge", alpha=1e-6).fit(X[:n_fit, [macs_column]], y[:n_fit])
    rows["macs_only_linear"] = report(y[n_fit:], baseline.predict(X[n_fit:, [macs_column]]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", default=str(ROOT / "runs" / "train" / "vit-digits" / "supernet.pt"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="override local_cpu's thread count")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "predictors.json"))
    args = parser.parse_args()
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

    profile = load_profile("local_cpu", **({} if args.threads is None else {"threads": args.threads}))
    lat_archs = archs[:300]
    latency = np.array([profile.latency_ms(net.export(a), (net.in_chans, a["resolution"], a["resolution"])).ms
                        for a in tqdm(lat_archs, desc="local_cpu latency")])
    results["latency_ms"] = score(X[:300], latency, 100, macs_column)
    results["setup"] = {"supernet": args.supernet, "threads": profile.threads, "accuracy_fit_test": [100, 300],
                        "latency_fit_test": [100, 200],
                        "accuracy_range": [float(acc.min()), float(acc.max())],
                        "latency_range_ms": [float(latency.min()), float(latency.max())]}
    save_json(results, args.out)
    for target in ("accuracy", "latency_ms"):
        print(f"{target}: {'model':18} {'kendall tau':>11} {'MAPE %':>8}")
        for name, r in results[target].items():
            print(f"{'':{len(target) + 2}}{name:18} {r['kendall_tau']:11.3f} {r['mape']:8.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
