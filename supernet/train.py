"""Supernet training: ``python -m supernet.train +model=vit [data=cifar10 data.root=PATH] [key=value ...]``.

Progressive shrinking (phases from the model config's ``schedule``), and at every step the sandwich
rule with in-place distillation: the largest subnet learns from the labels, the phase's smallest and
``sandwich.num_random`` sampled subnets learn from the largest's detached logits; their gradients
add up into one optimizer step. The same script runs data-parallel under ``torchrun`` (every rank
draws the same subnets: the draw is seeded from the step). Writes ``runs/train/<run>/``:
``supernet.pt`` (every epoch end and on SIGINT/SIGTERM, atomically), ``metrics.csv``, ``tb/`` and
``config.yaml``; ``resume=auto`` continues from ``supernet.pt``. ``init_from=PATH`` starts from another
``supernet.pt``'s weights (fine-tuning, e.g. a supernet converted from OFA) instead of a fresh init.
"""
from __future__ import annotations

import contextlib
import csv
import io
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from .checkpoint import (
    SUPERNET_FORMAT,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    load_supernet,
    load_weights,
    save_checkpoint,
)
from .cli import CONF_DIR, hydra_command
from .data import DataError, build_data, calibration_loader
from .distributed import Dist
from .errors import ConfigError
from .evaluate import accuracy
from .models import ModelConfigError, create_supernet_from_config, with_option_defaults
from .models.vit import PretrainedWeightsError
from .sampling import create_sampler
from .schedule import Schedule
from .space import ArchError


# -- distributed (the process group: supernet.distributed) -----------------------------------------
class EpochSampler(Sampler):
    """A seeded permutation per epoch, sharded over ranks, that can start part way (resume)."""

    def __init__(self, n: int, batch_size: int, seed: int, dist: Dist):
        self.n, self.batch_size, self.seed, self.dist = n, batch_size, seed, dist
        self.per_rank = n // dist.world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[self.dist.rank::self.dist.world][: self.per_rank]
        return iter(order[self.skip * self.batch_size:].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.skip * self.batch_size


# -- one training step -----------------------------------------------------------------------------
def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 (Hinton)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), reduction="batchmean",
                    log_target=True) * t * t


def set_regularisation(net: nn.Module, enabled: bool) -> None:
    """Only the largest subnet trains with dropout and drop-path (BigNAS): toggled by module mode."""
    for m in net.modules():
        if m.__class__.__name__ in ("DropPath", "Dropout"):
            m.train(enabled)


def sandwich_step(net: nn.Module, archs: list[dict], x: torch.Tensor, y: torch.Tensor, cfg,
                  amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                  ddp: nn.parallel.DistributedDataParallel | None = None) -> dict:
    """Forward/backward of every arch (archs[0] is the teacher); gradients accumulate in ``.grad``.
    ``amp``: the autocast dtype of the forwards (bf16 / fp16; None: float32); ``scaler`` scales the
    fp16 losses (the caller unscales before clipping and steps through it); ``ddp``: ``net`` wrapped
    (``Dist.wrap``), whose last forward's backward reduces the step's summed gradients over ranks."""
    def forward(i: int) -> torch.Tensor:
        net.set_active(archs[i])
        last = i == len(archs) - 1
        with (contextlib.nullcontext() if ddp is None or last else ddp.no_sync()), \
                torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            # losses in float32: log-softmax of bf16 logits loses the small classes
            return (net if ddp is None else ddp)(x).float()

    def backward(loss: torch.Tensor) -> None:
        (loss if scaler is None else scaler.scale(loss)).backward()

    set_regularisation(net, True)
    logits = forward(0)
    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    backward(loss)
    teacher = logits.detach()
    set_regularisation(net, False)
    kd_total = 0.0
    for i in range(1, len(archs)):
        out = forward(i)
        kd = kd_loss(out, teacher, cfg.kd.temperature)
        backward(cfg.kd.ratio * kd + (1 - cfg.kd.ratio) * F.cross_entropy(out, y))
        kd_total += kd.item()
    set_regularisation(net, True)
    return {"loss": loss.item(), "kd": kd_total / max(len(archs) - 1, 1)}


RESOLUTION_POLICIES = ("per_subnet", "per_batch")


def sandwich_archs(space, sampler, unlocked, num_random: int, rng: np.random.Generator,
                   resolution: str = "per_subnet") -> list[dict]:
    """Largest, the phase's smallest, then ``num_random`` sampled archs; only the largest when the
    phase unlocks nothing (the full network is trained first). ``resolution="per_batch"`` (OFA's
    policy, with elastic resolution unlocked): one resolution drawn uniformly for the step, which
    every arch takes (the teacher is the largest at that size), so the batch is resized once."""
    archs = [space.largest()]
    if unlocked:
        archs += [space.smallest(unlocked)] + [sampler.sample(rng) for _ in range(num_random)]
    if resolution == "per_batch" and "resolution" in unlocked:
        size = int(rng.choice(space.choices()["resolution"]))
        archs = [{**arch, "resolution": size} for arch in archs]
    return archs


CHANNEL_DIMS = ("expand", "width")  # dimensions that keep a prefix of each layer's channels


def sort_channels_for(net: nn.Module, optimizer, phase, trained: tuple[str, ...]) -> None:
    """Before a phase that starts shrinking channels, reorder them by importance so the kept prefixes
    hold the most important ones (OFA); the optimizer's per-element moments no longer line up with
    the permuted weights, so they restart."""
    if not hasattr(net, "sort_channels") or not set(phase.unlock) & set(CHANNEL_DIMS):
        return
    net.sort_channels(trained=trained)
    optimizer.state.clear()


OPTIMIZERS = ("adamw", "sgd")
AMP_MODES = ("auto", "bf16", "fp16", "off")
LR_SCALINGS = ("none", "linear")


def make_optimizer(net: nn.Module, cfg, lr: float) -> torch.optim.Optimizer:
    """AdamW (BigNAS, AutoFormer) or SGD with (Nesterov) momentum (OFA), no decay on norms and biases."""
    groups = param_groups(net, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas))


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp=mode``; ``auto``: bf16 on a CUDA GPU that has it (no grad scaler
    needed: bf16 has float32's range), float32 on CPUs, where bf16 matmuls are emulated on most."""
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norms, biases and embeddings (BigNAS, timm)."""
    skip = set(getattr(net, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# -- state, checkpoints, logs ----------------------------------------------------------------------
@dataclass
class TrainState:
    epoch: int = 0           # the epoch being (or next to be) trained
    step: int = 0            # optimizer steps since the start
    step_in_epoch: int = 0   # steps done in ``epoch`` (non-zero after an interrupt)
    history: list = field(default_factory=list)  # one metrics row per finished epoch
    epoch_sums: dict = field(default_factory=dict)  # loss sums of those steps: the epoch's row survives an interrupt


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current step and exits."""

    def __init__(self):
        self.signal: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signum


def checkpoint_dict(net, optimizer, schedule, state: TrainState, sampler, cfg_container: dict,
                    final: dict | None = None, init: dict | None = None, scaler=None) -> dict:
    epoch = min(state.epoch, schedule.total_epochs - 1)
    phase = schedule.phase_index(epoch)
    return {
        "format": SUPERNET_FORMAT, "version": 1, "model": dict(net.config), "space": net.space.to_dict(),
        "state_dict": net.state_dict(),
        "train_state": {"phase": phase, "phase_name": schedule.phases[phase].name, "epoch": state.epoch,
                        "step": state.step, "step_in_epoch": state.step_in_epoch,
                        "epoch_sums": state.epoch_sums,
                        "optimizer": optimizer.state_dict(),
                        "grad_scaler": None if scaler is None else scaler.state_dict(),
                        "scheduler": {"kind": "progressive-shrinking-cosine", "step": state.step},
                        "rng": {"torch": torch.get_rng_state()},
                        "sampler": None if sampler is None else sampler.state_dict(),
                        "complete": state.epoch >= schedule.total_epochs},
        "metrics": {"history": state.history, **({"init_from": init} if init else {}),
                    **({"final": final} if final else {})},
        "config": cfg_container,
    }


def write_metrics_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue()), mode="w")


def print_table(rows: list[dict]) -> None:
    print(f"{'subnet':10} {'MACs':>10} {'params':>9} {'test acc':>9}")
    for r in rows:
        print(f"{r['subnet']:10} {r['macs'] / 1e6:9.2f}M {r['params'] / 1e3:8.1f}K {100 * r['accuracy']:8.2f}%")


# -- the run ---------------------------------------------------------------------------------------
# Settings that may differ between a run and its resumption: where and how it runs, not what it trains.
RESUMABLE_SETTINGS = frozenset({"resume", "out_dir", "run_name", "device", "num_workers", "threads",
                                "eval_batch_size"})
# Settings added after runs were saved without them: such a run trained as their value here says
# (AdamW; float32 on CPU, as amp=auto gives there), so it resumes with the defaults.
ADDED_SETTINGS = {"optimizer": "adamw", "momentum": 0.9, "nesterov": True, "lr_scaling": "none", "amp": "auto",
                  "channels_last": False, "sandwich.resolution": "per_subnet"}


def changed_settings(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``key: saved -> current`` for every training setting that differs (nested keys dotted)."""
    changed = []
    for key in sorted(set(saved) | set(current)):
        if not prefix and key in RESUMABLE_SETTINGS:
            continue
        old, new = saved.get(key, ADDED_SETTINGS.get(prefix + key)), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changed


def default_run_name(cfg) -> str:
    """``<model config>-<data>`` (``vit_tiny-digits``): the config file chosen with ``+model=``, which
    hydra records, else the model family's name (a config composed without hydra's runtime). A
    fine-tuning run is ``<source run>-finetune-<data>``, apart from the runs trained from scratch."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("init_from"):
        source = Path(cfg.init_from)
        name = source.parent.name if source.name == "supernet.pt" and source.parent.name else source.stem
        return f"{name}-finetune-{cfg.data.name}"

    choice = HydraConfig.get().runtime.choices.get("model") if HydraConfig.initialized() else None
    return f"{choice or cfg.model.name}-{cfg.data.name}"


def _differences(saved: dict, current: dict) -> str:
    changed = [f"{key}: {saved.get(key)!r} -> {current.get(key)!r}" for key in sorted(set(saved) | set(current))
               if saved.get(key) != current.get(key)]
    return "; ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: nothing more is saved."""


def _number(cfg, key: str, low: float, high: float | None = None, *, integer: bool = False, optional: bool = False,
            low_open: bool = False, high_open: bool = False) -> None:
    value = _select(cfg, key)
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    ok = (isinstance(value, int) if integer else isinstance(value, (int, float))) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        bounds = f"{'>' if low_open else '>='} {low:g}" + (
            "" if high is None else f" and {'<' if high_open else '<='} {high:g}")
        raise ConfigError(f"{key}={value!r}; allowed: {kind} {bounds}" + (" or null" if optional else ""))


def _select(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part] if part in node else None
        if node is None:
            return None
    return node


def check_options(cfg) -> None:
    """Every scalar option, before any data is read or file written: one line naming the bad one."""
    for key in ("batch_size", "eval_batch_size", "bn_calib_images"):
        _number(cfg, key, 1, integer=True)
    for key in ("num_workers", "seed", "num_eval_subnets", "sandwich.num_random"):
        _number(cfg, key, 0, integer=True)
    for key in ("max_steps_per_epoch", "threads"):
        _number(cfg, key, 1, integer=True, optional=True)
    _number(cfg, "grad_clip", 0, low_open=True, optional=True)  # a negative norm would flip the gradient
    _number(cfg, "kd.temperature", 0, low_open=True)
    _number(cfg, "kd.ratio", 0, 1)
    _number(cfg, "label_smoothing", 0, 1, high_open=True)
    _number(cfg, "weight_decay", 0)
    _number(cfg, "min_lr_ratio", 0, 1)
    _number(cfg, "finetune.epochs", 1, integer=True)
    _number(cfg, "finetune.lr", 0, low_open=True)
    if cfg.get("init_from") is not None and not isinstance(cfg.init_from, str):
        raise ConfigError(f"init_from={cfg.init_from!r}; allowed: the path of a supernet.pt or null")
    for key, allowed in (("optimizer", OPTIMIZERS), ("amp", AMP_MODES), ("lr_scaling", LR_SCALINGS),
                         ("sandwich.resolution", RESOLUTION_POLICIES)):
        if _select(cfg, key) not in allowed:
            raise ConfigError(f"{key}={_select(cfg, key)!r}; allowed: {', '.join(allowed)}")
    _number(cfg, "momentum", 0, 1, high_open=True)
    for key in ("nesterov", "channels_last"):
        if not isinstance(cfg.get(key), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r}; allowed: true or false")
    if cfg.nesterov and cfg.optimizer == "sgd" and cfg.momentum == 0:
        raise ConfigError("nesterov=true needs momentum > 0 (SGD); set momentum=0.9 or nesterov=false")
    betas = _select(cfg, "betas")
    if not (len(betas or ()) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"betas={betas!r}; allowed: two numbers in [0, 1)")


def known_models() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def pick_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
        return torch.device("cuda", dist.local_rank)
    if name != "cpu":
        raise ConfigError(f"device={name!r}; allowed: auto, cpu, cuda")
    return torch.device("cpu")


# -- fine-tuning: init_from=PATH -------------------------------------------------------------------
SEEDING_OPTIONS = ("pretrained", "pretrained_path")  # a model config's weight seeding (InstaTune)


def finetune_model(source: nn.Module, finetune) -> dict:
    """The model config of ``init_from`` without ``+model``: the source's own (its head sized by the
    data, as for every model config), trained by one phase of ``finetune.epochs`` at ``finetune.lr``
    over the dimensions the source was trained elastically on (OFA's: all), its subnets being trained
    already; a dimension it never trained needs a phase of its own (+model with a schedule)."""
    model = {key: value for key, value in source.config.items() if key != "num_classes"}
    return {**model, "schedule": [{"name": "finetune", "epochs": finetune.epochs, "lr": finetune.lr,
                                   "unlock": list(elastic_dims(source))}]}


def elastic_dims(source: nn.Module) -> tuple[str, ...]:
    """The dimensions ``source``'s weights were already trained elastically on: those its schedule had
    unlocked by its last finished epoch, plus those it inherited itself; every dimension for a supernet
    trained elsewhere (converted from OFA: no schedule here)."""
    schedule_cfg = (source.train_config.get("model") or {}).get("schedule")
    if not schedule_cfg:
        return tuple(source.space.keys)
    history = source.metrics.get("history") or []
    inherited = (source.metrics.get("init_from") or {}).get("elastic") or []
    trained: tuple[str, ...] = ()
    if history:
        schedule = Schedule(schedule_cfg, 1, source.space.keys)
        trained = schedule.unlocked(schedule.phase_index(min(len(history), schedule.total_epochs) - 1))
    return tuple(dict.fromkeys([*inherited, *trained]))


def start_from(net: nn.Module, source: nn.Module, path: str) -> list[str]:
    """Copies ``source``'s weights into ``net``; returns the head's keys, left newly initialised when
    the data has another number of classes than the source's head (timm's ``num_classes=``)."""
    differing = [f"{key}: {source.config.get(key)!r} in the checkpoint, {net.config.get(key)!r} in +model"
                 for key in sorted(set(source.config) | set(net.config))
                 if key != "num_classes" and source.config.get(key) != net.config.get(key)]
    if differing:
        raise ConfigError(f"+model is another model than init_from={path!r} ({'; '.join(differing)}): leave "
                          "+model out to fine-tune the checkpoint's own model")
    theirs, own = source.state_dict(), net.state_dict()
    head = sorted(key for key in own if own[key].shape != theirs[key].shape)
    net.load_state_dict({key: value for key, value in theirs.items() if key not in head}, strict=not head)
    return head


def run(cfg) -> dict:
    """Trains (or resumes) the supernet of ``cfg``; returns the final metrics."""
    from omegaconf import OmegaConf

    if "model" not in cfg and not cfg.get("init_from"):
        raise ConfigError(f"choose a model with +model=NAME; models: {', '.join(known_models())}; "
                          "or fine-tune a supernet.pt with init_from=PATH")
    check_options(cfg)
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    device_kind = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    dist = Dist.from_env(device_kind)
    device = pick_device(cfg.device, dist)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg_container = OmegaConf.to_container(cfg, resolve=True)

    run_dir = Path(cfg.out_dir) / (cfg.run_name or default_run_name(cfg))
    ckpt_path = run_dir / "supernet.pt"
    resume_from = {"auto": ckpt_path if ckpt_path.exists() else None, "never": None}.get(cfg.resume, cfg.resume)
    ckpt = None if resume_from is None else load_checkpoint(resume_from, SUPERNET_FORMAT)
    # a run with its own checkpoint continues from it: init_from only seeds the run's first start
    source = load_supernet(cfg.init_from) if cfg.init_from and ckpt is None else None
    if "model" not in cfg:  # init_from without +model: the checkpoint's own model
        if source is not None:
            cfg_container["model"] = finetune_model(source, cfg.finetune)
        elif not (ckpt.get("config") or {}).get("model"):
            raise CheckpointError(f"{str(resume_from)!r} records no model config (config.model): resume it with "
                                  "+model=NAME")
        else:
            cfg_container["model"] = ckpt["config"]["model"]

    data_cfg = dict(cfg_container["data"])
    data = build_data(data_cfg.pop("name"), **data_cfg)
    if data.num_classes < 2:
        raise DataError(f"data={cfg.data.name} has {data.num_classes} class: a classifier needs at least 2")
    model_cfg = dict(cfg_container["model"])
    if cfg.init_from:  # the weights come from the checkpoint: seeding them would open a hub or file for nothing
        model_cfg.update({key: None for key in SEEDING_OPTIONS if key in model_cfg})
    schedule_cfg = model_cfg.pop("schedule", None)
    if not schedule_cfg:
        raise ConfigError("the model config has no 'schedule' (the progressive-shrinking phases)")
    if model_cfg.get("in_chans", data.in_chans) != data.in_chans:
        raise ConfigError(f"model.in_chans={model_cfg['in_chans']} but data={cfg.data.name} has {data.in_chans} "
                         "channels")
    net = create_supernet_from_config(model_cfg, num_classes=data.num_classes).to(device)
    space = net.space
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.channels_last:  # NHWC: what Tensor Core convolutions read without a transpose
        net = net.to(memory_format=torch.channels_last)
    if device.type == "cuda":  # a few resolutions repeat all run long: cuDNN's autotuned kernels pay off
        torch.backends.cudnn.benchmark = True
    # init_from's record: where the weights came from and the dimensions they were already elastic in
    # (channel sorting keeps those prefixes); a resumed run reads it back from its own checkpoint
    init, start_note = None, None
    if source is not None:
        new_head = start_from(net, source, cfg.init_from)
        init = {"path": str(cfg.init_from), "digest": source.digest, "elastic": list(elastic_dims(source))}
        head = (f"; new head ({', '.join(new_head)}) for the data's {data.num_classes} classes, the checkpoint "
                f"had {source.config['num_classes']}" if new_head else "")
        elastic = ", ".join(init["elastic"]) or "nothing"
        start_note = f"starting from {init['path']} (already elastic in {elastic}{head})"
        del source  # a second copy of the weights (ResNet50: 100 MB) for the whole run otherwise
    elif ckpt is not None:
        init = ckpt.get("metrics", {}).get("init_from")
    inherited = tuple(init["elastic"]) if init else ()

    bs = cfg.batch_size
    epoch_sampler = EpochSampler(len(data.train), bs, cfg.seed, dist)
    # The loader draws its workers' base seed from its own generator, not the global RNG, so that a run
    # resumed mid-epoch continues the global RNG (augmentation, drop-path) exactly where it stopped.
    loader = DataLoader(data.train, batch_size=bs, sampler=epoch_sampler, drop_last=True,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    steps_per_epoch = epoch_sampler.per_rank // bs
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ConfigError(f"batch_size={bs} is larger than the {epoch_sampler.per_rank} training images per rank")
    val_loader = DataLoader(data.val, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers)
    test_loader = DataLoader(data.test, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers)
    calib_loader = calibration_loader(data, cfg.bn_calib_images, cfg.eval_batch_size, cfg.seed, cfg.num_workers)
    if cfg.lr_scaling == "linear":  # OFA's init_lr = base_lr * num_gpus: the rates are per rank's batch
        schedule_cfg = [{**phase, "lr": phase["lr"] * dist.world} for phase in schedule_cfg]
    schedule = Schedule(schedule_cfg, steps_per_epoch, space.keys, cfg.min_lr_ratio)
    optimizer = make_optimizer(net, cfg, schedule.phases[0].lr)
    amp = amp_dtype(cfg.amp, device)
    # fp16 needs its losses scaled (its range underflows small gradients); bf16 and float32 do not
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None

    state = TrainState()
    if ckpt is not None:
        saved_model = with_option_defaults(ckpt["model"])  # a run from before an option has its default
        if saved_model != with_option_defaults(net.config):  # configs may leave options out
            raise CheckpointError(f"{str(resume_from)!r} holds a supernet of another model config "
                                  f"({ckpt['model'].get('name')!r}, {_differences(saved_model, net.config)}); "
                                  f"train in another directory with run_name=NAME (resume=never would overwrite it)")
        # `finetune` shapes init_from runs only: runs started before it existed resume without it
        saved, current = ({key: value for key, value in config.items() if cfg.init_from or key != "finetune"}
                          for config in (ckpt.get("config", {}), cfg_container))
        changed = changed_settings(saved, current)
        if changed:
            raise CheckpointError(f"{str(resume_from)!r} was trained with other settings ({'; '.join(changed)}): "
                                  "resuming would mix two runs; train in another directory with run_name=NAME, "
                                  "or overwrite this run with resume=never")
        load_weights(net, ckpt["state_dict"], resume_from)
        optimizer.load_state_dict(ckpt["train_state"]["optimizer"])
        if scaler is not None and ckpt["train_state"].get("grad_scaler"):
            scaler.load_state_dict(ckpt["train_state"]["grad_scaler"])
        ts = ckpt["train_state"]
        state = TrainState(ts["epoch"], ts["step"], ts["step_in_epoch"], list(ckpt["metrics"]["history"]),
                           dict(ts.get("epoch_sums") or {}))
        torch.set_rng_state(ts["rng"]["torch"])
        if dist.main:
            print(f"resuming {resume_from} at epoch {state.epoch}, step {state.step}"
                  + (" (its own weights: init_from is not read again)" if cfg.init_from else ""))
        if ts["complete"] and "final" in ckpt["metrics"]:
            if dist.main:
                print(f"{ckpt_path} is already trained ({schedule.total_epochs} epochs); final test accuracy:")
                print_table(ckpt["metrics"]["final"]["subnets"])
            return ckpt["metrics"]["final"]

    def phase_sampler(index: int):  # its buckets cover the phase's MACs range
        return create_sampler(cfg.sampling, space, schedule.unlocked(index), seed=cfg.seed, **(
            {} if cfg.sampling == "uniform" else dict(cfg.sampler)))

    # built before anything is written: a bad sampler option leaves no run directory behind
    sampler_phase = schedule.phase_index(min(state.epoch, schedule.total_epochs - 1))
    sampler = phase_sampler(sampler_phase)

    writer = None
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".*.tmp"):  # a save killed mid-write (kill -9, power loss) left it
            stale.unlink(missing_ok=True)
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=state.step)
        print(f"training {net.config['name']} supernet ({space.cardinality():.3g} subnets, MACs "
              f"{space.macs(space.smallest()) / 1e6:.2f}M..{space.macs(space.largest()) / 1e6:.2f}M) on "
              f"{cfg.data.name} ({len(data.train)} train images), {schedule.total_epochs} epochs x "
              f"{steps_per_epoch} steps, world size {dist.world}, device {device} -> {run_dir}")
        if start_note:
            print(start_note)

    def save(sampler, final=None):
        if dist.main:
            save_checkpoint(checkpoint_dict(net, optimizer, schedule, state, sampler, cfg_container, final, init,
                                            scaler), ckpt_path)
            # beside the checkpoint it describes, only once there is one: a run that fails before its
            # first save (resume=never over a finished run, say) leaves that run's config.yaml alone
            # the container: it holds the model config init_from took from its checkpoint
            atomic_write(run_dir / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(cfg_container)), mode="w")

    ddp = dist.wrap(net)
    stop = StopRequested()

    def stopped(where: str) -> NoReturn:
        if dist.main:
            print(f"stopped by signal {where}: checkpoint {ckpt_path}; run the same command again to resume")
        sys.exit(128 + (stop.signal or signal.SIGTERM))
    net.train()
    for epoch in range(state.epoch, schedule.total_epochs):
        phase_index = schedule.phase_index(epoch)
        phase, unlocked = schedule.phases[phase_index], schedule.unlocked(phase_index)
        if epoch == schedule.first_epoch(phase_index) and state.step_in_epoch == 0:
            trained = (*inherited, *(schedule.unlocked(phase_index - 1) if phase_index else ()))
            sort_channels_for(net, optimizer, phase, tuple(dict.fromkeys(trained)))
        if sampler_phase != phase_index:
            sampler, sampler_phase = phase_sampler(phase_index), phase_index
        epoch_sampler.set_epoch(epoch, state.step_in_epoch)
        sums = {"loss": 0.0, "kd": 0.0, "count": 0, **state.epoch_sums}  # resumed: the steps done before
        seen, start = 0, time.perf_counter()
        lr = schedule.lr(max(state.step - 1, 0))  # the epoch's last rate, also when its steps were all done before
        bar = tqdm(total=steps_per_epoch, initial=state.step_in_epoch, disable=None if dist.main else True, leave=False,
                   desc=f"epoch {epoch + 1}/{schedule.total_epochs} [{phase.name}]", dynamic_ncols=True)
        for x, y in loader:
            if state.step_in_epoch >= steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True, memory_format=memory_format), y.to(device, non_blocking=True)
            lr = schedule.lr(state.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            archs = sandwich_archs(space, sampler, unlocked, cfg.sandwich.num_random,
                                   np.random.default_rng([cfg.seed, state.step]), cfg.sandwich.resolution)
            if cfg.sandwich.resolution == "per_batch":  # resized once here, not once per subnet
                net.set_active(archs[0])
                x = net.resize_input(x)
            losses = sandwich_step(net, archs, x, y, cfg, amp, scaler, ddp)
            if not all(np.isfinite(value) for value in losses.values()):
                raise TrainingDiverged(f"the loss became {losses} at epoch {epoch + 1}, step {state.step + 1} "
                                       f"(lr {lr:.3g}): stopped; the last good checkpoint stays at {ckpt_path}")
            if scaler is not None:
                scaler.unscale_(optimizer)  # clip the true gradients; a step with inf / NaN ones is skipped
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.step_in_epoch += 1
            sums = {"loss": sums["loss"] + losses["loss"], "kd": sums["kd"] + losses["kd"],
                    "count": sums["count"] + 1}
            state.epoch_sums = sums
            seen += x.shape[0] * dist.world  # data images (each one ran through len(archs) subnets)
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.3f}", kd=f"{losses['kd']:.3f}", lr=f"{lr:.2e}",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}")
            if writer is not None and state.step % 10 == 0:
                writer.add_scalar("train/loss_largest", losses["loss"], state.step)
                writer.add_scalar("train/kd", losses["kd"], state.step)
                writer.add_scalar("train/lr", lr, state.step)
            if dist.any(stop.signal is not None):
                bar.close()
                save(sampler)
                stopped(f"at epoch {epoch + 1}, step {state.step}")
        bar.close()
        state.epoch, state.step_in_epoch, state.epoch_sums = epoch + 1, 0, {}
        if dist.main:
            elapsed = time.perf_counter() - start
            acc_l = accuracy(net, space.largest(), val_loader, device, calib_loader)
            acc_s = accuracy(net, space.smallest(unlocked), val_loader, device, calib_loader)
            row = {"epoch": epoch + 1, "phase": phase.name, "lr": round(lr, 8),
                   "loss": round(sums["loss"] / max(sums["count"], 1), 5),
                   "kd": round(sums["kd"] / max(sums["count"], 1), 5),
                   "val_acc_largest": round(acc_l, 5), "val_acc_smallest": round(acc_s, 5),
                   "epoch_s": round(elapsed, 2), "img_per_s": round(seen / max(elapsed, 1e-9), 1)}
            state.history.append(row)
            print(f"epoch {epoch + 1:3d}/{schedule.total_epochs} [{phase.name}] loss {row['loss']:.4f} "
                  f"kd {row['kd']:.4f} lr {lr:.2e} | val acc largest {100 * acc_l:.2f}% smallest "
                  f"{100 * acc_s:.2f}% | {row['img_per_s']:.0f} img/s")
            for key in ("loss", "kd", "val_acc_largest", "val_acc_smallest"):
                writer.add_scalar(f"epoch/{key}", row[key], state.step)
            write_metrics_csv(state.history, run_dir / "metrics.csv")
        save(sampler)
        if dist.any(stop.signal is not None):  # it came during the epoch's evaluation: saved just now
            stopped(f"after epoch {epoch + 1}")

    final = None
    if dist.main:
        # a signal between its subnets stops it; the rerun finds the run trained and evaluates again
        final = final_evaluation(net, test_loader, calib_loader, device, cfg.seed, cfg.num_eval_subnets,
                                 lambda: stop.signal is not None and stopped("during the final evaluation"))
        print("final test accuracy:")
        print_table(final["subnets"])
        save(sampler, final)
        writer.close()
        print(f"supernet: {ckpt_path}")
    check_ranks_agree(net, dist)
    return final


def final_evaluation(net: nn.Module, loader: DataLoader, calib_loader: DataLoader, device, seed: int,
                     num_random: int, between: Callable[[], object] = lambda: None) -> dict:
    """Test accuracy of the largest, the smallest and ``num_random`` sampled subnets; ``between()``
    runs before each (the trainer's stop check)."""
    space, rng = net.space, np.random.default_rng([seed, 2**31 - 1])
    named = [("largest", space.largest()), ("smallest", space.smallest())]
    named += [(f"random{i + 1}", space.sample(rng)) for i in range(num_random)]
    rows = []
    for name, arch in named:
        between()
        rows.append({"subnet": name, "arch": arch, "macs": space.macs(arch), "params": space.params(arch),
                     "accuracy": round(accuracy(net, arch, loader, device, calib_loader), 5)})
    return {"split": "test", "subnets": rows}


def check_ranks_agree(net: nn.Module, dist: Dist) -> None:
    """All ranks must hold the same weights at the end; a mismatch means they drew different subnets."""
    if dist.world == 1:
        return
    # on the weights' device: NCCL gathers CUDA tensors only
    checksum = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.world)]
    torch_dist.all_gather(gathered, checksum)
    if not all(torch.allclose(g, gathered[0], rtol=1e-9, atol=0) for g in gathered):
        raise RuntimeError(f"ranks diverged: weight checksums {[g.item() for g in gathered]}")
    torch_dist.destroy_process_group()


USER_ERRORS = (ArchError, CheckpointError, ConfigError, DataError, ModelConfigError, PretrainedWeightsError,
               TrainingDiverged)


def main() -> None:
    hydra_command("train", run, USER_ERRORS)


if __name__ == "__main__":
    main()
