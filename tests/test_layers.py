"""Every elastic layer equals the static layer at full size and a static layer holding the sliced
weights at every smaller size."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Mlp as TimmMlp
from timm.models.vision_transformer import Attention as TimmAttention
from torch import nn

from supernet.layers import (
    Attention,
    ElasticAttention,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticLinear,
    ElasticMlp,
    ElasticQKV,
    Mlp,
)


def randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def test_elastic_linear_full_size_is_nn_linear():
    elastic = randomise(ElasticLinear(12, 7))
    static = nn.Linear(12, 7)
    static.load_state_dict(elastic.state_dict())
    x = torch.randn(4, 3, 12)
    torch.testing.assert_close(elastic(x), static(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_elastic_linear_every_size_is_the_sliced_static_layer(bias):
    elastic = randomise(ElasticLinear(6, 5, bias=bias))
    for i, o in itertools.product(range(1, 7), range(1, 6)):
        elastic.set_active(i, o)
        static = nn.Linear(i, o, bias=bias)
        with torch.no_grad():
            static.weight.copy_(elastic.weight[:o, :i])
            if bias:
                static.bias.copy_(elastic.bias[:o])
        x = torch.randn(3, i)
        torch.testing.assert_close(elastic(x), static(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(elastic.to_static()(x), static(x), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="out_features=6 is outside 1..5"):
        elastic.set_active(6, 6)


def test_elastic_qkv_keeps_the_same_heads_of_q_k_and_v():
    elastic = randomise(ElasticQKV(8, 6))  # attention width 6: rows q0..q5, k0..k5, v0..v5
    elastic.set_active(5, 4)
    x = torch.randn(2, 5)
    full = F.linear(F.pad(x, (0, 3)), elastic.weight, elastic.bias).view(2, 3, 6)
    torch.testing.assert_close(elastic(x).view(2, 3, 4), full[:, :, :4], atol=1e-6, rtol=0)


def test_elastic_layer_norm_equals_static_at_every_size():
    elastic = randomise(ElasticLayerNorm(10, eps=1e-6))
    for n in range(1, 11):
        elastic.set_active(n)
        static = nn.LayerNorm(n, eps=1e-6)
        with torch.no_grad():
            static.weight.copy_(elastic.weight[:n])
            static.bias.copy_(elastic.bias[:n])
        x = torch.randn(3, 4, n)
        torch.testing.assert_close(elastic(x), static(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(elastic.to_static()(x), static(x), atol=1e-6, rtol=0)


def test_elastic_conv2d_equals_static_at_every_size():
    elastic = randomise(ElasticConv2d(4, 6, 3, padding=1, stride=2))
    for i, o in [(4, 6), (2, 3), (1, 1), (4, 2)]:
        elastic.set_active(i, o)
        static = nn.Conv2d(i, o, 3, padding=1, stride=2)
        with torch.no_grad():
            static.weight.copy_(elastic.weight[:o, :i])
            static.bias.copy_(elastic.bias[:o])
        x = torch.randn(2, i, 9, 9)
        torch.testing.assert_close(elastic(x), static(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(elastic.to_static()(x), static(x), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="groups=2"):
        ElasticConv2d(4, 4, 3, groups=2)


def test_elastic_attention_full_size_is_timm_attention():
    elastic = randomise(ElasticAttention(24, num_heads=3, head_dim=8)).eval()
    timm_attn = TimmAttention(24, num_heads=3, qkv_bias=True).eval()
    timm_attn.load_state_dict(elastic.state_dict())
    x = torch.randn(2, 7, 24)
    torch.testing.assert_close(elastic(x), timm_attn(x), atol=1e-6, rtol=0)


def sliced_attention(elastic, e, h):
    """A static attention built by hand from the sliced weights: heads 0..h-1, channels 0..e-1."""
    hd, A = elastic.head_dim, elastic.max_heads * elastic.head_dim
    a = h * hd
    rows = torch.cat([torch.arange(g * A, g * A + a) for g in range(3)])
    qkv, proj = nn.Linear(e, 3 * a), nn.Linear(a, e)
    with torch.no_grad():
        qkv.weight.copy_(elastic.qkv.weight[rows, :e])
        qkv.bias.copy_(elastic.qkv.bias[rows])
        proj.weight.copy_(elastic.proj.weight[:e, :a])
        proj.bias.copy_(elastic.proj.bias[:e])
    return Attention(qkv, proj, h, hd)


def reference_attention(attn, x):
    """Attention written out with an explicit softmax, independent of the module's forward."""
    B, N, _ = x.shape
    h, hd = attn.num_heads, attn.head_dim
    q, k, v = attn.qkv(x).reshape(B, N, 3, h, hd).permute(2, 0, 3, 1, 4)
    w = (q @ k.transpose(-2, -1) / hd ** 0.5).softmax(-1)
    return attn.proj((w @ v).transpose(1, 2).reshape(B, N, h * hd))


@pytest.mark.parametrize("e, h", [(24, 3), (24, 1), (16, 2), (10, 3), (5, 1)])
def test_elastic_attention_every_size_is_the_sliced_static_attention(e, h):
    elastic = randomise(ElasticAttention(24, num_heads=3, head_dim=8))
    elastic.set_active(e, h)
    static = sliced_attention(elastic, e, h)
    x = torch.randn(2, 6, e)
    torch.testing.assert_close(elastic(x), static(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(static(x), reference_attention(static, x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(elastic.to_static()(x), static(x), atol=1e-6, rtol=0)


def test_elastic_mlp_full_size_is_timm_mlp_and_slices_hidden_units():
    elastic = randomise(ElasticMlp(8, 32))
    timm_mlp = TimmMlp(8, 32)
    timm_mlp.load_state_dict(elastic.state_dict())
    x = torch.randn(3, 8)
    torch.testing.assert_close(elastic(x), timm_mlp(x), atol=1e-6, rtol=0)
    elastic.set_active(6, 12)
    static = Mlp(nn.Linear(6, 12), nn.Linear(12, 6))
    with torch.no_grad():
        static.fc1.weight.copy_(elastic.fc1.weight[:12, :6])
        static.fc1.bias.copy_(elastic.fc1.bias[:12])
        static.fc2.weight.copy_(elastic.fc2.weight[:6, :12])
        static.fc2.bias.copy_(elastic.fc2.bias[:6])
    torch.testing.assert_close(elastic(x[:, :6]), static(x[:, :6]), atol=1e-6, rtol=0)
