"""The layers of a subnet as lookup-table records (``hw_profiles.lut``), per search-space family.

    profile = load_profile("note10")
    profile.latency_ms(layers=lut_layers(space, arch), resolution=arch["resolution"])

MobileNetV3 layers are keyed as Once-for-All's published tables key them (``Conv``,
``expanded_conv`` with input/output shapes, expand width, kernel, stride, identity skip, SE and
hard-swish flags, ``Conv_1``, ``AvgPool2D``, ``Conv_2``, ``Logits``), so OFA's Note10 tables are read
as they are; a fake-quantized block adds ``bits`` (OFA's spaces are float, so their keys never have it).
ViT layers: ``PatchEmbed`` (patch conv, class token, position embedding), one ``Block`` per
transformer block (tokens x width, heads, head width, MLP width, bits) and ``Head`` (final norm and
classifier). The table of a resolution is found by ``arch["resolution"]``.

``python -m search.measure --lut`` builds a table for a space by timing each layer of
``lut_modules`` once, over the archs of ``lut_cover`` (whose layers are every layer of the space).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from supernet.layers import same_conv_size
from supernet.models.mobilenetv3 import STAGE_ACT, STAGE_SE, hidden_width
from supernet.models.vit import mlp_hidden

FAMILIES = ("mobilenetv3", "vit")


def _family(space) -> str:
    family = getattr(space, "family", "")
    if family not in FAMILIES:
        raise ValueError(f"per-layer lookup tables know the layers of {', '.join(FAMILIES)} spaces; "
                         f"got a {family!r} space")
    return family


def lut_layers(space, arch: dict) -> list[dict]:
    """The lookup-table records of ``arch``'s layers, in forward order."""
    family = _family(space)
    return mobilenetv3_layers(space, arch) if family == "mobilenetv3" else vit_layers(space, arch)


def mobilenetv3_layers(space, arch: dict) -> list[dict]:
    arch = space.validate(arch)
    stem_w, first_w, *stage_w, head_w, mix_w = space.widths
    size = arch["resolution"]
    out = same_conv_size(size, space.strides[0])
    layers = [{"op": "Conv", "input": (size, size, space.in_chans), "output": (out, out, stem_w)}]
    size = out

    def block(in_w, out_w, hidden, kernel, stride, se, hs, bits=32):
        nonlocal size
        out = same_conv_size(size, stride)
        layers.append({"op": "expanded_conv", "input": (size, size, in_w), "output": (out, out, out_w),
                       "expand": hidden, "kernel": kernel, "stride": stride,
                       "idskip": int(stride == 1 and in_w == out_w), "se": int(se), "hs": int(hs)})
        if bits != 32:  # fake-quantized convs run extra (de)quantize work: another geometry
            layers[-1]["bits"] = bits
        size = out

    block(stem_w, first_w, stem_w, 3, space.strides[1], False, False)  # the fixed first block: no expansion
    # a stage's activation is a class or a partial of one (in place): what it builds says which
    hard_swish = [isinstance(act(), nn.Hardswish) for act in STAGE_ACT]
    in_w = first_w
    for j in space.active_blocks(arch):
        stage, i = divmod(j, space.max_depth)
        stride = space.strides[2 + stage] if i == 0 else 1
        block(in_w, stage_w[stage], hidden_width(in_w, arch["expand"][j], space.divisor), arch["ks"][j], stride,
              STAGE_SE[stage], hard_swish[stage], arch["bits"][j])
        in_w = stage_w[stage]
    return layers + [
        {"op": "Conv_1", "input": (size, size, in_w), "output": (size, size, head_w)},
        {"op": "AvgPool2D", "input": (size, size, head_w), "output": (1, 1, head_w)},
        {"op": "Conv_2", "input": (1, 1, head_w), "output": (1, 1, mix_w)},
        {"op": "Logits", "input": (1, 1, mix_w), "output": space.num_classes},
    ]


def vit_layers(space, arch: dict) -> list[dict]:
    arch = space.validate(arch)
    res, e = arch["resolution"], arch["embed_dim"]
    tokens = (res // space.patch_size) ** 2 + 1  # patches and the class token
    layers = [{"op": "PatchEmbed", "input": (res, res, space.in_chans), "output": (tokens, e),
               "patch": space.patch_size}]
    for i in range(arch["depth"]):
        layers.append({"op": "Block", "input": (tokens, e), "heads": arch["num_heads"][i],
                       "head_dim": space.head_dim, "mlp": mlp_hidden(e, arch["mlp_ratio"][i]),
                       "bits": arch["bits"][i]})
    return layers + [{"op": "Head", "input": (tokens, e), "output": space.num_classes}]


def lut_cover(space) -> list[dict]:
    """Archs whose layers, together, are every layer any arch of ``space`` has.

    In both families a block's geometry depends only on its own choices and on dimensions shared by
    the whole net (resolution; ViT's width; MobileNetV3's stage widths are fixed), not on the blocks
    before it: so the deepest arch with every block at one combination of per-block choices, for each
    such combination and each value of the shared dimensions, holds every block of the space.
    """
    family = _family(space)
    choices = space.choices()
    per_block = ("ks", "expand", "bits") if family == "mobilenetv3" else ("num_heads", "mlp_ratio", "bits")
    shared = ("resolution",) if family == "mobilenetv3" else ("resolution", "embed_dim")
    largest = space.largest()
    archs = []
    for shared_values in itertools.product(*(choices[name] for name in shared)):
        for block_values in itertools.product(*(choices[name] for name in per_block)):
            arch = dict(largest, **dict(zip(shared, shared_values, strict=True)))
            for name, value in zip(per_block, block_values, strict=True):
                arch[name] = [value] * len(largest[name])
            archs.append(space.validate(arch))
    return archs


def lut_modules(net, arch: dict) -> list[tuple[dict, nn.Module, tuple[int, ...]]]:
    """The exported subnet ``arch`` cut into its lookup-table layers: ``(record, module, input shape
    of one sample)`` in forward order; run one after the other, the modules compute the subnet."""
    layers = lut_layers(net.space, arch)
    static = net.export(arch)
    if _family(net.space) == "mobilenetv3":
        modules = [static.stem, *static.blocks, static.final_expand, nn.AdaptiveAvgPool2d(1), static.feature_mix,
                   nn.Sequential(nn.Flatten(), static.classifier)]
    else:
        modules = [_ViTTokens(static), *static.blocks, _ViTHead(static)]
    return [(layer, module.eval(), _input_shape(layer)) for layer, module in zip(layers, modules, strict=True)]


def _input_shape(layer: dict) -> tuple[int, ...]:
    """One sample's input shape in torch's layout: records write images HxWxC, models take CxHxW."""
    shape = tuple(int(v) for v in layer["input"])
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape


class _ViTTokens(nn.Module):
    """Image to tokens, as the static ViT begins: patch conv, then the class token and the position
    embedding."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.patch_embed, self.cls_token, self.pos_embed = vit.patch_embed, vit.cls_token, vit.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed


class _ViTHead(nn.Module):
    """Tokens to logits, as the static ViT ends: the final norm, then the classifier on the class token."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.norm, self.head = vit.norm, vit.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x)[:, 0])


def lut_latency(profile, space):
    """``archs -> latency ms`` from a ``kind: lut`` profile: for ``run_search(exact=...)``."""
    table = profile.lookup_table

    def latency(archs):
        return np.array([table.latency_ms(lut_layers(space, a), a.get("resolution")) for a in archs])

    return latency
