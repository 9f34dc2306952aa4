"""Training at scale's options on CPU: bf16 / fp16 autocast, SGD with Nesterov momentum, channels-last,
and OFA's recipe as a config: the same losses as float32 within bf16's precision, no NaN, bit-exact resume."""
import numpy as np
import pytest
import torch
from conftest import ROOT, model_config
from omegaconf import OmegaConf
from test_train import train_cmd, train_in_process

from supernet import create_supernet_from_config
from supernet.checkpoint import load_checkpoint
from supernet.errors import ConfigError
from supernet.train import sandwich_step

CFG = OmegaConf.create({"label_smoothing": 0.1, "kd": {"ratio": 1.0, "temperature": 1.0}})


def step_with(net, archs, x, y, amp=None, scaler=None):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks in every call
    losses = sandwich_step(net, archs, x, y, CFG, amp, scaler)
    grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    return losses, grads


# A ResNet at random init in training mode is chaotic: rounding only its input to bf16 (relative
# 1.7e-3) moves its float32 gradient to cosine 0.40 (MobileNetV3: 0.99), so only its loss is compared.
# Its distillation term too: with quantize_skip the 8-bit blocks of the sampled subnets also round
# their residual stream, where bf16 flips grid points (kd 0.228 vs 0.158 measured; 0.150 vs 0.152
# with float skips), while the loss stays within 10%.
@pytest.mark.parametrize("family, bits, loss_rel, min_cosine", [
    ("vit", 8, 0.01, 0.99), ("vit", 4, 0.01, 0.99), ("mobilenetv3", 8, 0.01, 0.9), ("resnet", 32, 0.1, None)])
def test_bf16_sandwich_step_matches_float32_on_the_same_batch(family, bits, loss_rel, min_cosine):
    torch.manual_seed(0)
    net = create_supernet_from_config(model_config(family), num_classes=10).train()
    space = net.space
    rng = np.random.default_rng(0)
    archs = [space.largest(), {**space.smallest(), "bits": [bits] * len(space.smallest()["bits"])},
             *[space.sample(rng) for _ in range(2)]]  # kernel transforms, fake quantization, narrow widths
    x, y = torch.randn(8, net.in_chans, 16, 16), torch.randint(0, 10, (8,))
    with torch.no_grad():  # quantizer scales are initialised once, by a float pass
        for arch in archs:
            net.set_active(arch)
            net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    float_losses, float_grads = step_with(net, archs, x, y)
    net.load_state_dict(state)
    bf16_losses, bf16_grads = step_with(net, archs, x, y, amp=torch.bfloat16)
    assert all(np.isfinite(v) for v in bf16_losses.values()) and torch.isfinite(bf16_grads).all()
    assert bf16_losses["loss"] == pytest.approx(float_losses["loss"], rel=loss_rel)
    if min_cosine is not None:  # bf16 keeps 8 bits of mantissa: the gradient points the same way
        assert bf16_losses["kd"] == pytest.approx(float_losses["kd"], rel=0.1, abs=0.02)
        cosine = torch.nn.functional.cosine_similarity(bf16_grads, float_grads, dim=0)
        assert cosine > min_cosine, cosine


def test_channels_last_step_equals_the_contiguous_one():
    torch.manual_seed(0)
    net = create_supernet_from_config(model_config("mobilenetv3"), num_classes=10).train()
    archs = [net.space.largest(), net.space.smallest()]
    x, y = torch.randn(8, net.in_chans, 16, 16), torch.randint(0, 10, (8,))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    losses, grads = step_with(net, archs, x, y)
    net.load_state_dict(state)
    net = net.to(memory_format=torch.channels_last)
    cl_losses, cl_grads = step_with(net, archs, x.to(memory_format=torch.channels_last), y)
    assert cl_losses["loss"] == pytest.approx(losses["loss"], rel=1e-5)
    # the same sums in another order (NHWC kernels): float32 rounding, amplified through training-mode
    # batch norms, moves single entries, not the gradient
    cosine = torch.nn.functional.cosine_similarity(cl_grads, grads, dim=0)
    assert cosine > 0.999, cosine


def test_a_bf16_run_stopped_and_resumed_ends_with_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    assert train_in_process(tmp_path, "straight", None, "amp=bf16") == 0
    straight = load_checkpoint(tmp_path / "straight" / "supernet.pt", "ofa-nas/supernet")
    assert train_in_process(tmp_path, "stopped", 6, "amp=bf16") == 128 + 15  # SIGTERM in epoch 2
    assert train_in_process(tmp_path, "stopped", None, "amp=bf16") == 0
    resumed = load_checkpoint(tmp_path / "stopped" / "supernet.pt", "ofa-nas/supernet")
    for key, value in straight["state_dict"].items():
        assert torch.isfinite(value.float()).all(), key
        assert torch.equal(value, resumed["state_dict"][key]), key
    float_run = train_in_process(tmp_path, "float", None, "amp=off")
    assert float_run == 0
    floats = load_checkpoint(tmp_path / "float" / "supernet.pt", "ofa-nas/supernet")
    bf16_loss = [r["loss"] for r in straight["metrics"]["history"]]
    float_loss = [r["loss"] for r in floats["metrics"]["history"]]
    assert bf16_loss == pytest.approx(float_loss, rel=0.05)  # the same training, within bf16's rounding


def test_sgd_with_nesterov_and_an_fp16_grad_scaler_train_and_save_their_state(tmp_path):
    torch.set_num_threads(1)
    assert train_in_process(tmp_path, "sgd", None, "optimizer=sgd", "amp=fp16", "weight_decay=3e-5") == 0
    ckpt = load_checkpoint(tmp_path / "sgd" / "supernet.pt", "ofa-nas/supernet")
    groups = ckpt["train_state"]["optimizer"]["param_groups"]
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in groups)
    assert "momentum_buffer" in next(iter(ckpt["train_state"]["optimizer"]["state"].values()))
    assert ckpt["train_state"]["grad_scaler"]["scale"] > 0
    assert all(torch.isfinite(v.float()).all() for v in ckpt["state_dict"].values())
    assert all(np.isfinite(row["loss"]) for row in ckpt["metrics"]["history"])


@pytest.mark.parametrize("override, message", [
    ("optimizer=adam", "optimizer='adam'; allowed: adamw, sgd"),
    ("amp=fp8", "amp='fp8'; allowed: auto, bf16, fp16, off"),
    ("lr_scaling=sqrt", "lr_scaling='sqrt'; allowed: none, linear"),
    ("momentum=1.5", "momentum=1.5; allowed: a number >= 0 and < 1"),
    ("channels_last=yes", "channels_last='yes'; allowed: true or false"),
])
def test_bad_scale_options_are_refused_in_one_line(tmp_path, override, message):
    from hydra import compose, initialize_config_dir

    import supernet.train as train

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*train_cmd(tmp_path / "out")[3:], override])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        train.run(cfg)
    assert not (tmp_path / "out" / "r" / "supernet.pt").exists()


def test_ofa_recipe_composes_with_ofas_settings_and_only_known_keys():
    import yaml
    from hydra import compose, initialize_config_dir

    from supernet.train import check_options

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+recipe=ofa_mbv3_w10"])
    check_options(cfg)
    recipe = yaml.safe_load((ROOT / "conf" / "recipe" / "ofa_mbv3_w10.yaml").read_text())
    known = yaml.safe_load((ROOT / "conf" / "train.yaml").read_text())
    assert set(recipe) - {"defaults", "model"} <= set(known)  # a misspelt key would be silently added
    # OFA's train_ofa_net.py: opt sgd, momentum 0.9, nesterov, wd 3e-5, label smoothing 0.1, batch 64 per GPU
    assert (cfg.optimizer, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.label_smoothing, cfg.batch_size) == \
        ("sgd", 0.9, True, 3e-5, 0.1, 64)
    assert cfg.lr_scaling == "linear" and cfg.model.name == "mobilenetv3" and cfg.model.width_mult == 1.0
    # its tasks kernel, depth 1/2, expand 1/2: (epochs, base_lr, warmup_epochs)
    assert [(p.epochs, p.lr, p.get("warmup_epochs", 0)) for p in cfg.model.schedule[1:]] == \
        [(120, 3e-2, 5), (25, 2.5e-3, 0), (120, 7.5e-3, 5), (25, 2.5e-3, 0), (120, 7.5e-3, 5)]


def test_per_batch_resolution_gives_every_subnet_of_a_step_one_drawn_size(digits_vit):
    from supernet.sampling import UniformSampler
    from supernet.train import sandwich_archs

    space, rng = digits_vit.space, np.random.default_rng(0)
    unlocked = ("resolution", "depth")
    sampler = UniformSampler(space, unlocked)
    sizes = []
    for _ in range(300):
        archs = sandwich_archs(space, sampler, unlocked, 2, rng, "per_batch")
        assert len({a["resolution"] for a in archs}) == 1 and len(archs) == 4
        assert {**archs[0], "resolution": 16} == space.largest()  # the teacher: the largest at that size
        sizes.append(archs[0]["resolution"])
    counts = np.bincount(sizes)[[8, 12, 16]]
    assert counts.min() > 70, counts  # uniform over the 3 choices (100 each expected)
    per_subnet = sandwich_archs(space, sampler, unlocked, 2, rng)
    assert per_subnet[0] == space.largest() and per_subnet[1]["resolution"] == 8  # today's default


def test_a_per_batch_resolution_run_trains_and_resumes(tmp_path):
    torch.set_num_threads(1)
    assert train_in_process(tmp_path, "straight", None, "sandwich.resolution=per_batch") == 0
    assert train_in_process(tmp_path, "stopped", 6, "sandwich.resolution=per_batch") == 128 + 15
    assert train_in_process(tmp_path, "stopped", None, "sandwich.resolution=per_batch") == 0
    straight, resumed = (load_checkpoint(tmp_path / name / "supernet.pt", "ofa-nas/supernet")
                         for name in ("straight", "stopped"))
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
