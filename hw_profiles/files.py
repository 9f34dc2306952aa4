"""Atomic writes of the files hw_profiles produces (device tables, lookup tables, profiles).

``hw_profiles`` imports nothing of ``supernet``, whose ``checkpoint.atomic_write`` does the same for
checkpoints, hence this one for text."""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path

from .errors import DiskFullError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to a temp file beside ``path``, fsyncs it and renames it over ``path``: a
    reader sees the old file or the new one, never half of one, and a failure leaves no temp file
    (it is named before it is created, so an interrupt at any point can remove it). A full disk is
    ``DiskFullError``, one line naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if err.errno in FULL_DISK:
            free = shutil.disk_usage(path.parent).free / 2**20
            raise DiskFullError(f"no space left on device writing {str(path)!r} ({free:.0f} MiB free there); the "
                                "previous version, if any, is kept: free space and run again") from err
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path
