import numpy as np
import pytest
import timm
import torch
from conftest import model_config

from supernet import create_supernet_from_config
from supernet.complexity import count_macs, count_params


def test_fvcore_with_registered_handles_matches_published_vit_base_macs():
    # timm lists vit_base_patch16_224 at 17.6 GMACs; fvcore alone misses attention (~0.7 GMACs).
    model = timm.create_model("vit_base_patch16_224")
    macs = count_macs(model, torch.randn(1, 3, 224, 224))
    assert abs(macs / 17.6e9 - 1) < 0.02


@pytest.mark.parametrize("config, n_archs", [("vit", 24), ("vit_tiny", 4)])
def test_analytic_macs_and_params_agree_with_fvcore(config, n_archs):
    net = create_supernet_from_config(dict(model_config(config), pretrained=None), num_classes=10).eval()
    space, rng = net.space, np.random.default_rng(0)
    for arch in [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n_archs - 2)]:
        static = net.export(arch)
        x = torch.randn(1, net.in_chans, arch["resolution"], arch["resolution"])
        assert abs(space.macs(arch) / count_macs(static, x) - 1) < 0.01, arch
        assert space.params(arch) == count_params(static)
