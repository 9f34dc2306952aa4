"""``python -m supernet.convert ofa NET_ID PATH --out supernet.pt``: OFA's released supernets as ours.

Once-for-All releases its ImageNet supernets (``ofa_mbv3_d234_e346_k357_w1.0``, ``..._w1.2``,
``ofa_resnet50``) as ``torch.save({"state_dict": ...})`` files. This turns one (or a bare state dict)
into a normal ``supernet.pt`` of this project: the model config of the same space, every weight,
batch-norm statistic, squeeze-excitation and kernel-transform matrix under this project's names, and
the data config the search evaluates on (``--data-root``: an ImageNet folder). ``search.run``,
``supernet.export``, ``search.measure`` then work on it as on any supernet.

No download happens here; docs/ofa.md says where the files are. The key mapping is written out per
family below; OFA's older files (``.mobile_inverted_conv.``, one ``bn``/``conv``/``linear`` level
less or more, a ``module.`` prefix from DataParallel) load too, as OFA's own ``load_state_dict``
accepts them.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoint import SUPERNET_FORMAT, CheckpointError, load_torch_file, save_checkpoint
from .errors import ConfigError
from .models import create_supernet_from_config
from .ofa_arch import OFA_NETS, ofa_model_config

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _mbv3_key(key: str) -> str:
    """OFA's ``OFAMobileNetV3`` state-dict name of this project's ``ElasticMobileNetV3`` key."""
    rules: list[tuple[str, Callable[[re.Match], str]]] = [
        (r"stem\.conv\.weight", lambda m: "first_conv.conv.weight"),
        (rf"stem\.bn\.{_BN}", lambda m: f"first_conv.bn.{m[1]}"),
        (r"first_block\.conv_dw\.conv\.weight", lambda m: "blocks.0.conv.depth_conv.conv.weight"),
        (rf"first_block\.conv_dw\.bn\.{_BN}", lambda m: f"blocks.0.conv.depth_conv.bn.{m[1]}"),
        (r"first_block\.conv_pwl\.conv\.weight", lambda m: "blocks.0.conv.point_linear.conv.weight"),
        (rf"first_block\.conv_pwl\.bn\.{_BN}", lambda m: f"blocks.0.conv.point_linear.bn.{m[1]}"),
        (r"blocks\.(\d+)\.conv_pw\.conv\.weight",
         lambda m: f"blocks.{int(m[1]) + 1}.conv.inverted_bottleneck.conv.conv.weight"),
        (rf"blocks\.(\d+)\.conv_pw\.bn\.{_BN}",
         lambda m: f"blocks.{int(m[1]) + 1}.conv.inverted_bottleneck.bn.bn.{m[2]}"),
        (r"blocks\.(\d+)\.conv_dw\.conv\.weight", lambda m: f"blocks.{int(m[1]) + 1}.conv.depth_conv.conv.conv.weight"),
        (r"blocks\.(\d+)\.conv_dw\.conv\.kernel_transforms\.(\d+to\d+)",
         lambda m: f"blocks.{int(m[1]) + 1}.conv.depth_conv.conv.{m[2]}_matrix"),
        (rf"blocks\.(\d+)\.conv_dw\.bn\.{_BN}", lambda m: f"blocks.{int(m[1]) + 1}.conv.depth_conv.bn.bn.{m[2]}"),
        (r"blocks\.(\d+)\.se\.conv_(reduce|expand)\.(weight|bias)",
         lambda m: f"blocks.{int(m[1]) + 1}.conv.depth_conv.se.fc.{m[2]}.{m[3]}"),
        (r"blocks\.(\d+)\.conv_pwl\.conv\.weight",
         lambda m: f"blocks.{int(m[1]) + 1}.conv.point_linear.conv.conv.weight"),
        (rf"blocks\.(\d+)\.conv_pwl\.bn\.{_BN}", lambda m: f"blocks.{int(m[1]) + 1}.conv.point_linear.bn.bn.{m[2]}"),
        (r"final_expand\.conv\.weight", lambda m: "final_expand_layer.conv.weight"),
        (rf"final_expand\.bn\.{_BN}", lambda m: f"final_expand_layer.bn.{m[1]}"),
        (r"feature_mix\.conv\.weight", lambda m: "feature_mix_layer.conv.weight"),
        (r"classifier\.(weight|bias)", lambda m: f"classifier.linear.{m[1]}"),
    ]
    return _apply(rules, key)


def _resnet_key(key: str) -> str:
    """OFA's ``OFAResNets`` state-dict name of this project's ``ElasticResNet`` key."""
    rules: list[tuple[str, Callable[[re.Match], str]]] = [
        (r"stem\.conv1\.conv\.weight", lambda m: "input_stem.0.conv.conv.weight"),
        (rf"stem\.conv1\.bn\.{_BN}", lambda m: f"input_stem.0.bn.bn.{m[1]}"),
        (r"stem\.residual\.fn\.conv\.weight", lambda m: "input_stem.1.conv.conv.conv.weight"),
        (rf"stem\.residual\.fn\.bn\.{_BN}", lambda m: f"input_stem.1.conv.bn.bn.{m[1]}"),
        (r"stem\.conv2\.conv\.weight", lambda m: "input_stem.2.conv.conv.weight"),
        (rf"stem\.conv2\.bn\.{_BN}", lambda m: f"input_stem.2.bn.bn.{m[1]}"),
        (r"blocks\.(\d+)\.(conv[123])\.conv\.weight", lambda m: f"blocks.{m[1]}.{m[2]}.conv.conv.weight"),
        (rf"blocks\.(\d+)\.(conv[123])\.bn\.{_BN}", lambda m: f"blocks.{m[1]}.{m[2]}.bn.bn.{m[3]}"),
        (r"blocks\.(\d+)\.downsample\.conv\.conv\.weight", lambda m: f"blocks.{m[1]}.downsample.conv.conv.weight"),
        (rf"blocks\.(\d+)\.downsample\.conv\.bn\.{_BN}", lambda m: f"blocks.{m[1]}.downsample.bn.bn.{m[2]}"),
        (r"fc\.(weight|bias)", lambda m: f"classifier.linear.linear.{m[1]}"),
    ]
    return _apply(rules, key)


def _apply(rules, key: str) -> str:
    for pattern, name in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return name(m)
    raise KeyError(f"no OFA name for this project's key {key!r}")  # a new layer the mapping lacks


OFA_KEY = {"mobilenetv3": _mbv3_key, "resnet": _resnet_key}


def canonical_ofa_key(key: str) -> str:
    """One name for each of the spellings OFA's own ``load_state_dict`` accepts: no ``module.``
    prefix, ``.conv.`` for ``.mobile_inverted_conv.``, and ``bn.bn.`` / ``conv.conv.weight`` /
    ``linear.linear.`` collapsed to one level."""
    key = key.removeprefix("module.").replace(".mobile_inverted_conv.", ".conv.")
    previous = None
    while previous != key:
        previous = key
        key = key.replace("bn.bn.", "bn.").replace("conv.conv.weight", "conv.weight").replace(
            "linear.linear.", "linear.")
    return key


def ofa_state_dict_of(obj: Any, source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside what ``torch.load`` gave for an OFA file: ``obj["state_dict"]`` or ``obj``."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} holds no OFA state dict (expected {{'state_dict': {{name: tensor}}}} "
                              f"or a bare {{name: tensor}} dict)")
    return dict(obj)


def convert_state_dict(net, ofa_state: Mapping[str, torch.Tensor], net_id: str = "the OFA supernet") -> dict:
    """``net``'s state dict filled from OFA's ``ofa_state`` (CheckpointError naming the first missing,
    unexpected or wrongly shaped key)."""
    to_ofa = OFA_KEY[net.config["name"]]
    ours = net.state_dict()
    wanted = {canonical_ofa_key(to_ofa(k)): k for k in ours}
    if len(wanted) != len(ours):  # pragma: no cover - the mapping is injective by construction
        raise RuntimeError("two keys of this project map to one OFA key")
    given: dict[str, str] = {}
    for key in ofa_state:
        canon = canonical_ofa_key(key)
        if canon not in wanted:
            raise CheckpointError(f"{net_id}: unexpected key {key!r} in the state dict (not a weight of "
                                  f"{net_id}: is it another OFA net? known: {', '.join(OFA_NETS)})")
        given[canon] = key
    missing = [canon for canon, k in wanted.items() if canon not in given and not k.endswith("num_batches_tracked")]
    if missing:
        example = to_ofa(wanted[missing[0]])
        raise CheckpointError(f"{net_id}: the state dict lacks {len(missing)} of its {len(wanted)} keys, "
                              f"e.g. {example!r}")
    out = {}
    for canon, k in wanted.items():
        if canon not in given:  # files from older torch have no num_batches_tracked
            out[k] = ours[k].clone()
            continue
        value = ofa_state[given[canon]]
        if tuple(value.shape) != tuple(ours[k].shape):
            raise CheckpointError(f"{net_id}: key {given[canon]!r} has shape {list(value.shape)}, expected "
                                  f"{list(ours[k].shape)} (a checkpoint of another width or space?)")
        out[k] = value.detach().to(dtype=ours[k].dtype).clone()
    return out


def load_ofa_file(path: str | Path) -> dict[str, torch.Tensor]:
    return ofa_state_dict_of(load_torch_file(path, "OFA checkpoint"), repr(str(path)))


def convert_ofa(net_id: str, ofa_state: Mapping[str, torch.Tensor]):
    """This project's supernet of OFA's ``net_id`` holding the weights of ``ofa_state`` (eval mode)."""
    config = ofa_model_config(net_id)  # ConfigError on an unknown net id, before any work
    net = create_supernet_from_config(config)
    net.load_state_dict(convert_state_dict(net, ofa_state, net_id))
    return net.eval()


def supernet_checkpoint(net, net_id: str, source: str, data: dict | None = None) -> dict:
    """The ``supernet.pt`` dict of a converted supernet (no training state: it was trained by OFA)."""
    return {"format": SUPERNET_FORMAT, "version": 1, "model": dict(net.config), "space": net.space.to_dict(),
            "state_dict": net.state_dict(), "train_state": None,
            "metrics": {"converted_from": {"ofa_net": net_id, "file": source}},
            "config": {"data": data or {}, "converted_from": {"ofa_net": net_id, "file": source}}}


def imagenet_data(root: str | None, img_size: int = 224, val_fraction: float = 0.05) -> dict:
    """The data config of ``conf/data/imagefolder.yaml`` for an ImageNet folder (train/, val/)."""
    return {"name": "imagefolder", "root": root, "img_size": img_size, "val_fraction": val_fraction, "seed": 0}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m supernet.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True)
    ofa = sub.add_parser("ofa", help="a Once-for-All supernet checkpoint")
    ofa.add_argument("net_id", help=f"OFA's name of the supernet: {', '.join(OFA_NETS)}")
    ofa.add_argument("path", help="the OFA checkpoint file ({'state_dict': ...} or a bare state dict)")
    ofa.add_argument("--out", required=True, help="the supernet.pt to write, e.g. runs/train/ofa-mbv3-w10/supernet.pt")
    ofa.add_argument("--data-root", default=None,
                     help="ImageNet folder (train/<class>/, val/<class>/) the search evaluates subnets on")
    ofa.add_argument("--img-size", type=int, default=224, help="evaluation image size of the data (default 224)")
    ofa.add_argument("--val-fraction", type=float, default=0.05,
                     help="share of the training images held out to score subnets in the search (default 0.05)")
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        sys.exit(f"error: --val-fraction {args.val_fraction}: allowed: a fraction strictly between 0 and 1")
    try:
        net = convert_ofa(args.net_id, load_ofa_file(args.path))
        ckpt = supernet_checkpoint(net, args.net_id, str(args.path), imagenet_data(args.data_root, args.img_size,
                                                                                      args.val_fraction))
        out = save_checkpoint(ckpt, args.out)  # a full disk: CheckpointError (DiskFullError), one line
    except (ConfigError, CheckpointError) as err:
        sys.exit(f"error: {err}")
    space = net.space
    print(f"{args.net_id} -> {out}: {space.cardinality():.3g} subnets, "
          f"{space.macs(space.smallest()) / 1e6:.1f}M..{space.macs(space.largest()) / 1e6:.1f}M MACs "
          f"(at {space.smallest()['resolution']}..{space.largest()['resolution']} px)")
    return out


if __name__ == "__main__":
    main()
