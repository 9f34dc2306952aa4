"""How far a spec-sheet (roofline) latency estimate is from a measurement, on this machine's CPU.

    python scripts/bench_latency.py [--supernet runs/train/vit-digits/supernet.pt] [--n 50] [--seed 0]

1. Calibrates a roofline profile for this machine as a data sheet would describe it: peak GMAC/s from
   a large matmul, memory bandwidth from a large copy and the per-layer overhead from an almost empty
   layer, all with `local_cpu`'s thread count; the efficiencies per op kind are the packaged CPU
   profiles' assumptions (conf/hw/rpi5.yaml). Written to `runs/bench/local_cpu_roofline.yaml`, a
   profile that `load_profile(path)` (or `hw=...` with a path) reads.
2. Times `--n` sampled subnets with `local_cpu` and estimates each with that profile, for two spaces:
   the digits ViT (the trained supernet if it exists, else random weights: latency does not depend
   on the weights) and the ViT-Ti space at 224 px (random weights).
3. Reports Kendall tau and MAPE of the estimate against the measurement, the median ratio
   estimate / measurement, and the MAPE left once the estimate is divided by that ratio. Writes
   `runs/bench/latency.json`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw_profiles import PROFILE_DIR, load_profile, measure_models  # noqa: E402
from predictors import report  # noqa: E402
from supernet import create_supernet_from_config  # noqa: E402
from supernet.checkpoint import atomic_write, load_supernet, save_json  # noqa: E402


def fastest_s(run, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls: a shared machine only ever adds time."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def calibrate(threads: int) -> dict:
    """This machine's roofline numbers, measured with `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
            peak_gmacs = 1024**3 / fastest_s(lambda: a @ b, 20) / 1e9
            # 256 MB: far beyond the caches (32 MB L3 here), so the copy runs at memory speed.
            source, target = torch.randn(64 * 2**20), torch.empty(64 * 2**20)
            memory_gbps = 2 * source.nbytes / fastest_s(lambda: target.copy_(source), 10) / 1e9  # read + write
            # A layer doing almost nothing: what eager PyTorch spends per layer before any arithmetic.
            tiny, one = torch.nn.Linear(1, 1), torch.randn(1, 1)
            overhead_ms = fastest_s(lambda: tiny(one), 2000) * 1e3
    finally:
        torch.set_num_threads(previous)
    cpu_assumptions = yaml.safe_load((PROFILE_DIR / "rpi5.yaml").read_text())
    return {
        "name": "local_cpu_roofline",
        "description": f"this machine's CPU as a roofline, calibrated by scripts/bench_latency.py ({threads} thread)",
        "kind": "estimated",
        "batch_size": 1,
        "peak_gmacs": {"fp32": round(peak_gmacs, 2)},
        "memory_gbps": round(memory_gbps, 2),
        "efficiency": cpu_assumptions["efficiency"],
        "launch_overhead_ms": round(overhead_ms, 5),
    }


def sampled_archs(space, n: int, seed: int) -> list[dict]:
    rng, seen, archs = np.random.default_rng(seed), set(), []
    while len(archs) < n:  # both spaces hold far more than n distinct subnets
        arch = space.canonical(space.sample(rng))
        if space.key(arch) not in seen:
            seen.add(space.key(arch))
            archs.append(arch)
    return archs


def compare(net, archs: list[dict], measured_profile, roofline) -> dict:
    models = ((a, net.export(a), (net.in_chans, a["resolution"], a["resolution"])) for a in archs)
    measured = np.array([row["latency_ms"] for row in measure_models(models, measured_profile)])
    estimated = np.array([roofline.estimate_ms(net.layer_costs(a)) for a in tqdm(archs, desc="roofline")])
    quality = report(measured, estimated)
    # One factor for all subnets (fit here, on the same rows): what is left is the error in the
    # estimate's shape, which a calibration of the efficiencies on a few measurements cannot remove.
    ratio = float(np.median(estimated / measured))
    macs = np.array([net.space.macs(a) for a in archs])
    return {"kendall_tau": quality["kendall_tau"], "mape": quality["mape"],
            "median_ratio_estimate_to_measured": ratio,
            "mape_after_one_scale": report(measured, estimated / ratio)["mape"],
            "measured_ms_range": [float(measured.min()), float(measured.max())],
            "estimated_ms_range": [float(estimated.min()), float(estimated.max())],
            "mmacs_range": [float(macs.min() / 1e6), float(macs.max() / 1e6)],
            "rows": [{"arch": a, "measured_ms": float(m), "estimated_ms": float(e)}
                     for a, m, e in zip(archs, measured, estimated, strict=True)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", default=str(ROOT / "runs" / "train" / "vit-digits" / "supernet.pt"))
    parser.add_argument("--n", type=int, default=50, help="subnets per space")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "latency.json"))
    args = parser.parse_args()
    # eager, as its figures were measured: onnxruntime (local_cpu's default) exports each subnet first
    measured_profile = load_profile("local_cpu", backend="torch")
    calibration = calibrate(measured_profile.threads)
    profile_path = Path(args.out).with_name("local_cpu_roofline.yaml")
    atomic_write(profile_path, lambda f: yaml.safe_dump(calibration, f, sort_keys=False), mode="w")
    roofline = load_profile(profile_path)
    print(f"calibrated {profile_path}: {roofline.peak_gmacs['fp32']:.1f} GMAC/s, {roofline.memory_gbps:.1f} GB/s, "
          f"{roofline.launch_overhead_ms * 1e3:.1f} us per layer")

    trained = Path(args.supernet).is_file()
    model_config = yaml.safe_load((ROOT / "conf" / "model" / "vit.yaml").read_text())
    digits = load_supernet(args.supernet) if trained else create_supernet_from_config(model_config, num_classes=10)
    tiny_config = {**yaml.safe_load((ROOT / "conf" / "model" / "vit_tiny.yaml").read_text()), "pretrained": None}
    spaces = {"vit_digits": (digits, args.supernet if trained else "random weights (conf/model/vit.yaml)"),
              "vit_tiny_224": (create_supernet_from_config(tiny_config, num_classes=1000).eval(),
                               "random weights (conf/model/vit_tiny.yaml)")}
    results = {"setup": {"measured_profile": "local_cpu", "threads": measured_profile.threads,
                         "repeats": measured_profile.repeats, "rounds": measured_profile.rounds,
                         "n": args.n, "seed": args.seed, "roofline_profile": calibration}}
    for name, (net, weights) in spaces.items():
        archs = sampled_archs(net.space, args.n, args.seed)
        results[name] = {"weights": weights, **compare(net, archs, measured_profile, roofline)}
        r = results[name]
        print(f"{name}: Kendall tau {r['kendall_tau']:.3f}, MAPE {r['mape']:.1f}%, estimate / measured "
              f"{r['median_ratio_estimate_to_measured']:.2f}, MAPE after that one scale "
              f"{r['mape_after_one_scale']:.1f}% (measured {r['measured_ms_range'][0]:.2f}-"
              f"{r['measured_ms_range'][1]:.2f} ms)")
    save_json(results, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
