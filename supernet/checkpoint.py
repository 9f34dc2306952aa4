"""Atomic writes and checked loading of the project's files (supernet.pt, model.pt, JSON)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SUPERNET_FORMAT = "ofa-nas/supernet"
SUBNET_FORMAT = "ofa-nas/subnet"
# the entries a model can be rebuilt from, per format, and what each is
REQUIRED = {SUPERNET_FORMAT: {"model": "the model's name and options", "state_dict": "the weights"},
            SUBNET_FORMAT: {"model": "the model's name and options", "arch": "the subnet",
                            "state_dict": "the weights"}}


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt or of another kind, or a file that cannot be written."""


class DiskFullError(CheckpointError):
    """No space left to write a checkpoint or a result file; the previous file is kept.

    A ``CheckpointError``, so every command that reports checkpoint errors in one line reports this too."""


# torch's zip writer checks each record's end: a write cut short (a full disk) fails this check
# instead of raising the OSError behind it ("unexpected pos 579584 vs 579474")
_TORCH_SHORT_WRITE = "unexpected pos"


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, RuntimeError) and _TORCH_SHORT_WRITE in str(err)


@contextlib.contextmanager
def reporting_full_disk(path: str | os.PathLike):
    """Turns a full disk (or quota) while writing ``path`` into a one-line ``DiskFullError`` naming it
    and the space left there; other errors pass unchanged. Nested, the outermost ``path`` is named
    (a subnet folder rather than a file in its hidden temp folder)."""
    try:
        yield
    except (OSError, RuntimeError, DiskFullError) as err:
        if not isinstance(err, DiskFullError) and not _is_disk_full(err):
            raise
        path = Path(path)
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
        except OSError:
            free = "free space unknown"
        raise DiskFullError(f"no space left on device writing {str(path)!r} ({free}); the previous version, if any, "
                            "is kept: free some space and run the command again") from None


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

    A crash or an exception part way leaves the previous ``path`` untouched and no temp file behind;
    a full disk is a ``DiskFullError`` naming ``path``.
    """
    path = Path(path)
    with reporting_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # named before it exists, so that a signal at any point after its creation finds it to remove
        # (with mkstemp, Ctrl-C inside it left the file behind)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, mode) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            default_permissions(tmp)
            os.replace(tmp, path)
        except BaseException as err:
            if not isinstance(err, FileExistsError):  # that name was another writer's (2**-64): not ours
                tmp.unlink(missing_ok=True)
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
    if path.is_dir():
        raise CheckpointError(f"{what} {str(path)!r} is a directory; pass the file in it (supernet.pt, model.pt)")
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # garbage (a text file, a cut legacy-format file) fails anywhere in the unpickler, with whatever
    # error its bytes lead to (KeyError, IndexError, struct.error ...): all of them mean "not a checkpoint"
    except Exception as err:  # noqa: BLE001
        text = str(err)
        reason = text.strip().splitlines()[0] if text.strip() else ""
        if not isinstance(err, (RuntimeError, OSError, ValueError, EOFError)):  # "101" (a KeyError) says little alone
            reason = f"{type(err).__name__} {reason}".strip()
        if "Weights only load failed" in text:  # torch's first line there is a hint to load it unsafely: never give it
            hints = ("weights_only", "Weights only", "Check the documentation", "Please file an issue")
            details = [line.replace("WeightsUnpickler error:", "").strip() for line in text.splitlines()
                       if not any(hint in line for hint in hints)]
            reason = next((line for line in details if line), "not a checkpoint")
            hostile = re.search(r"GLOBAL ([\w.]+)", text)  # a function or class the file would have us call
            if hostile:
                raise CheckpointError(f"{what} {str(path)!r} holds Python objects beyond tensors, numbers, strings "
                                      f"and containers ({hostile.group(1)}): refused, since loading it could run "
                                      "code; this package never writes such files") from None
        if path.stat().st_size == 0:
            raise CheckpointError(f"{what} {str(path)!r} is empty (0 bytes): a copy or a save that did not "
                                  "finish; use another copy or write it again") from None
        raise CheckpointError(f"{what} {str(path)!r} is truncated or corrupt ({reason[:200] or type(err).__name__})") \
            from None


def load_checkpoint(path: str | os.PathLike, fmt: str) -> dict:
    """Loads a file written by ``save_checkpoint`` and checks it holds a ``fmt`` checkpoint."""
    obj = load_torch_file(path)
    found = obj.get("format") if isinstance(obj, dict) else None
    if found != fmt:
        raise CheckpointError(f"{str(path)!r} is not an {fmt} checkpoint (format: {found!r})")
    for key, meaning in REQUIRED.get(fmt, {}).items():
        if not isinstance(obj.get(key), dict) or key == "model" and "name" not in obj[key]:
            raise CheckpointError(f"{str(path)!r} has no {key!r} entry ({meaning}{', with a name' * (key == 'model')})"
                                  ": the file was cut or edited; use another copy or write it again")
    try:
        matches = "digest" not in obj or tensors_digest(obj.get("state_dict") or {}) == obj["digest"]
    except (AttributeError, TypeError, RuntimeError):  # a state_dict that is not a mapping of tensors
        matches = False
    if not matches:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its tensors do not match the digest saved "
                              "with them (a damaged copy or disk); use another copy or train again")
    return obj


def build_from_config(model: dict, path: str | os.PathLike, build: Callable[[dict], Any]):
    """``build(model)`` with the config's seeding options (a timm name, a local path) off: the weights
    come from the file, and a foreign checkpoint must not make us open anything else. A config the
    code refuses is the checkpoint's fault: one line naming the file."""
    from .errors import ConfigError

    model = {**model, **{key: None for key in ("pretrained", "pretrained_path") if key in model}}
    try:
        return build(model)
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r}: its model config ({model.get('name')!r}) cannot be built: {err}") \
            from None


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_weights(module: torch.nn.Module, state_dict: dict, path: str | os.PathLike) -> None:
    """``module.load_state_dict(state_dict)``, after checking every entry's name and shape, so that a
    damaged or foreign file is one line naming the entries instead of torch's list of all of them."""
    expected = module.state_dict()
    problems = []
    missing = [name for name in expected if name not in state_dict]
    if missing:
        problems.append(f"missing: {_listed(missing)}")
    unexpected = [name for name in state_dict if name not in expected]
    if unexpected:
        problems.append(f"unexpected: {_listed(unexpected)}")
    not_tensors = [name for name, t in state_dict.items() if name in expected and not isinstance(t, torch.Tensor)]
    if not_tensors:
        problems.append(f"not a tensor: {_listed(not_tensors)}")
    misshapen = [f"{name}: shape {tuple(state_dict[name].shape)} in the file, {tuple(t.shape)} expected"
                 for name, t in expected.items()
                 if isinstance(state_dict.get(name), torch.Tensor) and state_dict[name].shape != t.shape]
    if misshapen:
        problems.append(misshapen[0] + (f" (and {len(misshapen) - 1} more)" if len(misshapen) > 1 else ""))
    if problems:
        raise CheckpointError(f"{str(path)!r}: the weights do not fit its model config ({'; '.join(problems)}); "
                              "the file is damaged or was edited")
    module.load_state_dict(state_dict)


def load_supernet(path: str | os.PathLike):
    """Rebuilds a trained supernet from ``supernet.pt`` (eval mode); its training metrics are on
    ``.metrics`` and the training run's config (data included) on ``.train_config``."""
    from .models import create_supernet_from_config

    ckpt = load_checkpoint(path, SUPERNET_FORMAT)
    broken = [name for name, t in ckpt["state_dict"].items()
              if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise CheckpointError(f"{str(path)!r} holds non-finite weights ({len(broken)} tensors, e.g. {broken[0]!r}): "
                              "the training diverged; use an earlier checkpoint or train again")
    net = build_from_config(ckpt["model"], path, create_supernet_from_config)
    load_weights(net, ckpt["state_dict"], path)
    net.metrics, net.train_config = ckpt.get("metrics", {}), ckpt.get("config", {})
    net.digest = ckpt.get("digest") or tensors_digest(ckpt["state_dict"])  # what a search records
    return net.eval()
