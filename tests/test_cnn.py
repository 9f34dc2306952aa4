"""Once-for-All CNN supernets (MobileNetV3, ResNet): OFA's spaces and counts, subnets equal to their
static exports, MACs equal to fvcore's, channel sorting, BN recalibration, saved subnets."""
import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import model_config
from sklearn.datasets import load_digits

from supernet import ArchError, create_supernet, create_supernet_from_config, inference_cache, list_supernets
from supernet.bn import recalibrate_bn
from supernet.complexity import count_macs, count_params
from supernet.export import load_subnet, save_subnet
from supernet.models.mobilenetv3 import MobileNetV3Space
from supernet.models.resnet import ResNetSpace

CNN_CONFIGS = ["mobilenetv3", "mobilenetv3_w10", "mobilenetv3_w12", "resnet", "resnet50"]
OFA_RESOLUTIONS = list(range(128, 225, 4))


def cnn(config: str, **overrides):
    return create_supernet_from_config(model_config(config), **{"num_classes": 10, **overrides})


def head(net):
    return net.classifier if hasattr(net, "classifier") else net.fc


@torch.no_grad()
def randomised(net):
    """Random BN statistics and affine terms (fresh ones are the identity), logits of unit scale: so
    that equalities below compare real numbers."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    arch = net.space.largest()
    net.set_active(arch)
    net.eval()
    r = arch["resolution"]
    head(net).weight.div_(net(torch.randn(8, net.in_chans, r, r)).std())
    return net


def archs(space, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n - 2)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one thread runs them as fast, and does not stall (OpenMP spinning)
    when another process holds one of the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["mobilenetv3", "resnet"])
def digits_cnn(request):
    """The digits-sized CNN supernets of conf/model/{mobilenetv3,resnet}.yaml, eval mode."""
    return randomised(cnn(request.param))


def test_registry_builds_every_cnn_config_and_rebuilds_from_net_config():
    assert {"mobilenetv3", "resnet"} <= set(list_supernets())
    for config in CNN_CONFIGS:
        net = cnn(config)
        assert net.config["name"] == net.space.family == model_config(config)["name"]
    twin = create_supernet_from_config(net.config)  # net.config holds everything needed to rebuild
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_mobilenetv3_cardinality_is_ofas_count():
    per_block = 3 * 3  # kernel x expand choices
    ofa = (per_block ** 2 + per_block ** 3 + per_block ** 4) ** 5  # depth 2, 3 or 4 in each of 5 stages
    assert 2e19 < ofa < 2.2e19  # OFA's "> 10^19 subnets"
    for config in ("mobilenetv3_w10", "mobilenetv3_w12"):  # OFA's space: float blocks only
        assert cnn(config, bits=[32]).space.cardinality() == ofa * len(OFA_RESOLUTIONS)
    space = MobileNetV3Space(resolution=OFA_RESOLUTIONS, ks=[3, 5, 7], expand=[3, 4, 6], depth=[2, 3, 4],
                             bits=[4, 8, 32], widths=[16, 16, 24, 40, 80, 112, 160, 960, 1280],
                             strides=[2, 1, 2, 2, 2, 1, 2], in_chans=3, num_classes=1000)
    per_block *= 3  # a bit width per block
    assert space.cardinality() == (per_block ** 2 + per_block ** 3 + per_block ** 4) ** 5 * len(OFA_RESOLUTIONS)


def test_resnet_cardinality_is_ofas_count():
    # OFA's ofa_resnet50: stem inner and output width (3 x 3), the stem's residual conv on or off (2);
    # per stage a width (3) and 0-2 extra blocks over 2, 2, 4, 2, each block with its expand ratio (3).
    stages = 1
    for base in (2, 2, 4, 2):
        stages *= 3 * sum(3 ** (base + extra) for extra in (0, 1, 2))
    assert cnn("resnet50", bits=[32]).space.cardinality() == len(OFA_RESOLUTIONS) * 3 * 3 * 2 * stages


def tiny_spaces():
    mbv3 = MobileNetV3Space(resolution=[8], ks=[3, 5], expand=[3], depth=[1, 2], bits=[32], widths=[8] * 9,
                            strides=[1] * 7, in_chans=1, num_classes=2)
    resnet = ResNetSpace(resolution=[8], depth=[0, 1], expand=[0.25, 0.5], width=[1.0], bits=[32], stem_width=8,
                         stage_widths=[8, 8, 8, 8], base_depth=[1, 1, 1, 1], stem_stride=1, stem_pool=False,
                         stage_strides=[1, 1, 1, 1], in_chans=1, num_classes=2)
    return [mbv3, resnet]


@pytest.mark.parametrize("space", tiny_spaces(), ids=["mobilenetv3", "resnet"])
def test_cardinality_matches_brute_force_enumeration(space):
    bounds = space.gene_upper_bounds()
    distinct = {space.key(space.decode(g)) for g in itertools.product(*(range(b + 1) for b in bounds))}
    assert space.cardinality() == len(distinct) < np.prod(bounds + 1)


@pytest.mark.parametrize("config, patch, key", [
    ("mobilenetv3", {"ks": [4] * 20}, "ks[0]"),
    ("mobilenetv3", {"expand": [3, 4]}, "expand"),
    ("mobilenetv3", {"depth": [2, 3, 4, 5, 2]}, "depth[3]"),
    ("mobilenetv3", {"bits": [16] * 20}, "bits[0]"),
    ("resnet", {"bits": [32, 6] + [32] * 16}, "bits[1]"),
    ("resnet", {"width": [0.65, 0.7, 1.0, 1.0, 1.0, 1.0]}, "width[1]"),
    ("resnet", {"depth": [0, 1, 2, 3, 0]}, "depth[3]"),
    ("resnet", {"kernel": 3}, "kernel"),
])
def test_set_active_rejects_bad_archs_with_arch_error(config, patch, key):
    net = cnn(config)
    arch = net.space.largest()
    with pytest.raises(ArchError) as err:
        net.set_active({**arch, **patch})
    assert err.value.key == key
    assert net.active_arch == arch


def test_forward_and_backward_train_only_the_active_weights():
    for config in ("mobilenetv3", "resnet"):
        net = cnn(config).train()
        space = net.space
        for arch in archs(space, 4, seed=1):
            net.zero_grad()
            net.set_active(arch)
            out = net(torch.randn(2, 1, 16, 16))
            assert out.shape == (2, 10) and torch.isfinite(out).all()
            out.square().mean().backward()
            if config == "mobilenetv3":
                used = space.active_blocks(arch)
                for j, block in enumerate(net.blocks):
                    grad = block.conv_pw.conv.weight.grad
                    if j not in used:
                        assert grad is None or not grad.any()
                        continue
                    hidden = block.conv_pw.conv.active_out
                    assert grad[:hidden].abs().sum() > 0 and not grad[hidden:].any()
                    transforms = block.conv_dw.conv.kernel_transforms
                    assert (transforms["5to3"].grad is not None) == (arch["ks"][j] == 3)
            else:
                used = {j for _, _, j in space.active_blocks(arch)}
                unused = [b for j, b in enumerate(net.blocks) if j not in used]
                assert all(p.grad is None or not p.grad.any() for b in unused for p in b.parameters())
                width = net.fc.active_in
                assert net.fc.weight.grad[:, :width].abs().sum() > 0 and not net.fc.weight.grad[:, width:].any()
                assert (net.stem.residual.fn.conv.weight.grad is not None) == (arch["depth"][0] == 2)


def test_export_equals_supernet_for_sampled_archs(digits_cnn):
    net, space = digits_cnn, digits_cnn.space
    for arch in archs(space, 8):
        static = net.export(arch)
        x = torch.randn(3, 1, arch["resolution"], arch["resolution"])
        net.set_active(arch)
        with torch.no_grad():  # static(x) against the elastic layers (autograd on: no static cache)
            expected = static(x)
        torch.testing.assert_close(expected, net(x).detach(), atol=1e-5, rtol=0)
        assert not static.training and not any(hasattr(m, "set_active") for m in static.modules())
        assert count_params(static) == space.params(arch)
        assert len(static.blocks) == len(space.active_blocks(arch)) + (space.family == "mobilenetv3")
    small = space.smallest()
    net.set_active(small)
    net.export(space.largest())
    assert net.active_arch == small  # export leaves the active arch alone


def test_inference_runs_a_cached_static_subnet_that_follows_arch_weights_and_statistics(digits_cnn):
    net, space, x = digits_cnn, digits_cnn.space, torch.randn(4, 1, 16, 16)
    for arch in (space.smallest(), space.largest(), space.smallest()):
        net.set_active(arch)
        with torch.no_grad(), inference_cache():
            cached = net(x)
        torch.testing.assert_close(cached, net(x).detach(), atol=1e-5, rtol=0)
    arch = space.sample(3)
    net.set_active(arch)
    with torch.no_grad(), inference_cache():
        before = net(x)
        head(net).bias.add_(1.0)  # an in-place update, as an optimizer step makes
        torch.testing.assert_close(net(x), before + 1.0, atol=1e-5, rtol=0)
    recalibrate_bn(net, arch, [2 * torch.randn(16, 1, 16, 16) + 1], num_batches=1)  # new BN statistics
    with torch.no_grad(), inference_cache():
        after = net(x)
    assert not torch.allclose(after, before + 1.0, atol=1e-3)
    torch.testing.assert_close(after, net(x).detach(), atol=1e-5, rtol=0)


def test_supernet_resizes_other_input_sizes_to_the_arch_resolution(digits_cnn):
    net = digits_cnn
    arch = {**net.space.sample(2), "resolution": 12}
    x = torch.randn(2, 1, 16, 16)
    net.set_active(arch)
    static = net.export(arch)
    with pytest.raises(ValueError, match="takes 12x12 images"):
        static(x)
    resized = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(net(x), static(resized), atol=1e-5, rtol=0)


@pytest.mark.parametrize("config", ["mobilenetv3", "resnet"])
def test_analytic_macs_and_params_agree_with_fvcore(config):
    net = cnn(config).eval()
    space = net.space
    for arch in archs(space, 22, seed=3):
        static = net.export(arch)
        x = torch.randn(1, 1, arch["resolution"], arch["resolution"])
        assert space.macs(arch) == count_macs(static, x), arch  # convs and linear layers: the same integers
        assert space.params(arch) == count_params(static)
        costs = space.layer_costs(arch)
        assert sum(c["macs"] for c in costs) == space.macs(arch)
        assert {c["op"] for c in costs} <= {"conv", "dwconv", "linear", "norm", "act", "add", "pool"}


def test_mobilenetv3_large_is_a_subnet_of_the_space_with_its_expand_ratios():
    import timm

    # OFA's stage widths, strides, activations and squeeze-excitation placement are MobileNetV3-Large's;
    # with its expand ratios 2.3 and 2.5 added, timm's mobilenetv3_large_100 is one subnet.
    net = cnn("mobilenetv3_w10", num_classes=1000, expand=[2.3, 2.5, 3, 4, 6])
    arch = net.space.mobilenetv3_large(224)
    large = timm.create_model("mobilenetv3_large_100")
    assert count_params(net.export(arch)) + 1280 == count_params(large)  # timm's head conv has a bias
    # MACs as torchvision's metadata lists them (0.217 G): convs, SE convs and the classifier
    assert net.space.macs(arch) == count_macs(large, torch.randn(1, 3, 224, 224)) == 216_589_760


def test_mobilenetv3_large_in_ofas_space_rounds_its_narrow_expand_ratios_up():
    space = cnn("mobilenetv3_w10", num_classes=1000).space  # expand {3, 4, 6}: no 2.3 or 2.5
    arch = space.mobilenetv3_large(160)
    assert arch["resolution"] == 160 and arch["depth"] == [2, 3, 4, 2, 3]
    active = space.active_blocks(arch)
    # the paper's table, stage by stage: the third stage's 2.5, 2.3, 2.3 become 3
    assert [arch["ks"][j] for j in active] == [3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5]
    assert [arch["expand"][j] for j in active] == [4, 3, 3, 3, 3, 6, 3, 3, 3, 6, 6, 6, 6, 6]
    with pytest.raises(ArchError, match="ks"):
        cnn("mobilenetv3_w10", num_classes=1000, ks=[3, 7]).space.mobilenetv3_large()


def test_resnet50_space_holds_timms_resnet50d():
    import timm

    net = cnn("resnet50", num_classes=1000)
    space = net.space
    # 1, 2, 2, 1 extra blocks over 2, 2, 4, 2: ResNet50's 3, 4, 6, 3 bottlenecks; expand 0.25 and full
    # width: 64-256 ... 512-2048. OFA's deep stem and average-pool shortcuts are ResNet-D's, so this
    # subnet is timm's resnet50d layer for layer, but for OFA's residual add around the stem's middle conv.
    arch = {**space.largest(), "depth": [2, 1, 2, 2, 1], "expand": [0.25] * 18, "resolution": 128}
    static = net.export(arch)
    assert [(b.conv1.conv.out_channels, b.conv3.conv.out_channels) for b in static.blocks[::5]] == [
        (64, 256), (128, 512), (256, 1024), (512, 2048)]
    resnet50d = timm.create_model("resnet50d")
    assert space.params(arch) == count_params(static) == count_params(resnet50d)
    assert space.macs(arch) == count_macs(resnet50d, torch.randn(1, 3, 128, 128))  # adds are no MACs


@pytest.mark.parametrize("config", ["mobilenetv3", "resnet"])
def test_sort_channels_keeps_the_largest_subnet_and_puts_important_channels_first(config):
    net = randomised(cnn(config))
    space = net.space
    x = torch.randn(4, 1, 16, 16)
    smaller = {**space.largest(), "expand": space.smallest()["expand"]}

    def outputs():
        with torch.no_grad():
            return [(net.set_active(a), net(x))[1] for a in (space.largest(), smaller)]

    largest, small = outputs()
    net.sort_channels()
    largest_after, small_after = outputs()
    torch.testing.assert_close(largest_after, largest, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(small_after, small, atol=1e-3)  # the prefixes now hold other channels
    reader = [b.conv_pwl.conv for b in net.blocks] if config == "mobilenetv3" else [b.conv3.conv for b in net.blocks]
    for conv in reader:
        importance = conv.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:])

    # once expand is trained, a later sort keeps each expand ratio's channel set (sorting within bands)
    net.set_active(smaller)
    hidden = [b.conv_pw.conv.active_out if config == "mobilenetv3" else b.conv1.conv.active_out for b in net.blocks]
    with torch.no_grad():
        for conv in reader:  # scramble the order so that a full sort would move channels across bands
            conv.weight.mul_(torch.rand(conv.weight.shape[1])[None, :, None, None] * 2)

    def prefix_channels():  # each channel's column norm stands for the channel
        return [set(conv.weight.abs().sum(dim=(0, 2, 3))[:h].tolist()) for conv, h in zip(reader, hidden, strict=True)]

    kept = prefix_channels()
    net.sort_channels(trained=["resolution", "expand"])
    assert prefix_channels() == kept
    with pytest.raises(ValueError, match="unknown dimension 'kernel'"):
        net.sort_channels(trained=["kernel"])


def test_resnet_sort_channels_orders_stage_channels_for_the_width_phase():
    net = randomised(cnn("resnet"))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        before = net(x)
        net.sort_channels(trained=["expand"])
        torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)
    importance = net.fc.weight.abs().sum(dim=0) + sum(b.conv1.conv.weight.abs().sum(dim=(0, 2, 3))
                                                     for b in net.blocks[-3:])  # readers of the last stage
    assert torch.all(importance[:-1] >= importance[1:])


def digits_tensors():
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[:1400]], torch.tensor(bunch.target)[order[:1400]], x[order[1400:]], torch.tensor(
        bunch.target)[order[1400:]]


@torch.no_grad()
def accuracy(model, x, y):
    return (model(x).argmax(1) == y).float().mean().item()


def test_recalibration_raises_the_accuracy_of_a_briefly_trained_subnet():
    train_x, train_y, test_x, test_y = digits_tensors()
    net = create_supernet("resnet", num_classes=10, in_chans=1, resolution=[8], depth=[0, 1], expand=[0.25, 0.5],
                          width=[0.5, 1.0], stem_width=8, stage_widths=[16, 32, 48, 64], base_depth=[1, 1, 1, 1],
                          stem_stride=1, stem_pool=False, channel_divisor=1)
    space = net.space
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(60):  # the sandwich's two ends: both train, their BN statistics mix
        batch = torch.randint(0, len(train_y), (64,), generator=gen)
        optimizer.zero_grad()
        for arch in (space.largest(), space.smallest()):
            net.set_active(arch)
            F.cross_entropy(net(train_x[batch]), train_y[batch]).backward()
        optimizer.step()
    small = space.smallest()
    net.set_active(small)
    net.eval()
    shared = accuracy(net, test_x, test_y)
    images = recalibrate_bn(net, small, [train_x[i:i + 100] for i in range(0, 1400, 100)], num_batches=5)
    assert images == 500 and not net.training
    recalibrated = accuracy(net, test_x, test_y)
    assert recalibrated > shared + 0.3, (shared, recalibrated)
    assert accuracy(net.export(small), test_x, test_y) == recalibrated  # the export carries the statistics


def test_recalibration_writes_only_the_subnets_statistics_and_restores_the_net():
    net = randomised(cnn("mobilenetv3")).train()
    space = net.space
    arch = {**space.smallest(), "resolution": 16}
    buffers = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    batches = [torch.randn(6, 1, 16, 16) for _ in range(2)]
    assert recalibrate_bn(net, arch, [(b, torch.zeros(6)) for b in batches], num_batches=3) == 12
    assert net.training and net.head_drop.training and net.active_arch == space.validate(arch)
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # cumulative average of the two batch means, at the arch's resolution
    stem_mean = torch.stack([net.stem.conv(b).mean(dim=(0, 2, 3)) for b in batches]).mean(0).detach()
    torch.testing.assert_close(net.stem.bn.running_mean, stem_mean, atol=1e-5, rtol=1e-5)
    block = net.blocks[0]  # runs with the smallest expand ratio: a prefix of its hidden channels
    hidden, key = block.conv_pw.bn.active_features, "blocks.0.conv_pw.bn.running_mean"
    state = net.state_dict()
    assert hidden < block.conv_pw.bn.num_features
    assert not torch.equal(state[key][:hidden], buffers[key][:hidden])
    assert torch.equal(state[key][hidden:], buffers[key][hidden:])
    skipped = set(range(len(net.blocks))) - set(space.active_blocks(arch))
    assert all(torch.equal(state[k], buffers[k]) for k in buffers if k.startswith(tuple(
        f"blocks.{j}." for j in skipped)))
    vit = cnn("vit")
    assert recalibrate_bn(vit, vit.space.smallest(), [torch.randn(2, 1, 16, 16)], num_batches=1) == 0
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(net, arch, [], num_batches=1)
    with pytest.raises(ValueError, match="num_batches must be >= 1"):
        recalibrate_bn(net, arch, batches, num_batches=0)


def test_no_weight_decay_spares_the_kernel_transforms():
    net = cnn("mobilenetv3")
    names = net.no_weight_decay()
    assert len(names) == 2 * len(net.blocks) and all(".kernel_transforms." in n for n in names)
    assert cnn("resnet").no_weight_decay() == set()


@pytest.fixture(scope="module", params=["mobilenetv3", "resnet"])
def saved(request, tmp_path_factory):
    """One saved subnet per family (mixed kernels / odd feature-map sides), shared by the tests."""
    torch.manual_seed(0)
    net = randomised(cnn(request.param))
    space = net.space
    if request.param == "mobilenetv3":
        arch = {**space.sample(5), "depth": space.smallest()["depth"], "resolution": 12}
        arch["ks"] = [3, 5, 7, 3] * 5
    else:
        arch = {**space.sample(5), "depth": [2, 0, 1, 0, 0], "resolution": 12}  # 12 -> 6 -> 3 -> 2 px
    out = save_subnet(net, arch, tmp_path_factory.mktemp("subnets") / request.param)
    x = torch.randn(3, 1, 12, 12)
    net.set_active(arch)
    with torch.no_grad():
        expected = net(x)
    return net, arch, out, x, expected


def test_saved_subnet_reloads_and_runs_as_pt2_and_onnx(saved):
    net, arch, out, x, expected = saved
    module = load_subnet(out)  # rebuilt through export on the meta device
    assert module.arch == net.space.validate(arch) and type(module) is type(net.export(arch))
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=0)
    program = torch.export.load(str(out / "model.pt2")).module()
    torch.testing.assert_close(program(x), expected, atol=1e-5, rtol=0)
    # an 8-bit conv's output is requantized for integer kernels: exact through ReLU, within a
    # quantization step through hard-swish and residual sums (docs/quantization.md). What the file
    # computes, without onnxruntime's fusions into its integer kernels (uint8 pairs fuse, and their
    # rounding moves this random network's tiny logits by more: tests/test_quant_onnx.py checks those)
    quantized = any(b != 32 for b in net.space.validate(arch)["bits"])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-3 if quantized else 1e-5, rtol=0)


@pytest.mark.parametrize("saved", ["mobilenetv3"], indirect=True)
def test_mobilenetv3_feature_mix_exports_as_a_matrix_product(saved):
    """The head's 1x1 conv on the pooled map is a Gemm / MatMul in model.onnx (onnxruntime's conv
    kernel runs a 1x1 map ~10x slower), with the same weights: every other conv stays a Conv."""
    net, arch, out, _, _ = saved
    ops = [node.op_type for node in onnx.load(out / "model.onnx").graph.node]
    static = net.export(arch)
    convs = [name for name, m in static.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert ops.count("Conv") == len(convs) - 1 and "feature_mix.conv" in convs
    assert ops.count("Gemm") + ops.count("MatMul") == 2  # the feature mix and the classifier
