"""Build a device latency table: time concrete models on this machine, write the CSV that a
`kind: table` profile (or any profile's `table:` field) reads.

Run on the target device (e.g. a Jetson with the `local_gpu` profile, a Raspberry Pi with
`local_cpu`), then copy the CSV back and point a profile's `table` at it.

Still to come, from the lead: the command line. It will take a supernet checkpoint
(`supernet=PATH`), a measured profile (`hw=local_cpu`), how many archs to time (`n=...`), a seed,
and an output path (default `runs/tables/<hw>.csv`); it will sample archs with
`net.space.sample(rng)` (plus `largest()` and `smallest()`), build each with `net.export(arch)`,
and pass `(arch, model, (3, res, res))` triples to `measure_models`, then call `write_table`. It
loads a supernet, so it cannot live in `hw_profiles`, which must not import `supernet`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from hw_profiles.errors import ProfileError
from hw_profiles.profile import HardwareProfile
from hw_profiles.table import REQUIRED_COLUMNS, canonical_arch


def measure_models(
    named_models: Iterable[tuple[Mapping[str, Any], nn.Module, Sequence[int]]],
    profile: HardwareProfile,
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Time each `(arch, model, input_shape)` with a measured profile; one table row per model.

    `named_models` may be a generator, so that only one exported model is alive at a time.
    `input_shape` is one sample's shape, without the batch dimension.
    """
    if profile.kind != "measured":
        raise ProfileError(
            f"{profile.origin}: measure_models needs a measured profile, but {profile.name!r} is "
            f"{profile.kind!r}; run it on the device with local_cpu or local_gpu"
        )
    rows = []
    for arch, model, input_shape in tqdm(
        named_models, desc=f"timing on {profile.name}", disable=not progress
    ):
        result = profile.latency_ms(model, input_shape)
        rows.append(
            {
                "arch": dict(arch),
                "latency_ms": result.ms,
                "iqr_ms": result.iqr_ms,
                "n": result.n,
                "batch_size": profile.batch_size,
                "input_shape": list(input_shape),
                "profile": profile.name,
                "device": profile.device,
                "backend": profile.backend,
                "threads": profile.threads,
            }
        )
    return rows


def write_table(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows as a device table CSV: `arch` (canonical JSON) and `latency_ms` first, then the
    other keys in order of first appearance.

    Atomic: a reader sees the old file or the new one, never half of one.
    """
    rows = list(rows)
    for number, row in enumerate(rows):
        missing = [column for column in REQUIRED_COLUMNS if column not in row]
        if missing:
            raise ValueError(f"table row {number} lacks {', '.join(missing)}")
    extra_columns = dict.fromkeys(key for row in rows for key in row if key not in REQUIRED_COLUMNS)
    columns = [*REQUIRED_COLUMNS, *extra_columns]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({column: _cell(column, row.get(column)) for column in columns})
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def _cell(column: str, value: Any) -> Any:
    if column == "arch":
        return canonical_arch(value)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value  # csv writes floats with repr, so they read back exactly
