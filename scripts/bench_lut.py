"""How far a per-layer lookup table's sum is from timing the whole subnet, on this machine's CPU.

    python scripts/bench_lut.py [--spaces vit_digits mobilenetv3_digits vit_tiny_224] [--n 50] [--seed 0]

For each space (random weights: latency does not depend on them):
1. builds a lookup table with `local_cpu`, as `python -m search.measure --lut` does (each distinct
   layer geometry timed once), into `runs/bench/lut_<space>.yaml`;
2. times `--n` sampled subnets end to end with `local_cpu`, in interleaved rounds together with the
   same subnet as its lookup-table layers chained in one `nn.Sequential` (the table's modules, run
   back to back) and a second copy of the subnet (how well a measurement agrees with itself);
3. reports Kendall tau and MAPE of the table's sum against the end-to-end time, the median ratio
   sum / end-to-end and the MAPE left after dividing by it, and splits the miss: sum -> chained
   layers is what passes between layers (caches, the hand-over of activations), chained ->
   end-to-end what the model's own structure adds.
Writes `runs/bench/lut.csv` (one row per space) and `runs/bench/lut_subnets.csv` (one row per subnet);
a rerun of some spaces replaces their rows and keeps the others'.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from torch import nn
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw_profiles import load_profile  # noqa: E402
from hw_profiles.lut import LookupTable  # noqa: E402
from predictors import report  # noqa: E402
from search.lut import lut_layers, lut_modules  # noqa: E402
from search.measure import build_lut  # noqa: E402
from supernet import create_supernet_from_config  # noqa: E402
from supernet.checkpoint import atomic_write  # noqa: E402

SPACES = {  # name: (conf/model file, classes)
    "vit_digits": ("vit", 10),
    "mobilenetv3_digits": ("mobilenetv3", 10),
    "vit_tiny_224": ("vit_tiny", 1000),
}


def build_net(name: str):
    config_name, classes = SPACES[name]
    config = yaml.safe_load((ROOT / "conf" / "model" / f"{config_name}.yaml").read_text())
    config.pop("pretrained", None)  # random weights: no hub
    return create_supernet_from_config(config, num_classes=classes).eval()


def sampled_archs(space, n: int, seed: int) -> list[dict]:
    rng, seen, archs = np.random.default_rng(seed), set(), []
    while len(archs) < n:  # every space here holds far more than n distinct subnets
        arch = space.canonical(space.sample(rng))
        if space.key(arch) not in seen:
            seen.add(space.key(arch))
            archs.append(arch)
    return archs


def time_subnets(net, archs: list[dict], profile, group: int) -> np.ndarray:
    """``(n, 3)`` ms: end to end, chained table layers, end to end again; the three variants of a
    group of subnets are timed together, so that a burst of load hits them alike."""
    out = []
    for start in tqdm(range(0, len(archs), group), desc="timing subnets"):
        models = []
        for arch in archs[start:start + group]:
            shape = (net.in_chans, arch["resolution"], arch["resolution"])
            chained = nn.Sequential(*(module for _, module, _ in lut_modules(net, arch)))
            models += [(net.export(arch), shape), (chained, shape), (net.export(arch), shape)]
        results = profile.measure_many(models)
        out += [[r.ms for r in results[i:i + 3]] for i in range(0, len(results), 3)]
    return np.array(out)


def bench(name: str, n: int, seed: int, profile, out_dir: Path) -> tuple[dict, list[dict]]:
    net = build_net(name)
    start = time.perf_counter()
    table_path = build_lut(net, profile, out_dir / f"lut_{name}.yaml")
    build_s = time.perf_counter() - start
    table = LookupTable.load(table_path)
    archs = sampled_archs(net.space, n, seed)
    summed = np.array([table.latency_ms(lut_layers(net.space, a)) for a in archs])
    # groups of at most 10 subnets and about 256 MB of float32 weights (3 copies of each alive)
    group = max(1, min(10, 2**26 // net.space.params(net.space.largest())))
    timed = time_subnets(net, archs, profile, group)
    e2e, chained, again = timed.T
    quality, chain_quality, repeat = report(e2e, summed), report(e2e, chained), report(e2e, again)
    ratio = float(np.median(summed / e2e))
    summary = {
        "space": name, "subnets": n, "distinct_layers": len(table.table_for(None)), "build_s": round(build_s, 1),
        "e2e_ms_min": e2e.min(), "e2e_ms_max": e2e.max(),
        "kendall_tau": quality["kendall_tau"], "mape": quality["mape"],
        "median_ratio_sum_to_e2e": ratio, "mape_after_one_scale": report(e2e, summed / ratio)["mape"],
        "median_ratio_sum_to_chained": float(np.median(summed / chained)),
        "median_ratio_chained_to_e2e": float(np.median(chained / e2e)),
        "chained_kendall_tau": chain_quality["kendall_tau"], "chained_mape": chain_quality["mape"],
        "repeat_kendall_tau": repeat["kendall_tau"], "repeat_mape": repeat["mape"],
        "layers_per_subnet_mean": float(np.mean([len(lut_layers(net.space, a)) for a in archs])),
    }
    rows = [{"space": name, "arch": json.dumps(a, separators=(",", ":")), "lut_sum_ms": s, "e2e_ms": e,
             "chained_ms": c, "e2e_again_ms": g}
            for a, s, e, c, g in zip(archs, summed, e2e, chained, again, strict=True)]
    return summary, rows


def write_csv(path: Path, rows: list[dict]) -> None:
    """Writes ``rows``, keeping the rows of the spaces not benchmarked this time (``--spaces`` reruns some)."""
    rerun = {row["space"] for row in rows}
    kept = []
    if path.is_file():
        with open(path, newline="") as f:
            kept = list(csv.DictReader(f))
    rows = [row for row in kept if row["space"] not in rerun] + rows

    def write(f):
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)

    atomic_write(path, write, mode="w")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", choices=list(SPACES), default=list(SPACES))
    parser.add_argument("--n", type=int, default=50, help="subnets per space")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "lut.csv"))
    args = parser.parse_args()
    # eager, as its figures were measured: onnxruntime (local_cpu's default) exports each subnet first
    profile = load_profile("local_cpu", backend="torch")
    out = Path(args.out)
    summaries, subnets = [], []
    for name in args.spaces:
        summary, rows = bench(name, args.n, args.seed, profile, out.parent)
        summaries.append(summary)
        subnets += rows
        print(f"{name}: {summary['distinct_layers']} layers timed in {summary['build_s']} s; table sum vs end to end "
              f"({summary['e2e_ms_min']:.2f}-{summary['e2e_ms_max']:.2f} ms): Kendall tau "
              f"{summary['kendall_tau']:.3f}, MAPE {summary['mape']:.1f}%, sum / e2e "
              f"{summary['median_ratio_sum_to_e2e']:.3f} (MAPE {summary['mape_after_one_scale']:.1f}% after that "
              f"scale); sum / chained {summary['median_ratio_sum_to_chained']:.3f}, chained / e2e "
              f"{summary['median_ratio_chained_to_e2e']:.3f}; e2e vs itself: tau {summary['repeat_kendall_tau']:.3f}, "
              f"MAPE {summary['repeat_mape']:.1f}%")
    write_csv(out, summaries)
    write_csv(out.with_name("lut_subnets.csv"), subnets)
    print(f"wrote {out} and {out.with_name('lut_subnets.csv')}")


if __name__ == "__main__":
    main()
