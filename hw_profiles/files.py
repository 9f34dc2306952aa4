"""Atomic writes of the files hw_profiles produces (device tables, lookup tables, profiles).

``hw_profiles`` imports nothing of ``supernet``, whose ``checkpoint.atomic_write`` does the same for
checkpoints, hence this one for text."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to a temp file beside ``path``, fsyncs it and renames it over ``path``: a
    reader sees the old file or the new one, never half of one, and a failure leaves no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path
