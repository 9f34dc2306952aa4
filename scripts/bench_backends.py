"""What a CPU search times: PyTorch eager (fake quantization) vs. onnxruntime (the deployed export,
integer kernels for 8-bit blocks), on the same subnets, side by side.

    python scripts/bench_backends.py [--supernet runs/train/vit_mnist5k-mnist5k/supernet.pt] [--n 8] [--seed 0]

Draws ``--n`` subnets of the supernet's space (seeded), each once with every block in float and once
with every block at 8 bits (when the space offers 8), and times all of them with ``local_cpu``
(1 thread, batch 1) under both backends: ``torch`` (the static subnet, 8-bit blocks as fake
quantization) and ``onnxruntime`` (``search.measure.deployable``: the ONNX a user deploys, uint8
pairs so that onnxruntime fuses them into integer kernels). Reports per subnet and as medians the
ratios onnxruntime / torch (float and 8-bit) and 8-bit / float (per backend): what the search sees
as the price or gain of quantization under each. Writes ``runs/bench/backends.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw_profiles import load_profile  # noqa: E402
from search.measure import deployable  # noqa: E402
from supernet.checkpoint import load_supernet, save_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", default=str(ROOT / "runs/train/vit_mnist5k-mnist5k/supernet.pt"))
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "runs/bench/backends.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = load_supernet(args.supernet).eval()
    space = net.space
    bit_choices = next((d.choices for d in space.dims if d.name == "bits"), (32,))
    widths = [32, 8] if 8 in bit_choices else [32]
    rng = np.random.default_rng(args.seed)
    archs = []
    for _ in range(args.n):
        arch = space.sample(rng)
        archs += [{**arch, "bits": [bits] * len(arch["bits"])} for bits in widths]
    results = {}
    for backend in ("torch", "onnxruntime"):
        profile = load_profile("local_cpu", backend=backend, threads=1)
        models = [deployable(net, arch, profile) for arch in archs]
        results[backend] = [r.ms for r in profile.measure_many(models)]
        print(f"{backend}: timed {len(archs)} subnets")
    rows = [{"arch": arch, "torch_ms": torch_ms, "onnxruntime_ms": ort_ms}
            for arch, torch_ms, ort_ms in zip(archs, results["torch"], results["onnxruntime"], strict=True)]
    summary = {}
    for bits in widths:
        own = [r for r in rows if r["arch"]["bits"][0] == bits]
        summary[f"onnxruntime_over_torch_{bits}bit"] = round(statistics.median(
            r["onnxruntime_ms"] / r["torch_ms"] for r in own), 3)
    if 8 in widths:
        for backend in ("torch", "onnxruntime"):
            summary[f"8bit_over_float_{backend}"] = round(statistics.median(
                rows[i + 1][f"{backend}_ms"] / rows[i][f"{backend}_ms"] for i in range(0, len(rows), 2)), 3)
    for row in rows:
        print(f"bits {row['arch']['bits'][0]:2d}  torch {row['torch_ms']:.4f} ms  "
              f"onnxruntime {row['onnxruntime_ms']:.4f} ms  {space.macs(row['arch']) / 1e6:.2f}M MACs")
    for key, value in summary.items():
        print(f"{key}: {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_json({"supernet": args.supernet, "n": args.n, "seed": args.seed, "summary": summary, "rows": rows}, args.out)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
