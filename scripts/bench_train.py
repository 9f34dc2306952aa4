"""Cost of weight sharing in training: one sandwich step vs. the same four archs trained as static models.

    python scripts/bench_train.py [--model vit] [--batch 32] [--repeats 20] [--device cpu]
                                  [--amp off|bf16|fp16] [--channels-last] [--resolution R]

The sandwich step (largest + smallest + 2 sampled archs, in-place distillation, one optimizer step)
is timed against the sum of one ordinary training step (forward, cross-entropy, backward, AdamW step)
of each of the four archs exported as static models, on the same batch, interleaved so that machine
noise hits both alike. Throughput counts data images (a sandwich step trains 4 subnets on one batch):
``sandwich_img_per_s`` = batch / step time, beside the static largest subnet's; on CUDA also the peak
memory of each. ``--amp`` runs the forwards under autocast (as ``supernet.train amp=``),
``--channels-last`` lays CNN weights and inputs out NHWC. Writes ``runs/bench/train.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supernet import create_supernet_from_config  # noqa: E402
from supernet.checkpoint import save_json  # noqa: E402
from supernet.sampling import create_sampler  # noqa: E402
from supernet.train import sandwich_archs, sandwich_step  # noqa: E402


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--resolution", type=int, default=None, help="train every subnet at this size "
                        "(default: each arch's own, the largest at the space's largest)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "train.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    train_cfg = OmegaConf.load(ROOT / "conf" / "train.yaml")
    cfg = yaml.safe_load((ROOT / "conf" / "model" / f"{args.model}.yaml").read_text())
    if "pretrained" in cfg:  # a ViT config may name timm weights: random ones time the same
        cfg["pretrained"] = None
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    net = create_supernet_from_config(cfg, num_classes=10).to(device, memory_format=memory_format).train()
    space = net.space
    sampler = create_sampler("complexity", space, space.keys, pool_size=1000)
    archs = sandwich_archs(space, sampler, space.keys, 2, np.random.default_rng(0))
    if args.resolution is not None:
        archs = [{**a, "resolution": args.resolution} for a in archs]
    res = args.resolution or max(space.choices()["resolution"])
    x = torch.randn(args.batch, net.in_chans, res, res, device=device).to(memory_format=memory_format)
    y = torch.randint(0, 10, (args.batch,), device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def supernet_step():
        sandwich_step(net, archs, x, y, train_cfg, amp)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    statics = []
    for arch in archs:
        model = net.export(arch).to(memory_format=memory_format).train()
        xr = F.interpolate(x, size=(arch["resolution"],) * 2, mode="bilinear", antialias=True)
        xr = xr.to(memory_format=memory_format)
        statics.append((model, torch.optim.AdamW(model.parameters(), lr=1e-4), xr))

    def static_step(model, optimizer, xr):
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(xr).float()
        F.cross_entropy(logits, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        supernet_step()
        for s in statics:
            static_step(*s)
    sandwich_ms, static_ms, largest_ms = [], [], []
    for _ in range(args.repeats):
        sandwich_ms.append(timed(supernet_step, device))
        steps = [timed(lambda s=s: static_step(*s), device) for s in statics]
        static_ms.append(sum(steps))
        largest_ms.append(steps[0])
    a, b, c = (statistics.median(t) for t in (sandwich_ms, static_ms, largest_ms))
    result = {"model": args.model, "device": str(device), "batch": args.batch, "amp": args.amp,
              "channels_last": args.channels_last, "archs": archs,
              "sandwich_step_ms": round(a, 2), "static_steps_sum_ms": round(b, 2), "ratio": round(a / b, 3),
              "sandwich_img_per_s": round(1e3 * args.batch / a, 1),
              "static_largest_img_per_s": round(1e3 * args.batch / c, 1)}
    if device.type == "cuda":
        result.update(peak_memory_mib(supernet_step, statics, static_step))
    save_json(result, args.out)
    print(f"{args.model}: sandwich step {a:.1f} ms vs 4 static steps {b:.1f} ms -> ratio {a / b:.3f}; "
          f"{result['sandwich_img_per_s']} img/s (static largest {result['static_largest_img_per_s']})  ({args.out})")


def peak_memory_mib(supernet_step, statics, static_step) -> dict:
    """CUDA peak memory of one sandwich step and of the static largest subnet's step."""
    out = {}
    for name, fn in (("sandwich_peak_mib", supernet_step), ("static_largest_peak_mib",
                                                            lambda: static_step(*statics[0]))):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        out[name] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


if __name__ == "__main__":
    main()
