"""Standalone subnets: ``save_subnet`` writes one directory, ``load_subnet`` rebuilds the module.

``subnets/<id>/``: ``arch.json`` (arch, metrics, provenance), ``model.pt`` (state dict + arch +
model config, for fine-tuning with this package), ``model.pt2`` (``torch.export`` program, loads
with torch alone) and ``model.onnx``. The directory is assembled beside its destination and
renamed into place, so a reader never sees a half-written subnet.
"""
from __future__ import annotations

import datetime as _dt
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .checkpoint import SUBNET_FORMAT, atomic_write, default_permissions, load_checkpoint, save_checkpoint, save_json
from .models import create_supernet


def example_input(net: nn.Module, arch: dict, batch_size: int = 1) -> torch.Tensor:
    """A random batch of the subnet's input shape."""
    res = arch["resolution"]
    return torch.randn(batch_size, net.in_chans, res, res)


def _write_pt2(static: nn.Module, x: torch.Tensor, path: Path) -> None:
    # The batch dimension stays dynamic so the program serves any batch size.
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(static, (x,), dynamic_shapes=({0: batch},))

    def write(f):
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        f.write(buffer.getvalue())

    atomic_write(path, write)


def _write_onnx(static: nn.Module, x: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(static, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
    atomic_write(path, lambda f: f.write(program.model_proto.SerializeToString()))


def save_subnet(net: nn.Module, arch: dict, out_dir: str | os.PathLike, *, metrics: dict | None = None,
                supernet_path: str | None = None, onnx: bool = True) -> Path:
    """Exports ``arch`` from the supernet ``net`` into ``out_dir`` (replaced if it exists)."""
    out_dir = Path(out_dir)
    arch = net.space.validate(arch)
    static = net.export(arch)
    x = example_input(net, arch, batch_size=2)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        save_checkpoint({"format": SUBNET_FORMAT, "version": 1, "model": dict(net.config), "arch": arch,
                         "state_dict": static.state_dict()}, tmp / "model.pt")
        _write_pt2(static, x, tmp / "model.pt2")
        if onnx:
            _write_onnx(static, x, tmp / "model.onnx")
        save_json({"model": net.config["name"], "arch": arch, "metrics": metrics or {},
                   "supernet": None if supernet_path is None else str(supernet_path),
                   "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
                  tmp / "arch.json")
        default_permissions(tmp)
        if out_dir.exists():  # swap: the old directory is removed only once the new one is in place
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load_subnet(path: str | os.PathLike) -> nn.Module:
    """Rebuilds the static subnet saved in ``model.pt`` (a file, or the subnet directory).

    The module's structure comes from the supernet's own ``export`` run on the meta device (no
    memory, no weights), so it is the exported structure by construction; the weights come from
    the file. The returned module carries ``.arch`` and ``.model_config``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    ckpt = load_checkpoint(path, SUBNET_FORMAT)
    config = dict(ckpt["model"])
    name = config.pop("name")
    with torch.device("meta"):
        static = create_supernet(name, **config).export(ckpt["arch"])
    static = static.to_empty(device="cpu")
    static.load_state_dict(ckpt["state_dict"])
    static.arch, static.model_config = ckpt["arch"], ckpt["model"]
    return static.eval()


def main(argv: list[str] | None = None) -> None:
    """``python -m supernet.export SUPERNET [--arch largest|smallest|median|JSON ...] [--out DIR]``:
    exports subnets of a trained supernet, with their test accuracy, MACs and params in arch.json."""
    import argparse
    import json
    import sys

    from torch.utils.data import DataLoader

    from .checkpoint import CheckpointError, load_supernet
    from .data import build_data
    from .evaluate import accuracy
    from .space import ArchError

    parser = argparse.ArgumentParser(prog="python -m supernet.export", description=main.__doc__)
    parser.add_argument("supernet", help="path of a trained supernet.pt")
    parser.add_argument("--arch", nargs="+", default=["largest", "median", "smallest"],
                        help="largest, smallest, median (median MACs of 200 sampled) or an arch as JSON")
    parser.add_argument("--out", default=None, help="output folder (default: <supernet dir>/subnets)")
    args = parser.parse_args(argv)
    try:
        net = load_supernet(args.supernet)
        space = net.space
        named = {"largest": space.largest(), "smallest": space.smallest(), "median": space.median()}
        archs = []
        for text in args.arch:
            try:
                arch = named[text] if text in named else json.loads(text)
            except json.JSONDecodeError:
                raise ArchError("--arch", text, "largest, smallest, median or an arch as JSON") from None
            archs.append((text if text in named else f"arch{len(archs)}", space.validate(arch)))
    except (ArchError, CheckpointError) as err:
        sys.exit(f"error: {err}")
    data_cfg = dict(net.train_config["data"])
    test = DataLoader(build_data(data_cfg.pop("name"), **data_cfg).test, batch_size=256)
    out = Path(args.out) if args.out else Path(args.supernet).parent / "subnets"
    print(f"{'subnet':10} {'MACs':>10} {'params':>9} {'test acc':>9}  folder")
    for name, arch in archs:
        metrics = {"accuracy": accuracy(net, arch, test), "macs": space.macs(arch), "params": space.params(arch)}
        folder = save_subnet(net, arch, out / name, metrics=metrics, supernet_path=args.supernet)
        print(f"{name:10} {metrics['macs'] / 1e6:9.2f}M {metrics['params'] / 1e3:8.1f}K "
              f"{100 * metrics['accuracy']:8.2f}%  {folder}")


if __name__ == "__main__":
    main()
