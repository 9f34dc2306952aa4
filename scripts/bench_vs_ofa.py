"""As fast as OFA where it does the same work? This project's models beside the ``ofa`` package's.

    python scripts/bench_vs_ofa.py [--archs 4] [--rounds 5] [--quick]

OFA's ``OFAMobileNetV3`` w1.0 and ``OFAResNets`` (ResNet50) with their initial weights, converted
into this project's supernets (``supernet.convert``), then for the same random subnets at 224 px on
one CPU thread, timed in interleaved rounds (each model one pass per round, the fastest pass kept,
so that a burst of load on a shared machine hits both sides alike):

- *static*: ``net.export(arch)`` vs. OFA's ``get_active_subnet(preserve_weight=True)``, batch 1 and 16
  (ResNet50: 1 and 8), eval mode, no autograd; beside it our export with its activations switched
  back to out of place (what the exports were before they ran in place);
- *supernet*: the supernet's own eval forward with the arch active (inside ``inference_cache()``, as
  search and evaluation run it) vs. OFA's supernet after ``set_active_subnet``;
- *train step*: forward and backward of the same archs one after another in training mode, as a
  sandwich step runs them (batch 16 at 160 px, MobileNetV3 only).

Ratios are ours / OFA's, per arch and as a geometric mean. Writes ``runs/bench/vs_ofa.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3, OFAResNets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supernet import inference_cache  # noqa: E402
from supernet.checkpoint import save_json  # noqa: E402
from supernet.convert import convert_ofa  # noqa: E402
from supernet.ofa_arch import to_ofa_arch  # noqa: E402

NETS = {
    "ofa_mbv3_d234_e346_k357_w1.0": (lambda: OFAMobileNetV3(n_classes=1000, dropout_rate=0, width_mult=1.0,
                                                            ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                                                            depth_list=[2, 3, 4]), (1, 16)),
    "ofa_resnet50": (lambda: OFAResNets(n_classes=1000, dropout_rate=0, depth_list=[0, 1, 2],
                                        expand_ratio_list=[0.2, 0.25, 0.35], width_mult_list=[0.65, 0.8, 1.0]),
                     (1, 8)),
}


def fastest(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Milliseconds of the fastest pass of each callable, taking turns (one warm-up pass each first)."""
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], 1e3 * (time.perf_counter() - start))
    return best


def out_of_place(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    return model


def set_ofa(ofa: torch.nn.Module, ofa_arch: dict) -> None:
    keys = ("ks", "e", "d") if isinstance(ofa, OFAMobileNetV3) else ("d", "e", "w")
    ofa.set_active_subnet(**{k: ofa_arch[k] for k in keys})


def bench_net(net_id: str, n_archs: int, rounds: int, train: bool) -> dict:
    build, batches = NETS[net_id]
    torch.manual_seed(0)
    ofa = build().eval()
    ours = convert_ofa(net_id, ofa.state_dict())
    rng = np.random.default_rng(0)
    archs = [{**ours.space.sample(rng), "resolution": 224} for _ in range(n_archs)]
    rows = []
    for i, arch in enumerate(archs):
        ofa_arch = to_ofa_arch(ours.space, arch)
        set_ofa(ofa, ofa_arch)
        ofa_static = ofa.get_active_subnet(preserve_weight=True).eval()
        static = ours.export(arch)
        before = out_of_place(ours.export(arch))
        row = {"arch": i, "macs_M": ours.space.macs(arch) / 1e6}
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224)
            with torch.no_grad():
                ms = fastest({name: (lambda m=model, x=x: m(x)) for name, model in
                              (("ours", static), ("ofa", ofa_static), ("ours_out_of_place", before))}, rounds)
            row[f"static_b{batch}"] = {**ms, "ratio": ms["ours"] / ms["ofa"],
                                       "ratio_out_of_place": ms["ours_out_of_place"] / ms["ofa"]}
        x = torch.randn(batches[-1], 3, 224, 224)

        def ours_super(x=x, arch=arch):
            ours.set_active(arch)
            ours(x)

        def ofa_super(x=x, ofa_arch=ofa_arch):
            set_ofa(ofa, ofa_arch)
            ofa(x)

        with torch.no_grad(), inference_cache():
            ms = fastest({"ours": ours_super, "ofa": ofa_super}, rounds)
        row[f"supernet_b{batches[-1]}"] = {**ms, "ratio": ms["ours"] / ms["ofa"]}
        rows.append(row)
        print(f"{net_id} arch {i} ({row['macs_M']:.0f}M MACs): "
              + ", ".join(f"{k} {v['ratio']:.3f}" + (f" (out of place {v['ratio_out_of_place']:.3f})"
                                                    if "ratio_out_of_place" in v else "")
                        for k, v in row.items() if isinstance(v, dict)), flush=True)
    out = {"archs": rows}
    if train:
        out["train_step_b16_160px"] = train_step(ours, ofa, archs, rounds)
        print(f"{net_id} train step of {len(archs)} archs: {out['train_step_b16_160px']['ratio']:.3f}", flush=True)
    for key in rows[0]:
        if isinstance(rows[0][key], dict):
            for ratio in ("ratio", "ratio_out_of_place"):
                if ratio in rows[0][key]:
                    out[f"{key}_geomean_{ratio}"] = float(np.exp(np.mean([np.log(r[key][ratio]) for r in rows])))
    return out


def train_step(ours, ofa, archs: list[dict], rounds: int) -> dict:
    """Forward + backward of every arch in turn, training mode, batch 16 at 160 px (a sandwich step's work)."""
    x, y = torch.randn(16, 3, 160, 160), torch.randint(0, 1000, (16,))
    ours.train()
    ofa.train()
    small = [{**a, "resolution": 160} for a in archs]

    def ours_step():
        for arch in small:
            ours.set_active(arch)
            torch.nn.functional.cross_entropy(ours(x), y).backward()

    def ofa_step():
        for arch in small:
            set_ofa(ofa, to_ofa_arch(ours.space, arch))
            torch.nn.functional.cross_entropy(ofa(x), y).backward()

    ms = fastest({"ours": ours_step, "ofa": ofa_step}, max(2, rounds // 2))
    return {**ms, "ratio": ms["ours"] / ms["ofa"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="MobileNetV3 only, 2 archs, 3 rounds")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "vs_ofa.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_archs, rounds = (2, 3) if args.quick else (args.archs, args.rounds)
    nets = list(NETS)[:1] if args.quick else list(NETS)
    results = {"threads": 1, "torch": torch.__version__}
    for net_id in nets:
        results[net_id] = bench_net(net_id, n_archs if "mbv3" in net_id else max(1, n_archs // 2), rounds,
                                    train="mbv3" in net_id)
    save_json(results, args.out)
    print(json.dumps({k: {m: v for m, v in r.items() if "geomean" in m or m.startswith("train")}
                      for k, r in results.items() if isinstance(r, dict)}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
