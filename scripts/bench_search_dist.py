"""Searches over processes: the evaluation time of the same chunk of subnets on 1 and 2 processes.

    python scripts/bench_search_dist.py [--subnets 8] [--rounds 2] [--val-fraction 0.5]

Runs its worker under ``torchrun --nproc_per_node=1``, then ``=2``, taking turns ``--rounds`` times
so that load on a shared machine hits both alike, one thread per process. Each run builds the digits
MobileNetV3 supernet (random weights; the cost of a subnet does not depend on them), shards the
validation split and the batch-norm calibration images over its ranks as ``search.run`` does, scores
one subnet to warm up, then times ``SupernetEvaluator(archs)`` on ``--subnets`` sampled subnets
(accuracy with recalibration on every rank; latency estimated on rank 0), as one chunk of a search.
The accuracies of both process counts must agree exactly. Writes ``runs/bench/search_dist.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supernet.checkpoint import save_json  # noqa: E402


def worker(args) -> None:
    """One rank of a run (torchrun's environment): rank 0 times the chunk and writes ``args.worker``."""
    import numpy as np
    import torch
    import yaml
    from torch.utils.data import DataLoader

    from hw_profiles import load_profile
    from search.evaluator import SupernetEvaluator
    from supernet import create_supernet_from_config
    from supernet.data import build_data, calibration_loader
    from supernet.distributed import Dist, shard

    torch.set_num_threads(1)
    dist = Dist.from_env("cpu")
    torch.manual_seed(0)
    net = create_supernet_from_config(yaml.safe_load((ROOT / "conf" / "model" / "mobilenetv3.yaml").read_text()),
                                      num_classes=10)
    data = build_data("digits", img_size=16, val_fraction=args.val_fraction, test_fraction=0.15, max_shift=1, seed=0)
    loader = shard(DataLoader(data.val, batch_size=args.batch), dist, "split=val")
    calib = shard(calibration_loader(data, args.calib_images, args.batch, seed=0), dist)
    evaluator = SupernetEvaluator(net, load_profile("jetson"), loader, calib, dist=dist)
    rng = np.random.default_rng(0)
    archs = [net.space.sample(rng) for _ in range(args.subnets + 1)]
    if dist.main:
        evaluator(archs[:1])  # warm-up: first-call allocations, the inference cache
        start = time.perf_counter()
        result = evaluator(archs[1:])
        seconds = time.perf_counter() - start
        evaluator.release()
        Path(args.worker).write_text(json.dumps({"seconds": seconds, "accuracy": result["accuracy"],
                                                 "val_images": len(data.val), "calib_images": args.calib_images}))
    else:
        evaluator.serve()
    dist.close()


def run(world: int, args, out: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}", f"--master_port={port}",
           __file__, "--worker", str(out), "--subnets", str(args.subnets), "--batch", str(args.batch),
           "--calib-images", str(args.calib_images), "--val-fraction", str(args.val_fraction)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subnets", type=int, default=8, help="the chunk: subnets timed per run")
    parser.add_argument("--batch", type=int, default=64, help="eval_batch_size")
    parser.add_argument("--calib-images", type=int, default=500, help="bn_calib_images")
    parser.add_argument("--val-fraction", type=float, default=0.5, help="of the 1,797 digits (0.5: 898 images)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "search_dist.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    load = os.getloadavg()[0]
    times: dict[int, list[float]] = {1: [], 2: []}
    accuracies: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for world in (1, 2):
                found = run(world, args, Path(tmp) / f"w{world}.json")
                times[world].append(found["seconds"])
                accuracies[world] = found["accuracy"]
                print(f"{world} process(es): {found['seconds']:.2f} s for {args.subnets} subnets "
                      f"({found['val_images']} validation + {found['calib_images']} calibration images each)",
                      flush=True)
    if accuracies[1] != accuracies[2]:
        raise SystemExit(f"the accuracies differ: 1 process {accuracies[1]}, 2 processes {accuracies[2]}")
    best = {world: min(t) for world, t in times.items()}
    result = {"subnets": args.subnets, "eval_batch_size": args.batch, "calib_images": args.calib_images,
              "val_fraction": args.val_fraction, "cpu_count": os.cpu_count(), "load_average_at_start": load,
              "threads_per_process": 1, "seconds": {str(w): t for w, t in times.items()},
              "speedup_2_vs_1": best[1] / best[2], "accuracies_equal": True}
    save_json(result, args.out)
    print(f"2 processes vs 1 on the same {args.subnets} subnets: {result['speedup_2_vs_1']:.2f}x as fast "
          f"(best of {args.rounds}: {best[1]:.2f} s vs {best[2]:.2f} s; accuracies equal); wrote {args.out}")


if __name__ == "__main__":
    main()
