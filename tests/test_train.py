import csv
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, model_config, run_training
from scipy.stats import chisquare

from supernet import create_supernet_from_config
from supernet.checkpoint import CheckpointError, load_checkpoint, load_supernet, save_checkpoint
from supernet.errors import ConfigError
from supernet.models import with_option_defaults
from supernet.sampling import ComplexitySampler, UniformSampler, create_sampler
from supernet.schedule import Schedule
from supernet.train import sandwich_archs

PHASES = [{"name": "largest", "epochs": 2, "lr": 1e-3, "unlock": ["resolution"]},
          {"name": "depth", "epochs": 1, "lr": 5e-4, "unlock": ["depth"]},
          {"name": "width", "epochs": 2, "lr": 5e-4, "unlock": ["num_heads", "mlp_ratio", "embed_dim"]}]
# Four short phases for the command-line tests (hydra override syntax).
TINY_SCHEDULE = ("model.schedule=[{name:largest,epochs:1,lr:0.002,unlock:[resolution]},"
                 "{name:depth,epochs:1,lr:0.001,unlock:[depth]},"
                 "{name:width,epochs:2,lr:0.001,unlock:[num_heads,mlp_ratio,embed_dim]},"
                 "{name:bits,epochs:1,lr:0.001,unlock:[bits]}]")


def test_each_phase_samples_only_the_dimensions_it_has_unlocked(digits_vit):
    space = digits_vit.space
    schedule = Schedule(PHASES, steps_per_epoch=10, dims=space.keys)
    assert schedule.total_epochs == 5
    assert [schedule.phase_index(e) for e in range(5)] == [0, 0, 1, 2, 2]
    largest = space.largest()
    rng = np.random.default_rng(0)
    seen = [set(), set(), set()]
    for phase in range(3):
        unlocked = schedule.unlocked(phase)
        sampler = create_sampler("complexity", space, unlocked, pool_size=300)
        for _ in range(60):
            for arch in sandwich_archs(space, sampler, unlocked, 2, rng):
                changed = {k for k in arch if arch[k] != largest[k]}
                assert changed <= set(unlocked), (phase, changed)
                seen[phase] |= changed
    assert seen == [{"resolution"}, {"resolution", "depth"},
                    {"resolution", "depth", "num_heads", "mlp_ratio", "embed_dim"}]
    # a phase that unlocks nothing trains the full network alone
    assert sandwich_archs(space, None, (), 2, rng) == [largest]


@pytest.mark.parametrize("config", sorted(p.stem for p in (ROOT / "conf/model").glob("*.yaml")))
def test_bits_are_unlocked_by_the_last_phase_only(config):
    # Quantization-aware training comes last: every earlier phase trains float subnets only.
    unlocks = [p.get("unlock") or [] for p in model_config(config)["schedule"]]
    assert "bits" in unlocks[-1] and not any("bits" in u for u in unlocks[:-1])


def test_only_the_bits_phase_samples_quantized_subnets(digits_vit):
    space = digits_vit.space
    schedule = Schedule(model_config("vit")["schedule"], steps_per_epoch=10, dims=space.keys)
    rng = np.random.default_rng(0)
    for phase in range(len(schedule.phases)):
        unlocked = schedule.unlocked(phase)
        sampler = create_sampler("complexity", space, unlocked, pool_size=300)
        drawn = [a for _ in range(30) for a in sandwich_archs(space, sampler, unlocked, 2, rng)]
        widths = {b for a in drawn for b in a["bits"]}
        assert widths == ({4, 8, 32} if phase == len(schedule.phases) - 1 else {32}), phase
        assert drawn[0] == space.largest()  # the float teacher of in-place distillation


def test_learning_rate_warms_up_then_decays_to_the_floor_in_each_phase(digits_vit):
    phases = [dict(PHASES[0], warmup_epochs=1), *PHASES[1:]]
    s = Schedule(phases, steps_per_epoch=10, dims=digits_vit.space.keys, min_lr_ratio=0.1)
    assert s.lr(0) == pytest.approx(1e-4) and s.lr(9) == pytest.approx(1e-3)
    assert s.lr(10) == pytest.approx(1e-3) and 1e-4 < s.lr(19) < 1.3e-4  # cosine towards the 0.1 floor
    assert s.lr(20) == pytest.approx(5e-4)  # the depth phase restarts at its own rate
    assert 5e-5 < s.lr(49) < 5.5e-5
    decay = [s.lr(i) for i in range(30, 50)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))


def test_schedule_rejects_bad_phases(digits_vit):
    with pytest.raises(ConfigError, match="unlocks 'kernel'.*not a dimension"):
        Schedule([{"name": "k", "epochs": 1, "lr": 1e-3, "unlock": ["kernel"]}], 10, digits_vit.space.keys)
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        Schedule([{"name": "k", "epoch": 1, "lr": 1e-3}], 10, digits_vit.space.keys)


@pytest.mark.parametrize("spacing", ["log", "linear"])
def test_complexity_sampling_matches_its_target_histogram_and_uniform_does_not(digits_vit, spacing):
    space = digits_vit.space
    complexity = ComplexitySampler(space, num_buckets=8, spacing=spacing, seed=0)
    ratios = complexity.edges[1:] / complexity.edges[:-1]
    widths = np.diff(complexity.edges)
    assert np.allclose(ratios, ratios[0]) if spacing == "log" else np.allclose(widths, widths[0])
    uniform = UniformSampler(space)
    rng = np.random.default_rng(0)
    expected = complexity.probs * 2000
    hist_c = np.bincount(complexity.bucket_of([space.macs(complexity.sample(rng)) for _ in range(2000)]),
                         minlength=8)
    hist_u = np.bincount(complexity.bucket_of([space.macs(uniform.sample(rng)) for _ in range(2000)]), minlength=8)
    assert chisquare(hist_c, expected).pvalue > 0.01
    assert chisquare(hist_u, expected).pvalue < 1e-6
    # a skewed target is followed too
    weights = [8, 4, 2, 1, 1, 1, 1, 1]
    skewed = ComplexitySampler(space, num_buckets=8, weights=weights, spacing=spacing, seed=0)
    hist_s = np.bincount(skewed.bucket_of([space.macs(skewed.sample(rng)) for _ in range(2000)]), minlength=8)
    assert chisquare(hist_s, skewed.probs * 2000).pvalue > 0.01


def test_complexity_sampling_is_uniform_within_a_bucket(digits_vit):
    # Inside a bucket every arch of the space is equally likely: the (resolution, embed) mix of the
    # draws follows that of uniform archs in the same bucket. Drawing genes independently from their
    # bucket frequencies drew resolution 16 with embed 32 half as often as this.
    space = digits_vit.space
    sampler = ComplexitySampler(space, num_buckets=8, seed=0)
    rng = np.random.default_rng(2)
    dims = {d.name: d.choices for d in space.dims}
    combos = [(r, e) for r in dims["resolution"] for e in dims["embed_dim"]]

    def mix(archs):
        buckets = sampler.bucket_of([space.macs(a) for a in archs])
        counts = np.zeros((8, len(combos)))
        for a, b in zip(archs, buckets, strict=True):
            counts[b, combos.index((a["resolution"], a["embed_dim"]))] += 1
        return counts

    reference = mix([space.sample(rng) for _ in range(20000)])
    drawn = mix([sampler.sample(rng) for _ in range(2000)])
    expected = (drawn.sum(1, keepdims=True) * reference / reference.sum(1, keepdims=True).clip(min=1)).sum(0)
    observed = drawn.sum(0)
    assert chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 0.01
    share = observed[combos.index((16, 32))] / observed.sum()
    assert share > 0.055, f"resolution 16 / embed 32 drawn {share:.1%} of the time"


def test_complexity_sampling_reaches_the_buckets_uniform_draws_seldom_reach():
    # In OFA's MobileNetV3 space the first and last MACs buckets hold under 0.1% of the archs: they
    # are drawn from per-bucket gene frequencies, and still get their share of the draws.
    cfg = {k: v for k, v in model_config("mobilenetv3").items() if k != "schedule"}
    space = create_supernet_from_config(cfg, num_classes=10).space
    sampler = ComplexitySampler(space, num_buckets=8, pool_size=2000, seed=0)
    rng = np.random.default_rng(0)
    uniform_share = np.bincount(sampler.bucket_of([space.macs(space.sample(rng)) for _ in range(2000)]),
                                minlength=8) / 2000
    assert uniform_share[0] < 0.01 and uniform_share[-1] < 0.01
    hist = np.bincount(sampler.bucket_of([space.macs(sampler.sample(rng)) for _ in range(800)]), minlength=8)
    assert chisquare(hist, sampler.probs * 800).pvalue > 0.01


def test_sampler_rejects_bad_options(digits_vit):
    with pytest.raises(ConfigError, match="sampling='fancy' is not a sampler; choose one of uniform, complexity"):
        create_sampler("fancy", digits_vit.space)
    with pytest.raises(ConfigError, match="sampler.weights"):
        create_sampler("complexity", digits_vit.space, weights=[1, 2], pool_size=100)
    with pytest.raises(ConfigError, match="sampler.spacing='cubic'; allowed: log, linear"):
        create_sampler("complexity", digits_vit.space, spacing="cubic", pool_size=100)


def test_failed_save_never_replaces_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"format": "ofa-nas/supernet", "step": 1}, tmp_path / "supernet.pt")
    good = path.read_bytes()

    def crash(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": "ofa-nas/supernet", "step": 2}, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["supernet.pt"]


# -- the command line (subprocesses, as a user runs it) --------------------------------------------
def train_cmd(tmp_path, *overrides, run_name="r"):
    return [sys.executable, "-m", "supernet.train", "+model=vit", f"out_dir={tmp_path}", f"run_name={run_name}",
            "max_steps_per_epoch=4", "batch_size=16", "sampler.pool_size=200", "num_eval_subnets=1",
            TINY_SCHEDULE, *overrides]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_cli_without_model_lists_the_models():
    proc = subprocess.run([sys.executable, "-m", "supernet.train"], capture_output=True, text=True, cwd=ROOT,
                          env=env(), timeout=300)
    assert proc.returncode != 0
    assert "choose a model with +model=NAME; models: " in proc.stderr and ", vit," in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_rejects_a_bad_option_in_one_line(tmp_path):
    proc = subprocess.run(train_cmd(tmp_path / "out", "sampling=fancy"), capture_output=True, text=True, cwd=ROOT,
                          env=env(), timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: sampling='fancy' is not a sampler; "
                                                    "choose one of uniform, complexity")
    assert not (tmp_path / "out").exists()  # not even an empty run directory


def test_the_default_run_directory_names_the_model_config():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from supernet.train import default_run_name

    for model, expected in (("vit", "vit-digits"), ("vit_tiny", "vit_tiny-digits"),
                            ("mobilenetv3_w10", "mobilenetv3_w10-digits")):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"+model={model}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # as hydra.main does
        assert cfg.run_name is None and default_run_name(cfg) == expected


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    subprocess.run(train_cmd(tmp_path, run_name="straight"), check=True, cwd=ROOT, env=env(), timeout=600,
                   capture_output=True)
    run_dir = tmp_path / "broken"
    proc = subprocess.Popen(train_cmd(tmp_path, run_name="broken"), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (run_dir / "metrics.csv").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # during the second epoch
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    stopped = load_checkpoint(run_dir / "supernet.pt", "ofa-nas/supernet")["train_state"]
    assert stopped["epoch"] == 1 and not stopped["complete"]

    subprocess.run(train_cmd(tmp_path, run_name="broken"), check=True, cwd=ROOT, env=env(), timeout=600,
                   capture_output=True)
    straight = load_checkpoint(tmp_path / "straight" / "supernet.pt", "ofa-nas/supernet")
    resumed = load_checkpoint(run_dir / "supernet.pt", "ofa-nas/supernet")
    assert resumed["train_state"]["step"] == straight["train_state"]["step"] == 5 * 4
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]  # no row lost or repeated by the interrupt
    assert [r["phase"] for r in rows] == ["largest", "depth", "width", "width", "bits"]
    assert math.isclose(float(rows[-1]["loss"]), resumed["metrics"]["history"][-1]["loss"])
    assert (run_dir / "tb").is_dir() and any((run_dir / "tb").iterdir())
    final = resumed["metrics"]["final"]["subnets"]
    assert [r["subnet"] for r in final] == ["largest", "smallest", "random1"]
    net = load_supernet(run_dir / "supernet.pt")
    assert net.space.validate(final[0]["arch"]) == net.space.largest()


def train_in_process(tmp_path, run_name, stop_at_step=None, *extra):
    """``supernet.train.run`` on the settings of ``train_cmd`` (``conftest.run_training``)."""
    return run_training(train_cmd(tmp_path, *extra, run_name=run_name)[3:], stop_at_step)


def test_a_run_saved_before_a_model_option_existed_resumes_with_that_option_at_its_default(tmp_path):
    """A checkpoint's model config lacks the options added after it was saved (``unsigned_after_relu``
    ...): where the current config holds such an option at its default, the run resumes."""
    torch.set_num_threads(1)
    assert train_in_process(tmp_path, "old", stop_at_step=2) == 128 + signal.SIGTERM
    path = tmp_path / "old" / "supernet.pt"
    ckpt = load_checkpoint(path, "ofa-nas/supernet")
    defaults = with_option_defaults({"name": ckpt["model"]["name"]})
    at_default = [k for k, v in ckpt["model"].items() if k != "name" and defaults.get(k, object()) == v]
    assert at_default
    save_checkpoint({**ckpt, "model": {k: v for k, v in ckpt["model"].items() if k not in at_default}}, path)
    assert train_in_process(tmp_path, "old") == 0
    assert load_checkpoint(path, "ofa-nas/supernet")["train_state"]["complete"]


def test_a_run_stopped_at_the_last_or_first_step_of_an_epoch_resumes_to_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    assert train_in_process(tmp_path, "straight") == 0
    straight = load_checkpoint(tmp_path / "straight" / "supernet.pt", "ofa-nas/supernet")
    for stop_at in (4, 5):  # 4 steps per epoch: the last of epoch 1, the first of epoch 2
        name = f"stopped{stop_at}"
        assert train_in_process(tmp_path, name, stop_at_step=stop_at) == 128 + signal.SIGTERM
        stopped = load_checkpoint(tmp_path / name / "supernet.pt", "ofa-nas/supernet")["train_state"]
        assert stopped["step"] == stop_at and not stopped["complete"]
        assert train_in_process(tmp_path, name) == 0
        resumed = load_checkpoint(tmp_path / name / "supernet.pt", "ofa-nas/supernet")
        for key, value in straight["state_dict"].items():
            assert torch.equal(value, resumed["state_dict"][key]), (stop_at, key)
        drop = ("epoch_s", "img_per_s")  # timings
        assert ([{k: v for k, v in row.items() if k not in drop} for row in resumed["metrics"]["history"]] ==
                [{k: v for k, v in row.items() if k not in drop} for row in straight["metrics"]["history"]])


@pytest.mark.parametrize("override, message", [
    ("batch_size=0", "batch_size=0; allowed: an integer >= 1"),
    ("eval_batch_size=-3", "eval_batch_size=-3; allowed: an integer >= 1"),
    ("num_workers=-1", "num_workers=-1; allowed: an integer >= 0"),
    ("seed=abc", "seed='abc'; allowed: an integer >= 0"),
    ("max_steps_per_epoch=-1", "max_steps_per_epoch=-1; allowed: an integer >= 1 or null"),
    ("grad_clip=-1", "grad_clip=-1; allowed: a number > 0 or null"),
    ("kd.temperature=0", "kd.temperature=0; allowed: a number > 0"),
    ("label_smoothing=1.0", "label_smoothing=1.0; allowed: a number >= 0 and < 1"),
    ("model.schedule=[{name:largest,epochs:1,lr:nan,unlock:[]}]", "phase 'largest' needs epochs >= 1 and lr > 0"),
    ("model.depth=[]", "model 'vit': depth=[] has no choices; allowed: a non-empty list"),
])
def test_bad_training_options_are_refused_before_anything_is_written(tmp_path, override, message):
    from hydra import compose, initialize_config_dir

    import supernet.train as train

    overrides = [*train_cmd(tmp_path / "out")[3:], override]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        train.run(cfg)
    assert not (tmp_path / "out").exists()


def test_a_loss_that_becomes_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import supernet.train as train

    real_step, calls = train.sandwich_step, []

    def step(*args):
        calls.append(1)
        losses = real_step(*args)
        return {**losses, "kd": float("nan")} if len(calls) == 6 else losses

    monkeypatch.setattr(train, "sandwich_step", step)
    with pytest.raises(train.TrainingDiverged, match="the loss became .*nan.* at epoch 2, step 6 .* the last good "
                                                     "checkpoint stays at"):
        train_in_process(tmp_path, "diverged")
    kept = load_checkpoint(tmp_path / "diverged" / "supernet.pt", "ofa-nas/supernet")
    assert kept["train_state"]["step"] == 4  # the end of epoch 1
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())
    load_supernet(tmp_path / "diverged" / "supernet.pt")
    # a supernet whose weights did become NaN is refused, not searched
    key = next(k for k, v in kept["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    kept["state_dict"][key][0] = float("nan")
    save_checkpoint(kept, tmp_path / "nan-weights.pt")
    with pytest.raises(CheckpointError, match=f"holds non-finite weights .*{key}"):
        load_supernet(tmp_path / "nan-weights.pt")


def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "supernet.pt").write_bytes(b"not a checkpoint")
    proc = subprocess.run(train_cmd(tmp_path), capture_output=True, text=True, cwd=ROOT, env=env(), timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "truncated or corrupt" in proc.stderr
    assert (run_dir / "supernet.pt").read_bytes() == b"not a checkpoint"
    with pytest.raises(CheckpointError):
        load_supernet(run_dir / "supernet.pt")


def test_resume_refuses_a_checkpoint_trained_with_other_settings(tmp_path):
    subprocess.run(train_cmd(tmp_path), check=True, cwd=ROOT, env=env(), timeout=600, capture_output=True)
    before = (tmp_path / "r" / "supernet.pt").read_bytes()
    proc = subprocess.run(train_cmd(tmp_path, "kd.ratio=0.5", "device=cpu"), capture_output=True, text=True,
                          cwd=ROOT, env=env(), timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    # only what changes the training is named: the device is where it runs
    assert "was trained with other settings (kd.ratio: 1.0 -> 0.5)" in last, last
    assert (tmp_path / "r" / "supernet.pt").read_bytes() == before


def test_torchrun_two_cpu_processes_train_the_same_subnets(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           "-m", "supernet.train"] + train_cmd(tmp_path, "device=cpu")[3:]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every rank checks at the end that all ranks hold the same weights (check_ranks_agree)
    ckpt = load_checkpoint(tmp_path / "r" / "supernet.pt", "ofa-nas/supernet")
    assert ckpt["train_state"]["complete"] and ckpt["train_state"]["step"] == 5 * 4
    assert proc.stdout.count("final test accuracy") == 1  # only rank 0 reports and writes
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["config.yaml", "metrics.csv", "supernet.pt", "tb"]


@pytest.mark.parametrize("model, schedule", [
    ("mobilenetv3", "model.schedule=[{name:largest,epochs:1,lr:0.002,unlock:[resolution]},"
                    "{name:kernel,epochs:1,lr:0.001,unlock:[ks]},{name:expand,epochs:1,lr:0.001,unlock:[depth,expand]},"
                    "{name:bits,epochs:1,lr:0.001,unlock:[bits]}]"),
    ("resnet", "model.schedule=[{name:largest,epochs:1,lr:0.002,unlock:[resolution]},"
               "{name:expand,epochs:1,lr:0.001,unlock:[depth,expand]},{name:width,epochs:1,lr:0.001,unlock:[width]}]"),
])
def test_cnn_families_train_through_every_phase(tmp_path, model, schedule):
    # the expand / width phases sort channels first; every evaluation recalibrates batch norm
    cmd = [sys.executable, "-m", "supernet.train", f"+model={model}", f"out_dir={tmp_path}", "run_name=r",
           "max_steps_per_epoch=2", "batch_size=16", "sampler.pool_size=100", "num_eval_subnets=1",
           "bn_calib_images=64", schedule]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "r" / "supernet.pt", "ofa-nas/supernet")
    assert [r["phase"] for r in ckpt["metrics"]["history"]] == [p.split(",")[0] for p in
                                                                 schedule.split("name:")[1:]]
    assert len(ckpt["metrics"]["final"]["subnets"]) == 3


def test_bytes_flipped_inside_a_tensor_are_detected_on_load(tmp_path):
    net = create_supernet_from_config(model_config("vit"), num_classes=10)
    path = save_checkpoint({"format": "ofa-nas/supernet", "version": 1, "model": dict(net.config),
                            "state_dict": net.state_dict()}, tmp_path / "supernet.pt")
    load_supernet(path)
    weight = net.state_dict()["head.weight"]
    raw = bytearray(path.read_bytes())
    at = raw.find(weight.contiguous().view(torch.uint8).numpy().tobytes()[:256])  # where the tensor's bytes lie
    assert at > 0
    raw[at + 100: at + 164] = bytes(b ^ 0xFF for b in raw[at + 100: at + 164])  # 64 bytes inside one tensor
    path.write_bytes(bytes(raw))
    torch.load(path, weights_only=True)  # the container itself does not notice
    with pytest.raises(CheckpointError, match="is corrupt: its tensors do not match the digest"):
        load_supernet(path)


def test_a_failed_run_over_a_finished_one_leaves_its_files_and_no_temp_file(tmp_path, monkeypatch):
    import supernet.train as train

    assert train_in_process(tmp_path, "done") == 0
    run_dir = tmp_path / "done"
    before = {name: (run_dir / name).read_bytes() for name in ("supernet.pt", "config.yaml")}
    (run_dir / ".supernet.pt.abc123.tmp").write_bytes(b"")  # what a save killed by kill -9 leaves
    real_step = train.sandwich_step
    monkeypatch.setattr(train, "sandwich_step", lambda *args: {**real_step(*args), "loss": float("nan")})
    with pytest.raises(train.TrainingDiverged):
        train_in_process(tmp_path, "done", None, "resume=never", "kd.ratio=0.5")
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize("during", ["the epoch's evaluation", "the final evaluation"])
def test_sigterm_during_an_evaluation_stops_the_run_and_it_resumes_to_the_same_result(tmp_path, monkeypatch, during):
    import supernet.train as train

    torch.set_num_threads(1)
    assert train_in_process(tmp_path, "straight") == 0
    straight = load_checkpoint(tmp_path / "straight" / "supernet.pt", "ofa-nas/supernet")
    target = "accuracy" if during == "the epoch's evaluation" else "final_evaluation"
    real, calls = getattr(train, target), []

    def signalled(*args):  # SIGTERM arrives while the first call runs
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(train, target, signalled)
    assert train_in_process(tmp_path, "stopped") == 128 + signal.SIGTERM
    stopped = load_checkpoint(tmp_path / "stopped" / "supernet.pt", "ofa-nas/supernet")
    assert "final" not in stopped["metrics"]
    assert stopped["train_state"]["epoch"] == (1 if target == "accuracy" else 5)
    monkeypatch.setattr(train, target, real)
    assert train_in_process(tmp_path, "stopped") == 0
    resumed = load_checkpoint(tmp_path / "stopped" / "supernet.pt", "ofa-nas/supernet")
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert resumed["metrics"]["final"]["subnets"] == straight["metrics"]["final"]["subnets"]
