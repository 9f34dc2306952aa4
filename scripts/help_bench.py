"""``bench_predictors.py --data help | timing``: latency predictors and roofline calibration on HELP.

HELP (Lee et al., NeurIPS 2021) measured 5,000 OFA MobileNetV3 subnets on GPUs (PyTorch, batch 1 or
64); ``../shared/benchmarks/help_ofa/`` holds them (format in its README). Per setting and seed: a
random split, predictors fit on ``--fit`` rows (100) and scored on the other 4,900; baselines beside
them: a line through MACs, a line through the layer count, the layer count itself (no fit: rank
only), the spec-sheet roofline (no fit) and the roofline calibrated on the fit rows. ``ceiling`` is a
relative-loss ridge fit on all 5,000 rows scored on the test rows it saw: what the measurement noise
leaves to any model of these features. Calibration: the roofline calibrated on 20, 50, 100 rows.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from hw_profiles import load_profile, write_table
from hw_profiles.calibrate import calibrate, calibrated_fields, write_profile
from predictors import create_predictor, report
from search.benchmarks import ofa_w12_space
from search.features import objective_feature_names, objective_features
from supernet.checkpoint import save_json
from supernet.models.mobilenetv3 import OFA_RESOLUTIONS

SETTINGS = ("2080ti_1", "titan_rtx_1", "titan_xp_1", "2080ti_64")
PREDICTORS = ("xgboost", "ridge", "gp", "gp_linear", "mlp", "auto")
# Data-sheet figures, FP32 (HELP timed FP32 PyTorch): peak = CUDA cores x boost clock (1 FMA per
# clock), memory bandwidth; efficiencies and the 10 us launch cost as the packaged GPU profiles assume.
GPUS = {"2080ti": ("NVIDIA GeForce RTX 2080 Ti", 6725, 616.0),   # 4352 cores x 1.545 GHz, 616 GB/s
        "titan_rtx": ("NVIDIA TITAN RTX", 8150, 672.0),          # 4608 x 1.77 GHz, 672 GB/s
        "titan_xp": ("NVIDIA TITAN Xp", 6075, 547.7)}            # 3840 x 1.582 GHz, 547.7 GB/s
EFFICIENCY = {"conv": 0.6, "dwconv": 0.3, "linear": 0.6, "matmul": 0.5, "norm": 0.5, "act": 0.7, "add": 0.7,
              "pool": 0.6, "embed": 0.5, "default": 0.4}
CALIBRATION_ROWS = (20, 50, 100)


def gpu_profile(setting: str) -> dict:
    gpu, batch = setting.rsplit("_", 1)
    description, peak, bandwidth = GPUS[gpu]
    return {"name": f"{gpu}_b{batch}", "description": f"{description}, FP32, data-sheet roofline", "kind": "estimated",
            "batch_size": int(batch), "peak_gmacs": {"fp32": peak}, "memory_gbps": bandwidth,
            "efficiency": dict(EFFICIENCY), "launch_overhead_ms": 0.01}


def help_archs(folder: Path):
    space = ofa_w12_space(OFA_RESOLUTIONS)
    raw = json.loads((folder / "archs.json").read_text())
    archs = [space.canonical({"resolution": a["r"], "ks": a["ks"], "expand": [float(e) for e in a["e"]],
                              "depth": a["d"], "bits": [32] * len(a["ks"])}) for a in raw]
    return space, archs


def _mean(rows: list[dict]) -> dict:
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def main_help(args, out: str) -> None:
    folder = Path(args.folder)
    space, archs = help_archs(folder)
    costs = [space.layer_costs(a) for a in tqdm(archs, desc="layer costs")]
    X_genes = np.stack([space.features(a) for a in archs])
    results, tables = {"setup": {"fit": args.fit, "seeds": args.seeds, "rows": len(archs)}}, ROOT_BENCH / "help"
    for setting in SETTINGS:
        y = np.array(json.loads((folder / f"{setting}.json").read_text()), dtype=np.float64)
        profile = load_profile(gpu_profile(setting))
        write_profile(gpu_profile(setting), tables / f"{profile.name}.yaml")  # for the --calibrate command
        write_table([{"arch": a, "latency_ms": float(v)} for a, v in zip(archs, y, strict=True)],
                    tables / f"{setting}.csv")
        X = objective_features(space, archs, "latency_ms", profile)
        names = objective_feature_names(space, "latency_ms", profile)
        layers, macs, roofline = (X[:, names.index(n)] for n in ("layers", "macs", "roofline_ms"))
        per_seed: dict[str, list[dict]] = {}
        calibration: dict[str, list[dict]] = {}
        for seed in tqdm(range(args.seeds), desc=setting):
            order = np.random.default_rng(seed).permutation(len(y))
            fit, test = order[:args.fit], order[args.fit:]
            for name in PREDICTORS:
                start = time.perf_counter()
                options = {"loss": "relative"} if name in ("xgboost", "ridge", "auto") else {}
                predictor = create_predictor(name, **options).fit(X[fit], y[fit])
                row = {**report(y[test], predictor.predict(X[test])), "fit_s": time.perf_counter() - start}
                per_seed.setdefault(name, []).append(row)
                if name == "auto":
                    chose = {"share": float(predictor.chosen == "ridge")}
                    per_seed.setdefault("auto chose ridge", []).append(chose)
            predicted = create_predictor("xgboost").fit(X_genes[fit], y[fit]).predict(X_genes[test])
            per_seed.setdefault("xgboost (before: gene features)", []).append(report(y[test], predicted))
            for label, column in (("MACs-only linear", macs), ("layer-count-only linear", layers)):
                line = create_predictor("ridge", alpha=1e-6).fit(column[fit, None], y[fit])
                per_seed.setdefault(label, []).append(report(y[test], line.predict(column[test, None])))
            per_seed.setdefault("layer count (no fit)", []).append(report(y[test], layers[test]))
            per_seed.setdefault("roofline, data sheet (no fit)", []).append(report(y[test], roofline[test]))
            for n in CALIBRATION_ROWS:
                rows, rest = order[:n], order[n:]
                result = calibrate(profile, [costs[i] for i in rows], y[rows])
                calibrated = load_profile(calibrated_fields(profile, result, table=setting, space="ofa_mbv3_w12"))
                estimate = np.array([calibrated.estimate_ms(costs[i]) for i in rest])
                calibration.setdefault(str(n), []).append(
                    {**{k: v for k, v in report(y[rest], estimate).items() if k in ("kendall_tau", "mape")},
                     "launch_overhead_us": 1e3 * result.launch_overhead_ms, "fit_mape": result.fit_mape})
                if n == args.fit:
                    label = f"roofline calibrated on the {n} fit rows"
                    per_seed.setdefault(label, []).append(report(y[rest], estimate))
        ceiling = create_predictor("ridge", loss="relative").fit(X, y).predict(X)
        rows = {name: _mean(r) for name, r in per_seed.items()}
        rows["ceiling (relative ridge fit on all rows)"] = report(y, ceiling)
        results[setting] = {"predictors": rows, "calibration": {n: _mean(r) for n, r in calibration.items()},
                            "roofline_no_fit_all_rows": report(y, roofline)}
    save_json(results, out)
    for setting in SETTINGS:
        print(f"{setting}: {'model':44} {'tau':>6} {'MAPE %':>7} {'fit s':>6}")
        for name, r in results[setting]["predictors"].items():
            if "kendall_tau" in r:
                fit_s = r.get("fit_s", float("nan"))
                print(f"  {'':{len(setting)}}{name:44} {r['kendall_tau']:6.3f} {r['mape']:7.2f} {fit_s:6.2f}")
        for n, r in results[setting]["calibration"].items():
            print(f"  {'':{len(setting)}}roofline calibrated on {n:>3} rows{'':17} {r['kendall_tau']:6.3f} "
                  f"{r['mape']:7.2f}   launch {r['launch_overhead_us']:.1f} us")
    print(f"wrote {out}; tables and data-sheet profiles in {tables}")


def main_timing(args, out: str) -> None:
    """Fit time of each predictor on 1,000 HELP rows, one thread, for both feature sets."""
    folder = Path(args.folder)
    space, archs = help_archs(folder)
    archs = archs[:1000]
    y = np.array(json.loads((folder / "2080ti_64.json").read_text()), dtype=np.float64)[:1000]
    results = {}
    with threadpool_limits(limits=1):
        for objective in ("latency_ms", "accuracy"):
            X = objective_features(space, archs, objective, load_profile(gpu_profile("2080ti_64")))
            for name in PREDICTORS:
                relative = objective == "latency_ms" and name in ("xgboost", "ridge", "auto")
                options = {"loss": "relative"} if relative else {}
                start, cpu = time.perf_counter(), time.process_time()
                create_predictor(name, **options).fit(X, y)
                # wall time, and this process's CPU time: what one free core would take
                results[f"{name}, {objective} features ({X.shape[1]} columns)"] = {
                    "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}
    save_json(results, out)
    for name, seconds in results.items():
        print(f"{name:50} wall {seconds['wall_s']:6.2f} s  cpu {seconds['cpu_s']:6.2f} s")
    print(f"wrote {out}")


ROOT_BENCH = Path(__file__).resolve().parents[1] / "runs" / "bench"
