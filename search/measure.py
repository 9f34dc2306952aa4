"""``python -m search.measure``: a device latency table of a supernet's subnets, made on the device.

    python -m search.measure --supernet runs/train/vit-digits/supernet.pt --hw local_cpu --n 200 \\
        [--seed 0] [--out runs/tables/local_cpu.csv] [--threads 4] [--backend onnxruntime] [--chunk 50]
    python -m search.measure --lut --supernet runs/train/vit-digits/supernet.pt --hw local_cpu \\
        [--out runs/tables/local_cpu_lut.yaml]

Run it on the target device (a Jetson with ``--hw local_gpu``, a Raspberry Pi with ``--hw local_cpu``):
it needs only this package and torch. ``--calibrate PROFILE TABLE`` fits a roofline profile to such a
table instead (``search/calibrate.py``). It times the largest and the smallest subnet and ``--n`` distinct
sampled ones, each exported as static modules, and writes ``arch -> latency_ms`` rows. Copy the CSV
back and set the device's profile ``table:`` (``hw=jetson hw.table=PATH``): the search then reads those
latencies and fits its latency predictor on them.

``--lut`` times layers instead of subnets: each distinct layer geometry of the space once (those of
``search.lut.lut_cover``'s archs, cut by ``search.lut.lut_modules``), and writes a per-layer lookup
table in OFA's YAML format, keyed as ``search.lut.lut_layers`` keys a subnet's layers. A ``kind: lut``
profile whose ``lut:`` names that file then gives every subnet's latency as the sum of its layers'
entries, for free (``hw=note10 hw.name=<device> hw.lut=PATH``). ``--n`` and ``--seed`` do not apply.
The sum misses what passes between layers (each layer finds the caches filled by the one before it):
docs/search.md says how much.

It lives here rather than in ``hw_profiles`` (which holds the timing and the table format) because
it loads a supernet, and ``hw_profiles`` must not import ``supernet``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from hw_profiles import HardwareProfile, ProfileError, load_profile, measure_models, write_table
from hw_profiles.lut import layer_key, write_lut
from hw_profiles.measure import measure_layers
from hw_profiles.timing import ONNX_BACKENDS
from supernet.checkpoint import CheckpointError, load_supernet

from .lut import lut_cover, lut_modules


def sample_archs(space, n: int, seed: int) -> list[dict]:
    """The largest and the smallest arch, then ``n`` distinct others drawn with ``space.sample``;
    canonical, so that their rows match the search's look-ups."""
    if n + 2 > space.cardinality():
        raise ValueError(f"--n {n} asks for more subnets than the space holds "
                         f"({space.cardinality()} in all, largest and smallest included)")
    rng = np.random.default_rng(seed)
    archs = [space.canonical(space.largest()), space.canonical(space.smallest())]
    seen = {space.key(arch) for arch in archs}
    while len(archs) < n + 2:  # ends: the space holds at least n + 2 distinct subnets
        arch = space.canonical(space.sample(rng))
        if space.key(arch) not in seen:
            seen.add(space.key(arch))
            archs.append(arch)
    return archs


def for_backend(module, shape: tuple[int, ...], profile: HardwareProfile):
    """``module`` as the profile's backend runs it: the module itself for torch; for onnxruntime its
    serialized ONNX export (``supernet.export.deployed_onnx``: 8-bit blocks as integer kernels, as a
    user deploys them, not PyTorch's fake quantization); for openvino ``model.onnx`` as saved
    (``saved_onnx``: 8-bit QuantizeLinear / DequantizeLinear pairs, which OpenVINO runs as int8 kernels).
    ``shape``: one input's, without the batch."""
    if profile.backend == "torch":
        return module
    from supernet.export import deployed_onnx, saved_onnx  # onnx: not needed on a device that times torch

    x = torch.randn(2, *shape)
    if profile.backend == "openvino":
        return saved_onnx(module.eval(), x).SerializeToString()
    return deployed_onnx(module.eval(), x, profile.device)


def deployable(net, arch: dict, profile: HardwareProfile) -> tuple[object, tuple[int, int, int]]:
    """``(model, input shape)`` of ``arch`` as the profile's backend runs it (``for_backend``)."""
    res = arch["resolution"]
    shape = (net.in_chans, res, res)
    return for_backend(net.export(arch).eval(), shape, profile), shape


def exported(net, archs: list[dict], profile: HardwareProfile) -> Iterator[tuple[dict, object, tuple[int, int, int]]]:
    """``(arch, model, input shape)`` as the profile's backend runs it (``deployable``), built on
    demand so that few models are alive at once."""
    for arch in archs:
        yield arch, *deployable(net, arch, profile)


def distinct_layers(net, profile: HardwareProfile) -> Iterator[tuple[str, object, tuple[int, ...]]]:
    """``(key, module, input shape)`` of every distinct layer of ``net``'s space, each once, exported
    one covering arch at a time so that only the layers still to be timed are kept alive; each module
    as the profile's backend runs it (``for_backend``)."""
    seen = set()
    for arch in lut_cover(net.space):
        for layer, module, shape in lut_modules(net, arch):
            key = layer_key(layer)
            if key not in seen:
                seen.add(key)
                yield key, for_backend(module, shape, profile), shape


def build_lut(net, profile: HardwareProfile, out: str | Path, *, chunk: int | None = None,
              progress: bool = True) -> Path:
    """Times every distinct layer of ``net``'s space once on ``profile`` and writes the lookup table."""
    entries = measure_layers(distinct_layers(net, profile), profile, chunk=chunk or default_chunk(net.space),
                             progress=progress)
    header = (f"per-layer latency lookup table, python -m search.measure --lut, profile {profile.name} "
              f"({profile.device}, {profile.backend}, {profile.threads} thread(s), batch {profile.batch_size})\n"
              "mean: the layer's latency in ms as the profile times a model (the fastest of `count` passes); "
              "iqr: the passes' spread")
    return write_lut(out, entries, header)


def default_chunk(space) -> int:
    """How many models to time together: more spreads each one's passes over a longer time (less
    noise on a shared machine), but all of them are in memory at once, which a small device lacks."""
    largest_bytes = 4 * space.params(space.largest())
    return max(1, min(100, 2**30 // largest_bytes))


def measured_profile(hw: str, overrides: dict) -> HardwareProfile:
    profile = load_profile(hw, **overrides)
    if profile.kind != "measured":
        raise ProfileError(
            f"profile {profile.name!r} is {profile.kind!r}: it cannot time models here. Run this command on "
            f"that device with --hw local_cpu (or local_gpu), copy the CSV back and set hw.table=PATH"
        )
    profile.check_available()
    return profile


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    if "--calibrate" in argv:  # fit a roofline profile to a table instead (search/calibrate.py)
        from .calibrate import main as calibrate_main
        return calibrate_main(argv)
    parser = argparse.ArgumentParser(prog="python -m search.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True, help="a trained supernet.pt")
    parser.add_argument("--lut", action="store_true",
                        help="time each distinct layer once and write a per-layer lookup table (YAML) instead")
    parser.add_argument("--hw", default="local_cpu",
                        help="a measured profile: local_cpu, local_gpu or a profile YAML path (default: local_cpu)")
    parser.add_argument("--n", type=_positive, default=200, help="sampled subnets besides largest and smallest")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled archs")
    parser.add_argument("--out", help="output CSV (default: runs/tables/<profile name>.csv); with --lut a YAML "
                                      "(default: runs/tables/<profile name>_lut.yaml)")
    parser.add_argument("--threads", type=_positive, help="override the profile's thread count")
    parser.add_argument("--backend", choices=("torch", *ONNX_BACKENDS),
                        help="override the profile's backend")
    parser.add_argument("--chunk", type=_positive,
                        help="models alive and timed together in interleaved rounds (default: as many as "
                             "fit in 1 GiB of float32 weights at the largest subnet's size, at most 100)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in (("threads", args.threads), ("backend", args.backend))
                 if value is not None}
    try:
        profile = measured_profile(args.hw, overrides)
        net = load_supernet(args.supernet)
        if args.lut:
            lut_cover(net.space)  # a family without lookup-table layers is refused before any timing
        else:
            archs = sample_archs(net.space, args.n, args.seed)
    except (CheckpointError, ProfileError, ValueError) as err:
        sys.exit(f"error: {err}")
    chunk = args.chunk or default_chunk(net.space)
    setting = f"on {profile.name} ({profile.device}, {profile.backend}, {profile.threads} thread(s))"
    try:  # the writes: a full disk is one line (DiskFullError, a ProfileError)
        if args.lut:
            print(f"timing each distinct layer of {args.supernet} once {setting}")
            out = build_lut(net, profile, args.out or Path("runs") / "tables" / f"{profile.name}_lut.yaml",
                            chunk=chunk)
            print(f"wrote {out}; use it with a kind: lut profile, e.g. python -m search.run hw=note10 "
                  f"hw.name={profile.name}_lut hw.lut={out}")
            return out
        print(f"timing {len(archs)} subnets of {args.supernet} {setting}")
        rows = measure_models(exported(net, archs, profile), profile, chunk=chunk)
        out = write_table(rows, args.out or Path("runs") / "tables" / f"{profile.name}.csv")
    except ProfileError as err:
        sys.exit(f"error: {err}")
    print(f"wrote {len(rows)} rows to {out}; use it with hw=<device profile> hw.table={out}")
    return out


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


if __name__ == "__main__":
    main()
