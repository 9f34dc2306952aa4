"""Cost of elasticity: forward time of the supernet running an arch vs. that arch exported static.

    python scripts/bench_elastic.py [--device cuda] [--batch 64] [--repeats 20] [--models LABEL ...]

For each model config, the largest, the median-MACs (of 200 sampled) and the smallest arch run on
the same input batch; supernet and static forwards are interleaved so that machine noise hits both
alike, and the ratio of medians is reported. Also times ``space.macs`` over 10,000 archs. Writes
``runs/bench/elastic.json``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supernet import create_supernet_from_config, inference_cache  # noqa: E402
from supernet.checkpoint import save_json  # noqa: E402

CONFIGS = {"vit (digits)": ("vit", {}), "vit_tiny @224": ("vit_tiny", {"pretrained": None}),
           "mbv3 (digits)": ("mobilenetv3", {}), "mbv3_w10 @224": ("mobilenetv3_w10", {}),
           "resnet (digits)": ("resnet", {}), "resnet50 @224": ("resnet50", {})}



def timed(fn, x, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


@torch.inference_mode()
@inference_cache()  # as an evaluation runs the supernet
def compare(net, arch, batch: int, repeats: int, device) -> dict:
    static = net.export(arch).to(device)
    net.set_active(arch)
    res = arch["resolution"]
    x = torch.randn(batch, net.in_chans, res, res, device=device)
    for _ in range(3):  # warm-up: allocator, kernels, caches
        net(x), static(x)
    elastic_ms, static_ms = [], []
    for _ in range(repeats):
        elastic_ms.append(timed(net, x, device))
        static_ms.append(timed(static, x, device))
    e, s = statistics.median(elastic_ms), statistics.median(static_ms)
    return {"arch": arch, "macs": net.space.macs(arch), "supernet_ms": round(e, 3), "static_ms": round(s, 3),
            "ratio": round(e / s, 3)}


def macs_throughput(space, n: int = 10_000) -> float:
    archs = [space.sample(i) for i in range(n)]
    start = time.perf_counter()
    for arch in archs:
        space.macs(arch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), metavar="LABEL",
                        help=f"which configs to time (default: all of {list(CONFIGS)})")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "elastic.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")

    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
               or platform.machine(), "threads": torch.get_num_threads(), "batch": args.batch, "models": {}}
    print(f"{'model':16} {'arch':8} {'MACs':>10} {'supernet ms':>12} {'static ms':>10} {'ratio':>6}")
    for label in args.models:
        config, overrides = CONFIGS[label]
        cfg = {**yaml.safe_load((ROOT / "conf" / "model" / f"{config}.yaml").read_text()), **overrides}
        net = create_supernet_from_config(cfg, num_classes=10).eval().to(device)
        space = net.space
        rows = {}
        for which, arch in [("largest", space.largest()), ("median", space.median()),
                            ("smallest", space.smallest())]:
            row = compare(net, arch, args.batch, args.repeats, device)
            rows[which] = row
            print(f"{label:16} {which:8} {row['macs'] / 1e6:9.1f}M {row['supernet_ms']:12.2f} "
                  f"{row['static_ms']:10.2f} {row['ratio']:6.3f}")
        seconds = macs_throughput(space)
        rows["macs_10k_archs_s"] = round(seconds, 3)
        print(f"{label:16} space.macs on 10,000 archs: {seconds:.3f} s")
        results["models"][label] = rows
    save_json(results, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
