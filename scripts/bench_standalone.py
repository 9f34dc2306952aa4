"""Are the supernet's subnets as good as the same archs trained alone?

    python scripts/bench_standalone.py [--supernet runs/train/vit-digits/supernet.pt] [--seed 0]

For the largest, the median-MACs (of 200 sampled) and the smallest arch of a trained digits supernet:
test accuracy taken from the supernet vs. the arch exported with fresh weights and trained alone for
the same number of optimizer steps as the supernet run (same data, batch size, optimizer, weight
decay, label smoothing, warm-up and cosine to the same floor, at the first phase's peak rate). Writes
``runs/bench/standalone.json``.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

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


def train_alone(model, data, cfg, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    first = cfg["model"]["schedule"][0]
    steps_per_epoch = len(data.train) // cfg["batch_size"]
    peak, warmup = first["lr"], int(first.get("warmup_epochs", 0) * steps_per_epoch)
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
    rows = []
    for which, arch in [("largest", net.space.largest()), ("median", net.space.median()),
                        ("smallest", net.space.smallest())]:
        shared = accuracy(net, arch, test)
        fresh = create_supernet_from_config(ckpt["model"]).export(arch)  # same structure, new random weights
        start = time.perf_counter()
        alone = train_alone(fresh, data, cfg, steps, args.seed)
        rows.append({"subnet": which, "arch": arch, "macs": net.space.macs(arch), "supernet_acc": shared,
                     "standalone_acc": alone, "gap_points": round(100 * (shared - alone), 2),
                     "standalone_train_s": round(time.perf_counter() - start, 1)})
        print(f"{which:8} {net.space.macs(arch) / 1e6:6.2f}M MACs  supernet {100 * shared:6.2f}%  "
              f"standalone ({steps} steps) {100 * alone:6.2f}%  gap {100 * (shared - alone):+.2f} points")
    save_json({"supernet": args.supernet, "steps": steps, "subnets": rows}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
