import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import ROOT, model_config
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer as TimmViT

from supernet import (
    ArchError,
    ModelConfigError,
    create_supernet,
    create_supernet_from_config,
    inference_cache,
    list_supernets,
)
from supernet.models.vit import PretrainedWeightsError


def resized(x, res):
    return F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)


def test_registry_lists_models_and_rejects_unknown_names_and_options():
    assert "vit" in list_supernets()
    with pytest.raises(ModelConfigError, match="unknown model 'vitt'; known models: .*vit"):
        create_supernet("vitt", num_classes=10)
    with pytest.raises(ModelConfigError, match="no option 'embed'.*embed_dim"):
        create_supernet("vit", num_classes=10, embed=[64])
    with pytest.raises(ModelConfigError, match="has no 'name'"):
        create_supernet_from_config({"depth": [1]}, num_classes=10)


def test_tiny_custom_timm_vit_state_dict_gives_same_logits(tiny_vit):
    timm_vit = TimmViT(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=24, depth=3, num_heads=3,
                       mlp_ratio=2.0).eval()
    tiny_vit.load_timm_state_dict(timm_vit.state_dict())
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(tiny_vit(x), timm_vit(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny_vit.export(tiny_vit.space.largest())(x), timm_vit(x), atol=1e-5, rtol=0)


def test_vit_tiny_patch16_224_state_dict_gives_same_logits():
    timm_vit = timm.create_model("vit_tiny_patch16_224").eval()
    with torch.no_grad():  # random init gives near-zero logits: widen the head so the check means something
        timm_vit.head.weight.normal_()
    net = create_supernet_from_config(model_config("vit_tiny"), num_classes=1000, pretrained=None).eval()
    net.load_timm_state_dict(timm_vit.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad(), inference_cache():
        expected = timm_vit(x)
        assert expected.std() > 0.1
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=0)  # the cached static subnet
    torch.testing.assert_close(net(x).detach(), expected, atol=1e-5, rtol=0)  # the elastic layers


def test_load_timm_state_dict_rejects_other_geometry(tiny_vit):
    other = TimmViT(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=24, depth=2, num_heads=3)
    with pytest.raises(ValueError, match="missing keys"):
        tiny_vit.load_timm_state_dict(other.state_dict())
    wider = TimmViT(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=32, depth=3, num_heads=4)
    with pytest.raises(ValueError, match="has shape"):
        tiny_vit.load_timm_state_dict(wider.state_dict())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_instatune_seeds_supernet_from_local_pretrained_file(tmp_path, suffix):
    timm_vit = timm.create_model("vit_tiny_patch16_224").eval()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(timm_vit.state_dict(), path)
    else:
        save_file(timm_vit.state_dict(), str(path))
    cfg = dict(model_config("vit_tiny"), pretrained="vit_tiny_patch16_224", pretrained_path=str(path))
    # A new task: 10 classes, so the head is new while every other weight comes from the file.
    net = create_supernet_from_config(cfg, num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_features(x), timm_vit.forward_features(x), atol=1e-5, rtol=0)
    assert net.head.weight.shape == (10, 192)


def test_instatune_without_file_or_hub_says_to_pass_pretrained_path():
    code = ("import yaml; from supernet import create_supernet_from_config\n"
            f"cfg = yaml.safe_load(open({str(ROOT / 'conf/model/vit_tiny.yaml')!r}))\n"
            "create_supernet_from_config(cfg, num_classes=10)\n")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "PretrainedWeightsError" in proc.stderr and "pretrained_path" in proc.stderr


def test_pretrained_errors_name_the_bad_value(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="'no_such_vit' is not a timm model"):
        create_supernet_from_config(dict(model_config("vit_tiny"), pretrained="no_such_vit"), num_classes=10)
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        create_supernet_from_config(dict(model_config("vit_tiny"), pretrained_path=str(tmp_path / "nope.pth")),
                                    num_classes=10)


def test_set_active_rejects_bad_archs_with_arch_error(digits_vit):
    arch = digits_vit.space.largest()
    with pytest.raises(ArchError, match="'embed_dim': got 50, allowed: \\[32, 48, 64\\]"):
        digits_vit.set_active({**arch, "embed_dim": 50})
    with pytest.raises(ArchError, match="'colour'"):
        digits_vit.set_active({**arch, "colour": 1})
    assert digits_vit.active_arch == arch  # a rejected arch leaves the active one in place


def test_forward_and_backward_for_min_max_and_random_archs(digits_vit):
    space = digits_vit.space
    digits_vit.train()
    for arch in [space.smallest(), space.largest(), space.sample(0), space.sample(1)]:
        digits_vit.zero_grad()
        digits_vit.set_active(arch)
        out = digits_vit(torch.randn(3, 1, 16, 16))
        assert out.shape == (3, 10) and torch.isfinite(out).all()
        out.square().mean().backward()
        e, d = arch["embed_dim"], arch["depth"]
        grad = digits_vit.blocks[0].attn.qkv.weight.grad
        assert grad[:, :e].abs().sum() > 0 and (grad[:, e:] == 0).all()  # only the active slice trains
        unused = digits_vit.blocks[d:]
        assert all(p.grad is None or (p.grad == 0).all() for b in unused for p in b.parameters())


def test_elastic_resolution_resamples_position_embedding_as_timm(digits_vit):
    arch = {**digits_vit.space.largest(), "resolution": 12}
    static = digits_vit.export(arch)
    expected = resample_abs_pos_embed(digits_vit.pos_embed.detach(), [3, 3], [4, 4], num_prefix_tokens=1)
    torch.testing.assert_close(static.pos_embed.detach(), expected, atol=0, rtol=0)
    assert static.pos_embed.shape == (1, 10, 64)
    with pytest.raises(ValueError, match="takes 12x12 images"):
        static(torch.randn(1, 1, 16, 16))
    # The supernet resizes any input to the arch's resolution; the exported model expects it resized.
    x = torch.randn(2, 1, 16, 16)
    digits_vit.set_active(arch)
    torch.testing.assert_close(digits_vit(x), static(resized(x, 12)), atol=1e-5, rtol=0)


def test_export_equals_supernet_for_sampled_archs(digits_vit, tiny_vit):
    rng = np.random.default_rng(0)
    for net in (digits_vit, tiny_vit):
        space = net.space
        for arch in [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(10)]:
            static = net.export(arch)
            x = torch.randn(3, net.in_chans, arch["resolution"], arch["resolution"])
            net.set_active(arch)
            elastic = net(x).detach()  # autograd on: the elastic layers run (no static cache)
            with torch.no_grad():
                torch.testing.assert_close(static(x), elastic, atol=1e-5, rtol=0)
            # a static model: no elastic layer is left, and its size is the arch's
            assert not any(hasattr(m, "set_active") for m in static.modules())
            assert sum(p.numel() for p in static.parameters()) == space.params(arch)
            assert len(static.blocks) == arch["depth"]


def test_export_leaves_the_active_arch_alone(digits_vit):
    small = digits_vit.space.smallest()
    digits_vit.set_active(small)
    digits_vit.export(digits_vit.space.largest())
    assert digits_vit.active_arch == small


def test_inference_runs_a_cached_static_subnet_that_follows_arch_and_weights(digits_vit):
    space, x = digits_vit.space, torch.randn(3, 1, 16, 16)
    small, large = space.smallest(), space.largest()
    for arch in (small, large, small):
        digits_vit.set_active(arch)
        with torch.no_grad(), inference_cache():
            cached = digits_vit(x)
            assert digits_vit._static_cache._value is not None  # the static subnet ran
        torch.testing.assert_close(cached, digits_vit(x).detach(), atol=1e-5, rtol=0)
    with torch.no_grad(), inference_cache():
        before = digits_vit(x)
        digits_vit.head.bias.add_(1.0)  # an in-place update, as an optimizer step makes
        torch.testing.assert_close(digits_vit(x), before + 1.0, atol=1e-5, rtol=0)
        digits_vit.double()  # a conversion replaces every weight's storage
        assert digits_vit(x.double()).dtype == torch.float64


def test_eval_forward_follows_writes_through_data_that_bump_no_version(digits_vit):
    x = torch.randn(3, 1, 16, 16)
    digits_vit.set_active(digits_vit.space.sample(1))
    with torch.no_grad():
        with inference_cache():
            cached = digits_vit(x)
        digits_vit.head.weight.data.mul_(2.0)  # no version bump
        digits_vit.head.bias.data.add_(1.0)
        doubled = digits_vit(x)
        assert not torch.allclose(doubled, cached, atol=1e-3)
        with inference_cache():  # a new scope: nothing cached before it is reused
            torch.testing.assert_close(digits_vit(x), doubled, atol=1e-5, rtol=0)
        vector = torch.nn.utils.parameters_to_vector(digits_vit.parameters())
        torch.nn.utils.vector_to_parameters(vector * 0.5, digits_vit.parameters())  # assigns p.data
        halved = digits_vit(x)
        assert not torch.allclose(halved, doubled, atol=1e-3)
        with inference_cache():
            torch.testing.assert_close(digits_vit(x), halved, atol=1e-5, rtol=0)
    torch.testing.assert_close(halved, digits_vit(x).detach(), atol=1e-5, rtol=0)  # the elastic path agrees
