"""Data-parallel training: the step time of 2 processes (DDP, gloo) vs. 1 on the same global batch.

    python scripts/bench_ddp.py [--model vit] [--steps 20] [--rounds 2]

Runs ``python -m supernet.train`` as a user would, one thread per process: 1 process on batches of
``--batch`` images, then ``torchrun --nproc_per_node=2`` on half of it each, taking turns ``--rounds``
times so that load on a shared machine hits both alike. Each run trains the full network for one
epoch of ``--steps`` steps, then one epoch of sandwich steps (4 subnets); the time of that second
epoch (``metrics.csv``'s ``epoch_s``, evaluation excluded) gives the sandwich step time. Writes
``runs/bench/ddp.json``.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supernet.checkpoint import save_json  # noqa: E402

SCHEDULES = {
    "vit": "model.schedule=[{name:largest,epochs:1,lr:0.002,unlock:[]},"
           "{name:width,epochs:1,lr:0.001,unlock:[resolution,depth,num_heads,mlp_ratio,embed_dim]}]",
    "mobilenetv3": "model.schedule=[{name:largest,epochs:1,lr:0.002,unlock:[]},"
                   "{name:elastic,epochs:1,lr:0.001,unlock:[resolution,ks,depth,expand]}]",
}


def sandwich_step_s(model: str, world: int, batch: int, steps: int, out: Path) -> float:
    run = f"w{world}"
    args = ["-m", "supernet.train", f"+model={model}", "model.bits=[32]", SCHEDULES[model], f"out_dir={out}",
            f"run_name={run}", f"batch_size={batch // world}", f"max_steps_per_epoch={steps}", "threads=1",
            "num_eval_subnets=0", "bn_calib_images=64", "sampler.pool_size=200", "device=cpu", "resume=never"]
    launcher = [sys.executable] if world == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                    f"--nproc_per_node={world}", "--master_port=29541"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*launcher, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    rows = list(csv.DictReader((out / run / "metrics.csv").open()))
    return float(rows[-1]["epoch_s"]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(SCHEDULES), default="vit")
    parser.add_argument("--batch", type=int, default=64, help="global batch (each of 2 processes: half)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "ddp.json"))
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for world in (1, 2):
                times[world].append(sandwich_step_s(args.model, world, args.batch, args.steps, Path(tmp)))
                print(f"world {world}: sandwich step {1e3 * times[world][-1]:.1f} ms", flush=True)
    best = {world: min(t) for world, t in times.items()}
    result = {"model": args.model, "global_batch": args.batch, "steps": args.steps, "cpu_count": os.cpu_count(),
              "sandwich_step_ms": {str(w): [1e3 * t for t in ts] for w, ts in times.items()},
              "speedup_2_vs_1": best[1] / best[2]}
    save_json(result, args.out)
    print(f"2 processes vs 1 on a global batch of {args.batch}: {result['speedup_2_vs_1']:.2f}x as fast; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
