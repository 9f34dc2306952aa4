"""Atomic writes and checked loading of the project's files (supernet.pt, model.pt, JSON)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SUPERNET_FORMAT = "ofa-nas/supernet"
SUBNET_FORMAT = "ofa-nas/subnet"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt or of another kind."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_permissions(path: Path) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries: give results the usual permissions."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Calls ``write(file)`` on a temp file beside ``path``, fsyncs it, then renames it over ``path``.

    A crash or an exception part way leaves the previous ``path`` untouched and no temp file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        default_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def tensors_digest(state_dict: dict) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes: a flipped byte inside a tensor, which
    the zip container does not notice, changes it."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    """``obj`` saved atomically; with a ``state_dict``, also its ``digest``, checked on load."""
    if "state_dict" in obj:
        obj = {**obj, "digest": tensors_digest(obj["state_dict"])}
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False), mode="w")


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint"):
    """``torch.load`` with the safe loader (tensors, numbers, strings and containers only: no pickle
    code runs); a missing, truncated or corrupt file is a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{what} {str(path)!r} is truncated or corrupt ({reason[:200]})") from None


def load_checkpoint(path: str | os.PathLike, fmt: str) -> dict:
    """Loads a file written by ``save_checkpoint`` and checks it holds a ``fmt`` checkpoint."""
    obj = load_torch_file(path)
    found = obj.get("format") if isinstance(obj, dict) else None
    if found != fmt:
        raise CheckpointError(f"{str(path)!r} is not an {fmt} checkpoint (format: {found!r})")
    try:
        matches = "digest" not in obj or tensors_digest(obj.get("state_dict") or {}) == obj["digest"]
    except (AttributeError, TypeError, RuntimeError):  # a state_dict that is not a mapping of tensors
        matches = False
    if not matches:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its tensors do not match the digest saved "
                              "with them (a damaged copy or disk); use another copy or train again")
    return obj


def load_supernet(path: str | os.PathLike):
    """Rebuilds a trained supernet from ``supernet.pt`` (eval mode); its training metrics are on
    ``.metrics`` and the training run's config (data included) on ``.train_config``."""
    from .models import create_supernet_from_config

    ckpt = load_checkpoint(path, SUPERNET_FORMAT)
    broken = [name for name, t in ckpt["state_dict"].items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise CheckpointError(f"{str(path)!r} holds non-finite weights ({len(broken)} tensors, e.g. {broken[0]!r}): "
                              "the training diverged; use an earlier checkpoint or train again")
    # the weights come from the file: seeding options (a timm name, a local path) must not open
    # anything else, whatever a foreign checkpoint names there
    model = {**ckpt["model"], **{key: None for key in ("pretrained", "pretrained_path") if key in ckpt["model"]}}
    net = create_supernet_from_config(model)
    net.load_state_dict(ckpt["state_dict"])
    net.metrics, net.train_config = ckpt.get("metrics", {}), ckpt.get("config", {})
    net.digest = ckpt.get("digest") or tensors_digest(ckpt["state_dict"])  # what a search records
    return net.eval()
