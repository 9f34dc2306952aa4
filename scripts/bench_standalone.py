"""Are the supernet's subnets as good as the same archs trained alone?

    python scripts/bench_standalone.py [--supernet runs/train/vit-digits/supernet.pt] [--seed 0]
                                       [--num-random 3] [--num-probe 30] [--lrs 1e-3 2e-3]

For the largest, the median-MACs (of 200 sampled), the smallest and ``--num-random`` uniformly
sampled archs of a trained digits supernet: test accuracy taken from the supernet vs. the arch
exported with fresh weights and trained alone for the same number of optimizer steps as the
supernet run (same data, batch size, optimizer, weight decay, label smoothing, warm-up and cosine to
the same floor). The standalone twin is trained at each peak rate of ``--lrs`` (default: the first
phase's) and keeps its best test accuracy, so the baseline is a tuned one. ``--num-probe`` more
sampled archs are only evaluated in the supernet (mean and worst: how even the training is). Writes
``runs/bench/standalone.json``.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supernet import create_supernet_from_config  # noqa: E402
from supernet.checkpoint import SUPERNET_FORMAT, load_checkpoint, save_json  # noqa: E402
from supernet.data import build_data  # noqa: E402
from supernet.evaluate import accuracy  # noqa: E402
from supernet.train import param_groups  # noqa: E402


def train_alone(model, data, cfg, steps: int, seed: int, peak: float) -> float:
    torch.manual_seed(seed)
    first = cfg["model"]["schedule"][0]
    steps_per_epoch = len(data.train) // cfg["batch_size"]
    warmup = int(first.get("warmup_epochs", 0) * steps_per_epoch)
    floor = peak * cfg["min_lr_ratio"]
    opt = torch.optim.AdamW(param_groups(model, cfg["weight_decay"]), lr=peak, betas=tuple(cfg["betas"]))
    loader = DataLoader(data.train, batch_size=cfg["batch_size"], shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    res = model.resolution
    step = 0
    model.train()
    while step < steps:
        for x, y in loader:
            if step >= steps:
                break
            t = step - warmup
            lr = peak * (step + 1) / warmup if t < 0 else floor + (peak - floor) * 0.5 * (
                1 + math.cos(math.pi * min(t / max(steps - warmup, 1), 1.0)))
            for g in opt.param_groups:
                g["lr"] = lr
            x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
            F.cross_entropy(model(x), y, label_smoothing=cfg["label_smoothing"]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
    model.eval()
    test = DataLoader(data.test, batch_size=256)
    correct = total = 0
    with torch.no_grad():
        for x, y in test:
            x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", default=str(ROOT / "runs" / "train" / "vit-digits" / "supernet.pt"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-random", type=int, default=3, help="uniformly sampled archs besides the three named")
    parser.add_argument("--num-probe", type=int, default=30,
                        help="more sampled archs whose supernet accuracy alone is reported (mean, worst)")
    parser.add_argument("--lrs", type=float, nargs="+", default=None,
                        help="peak rates tried for the standalone twin (default: the first phase's)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "standalone.json"))
    args = parser.parse_args()
    ckpt = load_checkpoint(args.supernet, SUPERNET_FORMAT)
    cfg = ckpt["config"]
    net = create_supernet_from_config(ckpt["model"])
    net.load_state_dict(ckpt["state_dict"])
    data_cfg = dict(cfg["data"])
    data = build_data(data_cfg.pop("name"), **data_cfg)
    steps = ckpt["train_state"]["step"]
    test = DataLoader(data.test, batch_size=256)
    lrs = args.lrs or [cfg["model"]["schedule"][0]["lr"]]
    rng = np.random.default_rng(args.seed)
    named = [("largest", net.space.largest()), ("median", net.space.median()), ("smallest", net.space.smallest())]
    named += [(f"random{i + 1}", net.space.sample(rng)) for i in range(args.num_random)]
    rows = []
    for which, arch in named:
        shared = accuracy(net, arch, test)
        start = time.perf_counter()
        by_lr = {}
        for lr in lrs:
            torch.manual_seed(args.seed)  # the twin's initial weights follow from the seed, whatever ran before
            fresh = create_supernet_from_config(ckpt["model"]).export(arch)  # same structure, new random weights
            by_lr[lr] = train_alone(fresh, data, cfg, steps, args.seed, lr)
        alone = max(by_lr.values())
        rows.append({"subnet": which, "arch": arch, "macs": net.space.macs(arch), "supernet_acc": shared,
                     "standalone_acc": alone, "standalone_acc_by_lr": by_lr,
                     "gap_points": round(100 * (shared - alone), 2),
                     "standalone_train_s": round(time.perf_counter() - start, 1)})
        print(f"{which:8} {net.space.macs(arch) / 1e6:6.2f}M MACs  supernet {100 * shared:6.2f}%  "
              f"standalone ({steps} steps, best of lr {lrs}) {100 * alone:6.2f}%  "
              f"gap {100 * (shared - alone):+.2f} points", flush=True)
    if args.num_random:
        gaps = [r["gap_points"] for r in rows[3:]]
        print(f"random subnets: mean gap {np.mean(gaps):+.2f} points (worst {min(gaps):+.2f})")
    probe_rng = np.random.default_rng([args.seed, 1])
    probe = [accuracy(net, net.space.sample(probe_rng), test) for _ in range(args.num_probe)]
    if probe:
        print(f"{args.num_probe} more sampled subnets, supernet only: mean {100 * np.mean(probe):.2f}%, "
              f"worst {100 * min(probe):.2f}%")
    save_json({"supernet": args.supernet, "steps": steps, "lrs": lrs, "subnets": rows,
               "probe_accuracies": probe}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
