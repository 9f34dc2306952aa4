"""Once-for-All interop, held against OFA's own code (the ``ofa`` package, a test dependency).

OFA's supernets are built with seeded random weights (no download): batch-norm statistics and
kernel-transform matrices away from their initial values, saved as OFA saves them, converted, and
then every subnet drawn must compute OFA's logits, export OFA's static subnet and count OFA's MACs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3, OFAResNets
from ofa.utils import count_net_flops
from ofa.utils.flops_counter import register_hooks

from supernet.checkpoint import CheckpointError, load_supernet
from supernet.complexity import count_macs
from supernet.convert import convert_ofa, load_ofa_file, main
from supernet.errors import ConfigError
from supernet.ofa_arch import from_ofa_arch, is_ofa_arch, ofa_model_config, parse_arch, to_ofa_arch
from supernet.space import ArchError

NETS = ["ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv3_d234_e346_k357_w1.2", "ofa_resnet50"]
RESOLUTIONS = [128, 132, 136]  # the smallest of the space: ResNet50 subnets cost up to 2.6 GMACs
TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


def build_ofa(net_id: str) -> torch.nn.Module:
    """OFA's supernet as ``ofa.model_zoo.ofa_net`` builds it, without its download."""
    if net_id == "ofa_resnet50":
        return OFAResNets(n_classes=1000, dropout_rate=0, depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
                          width_mult_list=[0.65, 0.8, 1.0])
    return OFAMobileNetV3(n_classes=1000, dropout_rate=0, width_mult=float(net_id[-3:]), ks_list=[3, 5, 7],
                          expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])


@torch.no_grad()
def randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial state: kernel transforms off the identity, BN statistics and affine off 0/1, and a
    classifier scaled so that logits are of order 1 (a 1e-4 tolerance then means something)."""
    torch.manual_seed(seed)
    for name, p in net.named_parameters():
        if name.endswith("_matrix"):
            p.add_(0.1 * torch.randn_like(p))
        elif name.startswith("classifier") and name.endswith("weight"):
            p.mul_(20.0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)
            m.num_batches_tracked.fill_(1000)
    return net.eval()


def set_ofa(ofa, ofa_arch: dict) -> None:
    keys = ("ks", "e", "d") if isinstance(ofa, OFAMobileNetV3) else ("d", "e", "w")
    ofa.set_active_subnet(**{k: ofa_arch[k] for k in keys})


def forward_counting_macs(static: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``static(x)`` and OFA's MAC count of it (its counter's conv and linear hooks, at batch 1),
    summed as integers: its ``profile`` sums in float32, which rounds totals past 2^24 a little."""
    hooked = []

    def hook(m, inputs, output):
        register_hooks[type(m)](m, inputs, output)
        hooked.append(int(m.total_ops.item()))

    handles = [m.register_forward_hook(hook) for m in static.modules() if register_hooks.get(type(m)) is not None]
    try:
        out = static(x)
    finally:
        for h in handles:
            h.remove()
    return out, sum(hooked)


@pytest.fixture(scope="module", params=NETS)
def pair(request, tmp_path_factory):
    """(net id, OFA's supernet, ours converted from OFA's file on disk through the command line)."""
    net_id = request.param
    ofa = randomised(build_ofa(net_id), seed=NETS.index(net_id))
    folder = tmp_path_factory.mktemp(net_id)
    torch.save({"state_dict": ofa.state_dict(), "epoch": 180}, folder / "ofa.pth.tar")  # as OFA's run manager
    out = main(["ofa", net_id, str(folder / "ofa.pth.tar"), "--out", str(folder / "supernet.pt"),
                "--data-root", str(folder)])
    return net_id, ofa, load_supernet(out)


def drawn_archs(space, seed: int) -> list[dict]:
    """The largest and smallest, then random: 21 archs, 7 at each of the 3 resolutions."""
    rng = np.random.default_rng(seed)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(19)]
    return [{**a, "resolution": RESOLUTIONS[i % 3]} for i, a in enumerate(archs)]


@torch.no_grad()
def test_converted_supernet_equals_ofa_logits_static_subnets_and_macs(pair):
    net_id, ofa, net = pair
    space, diffs, n_checked = net.space, [], 0
    for i, arch in enumerate(drawn_archs(space, seed=len(net_id))):
        ofa_arch = to_ofa_arch(space, arch)
        assert from_ofa_arch(space, ofa_arch) == space.validate(arch)
        res = arch["resolution"]
        x = torch.randn(1, 3, res, res)
        set_ofa(ofa, ofa_arch)
        net.set_active(arch)
        theirs = ofa(x)  # OFA's elastic forward
        # ours in eval: the exported static subnet (net.export(arch)), which tests/test_cnn.py holds
        # equal to the elastic path; that path itself is checked here on every third arch
        diffs.append((net(x) - theirs).abs().max().item())
        if i % 3 == 0:
            diffs.append((net.forward_head(net.forward_features(x)) - theirs).abs().max().item())
        # the exported static subnet equals OFA's static subnet: logits, parameters, MACs
        static, ofa_static = net.export(arch), ofa.get_active_subnet(preserve_weight=True).eval()
        ofa_out, ofa_macs = forward_counting_macs(ofa_static, x)
        diffs.append((net(x) - ofa_out).abs().max().item())
        assert sum(p.numel() for p in static.parameters()) == sum(p.numel() for p in ofa_static.parameters())
        assert space.params(arch) == sum(p.numel() for p in static.parameters())
        assert space.macs(arch) == ofa_macs, arch
        assert theirs.abs().max() > 0.5  # logits of order 1, not a vanishing signal
        n_checked += 1
    assert n_checked >= 20 and max(diffs) <= TOL, max(diffs)


@pytest.mark.parametrize("net_id", NETS)
def test_macs_equal_ofas_count_net_flops(net_id):
    # OFA's count_net_flops itself, at the extremes and two resolutions (it sums in float32: equal to
    # its precision; the test above holds the per-layer integers exact on every arch it draws)
    ofa = build_ofa(net_id).eval()
    space = create_supernet_from_id(net_id).space
    for arch in [{**space.smallest(), "resolution": 128}, {**space.largest(), "resolution": 160}]:
        set_ofa(ofa, to_ofa_arch(space, arch))
        flops = count_net_flops(ofa.get_active_subnet(), (1, 3, arch["resolution"], arch["resolution"]))
        assert space.macs(arch) == pytest.approx(flops, rel=1e-6, abs=0)


def create_supernet_from_id(net_id: str):
    from supernet import create_supernet_from_config

    with torch.device("meta"):  # the space only: no weights needed
        return create_supernet_from_config(ofa_model_config(net_id))


def test_space_macs_are_ofas_counts_at_224():
    # ofa.utils.count_net_flops of the largest and smallest subnets at 224 px gives 566.17M / 121.28M
    # (w1.0), 843.10M / 193.08M (w1.2) and 7,491.64M / 962.19M (ResNet50), in millions
    figures = {}
    for net_id in NETS:
        space = create_supernet_from_id(net_id).space
        figures[net_id] = tuple(round(space.macs({**arch, "resolution": 224}) / 1e6, 2)
                                for arch in (space.largest(), space.smallest()))
    assert figures == {"ofa_mbv3_d234_e346_k357_w1.0": (566.17, 121.28),
                       "ofa_mbv3_d234_e346_k357_w1.2": (843.10, 193.08), "ofa_resnet50": (7491.64, 962.19)}


def test_ofa_arch_dicts_convert_both_ways():
    space = create_supernet_from_id("ofa_mbv3_d234_e346_k357_w1.0").space
    ofa = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 6] * 5, "d": [2, 3, 4, 2, 3], "r": [176]}
    ours = from_ofa_arch(space, ofa)
    assert ours["resolution"] == 176 and ours["depth"] == [2, 3, 4, 2, 3] and ours["bits"] == [32] * 20
    back = to_ofa_arch(space, ours)
    assert {k: back[k] for k in ("ks", "e", "d", "r")} == ofa and back["image_size"] == 176
    assert parse_arch(space, ofa) == ours == parse_arch(space, ours)
    assert from_ofa_arch(space, {"ks": 7, "e": 6, "d": 4}) == {**space.largest(), "resolution": 224}
    assert from_ofa_arch(space, {**ofa, "r": None, "image_size": 160})["resolution"] == 160
    assert is_ofa_arch(ofa) and not is_ofa_arch(ours)

    resnet = create_supernet_from_id("ofa_resnet50").space
    ofa = {"d": [2, 0, 1, 2, 0], "e": [0.35, 0.2] * 9, "w": [0, 1, 2, 2, 1, 0], "image_size": 192}
    ours = from_ofa_arch(resnet, ofa)
    assert ours["width"] == [0.65, 0.8, 1.0, 1.0, 0.8, 0.65] and ours["resolution"] == 192
    assert {k: v for k, v in to_ofa_arch(resnet, ours).items() if k != "r"} == ofa


@pytest.mark.parametrize("arch, match", [
    ({"ks": [3] * 19, "e": 6, "d": 4}, r"'ks'.*a list of 20"),
    ({"ks": 9, "e": 6, "d": 4}, r"'ks\[0\]': got 9"),
    ({"ks": 7, "e": 6, "d": 4, "r": 100}, r"'resolution': got 100"),
    ({"e": 6, "d": 4}, r"'ks': got '<missing>'"),
])
def test_bad_ofa_archs_name_the_value_and_what_is_allowed(arch, match):
    space = create_supernet_from_id("ofa_mbv3_d234_e346_k357_w1.0").space
    with pytest.raises(ArchError, match=match):
        from_ofa_arch(space, arch)


def test_bad_resnet_width_index_and_quantized_archs_are_refused():
    resnet = create_supernet_from_id("ofa_resnet50").space
    with pytest.raises(ArchError, match=r"'w': got 3, allowed: indices 0..2"):
        from_ofa_arch(resnet, {"d": 2, "e": 0.35, "w": 3})
    from supernet import create_supernet

    with torch.device("meta"):
        space = create_supernet("mobilenetv3", num_classes=10).space  # bits 4, 8, 32
    with pytest.raises(ArchError, match=r"'bits': got 4"):
        to_ofa_arch(space, {**space.largest(), "bits": [4] * 20})


def test_bad_checkpoints_end_in_one_line_naming_the_problem(tmp_path, capsys):
    ofa = build_ofa("ofa_mbv3_d234_e346_k357_w1.0")
    state = ofa.state_dict()
    with pytest.raises(ConfigError, match=r"unknown OFA net 'ofa_mbv3_w1.0'; known: ofa_mbv3_d234"):
        convert_ofa("ofa_mbv3_w1.0", state)
    with pytest.raises(CheckpointError, match=r"lacks 1 of its .* keys, e.g. 'classifier.linear.weight'"):
        convert_ofa("ofa_mbv3_d234_e346_k357_w1.0", {k: v for k, v in state.items() if k != "classifier.linear.weight"})
    with pytest.raises(CheckpointError, match=r"key 'first_conv.conv.weight' has shape \[24, 3, 3, 3\], expected "
                                              r"\[16, 3, 3, 3\]"):
        convert_ofa("ofa_mbv3_d234_e346_k357_w1.0", build_ofa("ofa_mbv3_d234_e346_k357_w1.2").state_dict())
    with pytest.raises(CheckpointError, match=r"unexpected key 'input_stem.0.conv.conv.weight'"):
        convert_ofa("ofa_mbv3_d234_e346_k357_w1.0", build_ofa("ofa_resnet50").state_dict())
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_ofa_file(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_ofa_file(tmp_path / "missing.pth")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    torch.save({"state_dict": state}, tmp_path / "ofa.pth")
    with pytest.raises(CheckpointError, match="holds no OFA state dict"):
        load_ofa_file(tmp_path / "empty.pth")
    with pytest.raises(SystemExit, match=r"^error: unknown OFA net 'resnet50'"):
        main(["ofa", "resnet50", str(tmp_path / "ofa.pth"), "--out", str(tmp_path / "x.pt")])
    assert not (tmp_path / "x.pt").exists()


def test_older_ofa_key_spellings_load_as_ofa_loads_them():
    # released files may name blocks ``mobile_inverted_conv`` and keep one bn/conv/linear level less,
    # come from DataParallel (``module.``) and lack ``num_batches_tracked``: OFA's load_state_dict takes them
    ofa = randomised(build_ofa("ofa_mbv3_d234_e346_k357_w1.0"), seed=5)
    old = {}
    for key, value in ofa.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        key = key.replace(".conv.inverted_bottleneck.", ".mobile_inverted_conv.inverted_bottleneck.")
        old["module." + key.replace("bn.bn.", "bn.").replace("conv.conv.weight", "conv.weight")] = value
    net = convert_ofa("ofa_mbv3_d234_e346_k357_w1.0", old)
    reference = convert_ofa("ofa_mbv3_d234_e346_k357_w1.0", ofa.state_dict())
    for key, value in reference.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(net.state_dict()[key], value), key


def test_count_macs_gives_the_papers_figures_for_timm_models():
    # torchvision's metadata lists 0.217, 4.089 and 17.564 GFLOPS (MACs) for the same networks
    import timm

    x = torch.randn(1, 3, 224, 224)
    figures = {name: round(count_macs(timm.create_model(name), x) / 1e6, 1)
               for name in ("mobilenetv3_large_100", "resnet50", "vit_base_patch16_224")}
    assert figures == {"mobilenetv3_large_100": 216.6, "resnet50": 4089.2, "vit_base_patch16_224": 17563.8}
