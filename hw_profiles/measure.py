"""Build a device latency table: time concrete models on this machine, write the CSV that a
`kind: table` profile (or any profile's `table:` field) reads; or time single layers, for the
per-layer lookup table that a `kind: lut` profile reads (`measure_layers`, `hw_profiles.lut.write_lut`).

Run on the target device (e.g. a Jetson with the `local_gpu` profile, a Raspberry Pi with
`local_cpu`), then copy the CSV back and point a profile's `table` at it. The command line that
does this for a supernet's subnets (`--lut`: its layers) is `python -m search.measure`: it loads a supernet, which
`hw_profiles` must not import, so it lives in `search`.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from hw_profiles.errors import ProfileError
from hw_profiles.files import write_text_atomic
from hw_profiles.lut import layer_key
from hw_profiles.profile import HardwareProfile, LatencyResult
from hw_profiles.table import REQUIRED_COLUMNS, canonical_arch


def measure_models(
    named_models: Iterable[tuple[Mapping[str, Any], nn.Module, Sequence[int]]],
    profile: HardwareProfile,
    *,
    chunk: int = 100,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Time each `(arch, model, input_shape)` with a measured profile; one table row per model.

    `named_models` may be a generator: it is consumed `chunk` models at a time, and the models of
    one chunk (alive together) are timed in the profile's interleaved rounds. A larger chunk
    spreads each model's passes over a longer time, so a burst of load on a shared machine hurts
    less; a smaller one holds fewer models in memory. `input_shape` is one sample's shape, without
    the batch dimension.
    """
    return [
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
        for arch, input_shape, result in _timed(named_models, profile, chunk, progress, "model")
    ]


def measure_layers(
    layers: Iterable[tuple[str | Mapping[str, Any], nn.Module | bytes, Sequence[int]]],
    profile: HardwareProfile,
    *,
    chunk: int = 100,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Time each `(layer, module, input_shape)` once: `{key: {count, mean, iqr}}` entries of a
    per-layer lookup table (`write_lut`), keyed as `hw_profiles.lut.layer_key` keys the layer.

    `mean` is what the table sums: the profile's latency of the layer, i.e. the fastest of `count`
    passes, as whole models are timed here (`measure_models`), so that a table's sum and an
    end-to-end measurement compare; `iqr` is the passes' interquartile range. Chunks and rounds as
    in `measure_models`; a layer given twice is an error (each geometry is timed once).
    """
    entries: dict[str, dict[str, float]] = {}
    keyed = ((layer_key(layer), module, shape) for layer, module, shape in layers)
    for key, _, result in _timed(keyed, profile, chunk, progress, "layer"):
        if key in entries:
            raise ValueError(f"layer {key!r} given twice: a lookup table times each geometry once")
        entries[key] = {"count": result.n, "mean": result.ms, "iqr": result.iqr_ms}
    return entries


def _timed(
    items: Iterable[tuple[Any, nn.Module, Sequence[int]]],
    profile: HardwareProfile,
    chunk: int,
    progress: bool,
    unit: str,
) -> Iterator[tuple[Any, Sequence[int], LatencyResult]]:
    """`(name, input_shape, result)` of each `(name, model, input_shape)`, timed `chunk` at a time."""
    if profile.kind != "measured":
        raise ProfileError(
            f"{profile.origin}: timing needs a measured profile, but {profile.name!r} is "
            f"{profile.kind!r}; run it on the device with local_cpu or local_gpu"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 (models timed together), got {chunk}")
    items = iter(items)
    with tqdm(desc=f"timing on {profile.name}", unit=unit, disable=not progress) as bar:
        while batch := list(itertools.islice(items, chunk)):
            results = profile.measure_many([(model, shape) for _, model, shape in batch])
            for (name, _, input_shape), result in zip(batch, results, strict=True):
                yield name, input_shape, result
            bar.update(len(batch))


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
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _cell(column, row.get(column)) for column in columns})
    return write_text_atomic(path, buffer.getvalue())


def _cell(column: str, value: Any) -> Any:
    if column == "arch":
        return canonical_arch(value)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value  # csv writes floats with repr, so they read back exactly
