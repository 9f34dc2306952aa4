"""The layers of a subnet as lookup-table records (``hw_profiles.lut``), per search-space family.

    profile = load_profile("note10")
    profile.latency_ms(layers=lut_layers(space, arch), resolution=arch["resolution"])

MobileNetV3 layers are keyed as Once-for-All's published tables key them (``Conv``,
``expanded_conv`` with input/output shapes, expand width, kernel, stride, identity skip, SE and
hard-swish flags, ``Conv_1``, ``AvgPool2D``, ``Conv_2``, ``Logits``), so OFA's Note10 tables are read
as they are. The table of a resolution is found by ``arch["resolution"]``.
"""
from __future__ import annotations

from torch import nn

from supernet.layers import same_conv_size
from supernet.models.mobilenetv3 import STAGE_ACT, STAGE_SE, hidden_width


def lut_layers(space, arch: dict) -> list[dict]:
    """The lookup-table records of ``arch``'s layers, in forward order."""
    family = getattr(space, "family", "")
    if family == "mobilenetv3":
        return mobilenetv3_layers(space, arch)
    raise ValueError(f"per-layer lookup tables know the layers of mobilenetv3 spaces; got a {family!r} space")


def mobilenetv3_layers(space, arch: dict) -> list[dict]:
    arch = space.validate(arch)
    stem_w, first_w, *stage_w, head_w, mix_w = space.widths
    size = arch["resolution"]
    out = same_conv_size(size, space.strides[0])
    layers = [{"op": "Conv", "input": (size, size, space.in_chans), "output": (out, out, stem_w)}]
    size = out

    def block(in_w, out_w, hidden, kernel, stride, se, hs):
        nonlocal size
        out = same_conv_size(size, stride)
        layers.append({"op": "expanded_conv", "input": (size, size, in_w), "output": (out, out, out_w),
                       "expand": hidden, "kernel": kernel, "stride": stride,
                       "idskip": int(stride == 1 and in_w == out_w), "se": int(se), "hs": int(hs)})
        size = out

    block(stem_w, first_w, stem_w, 3, space.strides[1], False, False)  # the fixed first block: no expansion
    in_w = first_w
    for j in space.active_blocks(arch):
        stage, i = divmod(j, space.max_depth)
        stride = space.strides[2 + stage] if i == 0 else 1
        block(in_w, stage_w[stage], hidden_width(in_w, arch["expand"][j], space.divisor), arch["ks"][j], stride,
              STAGE_SE[stage], STAGE_ACT[stage] is nn.Hardswish)
        in_w = stage_w[stage]
    return layers + [
        {"op": "Conv_1", "input": (size, size, in_w), "output": (size, size, head_w)},
        {"op": "AvgPool2D", "input": (size, size, head_w), "output": (1, 1, head_w)},
        {"op": "Conv_2", "input": (1, 1, head_w), "output": (1, 1, mix_w)},
        {"op": "Logits", "input": (1, 1, mix_w), "output": space.num_classes},
    ]


def lut_latency(profile, space):
    """``archs -> latency ms`` from a ``kind: lut`` profile: for ``run_search(exact=...)``."""
    import numpy as np

    table = profile.lookup_table

    def latency(archs):
        return np.array([table.latency_ms(lut_layers(space, a), a.get("resolution")) for a in archs])

    return latency
