"""The CNN building blocks: each elastic layer equals the static layer at full size and a static layer
holding the sliced (or, for smaller kernels, transformed) weights at every smaller size."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from supernet import inference_cache
from supernet.layers import (
    ConvNormAct,
    ElasticBatchNorm2d,
    ElasticConvNormAct,
    ElasticDepthwiseConv2d,
    ElasticDwConvNormAct,
    ElasticSqueezeExcite,
    SqueezeExcite,
    order_within_bands,
    se_width,
    sort_channel_group,
)


def randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return module


def static_bn(bn, n):
    static = nn.BatchNorm2d(n, eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(static, name).copy_(getattr(bn, name)[:n])
    return static


@pytest.mark.parametrize("momentum", [0.1, None])
def test_elastic_batch_norm_is_the_static_norm_of_its_prefix_in_train_and_eval(momentum):
    elastic = randomise(ElasticBatchNorm2d(8, momentum=momentum))
    full = nn.BatchNorm2d(8, momentum=momentum)
    full.load_state_dict(elastic.state_dict())
    x = torch.randn(4, 8, 5, 5)
    for mode in (True, False):  # train: batch statistics and the running update; eval: running statistics
        elastic.train(mode), full.train(mode)
        torch.testing.assert_close(elastic(x), full(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(elastic.running_mean, full.running_mean, atol=1e-6, rtol=0)
    for n in (1, 3, 8):
        elastic.set_active(n)
        static, before = static_bn(elastic, n), elastic.running_mean.clone()
        for mode in (False, True):
            elastic.train(mode), static.train(mode)
            torch.testing.assert_close(elastic(x[:, :n]), static(x[:, :n]), atol=1e-6, rtol=0)
        torch.testing.assert_close(elastic.running_mean[:n], static.running_mean, atol=1e-6, rtol=0)
        assert torch.equal(elastic.running_mean[n:], before[n:])  # other channels' statistics untouched
        elastic.eval()
        torch.testing.assert_close(elastic.to_static().eval()(x[:, :n]), elastic(x[:, :n]), atol=1e-6, rtol=0)


def transformed_centre(weight, transforms, kernel_size):
    """The reference: crop the centre 5x5 of the 7x7 and multiply by the 25x25 matrix, then crop the
    centre 3x3 of that and multiply by the 9x9 matrix, written out with explicit matmuls."""
    w = weight
    for big, small in [(7, 5), (5, 3)]:
        if small < kernel_size:
            break
        s = (big - small) // 2
        centre = w[:, :, s:s + small, s:s + small].reshape(w.shape[0], small * small)
        w = (centre @ transforms[f"{big}to{small}"].T).reshape(w.shape[0], 1, small, small)
    return w


def test_depthwise_conv_full_size_is_nn_conv2d():
    elastic = randomise(ElasticDepthwiseConv2d(6, [3, 5, 7], stride=2))
    assert {k: tuple(p.shape) for k, p in elastic.kernel_transforms.items()} == {"5to3": (9, 9), "7to5": (25, 25)}
    static = nn.Conv2d(6, 6, 7, stride=2, padding=3, groups=6, bias=False)
    with torch.no_grad():
        static.weight.copy_(elastic.weight)
    x = torch.randn(2, 6, 11, 11)
    torch.testing.assert_close(elastic(x), static(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels, kernel_size", [(6, 5), (6, 3), (4, 3), (2, 7), (1, 5)])
def test_smaller_kernel_is_a_static_conv_with_the_transformed_centre(channels, kernel_size):
    elastic = randomise(ElasticDepthwiseConv2d(6, [3, 5, 7]))
    elastic.set_active(channels, kernel_size)
    expected = transformed_centre(elastic.weight[:channels], elastic.kernel_transforms, kernel_size)
    static = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)
    with torch.no_grad():
        static.weight.copy_(expected)
    x = torch.randn(2, channels, 9, 9)
    torch.testing.assert_close(elastic(x), static(x), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(elastic.to_static()(x), static(x), atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="kernel_size=4 is not one of \\[3, 5, 7\\]"):
        elastic.set_active(channels, 4)


def test_kernel_transforms_start_as_the_identity_and_learn():
    elastic = ElasticDepthwiseConv2d(3, [3, 5, 7])
    elastic.set_active(3, 3)
    torch.testing.assert_close(elastic.active_weight(), elastic.weight[:, :, 2:5, 2:5])  # plain centre crop
    elastic(torch.randn(2, 3, 8, 8)).square().sum().backward()
    assert elastic.kernel_transforms["5to3"].grad.abs().sum() > 0
    assert elastic.kernel_transforms["7to5"].grad.abs().sum() > 0
    assert elastic.weight.grad[:, :, 0].abs().sum() == 0  # outside the 5x5 centre: unused by a 3x3 kernel


def test_active_kernel_is_cached_with_autograd_off_and_refreshed_when_weights_change():
    elastic = randomise(ElasticDepthwiseConv2d(4, [3, 5, 7])).eval()
    elastic.set_active(4, 3)
    x = torch.randn(1, 4, 8, 8)
    with torch.inference_mode(), inference_cache():
        first = elastic.active_weight()
        assert elastic.active_weight() is first  # the cached tensor
        out = elastic(x)
    with torch.no_grad(), inference_cache():
        torch.testing.assert_close(elastic(x), out)
        elastic.kernel_transforms["5to3"].mul_(2.0)  # e.g. an optimizer step or load_state_dict
        torch.testing.assert_close(elastic.active_weight(), 2 * first)
        elastic.set_active(2, 3)
        torch.testing.assert_close(elastic.active_weight(), 2 * first[:2])
    elastic.set_active(4, 3)
    assert elastic(x).requires_grad  # with autograd on, never a cached (detached) kernel


def test_squeeze_excite_full_size_and_every_width_are_the_static_block():
    elastic = randomise(ElasticSqueezeExcite(16))
    assert elastic.conv_reduce.out_channels == se_width(16) == 8
    x = torch.randn(2, 16, 5, 5)
    s = F.hardsigmoid(elastic.conv_expand(F.relu(elastic.conv_reduce(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(elastic(x), x * s, atol=1e-5, rtol=0)
    for c in (12, 8, 3):
        elastic.set_active(c)
        r = se_width(c)
        static = SqueezeExcite(nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1))
        with torch.no_grad():
            static.conv_reduce.weight.copy_(elastic.conv_reduce.weight[:r, :c])
            static.conv_reduce.bias.copy_(elastic.conv_reduce.bias[:r])
            static.conv_expand.weight.copy_(elastic.conv_expand.weight[:c, :r])
            static.conv_expand.bias.copy_(elastic.conv_expand.bias[:c])
        torch.testing.assert_close(elastic(x[:, :c]), static(x[:, :c]), atol=1e-5, rtol=0)
        torch.testing.assert_close(elastic.to_static()(x[:, :c]), static(x[:, :c]), atol=1e-5, rtol=0)


def test_conv_norm_act_units_equal_their_static_copies():
    dense = randomise(ElasticConvNormAct(6, 10, 3, stride=2, act_layer=nn.Hardswish)).eval()
    dw = randomise(ElasticDwConvNormAct(10, [3, 5], act_layer=nn.ReLU)).eval()
    x = torch.randn(2, 6, 9, 9)
    for (i, o, k) in [(6, 10, 5), (4, 7, 3), (1, 2, 3)]:
        dense.set_active(i, o)
        dw.set_active(o, k)
        unit = nn.Sequential(dense, dw)
        static = nn.Sequential(dense.to_static(), dw.to_static()).eval()
        assert isinstance(static[0], ConvNormAct) and isinstance(static[0].bn, nn.BatchNorm2d)
        assert not any(hasattr(m, "set_active") for m in static.modules())
        with torch.no_grad():
            torch.testing.assert_close(static(x[:, :i]), unit(x[:, :i]), atol=1e-5, rtol=0)


def test_order_within_bands_sorts_only_inside_each_band():
    importance = torch.tensor([1.0, 5.0, 3.0, 9.0, 2.0, 8.0])
    assert order_within_bands(importance).tolist() == [3, 5, 1, 2, 4, 0]
    assert order_within_bands(importance, [2, 4]).tolist() == [1, 0, 3, 2, 5, 4]


def test_sorting_a_channel_group_keeps_the_function_and_puts_heavy_channels_first():
    first = randomise(ElasticConvNormAct(3, 8, 3, act_layer=nn.ReLU)).eval()
    second = randomise(ElasticConvNormAct(8, 4, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        before = second(first(x))
        sort_channel_group([first.conv, first.bn], [second.conv])
        torch.testing.assert_close(second(first(x)), before, atol=1e-5, rtol=0)
    importance = second.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])
