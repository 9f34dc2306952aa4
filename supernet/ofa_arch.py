"""Once-for-All interop: OFA's released supernets as model configs, and OFA's arch dicts both ways.

OFA writes a MobileNetV3 subnet as ``{"ks": [20], "e": [20], "d": [5]}`` and a ResNet50 subnet as
``{"d": [5], "e": [18], "w": [6]}``, where ``w`` holds *indices* into the width multipliers
(0.65, 0.8, 1.0); the resolution travels beside them as ``"r": [224]`` (OFA's tutorial search) or
``"image_size": 224`` (its accuracy predictor). This project's arch of the same subnet is
``{"resolution", "ks", "expand", "depth", "bits"}`` / ``{"resolution", "depth", "expand", "width",
"bits"}``, with the width multipliers themselves and ``bits`` 32 (float) everywhere.

``parse_arch(space, arch)`` takes either form, so every command that reads an arch accepts OFA's.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .space import ArchError, SearchSpace

FLOAT_BITS = 32
# OFA's net ids (``ofa.model_zoo.ofa_net``) -> this project's model config of the same space.
_MBV3 = dict(name="mobilenetv3", num_classes=1000, ks=[3, 5, 7], expand=[3, 4, 6], depth=[2, 3, 4],
             bits=[FLOAT_BITS], dropout_rate=0.1)
OFA_NETS: dict[str, dict[str, Any]] = {
    "ofa_mbv3_d234_e346_k357_w1.0": {**_MBV3, "width_mult": 1.0},
    "ofa_mbv3_d234_e346_k357_w1.2": {**_MBV3, "width_mult": 1.2},
    "ofa_resnet50": dict(name="resnet", num_classes=1000, depth=[0, 1, 2], expand=[0.2, 0.25, 0.35],
                         width=[0.65, 0.8, 1.0], bits=[FLOAT_BITS], dropout_rate=0.0),
}
OFA_KEYS = {"mobilenetv3": ("ks", "e", "d"), "resnet": ("d", "e", "w")}
_RESOLUTION_KEYS = ("r", "image_size")


def ofa_model_config(net_id: str) -> dict[str, Any]:
    """The model config (``create_supernet_from_config``) of OFA's supernet ``net_id``."""
    if net_id not in OFA_NETS:
        raise ConfigError(f"unknown OFA net {net_id!r}; known: {', '.join(OFA_NETS)}")
    return {key: list(v) if isinstance(v, list) else v for key, v in OFA_NETS[net_id].items()}


def is_ofa_arch(arch: Any) -> bool:
    """True for a dict in OFA's form: its keys among ks / e / d / w / r / image_size, with ``d`` and ``e``."""
    return (isinstance(arch, Mapping) and {"d", "e"} <= set(arch)
            and set(arch) <= {"ks", "e", "d", "w", *_RESOLUTION_KEYS, "wid"})


def _family(space: SearchSpace) -> str:
    if space.family not in OFA_KEYS:
        raise ArchError("<arch>", f"an OFA arch for a {space.family!r} supernet",
                        f"OFA archs of the families {', '.join(OFA_KEYS)}")
    return space.family


def _per_block(arch: Mapping, key: str, length: int) -> list:
    """OFA's ``val2list``: a scalar stands for every block; a list must have one entry per block."""
    value = arch[key]
    if isinstance(value, (list, tuple)):
        if len(value) != length:
            raise ArchError(key, list(value), f"a list of {length} values (OFA's form)")
        return list(value)
    return [value] * length


def _resolution(space: SearchSpace, arch: Mapping) -> int:
    choices = space.choices()["resolution"]
    given = [arch[k] for k in _RESOLUTION_KEYS if k in arch and arch[k] is not None]
    if not given:
        return choices[-1]  # OFA evaluates at the largest resolution (224) unless told otherwise
    r = given[0]
    if isinstance(r, (list, tuple)):
        if len(r) != 1:
            raise ArchError("r", list(r), f"one resolution of {choices}")
        r = r[0]
    return r


def from_ofa_arch(space: SearchSpace, arch: Mapping) -> dict:
    """This project's arch of the subnet OFA writes as ``arch`` (validated; ArchError on a bad one)."""
    family = _family(space)
    missing = [k for k in OFA_KEYS[family] if k not in arch]
    if missing:
        raise ArchError(missing[0], "<missing>", f"OFA's {family} arch keys {list(OFA_KEYS[family])}")
    dims = {d.name: d for d in space.dims}
    n_blocks, n_depth = dims["expand"].length, dims["depth"].length
    out: dict[str, Any] = {"resolution": _resolution(space, arch)}
    if family == "mobilenetv3":
        out.update(ks=_per_block(arch, "ks", n_blocks), expand=_per_block(arch, "e", n_blocks),
                   depth=_per_block(arch, "d", n_depth))
    else:
        widths = dims["width"].choices
        indices = _per_block(arch, "w", dims["width"].length)
        bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(widths)]
        if bad:
            raise ArchError("w", bad[0], f"indices 0..{len(widths) - 1} into OFA's width multipliers {list(widths)}")
        out.update(depth=_per_block(arch, "d", n_depth), expand=_per_block(arch, "e", n_blocks),
                   width=[widths[i] for i in indices])
    bits = dims["bits"]
    if FLOAT_BITS not in bits.choices:
        raise ArchError("bits", FLOAT_BITS, list(bits.choices))
    out["bits"] = [FLOAT_BITS] * bits.length  # OFA's subnets are float
    return space.validate(out)


def to_ofa_arch(space: SearchSpace, arch: Mapping) -> dict:
    """OFA's form of this project's ``arch`` (float blocks only: OFA has no bit widths)."""
    family, arch = _family(space), space.validate(dict(arch))
    active = [j if family == "mobilenetv3" else j[2] for j in space.active_blocks(arch)]
    quantized = [arch["bits"][j] for j in active if arch["bits"][j] != FLOAT_BITS]
    if quantized:
        raise ArchError("bits", quantized[0], f"{FLOAT_BITS} in every block that runs (OFA's subnets are float)")
    res = arch["resolution"]
    if family == "mobilenetv3":
        body = {"ks": list(arch["ks"]), "e": list(arch["expand"]), "d": list(arch["depth"])}
    else:
        widths = list(space.choices()["width"])
        body = {"d": list(arch["depth"]), "e": list(arch["expand"]), "w": [widths.index(w) for w in arch["width"]]}
    return {**body, "r": [res], "image_size": res}


def parse_arch(space: SearchSpace, arch: Any) -> dict:
    """``arch`` in this project's form or in OFA's, as this project's validated arch."""
    return from_ofa_arch(space, arch) if is_ofa_arch(arch) else space.validate(arch)
