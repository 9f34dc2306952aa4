"""Complexity-aware vs. uniform subnet sampling, same training budget.

    python scripts/bench_sampling.py [--model vit] [extra hydra overrides ...]

Trains the supernet twice with ``python -m supernet.train`` (``sampling=complexity`` and
``sampling=uniform``, everything else equal), then reports the test accuracy of the smallest, the
median-MACs (of 200 sampled) and the largest subnet of each. Writes ``runs/bench/sampling.json``;
the runs live under ``runs/bench/sampling/``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supernet.checkpoint import load_supernet, save_json  # noqa: E402
from supernet.data import build_data  # noqa: E402
from supernet.evaluate import accuracy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "sampling.json"))
    args, overrides = parser.parse_known_args()
    out_dir = ROOT / "runs" / "bench" / "sampling"
    results = {}
    for kind in ("complexity", "uniform"):
        subprocess.run([sys.executable, "-m", "supernet.train", f"+model={args.model}", f"sampling={kind}",
                        f"out_dir={out_dir}", f"run_name={kind}", *overrides], check=True, cwd=ROOT)
        path = out_dir / kind / "supernet.pt"
        net = load_supernet(path)
        data_cfg = dict(net.train_config["data"])
        test = DataLoader(build_data(data_cfg.pop("name"), **data_cfg).test, batch_size=256)
        space = net.space
        results[kind] = {which: {"arch": arch, "macs": space.macs(arch), "accuracy": accuracy(net, arch, test)}
                         for which, arch in [("smallest", space.smallest()), ("median", space.median()),
                                             ("largest", space.largest())]}
    print(f"{'subnet':9} {'complexity':>11} {'uniform':>9}  winner")
    for which in ("smallest", "median", "largest"):
        c, u = results["complexity"][which]["accuracy"], results["uniform"][which]["accuracy"]
        winner = "complexity" if c > u else "uniform" if u > c else "tie"
        print(f"{which:9} {100 * c:10.2f}% {100 * u:8.2f}%  {winner}")
    save_json(results, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
