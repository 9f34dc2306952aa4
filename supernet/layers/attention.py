"""Multi-head self-attention and MLP, static and elastic.

The static classes are built from their linear layers, so the elastic subclasses run the very same
``forward`` with elastic linears inside: at full size they are the static layer, by construction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import ElasticLinear, ElasticQKV, _check_size


class Attention(nn.Module):
    """Self-attention with a fixed ``head_dim``: ``qkv: dim -> 3*heads*head_dim``, ``proj`` back.

    Parameter names follow timm (``qkv``, ``proj``) so timm ViT weights load unchanged. Unlike
    timm the attention width ``heads * head_dim`` need not equal ``dim``: a subnet may keep fewer
    heads than the embedding width would give.
    """

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int, head_dim: int):
        super().__init__()
        self.qkv, self.proj = qkv, proj
        self.num_heads, self.head_dim = num_heads, head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))


class ElasticAttention(Attention):
    """Attention with elastic embedding width and number of heads (the first heads are kept)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, qkv_bias: bool = True):
        attn_dim = num_heads * head_dim
        super().__init__(ElasticQKV(dim, attn_dim, bias=qkv_bias), ElasticLinear(attn_dim, dim), num_heads, head_dim)
        self.max_heads = num_heads

    def set_active(self, embed_dim: int, num_heads: int) -> None:
        self.num_heads = _check_size("num_heads", num_heads, self.max_heads)
        self.qkv.set_active(embed_dim, num_heads * self.head_dim)
        self.proj.set_active(num_heads * self.head_dim, embed_dim)

    def to_static(self) -> Attention:
        return Attention(self.qkv.to_static(), self.proj.to_static(), self.num_heads, self.head_dim)


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` with timm's parameter names."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear):
        super().__init__()
        self.fc1, self.act, self.fc2 = fc1, nn.GELU(), fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ElasticMlp(Mlp):
    """MLP with elastic input/output width and hidden width."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__(ElasticLinear(dim, hidden_dim), ElasticLinear(hidden_dim, dim))

    def set_active(self, embed_dim: int, hidden_dim: int) -> None:
        self.fc1.set_active(embed_dim, hidden_dim)
        self.fc2.set_active(hidden_dim, embed_dim)

    def to_static(self) -> Mlp:
        return Mlp(self.fc1.to_static(), self.fc2.to_static())
