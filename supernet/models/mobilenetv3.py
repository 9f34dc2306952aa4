"""Once-for-All MobileNetV3 supernet (Cai et al., ICLR 2020), on this project's interfaces.

OFA's space: a stem conv and one fixed block, then 5 stages of up to 4 inverted-residual blocks,
each block with its own depthwise kernel size {3, 5, 7} and expand ratio {3, 4, 6}, each stage
with its own depth {2, 3, 4}, and the input resolution (128..224 step 4). The width multiplier
(1.0 or 1.2) is fixed per supernet. Smaller kernels are transformed centres of the 7x7 kernel;
every other elastic dimension keeps a prefix of the channels (``sort_channels`` puts the most
important ones first).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from torch import nn

from ..layers import (
    DEFAULT_BITS,
    ConvNormAct,
    ElasticConvNormAct,
    ElasticDwConvNormAct,
    ElasticSqueezeExcite,
    attach_quantizers,
    check_bits_choices,
    conv_cost,
    same_conv_size,
    se_width,
    set_bits,
    sort_channel_group,
)
from ..space import Dim, SearchSpace
from .base import Supernet
from .registry import register_supernet

NUM_STAGES = 5
# OFA's MobileNetV3 geometry, before the width multiplier: stem, first block, the 5 stages, final
# expansion, feature mix; and the strides of the stem, the first block and the 5 stages.
OFA_BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
OFA_STRIDES = (2, 1, 2, 2, 2, 1, 2)
OFA_RESOLUTIONS = tuple(range(128, 225, 4))
# Per stage, as MobileNetV3-Large: hard-swish in the deeper stages, squeeze-excitation in some.
# In place (every activation follows a fresh conv / batch-norm output): at batch 16 @224 an out-of-place
# activation allocates and fills a new 77 MB tensor, which made the static subnets 10-20% slower than OFA's.
RELU, HARDSWISH = partial(nn.ReLU, inplace=True), partial(nn.Hardswish, inplace=True)
STAGE_ACT = (RELU, RELU, HARDSWISH, HARDSWISH, HARDSWISH)
STAGE_SE = (False, True, False, True, True)
# MobileNetV3-Large (Howard et al., ICCV 2019) in those stages: each block's (kernel size, expand ratio).
MOBILENETV3_LARGE = (((3, 4), (3, 3)), ((5, 3),) * 3, ((3, 6), (3, 2.5), (3, 2.3), (3, 2.3)), ((3, 6),) * 2,
                     ((5, 6),) * 3)


def hidden_width(in_channels: int, expand_ratio: float, divisor: int = 8) -> int:
    """Hidden width of an inverted-residual block (OFA: rounded to a multiple of ``divisor``)."""
    return make_divisible(round(in_channels * expand_ratio), divisor)


class MobileNetV3Space(SearchSpace):
    family = "mobilenetv3"

    def __init__(self, *, resolution: Sequence[int], ks: Sequence[int], expand: Sequence[float],
                 depth: Sequence[int], bits: Sequence[int] = DEFAULT_BITS, widths: Sequence[int],
                 strides: Sequence[int], in_chans: int, num_classes: int, channel_divisor: int = 8):
        if len(widths) != NUM_STAGES + 4 or len(strides) != NUM_STAGES + 2:
            raise ValueError(f"MobileNetV3 takes {NUM_STAGES + 4} widths (stem, first block, {NUM_STAGES} stages, "
                             f"final expansion, feature mix) and {NUM_STAGES + 2} strides (stem, first block, "
                             f"{NUM_STAGES} stages), got {list(widths)} and {list(strides)}")
        if min(depth) < 1:
            raise ValueError(f"stage depths must be at least 1, got {list(depth)}")
        self.max_depth = max(depth)
        n_blocks = NUM_STAGES * self.max_depth
        super().__init__([
            Dim("resolution", tuple(resolution)),
            Dim("ks", tuple(ks), n_blocks),
            Dim("expand", tuple(expand), n_blocks),
            Dim("depth", tuple(depth), NUM_STAGES),
            Dim("bits", tuple(bits), n_blocks),
        ])
        self.widths, self.strides = tuple(widths), tuple(strides)
        self.in_chans, self.num_classes, self.divisor = in_chans, num_classes, channel_divisor

    def mobilenetv3_large(self, resolution: int | None = None) -> dict:
        """MobileNetV3-Large as an arch of this space (OFA's stage widths at width 1.0, strides,
        activations and squeeze-excitations are its; a w1.2 space holds a wider variant): its depths
        and kernel sizes, each expand ratio the smallest choice at least as wide (its own 2.3 and 2.5
        where the space holds them), the largest arch's bits, and ``resolution`` (the largest by
        default). ArchError where the space lacks a choice."""
        arch = self.largest()
        if resolution is not None:
            arch["resolution"] = resolution
        arch["depth"] = [len(stage) for stage in MOBILENETV3_LARGE]
        ratios = sorted(self._by_name["expand"].choices)
        for s, stage in enumerate(MOBILENETV3_LARGE):
            for i, (k, e) in enumerate(stage):
                j = s * self.max_depth + i
                arch["ks"][j], arch["expand"][j] = k, next((r for r in ratios if r >= e), e)
        return self.canonical(arch)

    def active_blocks(self, arch: dict) -> list[int]:
        """Indices (into the per-block lists) of the blocks that run: the first ``depth`` of each stage."""
        return [s * self.max_depth + i for s, d in enumerate(arch["depth"]) for i in range(d)]

    def canonical(self, arch: dict) -> dict:
        arch = self.validate(arch)
        active = set(self.active_blocks(arch))
        for name in ("ks", "expand", "bits"):  # blocks that do not run: fixed to the largest choice
            top = self._by_name[name].choices[-1]
            arch[name] = [v if j in active else top for j, v in enumerate(arch[name])]
        return arch

    def cardinality(self) -> int:
        per_block = 1
        for name in ("ks", "expand", "bits"):
            per_block *= len(self._by_name[name].choices)
        per_stage = sum(per_block ** d for d in self._by_name["depth"].choices)
        return len(self._by_name["resolution"].choices) * per_stage ** NUM_STAGES

    def _layers(self, arch: dict) -> list[tuple]:
        # MACs as OFA's count_net_flops takes them (see conv_cost): convolutions (squeeze-excitation's
        # included) and the classifier; norms, activations, pools and adds are layers of no MACs,
        # kept for their memory traffic. Block convs run at the block's bit width.
        stem_w, first_w, *stage_w, head_w, mix_w = self.widths
        size = arch["resolution"]
        layers = [conv_cost("stem", self.in_chans, stem_w, 3, size, self.strides[0])]
        size = same_conv_size(size, self.strides[0])
        block, size = self._block("first_block", stem_w, first_w, None, 3, size, self.strides[1], False, 32)
        layers += block
        in_w = first_w
        for j in self.active_blocks(arch):
            stage, i = divmod(j, self.max_depth)
            hidden = hidden_width(in_w, arch["expand"][j], self.divisor)
            stride = self.strides[2 + stage] if i == 0 else 1
            block, size = self._block(f"blocks.{j}", in_w, stage_w[stage], hidden, arch["ks"][j], size, stride,
                                      STAGE_SE[stage], arch["bits"][j])
            layers += block
            in_w = stage_w[stage]
        head_elems = head_w * size ** 2
        return layers + [conv_cost("final_expand", in_w, head_w, 1, size),
                         ("pool", "pool", 0, 0, head_elems + head_w, 32),
                         conv_cost("feature_mix", head_w, mix_w, 1, 1, norm=False),
                         ("classifier", "linear", mix_w * self.num_classes, (mix_w + 1) * self.num_classes,
                          mix_w + self.num_classes, 32)]

    def _block(self, name: str, in_w: int, out_w: int, hidden: int | None, k: int, size: int, stride: int,
               se: bool, bits: int) -> tuple[list[tuple], int]:
        layers = []
        if hidden is None:  # no expansion: the depthwise conv runs on the input
            hidden = in_w
        else:
            layers.append(conv_cost(f"{name}.conv_pw", in_w, hidden, 1, size, bits=bits))
        layers.append(conv_cost(f"{name}.conv_dw", hidden, hidden, k, size, stride, groups=hidden, bits=bits,
                                op="dwconv"))
        size = same_conv_size(size, stride)
        elems = hidden * size ** 2
        if se:
            r = se_width(hidden, self.divisor)
            layers += [(f"{name}.se.pool", "pool", 0, 0, elems + hidden, 32),
                       conv_cost(f"{name}.se.conv_reduce", hidden, r, 1, 1, norm=False, bias=True, bits=bits),
                       conv_cost(f"{name}.se.conv_expand", r, hidden, 1, 1, norm=False, bias=True, bits=bits),
                       (f"{name}.se.scale", "act", 0, 0, 2 * elems + hidden, 32)]
        layers.append(conv_cost(f"{name}.conv_pwl", hidden, out_w, 1, size, bits=bits))
        if stride == 1 and in_w == out_w:
            out_elems = out_w * size ** 2
            layers.append((f"{name}.add", "add", 0, 0, 3 * out_elems, 32))
        return layers, size


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expansion -> kxk depthwise -> squeeze-excitation -> 1x1 projection,
    plus the input where the shape is kept. ``conv_pw`` (no expansion) and ``se`` may be
    ``nn.Identity``."""

    def __init__(self, conv_pw: nn.Module, conv_dw: nn.Module, se: nn.Module, conv_pwl: nn.Module, has_skip: bool):
        super().__init__()
        self.conv_pw, self.conv_dw, self.se, self.conv_pwl = conv_pw, conv_dw, se, conv_pwl
        self.has_skip = has_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return out + x if self.has_skip else out


class ElasticInvertedResidual(InvertedResidual):
    """Inverted residual with elastic kernel size and expand ratio (the hidden channels' prefix)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int],
                 expand_ratios: Sequence[float], stride: int, act_layer: type[nn.Module], use_se: bool,
                 divisor: int = 8):
        hidden = hidden_width(in_channels, max(expand_ratios), divisor)
        super().__init__(ElasticConvNormAct(in_channels, hidden, 1, act_layer=act_layer),
                         ElasticDwConvNormAct(hidden, kernel_sizes, stride, act_layer),
                         ElasticSqueezeExcite(hidden, divisor) if use_se else nn.Identity(),
                         ElasticConvNormAct(hidden, out_channels, 1),
                         has_skip=stride == 1 and in_channels == out_channels)
        self.in_channels, self.out_channels, self.divisor = in_channels, out_channels, divisor

    def set_active(self, kernel_size: int, expand_ratio: float) -> None:
        hidden = hidden_width(self.in_channels, expand_ratio, self.divisor)
        self.conv_pw.set_active(self.in_channels, hidden)
        self.conv_dw.set_active(hidden, kernel_size)
        if isinstance(self.se, ElasticSqueezeExcite):
            self.se.set_active(hidden)
        self.conv_pwl.set_active(hidden, self.out_channels)

    def to_static(self) -> InvertedResidual:
        se = self.se.to_static() if isinstance(self.se, ElasticSqueezeExcite) else nn.Identity()
        return InvertedResidual(self.conv_pw.to_static(), self.conv_dw.to_static(), se, self.conv_pwl.to_static(),
                                self.has_skip)

    def sort_channels(self, bands: Sequence[int] = ()) -> None:
        """Hidden channels by the L1 norm of their projection weights (OFA), inside ``bands``; then
        the squeeze-excitation's own hidden channels by the weights that read them."""
        producers = [self.conv_pw.conv, self.conv_pw.bn, self.conv_dw.conv, self.conv_dw.bn]
        consumers = [self.conv_pwl.conv]
        if isinstance(self.se, ElasticSqueezeExcite):
            producers.append(self.se.conv_expand)
            consumers.append(self.se.conv_reduce)
        sort_channel_group(producers, consumers, bands, ranked_by=[self.conv_pwl.conv])
        if isinstance(self.se, ElasticSqueezeExcite):
            sort_channel_group([self.se.conv_reduce], [self.se.conv_expand])


class FeatureMix(ConvNormAct):
    """The head's 1x1 conv (no norm) on the pooled 1x1 map, computed as the matrix product it is:
    the same weights and state dict as a conv, but exported as a Gemm, which onnxruntime runs ~10x
    faster than its blocked conv kernel on a 1x1 map (960 -> 1280 at batch 64: 1 vs 11 ms alone;
    about 1% of the w1.0 network at 160 px, batch 64). ``forward`` reads ``conv``'s weight and bias,
    not its ``forward``: a hook or wrapper on ``conv`` does not apply."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None = None):
        if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1 or \
                any(p != 0 for p in conv.padding):
            raise ValueError(f"the feature mix is a dense 1x1 conv without padding or stride, got {conv}")
        super().__init__(conv, None, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(F.linear(x.flatten(1), self.conv.weight.flatten(1), self.conv.bias))
        return y[:, :, None, None]


class MobileNetV3(nn.Module):
    """A static MobileNetV3 for one arch: plain modules, fixed resolution."""

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], final_expand: nn.Module,
                 feature_mix: nn.Module, classifier: nn.Linear, resolution: int):
        super().__init__()
        self.stem, self.blocks = stem, nn.Sequential(*blocks)
        self.final_expand, self.feature_mix, self.classifier = final_expand, feature_mix, classifier
        self.resolution = resolution

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"this subnet takes {self.resolution}x{self.resolution} images, got {tuple(x.shape)}")
        return self.final_expand(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_mix(F.adaptive_avg_pool2d(x, 1)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ElasticMobileNetV3(Supernet):
    """The supernet. ``set_active(arch)`` picks a subnet; ``forward`` runs it; ``export`` copies it out.

    The parts every subnet runs whole (stem, first block, final expansion, feature mix, classifier)
    are plain modules, copied on export; the 5 x ``max(depth)`` stage blocks are elastic.
    """

    def __init__(self, num_classes: int, *, resolution: Sequence[int], ks: Sequence[int], expand: Sequence[float],
                 depth: Sequence[int], bits: Sequence[int] = DEFAULT_BITS, width_mult: float = 1.0, in_chans: int = 3,
                 base_widths: Sequence[int] = OFA_BASE_WIDTHS, strides: Sequence[int] = OFA_STRIDES,
                 channel_divisor: int = 8, dropout_rate: float = 0.1, unsigned_after_relu: bool = False):
        super().__init__()
        bits = check_bits_choices(bits)
        widths = [make_divisible(w * width_mult, channel_divisor) for w in base_widths]
        self.config = dict(name="mobilenetv3", num_classes=num_classes, resolution=list(resolution), ks=list(ks),
                           expand=list(expand), depth=list(depth), bits=list(bits), width_mult=width_mult,
                           in_chans=in_chans, base_widths=list(base_widths), strides=list(strides),
                           channel_divisor=channel_divisor, dropout_rate=dropout_rate,
                           unsigned_after_relu=unsigned_after_relu)
        self.space = MobileNetV3Space(resolution=resolution, ks=ks, expand=expand, depth=depth, bits=bits,
                                      widths=widths, strides=strides, in_chans=in_chans, num_classes=num_classes,
                                      channel_divisor=channel_divisor)
        self.num_classes, self.in_chans = num_classes, in_chans
        stem_w, first_w, *stage_w, head_w, mix_w = widths

        self.stem = ConvNormAct(nn.Conv2d(in_chans, stem_w, 3, strides[0], 1, bias=False), nn.BatchNorm2d(stem_w),
                                HARDSWISH())
        self.first_block = InvertedResidual(
            nn.Identity(),
            ConvNormAct(nn.Conv2d(stem_w, stem_w, 3, strides[1], 1, groups=stem_w, bias=False),
                        nn.BatchNorm2d(stem_w), RELU()),
            nn.Identity(),
            ConvNormAct(nn.Conv2d(stem_w, first_w, 1, bias=False), nn.BatchNorm2d(first_w)),
            has_skip=strides[1] == 1 and stem_w == first_w)
        blocks, in_w = [], first_w
        for stage, (out_w, stride) in enumerate(zip(stage_w, strides[2:], strict=True)):
            for i in range(max(depth)):
                blocks.append(ElasticInvertedResidual(in_w, out_w, ks, expand, stride if i == 0 else 1,
                                                      STAGE_ACT[stage], STAGE_SE[stage], channel_divisor))
                attach_block_quantizers(blocks[-1], bits, STAGE_ACT[stage] is RELU, unsigned_after_relu)
                in_w = out_w
        self.blocks = nn.ModuleList(blocks)
        self.final_expand = ConvNormAct(nn.Conv2d(in_w, head_w, 1, bias=False), nn.BatchNorm2d(head_w),
                                        HARDSWISH())
        self.feature_mix = FeatureMix(nn.Conv2d(head_w, mix_w, 1, bias=False), HARDSWISH())
        self.head_drop = nn.Dropout(dropout_rate)
        self.classifier = nn.Linear(mix_w, num_classes)
        self._init_weights()
        self.set_active(self.space.largest())

    def _init_weights(self) -> None:
        # OFA's "he_fout": convs ~ N(0, 2 / (k * k * out_channels)), linear ~ U(+-1/sqrt(in)) with a
        # zero bias; norms at scale 1, shift 0. Kernel transforms stay the identity. A no-op on meta.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = m.in_features ** -0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        # Weight decay would pull the kernel transforms from the identity towards zero.
        return {name for name, _ in self.named_parameters() if ".kernel_transforms." in name}

    def set_active(self, arch: dict) -> None:
        """Validates ``arch`` (ArchError on a bad one) and makes ``forward`` run that subnet."""
        arch = self.space.validate(arch)
        for j in self.space.active_blocks(arch):
            self.blocks[j].set_active(arch["ks"][j], arch["expand"][j])
            set_bits(self.blocks[j], arch["bits"][j])
        self.active_arch = arch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        arch = self.active_arch
        x = self.resize_input(x)
        x = self.first_block(self.stem(x))
        for j in self.space.active_blocks(arch):
            x = self.blocks[j](x)
        return self.final_expand(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.feature_mix(F.adaptive_avg_pool2d(x, 1)).flatten(1)
        return self.classifier(self.head_drop(x))

    def _static_subnet(self) -> MobileNetV3:
        """The active arch as a static ``MobileNetV3`` (copied weights and BN statistics)."""
        arch = self.active_arch
        blocks = [copy.deepcopy(self.first_block)] + [self.blocks[j].to_static()
                                                      for j in self.space.active_blocks(arch)]
        return MobileNetV3(copy.deepcopy(self.stem), blocks, copy.deepcopy(self.final_expand),
                           copy.deepcopy(self.feature_mix), copy.deepcopy(self.classifier), arch["resolution"])

    def sort_channels(self, trained: Iterable[str] = ()) -> None:
        """Reorders every block's hidden channels by importance (L1 norm of the weights that read
        them), so that each expand ratio's prefix keeps the most important ones. Call it before a
        phase that trains the expand ratio; the largest subnet computes the same function after it.

        ``trained``: dimensions already trained elastically. If ``expand`` is among them, channels
        are only sorted inside the bands between the expand ratios' widths, so every trained prefix
        keeps its channels (OFA's ``expand_ratio_stage``).
        """
        trained = checked_dims(self.space, trained)
        ratios = self.space.choices()["expand"] if "expand" in trained else ()
        for block in self.blocks:
            block.sort_channels([hidden_width(block.in_channels, e, block.divisor) for e in ratios])


def attach_block_quantizers(block: ElasticInvertedResidual, bits: Sequence[int], relu_stage: bool,
                            unsigned_after_relu: bool) -> None:
    """Every conv of a stage block runs at the block's bit width. With ``unsigned_after_relu`` the
    inputs that follow a ReLU are on unsigned grids: in a ReLU stage the depthwise conv's, the
    projection's (the ReLU's output, or it times a gate in [0, 1]) and the squeeze's; in every stage
    the excitation's expansion (after its ReLU). The expansion's input (the residual stream) keeps
    its sign."""
    signed = not (unsigned_after_relu and relu_stage)
    attach_quantizers(block.conv_pw, bits)
    attach_quantizers(block.conv_dw, bits, signed)
    attach_quantizers(block.conv_pwl, bits, signed)
    if isinstance(block.se, ElasticSqueezeExcite):
        attach_quantizers(block.se.conv_reduce, bits, signed)
        attach_quantizers(block.se.conv_expand, bits, not unsigned_after_relu)


def checked_dims(space: SearchSpace, names: Iterable[str]) -> set[str]:
    """``names`` as a set, or ValueError naming one that is not a dimension of ``space``."""
    names = {names} if isinstance(names, str) else set(names)
    unknown = sorted(names - set(space.keys))
    if unknown:
        raise ValueError(f"unknown dimension {unknown[0]!r}; dimensions: {list(space.keys)}")
    return names


@register_supernet
def mobilenetv3(num_classes: int, resolution: Sequence[int] = OFA_RESOLUTIONS, ks: Sequence[int] = (3, 5, 7),
                expand: Sequence[float] = (3, 4, 6), depth: Sequence[int] = (2, 3, 4),
                bits: Sequence[int] = DEFAULT_BITS, width_mult: float = 1.0, in_chans: int = 3,
                base_widths: Sequence[int] = OFA_BASE_WIDTHS, strides: Sequence[int] = OFA_STRIDES,
                channel_divisor: int = 8, dropout_rate: float = 0.1,
                unsigned_after_relu: bool = False) -> ElasticMobileNetV3:
    """Elastic MobileNetV3; the defaults are OFA's ImageNet space (``ofa_mbv3_d234_e346_k357_w1.0``).

    ``unsigned_after_relu``: quantized conv inputs that follow a ReLU (the ReLU stages' and every
    squeeze-excitation's) are rounded to unsigned grids, so that an integer runtime needs no op for
    those ReLUs (not for TensorRT, whose int8 is signed only). Off by default so that supernets
    trained before compute what they learned; on in conf/model/mobilenetv3*.yaml."""
    return ElasticMobileNetV3(num_classes, resolution=resolution, ks=ks, expand=expand, depth=depth, bits=bits,
                              width_mult=width_mult, in_chans=in_chans, base_widths=base_widths, strides=strides,
                              channel_divisor=channel_divisor, dropout_rate=dropout_rate,
                              unsigned_after_relu=unsigned_after_relu)
