"""Elastic Vision Transformer (AutoFormer/InstaTune style) whose largest subnet is a timm ViT.

Elastic dimensions: input resolution, depth (the first ``depth`` blocks run), embedding width (one
per net, a channel prefix everywhere), and per block the number of heads (fixed ``head_dim``), the
MLP ratio and the bit width. Parameter names are timm's ``VisionTransformer`` names, so a timm
state dict loads unchanged and the largest arch computes the same logits.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch
from timm.layers import DropPath, resample_abs_pos_embed, trunc_normal_
from torch import nn

from ..layers import (
    DEFAULT_BITS,
    ElasticAttention,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticLinear,
    ElasticMlp,
    FakeQuantize,
    attach_quantizers,
    check_bits_choices,
    set_bits,
)
from ..layers.cache import InferenceCache
from ..space import Dim, SearchSpace
from .base import Supernet
from .registry import register_supernet


def mlp_hidden(embed_dim: int, mlp_ratio: float) -> int:
    """Hidden width of a block's MLP, as timm computes it."""
    return int(embed_dim * mlp_ratio)


class ViTSpace(SearchSpace):
    family = "vit"

    def __init__(self, *, resolution: Sequence[int], depth: Sequence[int], embed_dim: Sequence[int],
                 num_heads: Sequence[int], mlp_ratio: Sequence[float], bits: Sequence[int] = DEFAULT_BITS,
                 patch_size: int, in_chans: int, num_classes: int, head_dim: int, qkv_bias: bool = True):
        bad_res = [r for r in resolution if r % patch_size]
        if bad_res:
            raise ValueError(f"resolution choices {bad_res} are not multiples of patch_size={patch_size}")
        max_depth = max(depth)
        super().__init__([
            Dim("resolution", tuple(resolution)),
            Dim("depth", tuple(depth)),
            Dim("embed_dim", tuple(embed_dim)),
            Dim("num_heads", tuple(num_heads), max_depth),
            Dim("mlp_ratio", tuple(float(r) for r in mlp_ratio), max_depth),
            Dim("bits", tuple(bits), max_depth),
        ])
        self.patch_size, self.in_chans, self.num_classes = patch_size, in_chans, num_classes
        self.head_dim, self.qkv_bias, self.max_depth = head_dim, qkv_bias, max_depth

    def canonical(self, arch: dict) -> dict:
        arch = self.validate(arch)
        d = arch["depth"]
        for dim in self.dims[3:]:  # per-block entries past the depth do not run: fix them to the largest
            arch[dim.name] = arch[dim.name][:d] + [dim.choices[-1]] * (self.max_depth - d)
        return arch

    def cardinality(self) -> int:
        per_block = 1
        for dim in self.dims[3:]:
            per_block *= len(dim.choices)
        n_res, n_embed = (len(self._by_name[k].choices) for k in ("resolution", "embed_dim"))
        return n_res * n_embed * sum(per_block ** d for d in self._by_name["depth"].choices)

    def _layers(self, arch: dict) -> list[tuple]:
        # MACs as the papers count them (supernet.complexity has fvcore count the same): linear
        # layers, the patch conv and attention's two matmuls; norms, GELU and adds are layers of no
        # MACs, kept for their memory traffic. A block's linear layers run at its bit width;
        # everything else stays float32.
        P, C, K = self.patch_size, self.in_chans, self.num_classes
        e, res = arch["embed_dim"], arch["resolution"]
        T = (res // P) ** 2
        N = T + 1
        layers = [("patch_embed", "conv", T * e * C * P * P, e * C * P * P + e, C * res * res + T * e, 32),
                  ("pos_embed", "embed", 0, N * e + e, 2 * N * e, 32)]
        for i in range(arch["depth"]):
            h, b = arch["num_heads"][i], arch["bits"][i]
            a, m = h * self.head_dim, mlp_hidden(e, arch["mlp_ratio"][i])
            qkv_params = e * 3 * a + (3 * a if self.qkv_bias else 0)
            p = f"blocks.{i}."
            layers += [
                (p + "norm1", "norm", 0, 2 * e, 2 * N * e, 32),
                (p + "attn.qkv", "linear", N * e * 3 * a, qkv_params, N * (e + 3 * a), b),
                (p + "attn.sdpa", "matmul", 2 * N * N * a, 0, 4 * N * a + h * N * N, 32),
                (p + "attn.proj", "linear", N * a * e, a * e + e, N * (a + e), b),
                (p + "add1", "add", 0, 0, 3 * N * e, 32),
                (p + "norm2", "norm", 0, 2 * e, 2 * N * e, 32),
                (p + "mlp.fc1", "linear", N * e * m, e * m + m, N * (e + m), b),
                (p + "mlp.act", "act", 0, 0, 2 * N * m, 32),
                (p + "mlp.fc2", "linear", N * m * e, m * e + e, N * (m + e), b),
                (p + "add2", "add", 0, 0, 3 * N * e, 32),
            ]
        layers += [("norm", "norm", 0, 2 * e, 2 * N * e, 32),
                   ("head", "linear", e * K, e * K + K, e + K, 32)]
        return layers


class PatchEmbed(nn.Module):
    """Image to patch tokens: ``(B, C, H, W) -> (B, H/P * W/P, E)`` through a strided conv."""

    def __init__(self, proj: nn.Conv2d):
        super().__init__()
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, norm1: nn.Module, attn: nn.Module, norm2: nn.Module, mlp: nn.Module,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = norm1, attn, norm2, mlp
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ElasticBlock(Block):
    def __init__(self, dim: int, num_heads: int, head_dim: int, hidden_dim: int, qkv_bias: bool, drop_path: float):
        super().__init__(ElasticLayerNorm(dim, eps=1e-6), ElasticAttention(dim, num_heads, head_dim, qkv_bias),
                         ElasticLayerNorm(dim, eps=1e-6), ElasticMlp(dim, hidden_dim), drop_path)

    def set_active(self, embed_dim: int, num_heads: int, hidden_dim: int) -> None:
        self.norm1.set_active(embed_dim)
        self.attn.set_active(embed_dim, num_heads)
        self.norm2.set_active(embed_dim)
        self.mlp.set_active(embed_dim, hidden_dim)

    def to_static(self) -> Block:
        # Drop-path is a training regulariser: the exported block is the inference function.
        return Block(self.norm1.to_static(), self.attn.to_static(), self.norm2.to_static(), self.mlp.to_static())


class VisionTransformer(nn.Module):
    """A static ViT for one arch: plain modules, fixed resolution, per-block heads and MLP widths."""

    def __init__(self, patch_embed: PatchEmbed, cls_token: torch.Tensor, pos_embed: torch.Tensor,
                 blocks: Sequence[Block], norm: nn.LayerNorm, head: nn.Linear, resolution: int):
        super().__init__()
        self.patch_embed = patch_embed
        self.cls_token = nn.Parameter(cls_token.detach().clone())
        self.pos_embed = nn.Parameter(pos_embed.detach().clone())
        self.blocks = nn.Sequential(*blocks)
        self.norm, self.head, self.resolution = norm, head, resolution

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"this subnet takes {self.resolution}x{self.resolution} images, got {tuple(x.shape)}")
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ElasticViT(Supernet):
    """The supernet. ``set_active(arch)`` picks a subnet; ``forward`` runs it; ``export`` copies it out."""

    def __init__(self, num_classes: int, *, resolution: Sequence[int], depth: Sequence[int],
                 embed_dim: Sequence[int], num_heads: Sequence[int], mlp_ratio: Sequence[float],
                 bits: Sequence[int] = DEFAULT_BITS, patch_size: int = 16, in_chans: int = 3,
                 head_dim: int | None = None, qkv_bias: bool = True, drop_path_rate: float = 0.0):
        super().__init__()
        max_embed, max_heads = max(embed_dim), max(num_heads)
        head_dim = head_dim or max_embed // max_heads
        bits = check_bits_choices(bits)
        self.config = dict(name="vit", num_classes=num_classes, resolution=list(resolution), depth=list(depth),
                           embed_dim=list(embed_dim), num_heads=list(num_heads),
                           mlp_ratio=[float(r) for r in mlp_ratio], bits=list(bits), patch_size=patch_size,
                           in_chans=in_chans, head_dim=head_dim, qkv_bias=qkv_bias, drop_path_rate=drop_path_rate)
        self.space = ViTSpace(resolution=resolution, depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                              mlp_ratio=mlp_ratio, bits=bits, patch_size=patch_size, in_chans=in_chans,
                              num_classes=num_classes, head_dim=head_dim, qkv_bias=qkv_bias)
        self.num_classes, self.patch_size, self.in_chans = num_classes, patch_size, in_chans
        self.grid = max(resolution) // patch_size
        max_depth = max(depth)

        self.patch_embed = PatchEmbed(ElasticConv2d(in_chans, max_embed, patch_size, stride=patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, max_embed))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid ** 2 + 1, max_embed))
        hidden = mlp_hidden(max_embed, max(mlp_ratio))
        drop_rates = [drop_path_rate * i / max(max_depth - 1, 1) for i in range(max_depth)]  # timm's linear rule
        self.blocks = nn.ModuleList(ElasticBlock(max_embed, max_heads, head_dim, hidden, qkv_bias, dp)
                                    for dp in drop_rates)
        for block in self.blocks:  # a block's four linear layers run at its bit width
            attach_quantizers(block, bits)
        self.norm = ElasticLayerNorm(max_embed, eps=1e-6)
        self.head = ElasticLinear(max_embed, num_classes)
        self._pos_cache = InferenceCache()
        self._init_weights()
        self.set_active(self.space.largest())

    def _init_weights(self) -> None:
        # timm's default ViT init; a no-op on the meta device (used to rebuild exported subnets).
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def set_active(self, arch: dict) -> None:
        """Validates ``arch`` (ArchError on a bad one) and makes ``forward`` run that subnet."""
        arch = self.space.validate(arch)
        e = arch["embed_dim"]
        self.patch_embed.proj.set_active(self.in_chans, e)
        for i in range(arch["depth"]):
            self.blocks[i].set_active(e, arch["num_heads"][i], mlp_hidden(e, arch["mlp_ratio"][i]))
            set_bits(self.blocks[i], arch["bits"][i])
        self.norm.set_active(e)
        self.head.set_active(e, self.num_classes)
        self.active_arch = arch

    def _pos_embed(self, resolution: int, embed_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Class token and position embedding of one resolution and width."""

        def compute() -> torch.Tensor:
            cls = self.cls_token[..., :embed_dim]
            pos = self.pos_embed[..., :embed_dim]
            grid = resolution // self.patch_size
            if grid != self.grid:  # resampled from the largest grid, bicubic and antialiased, as timm does
                pos = resample_abs_pos_embed(pos, [grid, grid], [self.grid, self.grid], num_prefix_tokens=1)
            return cls, pos

        return self._pos_cache.get((resolution, embed_dim), (self.cls_token, self.pos_embed), compute)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        arch = self.active_arch
        x = self.patch_embed(self.resize_input(x))
        cls, pos = self._pos_embed(arch["resolution"], x.shape[-1])
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1) + pos
        for i in range(arch["depth"]):  # (slicing a ModuleList would build a new one per forward)
            x = self.blocks[i](x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, 0])

    def _static_subnet(self) -> VisionTransformer:
        """The active arch as a static ``VisionTransformer`` (copied weights)."""
        arch = self.active_arch
        res = arch["resolution"]
        cls, pos = self._pos_embed(res, arch["embed_dim"])
        return VisionTransformer(PatchEmbed(self.patch_embed.proj.to_static()), cls, pos,
                                 [b.to_static() for b in self.blocks[: arch["depth"]]],
                                 self.norm.to_static(), self.head.to_static(), res)

    def load_timm_state_dict(self, state_dict: dict) -> None:
        """Loads a timm ``VisionTransformer`` state dict of the largest subnet's geometry (the
        quantizers, which timm has not, keep their scales)."""
        quant = {f"{name}.{key}" for name, m in self.named_modules() if isinstance(m, FakeQuantize)
                 for key in m.state_dict()}
        own = {k: v for k, v in self.state_dict().items() if k not in quant}
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise ValueError(f"not a timm ViT state dict of this supernet: missing keys {missing[:4]}, "
                             f"unexpected keys {unexpected[:4]}")
        for k, v in state_dict.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(f"pretrained weight {k!r} has shape {tuple(v.shape)}, the supernet's largest "
                                 f"subnet needs {tuple(own[k].shape)}: the model config does not match the "
                                 "pretrained model's geometry")
        self.load_state_dict(state_dict, strict=False)  # every key but the quantizers' was checked above


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that cannot be had (no local file and no hub) or do not fit."""


def timm_pretrained_state_dict(name: str, path: str | None, *, num_classes: int, img_size: int,
                               in_chans: int) -> dict:
    """A timm model's pretrained weights, from ``path`` or the hub, adapted as timm adapts them to
    ``num_classes`` (new head), ``img_size`` (resampled position embedding) and ``in_chans``."""
    import timm

    if not timm.is_model(name):
        raise PretrainedWeightsError(f"model.pretrained={name!r} is not a timm model; see timm.list_models('vit_*')")
    if path is not None and not os.path.isfile(path):
        raise PretrainedWeightsError(f"model.pretrained_path={path!r} does not exist")
    overlay = dict(file=os.path.abspath(path)) if path else None
    try:
        with contextlib.redirect_stderr(open(os.devnull, "w")):
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                                      num_classes=num_classes, img_size=img_size, in_chans=in_chans)
    except Exception as err:  # the hub raises many kinds: network, missing file, auth ...
        if path:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise PretrainedWeightsError(f"could not load {name!r} weights from {path!r}: "
                                         f"{type(err).__name__}: {reason}") from None
        raise PretrainedWeightsError(
            f"could not fetch pretrained weights for {name!r} from the hub ({type(err).__name__}); download them "
            "where there is network and pass model.pretrained_path=/path/to/weights.safetensors (or .pth)") from None
    return model.state_dict()


@register_supernet
def vit(num_classes: int, resolution: Sequence[int] = (224,), depth: Sequence[int] = (12,),
        embed_dim: Sequence[int] = (192,), num_heads: Sequence[int] = (3,), mlp_ratio: Sequence[float] = (4.0,),
        bits: Sequence[int] = DEFAULT_BITS, patch_size: int = 16, in_chans: int = 3, head_dim: int | None = None,
        qkv_bias: bool = True, drop_path_rate: float = 0.0, pretrained: str | None = None,
        pretrained_path: str | None = None) -> ElasticViT:
    """Elastic ViT. ``pretrained=<timm name>`` seeds the largest subnet with that model's weights
    (InstaTune), read from ``pretrained_path`` when given, else from the hub."""
    net = ElasticViT(num_classes, resolution=resolution, depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                     mlp_ratio=mlp_ratio, bits=bits, patch_size=patch_size, in_chans=in_chans, head_dim=head_dim,
                     qkv_bias=qkv_bias, drop_path_rate=drop_path_rate)
    if pretrained is None and pretrained_path is not None:
        raise PretrainedWeightsError("model.pretrained_path is set but model.pretrained (the timm model name) is not")
    if pretrained is not None:
        sd = timm_pretrained_state_dict(pretrained, pretrained_path, num_classes=num_classes,
                                        img_size=max(resolution), in_chans=in_chans)
        try:
            net.load_timm_state_dict(sd)
        except ValueError as err:
            raise PretrainedWeightsError(f"{pretrained!r}: {err}") from None
    return net
