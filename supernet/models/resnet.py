"""Once-for-All ResNet50 supernet (OFA's ``ofa_resnet50`` space), on this project's interfaces.

An input stem (3x3 conv, a residual 3x3 conv, 3x3 conv, max pool) and 4 stages of bottleneck
blocks. Elastic: the input resolution; ``depth`` (5 entries: the stem, then each stage's extra
blocks {0, 1, 2} over its base depth 2, 2, 4, 2); per block the bottleneck's ``expand`` ratio
{0.2, 0.25, 0.35} of its output width; ``width`` (6 entries: the stem's inner and output widths,
then each stage's) as multipliers {0.65, 0.8, 1.0} of 64 and 256, 512, 1024, 2048. As in OFA,
the stem's residual conv runs only at the largest depth choice. Every elastic width keeps a prefix
of the channels; ``sort_channels`` puts the most important ones first.
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from torch import nn

from ..layers import (
    DEFAULT_BITS,
    FLOAT_BITS,
    ElasticConvNormAct,
    ElasticLinear,
    attach_quantizers,
    check_bits_choices,
    conv_cost,
    quantized_skip,
    same_conv_size,
    set_bits,
    sort_channel_group,
)
from ..space import Dim, SearchSpace
from .base import Supernet
from .mobilenetv3 import OFA_RESOLUTIONS, RELU, checked_dims
from .registry import register_supernet

# OFA's ResNet50 geometry, before the width multipliers.
OFA_STEM_WIDTH = 64
OFA_STAGE_WIDTHS = (256, 512, 1024, 2048)
OFA_BASE_DEPTH = (2, 2, 4, 2)
OFA_STAGE_STRIDES = (1, 2, 2, 2)
STEM_BITS = 8  # the stem's width when quantized (quantize_stem)


class ResNetSpace(SearchSpace):
    family = "resnet"

    def __init__(self, *, resolution: Sequence[int], depth: Sequence[int], expand: Sequence[float],
                 width: Sequence[float], bits: Sequence[int] = DEFAULT_BITS, stem_width: int,
                 stage_widths: Sequence[int], base_depth: Sequence[int], stem_stride: int, stem_pool: bool,
                 stage_strides: Sequence[int], in_chans: int, num_classes: int, channel_divisor: int = 8,
                 quantize_stem: bool = False):
        if not len(stage_widths) == len(base_depth) == len(stage_strides):
            raise ValueError(f"stage_widths {list(stage_widths)}, base_depth {list(base_depth)} and stage_strides "
                             f"{list(stage_strides)} must have one entry per stage")
        if min(depth) < 0 or min(base_depth) < 1:
            raise ValueError(f"depth choices are extra blocks (>= 0) over base depths (>= 1), got {list(depth)} "
                             f"and {list(base_depth)}")
        self.num_stages, self.max_extra = len(stage_widths), max(depth)
        self.stage_blocks = [b + self.max_extra for b in base_depth]  # blocks built per stage
        n_blocks = sum(self.stage_blocks)
        super().__init__([
            Dim("resolution", tuple(resolution)),
            Dim("depth", tuple(depth), self.num_stages + 1),
            Dim("expand", tuple(float(e) for e in expand), n_blocks),
            Dim("width", tuple(float(w) for w in width), self.num_stages + 2),
            Dim("bits", tuple(bits), n_blocks),
        ])
        self.stem_width, self.stage_widths, self.base_depth = stem_width, tuple(stage_widths), tuple(base_depth)
        self.stem_stride, self.stem_pool, self.stage_strides = stem_stride, stem_pool, tuple(stage_strides)
        self.in_chans, self.num_classes, self.divisor = in_chans, num_classes, channel_divisor
        self.quantize_stem = quantize_stem and min(bits) < FLOAT_BITS  # a float-only space has nothing to follow

    # -- channel counts (OFA's rounding) ------------------------------------------------------
    def stem_out_channels(self, width_mult: float) -> int:
        return make_divisible(self.stem_width * width_mult, self.divisor)

    def stem_mid_channels(self, width_mult: float) -> int:
        return make_divisible(self.stem_out_channels(width_mult) // 2, self.divisor)

    def stage_channels(self, stage: int, width_mult: float) -> int:
        return make_divisible(self.stage_widths[stage] * width_mult, self.divisor)

    def hidden_channels(self, out_channels: int, expand_ratio: float) -> int:
        """Bottleneck width: ``expand_ratio`` of the block's output width, rounded."""
        return make_divisible(round(out_channels * expand_ratio), self.divisor)

    # -- which blocks run ----------------------------------------------------------------------
    def stem_residual(self, arch: dict) -> bool:
        return arch["depth"][0] == self._by_name["depth"].choices[-1]

    def stem_bits(self, arch: dict) -> int:
        """The stem's bit width: with ``quantize_stem``, 8 when the first block is quantized (at any
        width: a first layer below 8 bits costs accuracy, the papers keep it at 8), else float."""
        return STEM_BITS if self.quantize_stem and arch["bits"][0] != FLOAT_BITS else FLOAT_BITS

    def first_block(self, stage: int) -> int:
        return sum(self.stage_blocks[:stage])

    def active_blocks(self, arch: dict) -> list[tuple[int, int, int]]:
        """``(stage, index in stage, index into the per-block lists)`` of every block that runs."""
        return [(s, i, self.first_block(s) + i) for s in range(self.num_stages)
                for i in range(self.base_depth[s] + arch["depth"][s + 1])]

    def canonical(self, arch: dict) -> dict:
        arch = self.validate(arch)
        depths = self._by_name["depth"].choices
        arch["depth"][0] = depths[-1] if self.stem_residual(arch) else depths[0]  # the stem has two states
        active = {j for _, _, j in self.active_blocks(arch)}
        for name in ("expand", "bits"):  # blocks that do not run: fixed to the largest choice
            top = self._by_name[name].choices[-1]
            arch[name] = [v if j in active else top for j, v in enumerate(arch[name])]
        return arch

    def cardinality(self) -> int:
        n = {d.name: len(d.choices) for d in self.dims}
        per_block = n["expand"] * n["bits"]
        stem = n["width"] ** 2 * min(n["depth"], 2)
        stages = math.prod(n["width"] * sum(per_block ** (b + d) for d in self._by_name["depth"].choices)
                           for b in self.base_depth)
        return n["resolution"] * stem * stages

    def _layers(self, arch: dict) -> list[tuple]:
        # MACs as OFA's count_net_flops takes them (see conv_cost): convolutions and the classifier;
        # pools and adds are layers of no MACs, kept for their memory traffic. Block convs run at
        # the block's bit width, the stem's at ``stem_bits``.
        w, size, sb = arch["width"], arch["resolution"], self.stem_bits(arch)
        mid, out = self.stem_mid_channels(w[0]), self.stem_out_channels(w[1])
        layers = [conv_cost("stem.conv1", self.in_chans, mid, 3, size, self.stem_stride, bits=sb)]
        size = same_conv_size(size, self.stem_stride)
        if self.stem_residual(arch):
            elems = mid * size ** 2
            layers += [conv_cost("stem.residual.fn", mid, mid, 3, size, bits=sb), ("stem.residual.add", "add", 0, 0,
                                                                           3 * elems, 32)]
        layers.append(conv_cost("stem.conv2", mid, out, 3, size, bits=sb))
        if self.stem_pool:
            pooled = same_conv_size(size, 2)
            layers.append(("stem.pool", "pool", 0, 0, out * (size ** 2 + pooled ** 2), 32))
            size = pooled
        in_ch = out
        for stage, i, j in self.active_blocks(arch):
            out_ch, b = self.stage_channels(stage, w[stage + 2]), arch["bits"][j]
            hidden = self.hidden_channels(out_ch, arch["expand"][j])
            stride = self.stage_strides[stage] if i == 0 else 1
            out_size = same_conv_size(size, stride)
            p = f"blocks.{j}."
            layers += [conv_cost(p + "conv1", in_ch, hidden, 1, size, bits=b),
                       conv_cost(p + "conv2", hidden, hidden, 3, size, stride, bits=b),
                       conv_cost(p + "conv3", hidden, out_ch, 1, out_size, bits=b)]
            if i == 0:  # projection shortcut: average pool (free), then 1x1 conv + BN
                layers.append(conv_cost(p + "downsample", in_ch, out_ch, 1, out_size, bits=b))
            elems = out_ch * out_size ** 2
            layers.append((p + "add", "add", 0, 0, 3 * elems, 32))
            in_ch, size = out_ch, out_size
        elems, K = in_ch * size ** 2, self.num_classes
        return layers + [("pool", "pool", 0, 0, elems + in_ch, 32),
                         ("fc", "linear", in_ch * K, (in_ch + 1) * K, in_ch + K, 32)]


class Residual(nn.Module):
    """``x + fn(x)``."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class ElasticResidual(Residual):
    """A residual conv that a subnet may skip (OFA's stem depth), with elastic channels."""

    def __init__(self, fn: ElasticConvNormAct):
        super().__init__(fn)
        self.active = True

    def set_active(self, active: bool, channels: int) -> None:
        self.active = active
        self.fn.set_active(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if self.active else x

    def to_static(self) -> nn.Module:
        return Residual(self.fn.to_static()) if self.active else nn.Identity()


class Projection(nn.Module):
    """The shortcut of a block that changes the shape: average pool over the stride, then 1x1 conv
    and BN (OFA's ``avgpool_conv``; it keeps all input pixels where a strided 1x1 conv drops 3/4)."""

    def __init__(self, pool: nn.Module, conv: nn.Module):
        super().__init__()
        self.pool, self.conv = pool, conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class ElasticProjection(Projection):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        super().__init__(pool, ElasticConvNormAct(in_channels, out_channels, 1))

    def set_active(self, in_channels: int, out_channels: int) -> None:
        self.conv.set_active(in_channels, out_channels)

    def to_static(self) -> Projection:
        return Projection(copy.deepcopy(self.pool), self.conv.to_static())


class Bottleneck(nn.Module):
    """``relu(conv3(conv2(conv1(x))) + downsample(x))``: 1x1 reduce, 3x3 (the stride), 1x1 expand.
    When the block runs at 8 bits, its shortcut reads ``x`` as conv1 reads it (``quantized_skip``):
    an identity shortcut with ``quantize_skip``, a projection (pool, then its own conv) with
    ``quantize_projection``."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module, conv3: nn.Module, downsample: nn.Module,
                 quantize_skip: bool = False, quantize_projection: bool = False):
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.downsample = conv1, conv2, conv3, downsample
        self.act = RELU()
        self.quantize_skip, self.quantize_projection = quantize_skip, quantize_projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = isinstance(self.downsample, nn.Identity)
        quantized = self.quantize_skip if identity else self.quantize_projection
        skip = self.downsample(quantized_skip(self.conv1.conv, x) if quantized else x)
        return self.act(self.conv3(self.conv2(self.conv1(x))) + skip)


class ElasticBottleneck(Bottleneck):
    """Bottleneck with elastic input, output and hidden widths. The first block of a stage has a
    projection shortcut (its input and output widths are independent choices); the others add
    their input."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, stride: int, projection: bool,
                 quantize_skip: bool = False, quantize_projection: bool = False):
        super().__init__(ElasticConvNormAct(in_channels, hidden_channels, 1, act_layer=RELU),
                         ElasticConvNormAct(hidden_channels, hidden_channels, 3, stride, act_layer=RELU),
                         ElasticConvNormAct(hidden_channels, out_channels, 1),
                         ElasticProjection(in_channels, out_channels, stride) if projection else nn.Identity(),
                         quantize_skip, quantize_projection)

    def set_active(self, in_channels: int, out_channels: int, hidden_channels: int) -> None:
        self.conv1.set_active(in_channels, hidden_channels)
        self.conv2.set_active(hidden_channels, hidden_channels)
        self.conv3.set_active(hidden_channels, out_channels)
        if isinstance(self.downsample, ElasticProjection):
            self.downsample.set_active(in_channels, out_channels)

    def to_static(self) -> Bottleneck:
        downsample = self.downsample.to_static() if isinstance(self.downsample, ElasticProjection) else nn.Identity()
        return Bottleneck(self.conv1.to_static(), self.conv2.to_static(), self.conv3.to_static(), downsample,
                          self.quantize_skip, self.quantize_projection)

    def sort_channels(self, bands: Sequence[int] = ()) -> None:
        """Hidden channels, conv3's inputs first, then conv2's (OFA's order), inside ``bands``."""
        sort_channel_group([self.conv2.conv, self.conv2.bn], [self.conv3.conv], bands)
        sort_channel_group([self.conv1.conv, self.conv1.bn], [self.conv2.conv], bands)


class ResNet(nn.Module):
    """A static ResNet for one arch: plain modules, fixed resolution."""

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], fc: nn.Linear, resolution: int):
        super().__init__()
        self.stem, self.blocks, self.fc, self.resolution = stem, nn.Sequential(*blocks), fc, resolution

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"this subnet takes {self.resolution}x{self.resolution} images, got {tuple(x.shape)}")
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ElasticResNet(Supernet):
    """The supernet. ``set_active(arch)`` picks a subnet; ``forward`` runs it; ``export`` copies it out."""

    def __init__(self, num_classes: int, *, resolution: Sequence[int], depth: Sequence[int], expand: Sequence[float],
                 width: Sequence[float], bits: Sequence[int] = DEFAULT_BITS, in_chans: int = 3,
                 stem_width: int = OFA_STEM_WIDTH, stage_widths: Sequence[int] = OFA_STAGE_WIDTHS,
                 base_depth: Sequence[int] = OFA_BASE_DEPTH, stem_stride: int = 2, stem_pool: bool = True,
                 stage_strides: Sequence[int] = OFA_STAGE_STRIDES, channel_divisor: int = 8,
                 dropout_rate: float = 0.0, quantize_skip: bool = False, quantize_projection: bool = False,
                 quantize_stem: bool = False, unsigned_after_relu: bool = False):
        super().__init__()
        bits = check_bits_choices(bits)
        self.config = dict(name="resnet", num_classes=num_classes, resolution=list(resolution), depth=list(depth),
                           expand=[float(e) for e in expand], width=[float(w) for w in width], bits=list(bits),
                           in_chans=in_chans, stem_width=stem_width, stage_widths=list(stage_widths),
                           base_depth=list(base_depth), stem_stride=stem_stride, stem_pool=stem_pool,
                           stage_strides=list(stage_strides), channel_divisor=channel_divisor,
                           dropout_rate=dropout_rate, quantize_skip=quantize_skip,
                           quantize_projection=quantize_projection, quantize_stem=quantize_stem,
                           unsigned_after_relu=unsigned_after_relu)
        self.space = space = ResNetSpace(
            resolution=resolution, depth=depth, expand=expand, width=width, bits=bits, stem_width=stem_width,
            stage_widths=stage_widths, base_depth=base_depth, stem_stride=stem_stride, stem_pool=stem_pool,
            stage_strides=stage_strides, in_chans=in_chans, num_classes=num_classes, channel_divisor=channel_divisor,
            quantize_stem=quantize_stem)
        self.num_classes, self.in_chans = num_classes, in_chans
        w = max(width)
        mid, out = space.stem_mid_channels(w), space.stem_out_channels(w)
        self.stem = nn.Sequential(OrderedDict(
            conv1=ElasticConvNormAct(in_chans, mid, 3, stem_stride, act_layer=RELU),
            residual=ElasticResidual(ElasticConvNormAct(mid, mid, 3, act_layer=RELU)),
            conv2=ElasticConvNormAct(mid, out, 3, act_layer=RELU),
            pool=nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()))
        # Every conv input but the image follows a ReLU (a block's input is the last block's or the
        # stem's ReLU output, pooled or not), so that with ``unsigned_after_relu`` all are unsigned.
        signed = not unsigned_after_relu
        if space.quantize_stem:
            attach_quantizers(self.stem.conv1, (STEM_BITS, FLOAT_BITS))
            attach_quantizers(self.stem.residual, (STEM_BITS, FLOAT_BITS), signed)
            attach_quantizers(self.stem.conv2, (STEM_BITS, FLOAT_BITS), signed)
        blocks, in_ch = [], out
        for stage, (n, stride) in enumerate(zip(space.stage_blocks, stage_strides, strict=True)):
            out_ch = space.stage_channels(stage, w)
            hidden = space.hidden_channels(out_ch, max(expand))
            for i in range(n):
                blocks.append(ElasticBottleneck(in_ch, out_ch, hidden, stride if i == 0 else 1, projection=i == 0,
                                                quantize_skip=quantize_skip, quantize_projection=quantize_projection))
                attach_quantizers(blocks[-1], bits, signed)  # its convs (shortcut included) at the block's bits
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.head_drop = nn.Dropout(dropout_rate)
        self.fc = ElasticLinear(in_ch, num_classes)
        self._init_weights()
        self.set_active(space.largest())

    def _init_weights(self) -> None:
        # OFA's "he_fout": convs ~ N(0, 2 / (k * k * out_channels)), linear ~ U(+-1/sqrt(in)) with a
        # zero bias; norms at scale 1, shift 0. A no-op on the meta device.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                bound = m.in_features ** -0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return set()

    def set_active(self, arch: dict) -> None:
        """Validates ``arch`` (ArchError on a bad one) and makes ``forward`` run that subnet."""
        arch = self.space.validate(arch)
        space, w = self.space, arch["width"]
        mid, out = space.stem_mid_channels(w[0]), space.stem_out_channels(w[1])
        self.stem.conv1.set_active(self.in_chans, mid)
        self.stem.residual.set_active(space.stem_residual(arch), mid)
        self.stem.conv2.set_active(mid, out)
        set_bits(self.stem, space.stem_bits(arch))
        in_ch = out
        for stage, _, j in space.active_blocks(arch):
            out_ch = space.stage_channels(stage, w[stage + 2])
            self.blocks[j].set_active(in_ch, out_ch, space.hidden_channels(out_ch, arch["expand"][j]))
            set_bits(self.blocks[j], arch["bits"][j])
            in_ch = out_ch
        self.fc.set_active(in_ch, self.num_classes)
        self.active_arch = arch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        arch = self.active_arch
        x = self.resize_input(x)
        x = self.stem(x)
        for _, _, j in self.space.active_blocks(arch):
            x = self.blocks[j](x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_drop(F.adaptive_avg_pool2d(x, 1).flatten(1)))

    def _static_subnet(self) -> ResNet:
        """The active arch as a static ``ResNet`` (copied weights and BN statistics)."""
        arch = self.active_arch
        stem = nn.Sequential(OrderedDict(
            conv1=self.stem.conv1.to_static(), residual=self.stem.residual.to_static(),
            conv2=self.stem.conv2.to_static(), pool=copy.deepcopy(self.stem.pool)))
        blocks = [self.blocks[j].to_static() for _, _, j in self.space.active_blocks(arch)]
        return ResNet(stem, blocks, self.fc.to_static(), arch["resolution"])

    def sort_channels(self, trained: Iterable[str] = ()) -> None:
        """Reorders channels by importance (L1 norm of the weights that read them) so that every
        kept prefix holds the most important ones: each bottleneck's hidden channels (for the expand
        ratio), then the stem's and every stage's channels (for the width). Call it before a phase
        that trains ``expand`` or ``width``; the largest subnet computes the same function after it.

        ``trained``: dimensions already trained elastically. Channels of those (``expand``,
        ``width``) are only sorted inside the bands between their choices' widths, so every trained
        prefix keeps its channels (OFA's ``expand_ratio_stage``).
        """
        trained, space = checked_dims(self.space, trained), self.space
        expands = space.choices()["expand"] if "expand" in trained else ()
        widths = space.choices()["width"] if "width" in trained else ()
        for block in self.blocks:
            out_ch = block.conv3.conv.out_channels
            block.sort_channels([space.hidden_channels(out_ch, e) for e in expands])

        stem, first = self.stem, self.blocks[0]
        sort_channel_group([stem.conv1.conv, stem.conv1.bn, stem.residual.fn.conv, stem.residual.fn.bn],
                           [stem.residual.fn.conv, stem.conv2.conv], [space.stem_mid_channels(w) for w in widths])
        sort_channel_group([stem.conv2.conv, stem.conv2.bn], [first.conv1.conv, first.downsample.conv.conv],
                           [space.stem_out_channels(w) for w in widths])
        for stage in range(space.num_stages):
            start = space.first_block(stage)
            blocks = self.blocks[start:start + space.stage_blocks[stage]]
            producers = [blocks[0].downsample.conv.conv, blocks[0].downsample.conv.bn]
            for block in blocks:
                producers += [block.conv3.conv, block.conv3.bn]
            consumers = [block.conv1.conv for block in blocks[1:]]
            if stage + 1 < space.num_stages:
                nxt = self.blocks[start + len(blocks)]
                consumers += [nxt.conv1.conv, nxt.downsample.conv.conv]
            else:
                consumers.append(self.fc)
            sort_channel_group(producers, consumers, [space.stage_channels(stage, w) for w in widths])


@register_supernet
def resnet(num_classes: int, resolution: Sequence[int] = OFA_RESOLUTIONS, depth: Sequence[int] = (0, 1, 2),
           expand: Sequence[float] = (0.2, 0.25, 0.35), width: Sequence[float] = (0.65, 0.8, 1.0),
           bits: Sequence[int] = DEFAULT_BITS, in_chans: int = 3, stem_width: int = OFA_STEM_WIDTH,
           stage_widths: Sequence[int] = OFA_STAGE_WIDTHS, base_depth: Sequence[int] = OFA_BASE_DEPTH,
           stem_stride: int = 2, stem_pool: bool = True, stage_strides: Sequence[int] = OFA_STAGE_STRIDES,
           channel_divisor: int = 8, dropout_rate: float = 0.0, quantize_skip: bool = False,
           quantize_projection: bool = False, quantize_stem: bool = False,
           unsigned_after_relu: bool = False) -> ElasticResNet:
    """Elastic ResNet; the defaults are OFA's ResNet50 space (``ofa_resnet50``). ``quantize_skip``: the
    identity shortcuts of 8-bit blocks add their input on conv1's grid (``quantized_skip``);
    ``quantize_projection``: the projection shortcuts of 8-bit blocks pool it from that grid;
    ``quantize_stem``: the stem's three convs run at 8 bits whenever the first block is quantized
    (``ResNetSpace.stem_bits``), as int8 deployments quantize the first layers;
    ``unsigned_after_relu``: every quantized conv input but the image (each follows a ReLU) is
    rounded to an unsigned grid, so that an integer runtime needs no op for the ReLUs (not for
    TensorRT, whose int8 is signed only). All off by default so that supernets trained before keep
    computing what they learned."""
    return ElasticResNet(num_classes, resolution=resolution, depth=depth, expand=expand, width=width, bits=bits,
                         in_chans=in_chans, stem_width=stem_width, stage_widths=stage_widths, base_depth=base_depth,
                         stem_stride=stem_stride, stem_pool=stem_pool, stage_strides=stage_strides,
                         channel_divisor=channel_divisor, dropout_rate=dropout_rate, quantize_skip=quantize_skip,
                         quantize_projection=quantize_projection, quantize_stem=quantize_stem,
                         unsigned_after_relu=unsigned_after_relu)
