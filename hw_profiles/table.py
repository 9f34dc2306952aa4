"""Device latency tables: CSV files of `arch` (JSON) and `latency_ms`, measured on the device.

Optional columns `iqr_ms` and `n` (written by `measure.write_table`) are read back; any other
column is kept in the file for people and ignored here.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hw_profiles.errors import ProfileError

REQUIRED_COLUMNS = ("arch", "latency_ms")


def canonical_arch(arch: Mapping[str, Any]) -> str:
    """The arch as compact JSON with sorted keys: the same subnet always gives the same string."""
    return json.dumps(dict(arch), sort_keys=True, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    # Archs decoded from pymoo genes carry numpy scalars and arrays; JSON wants Python ones.
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"arch value {value!r} ({type(value).__name__}) is not JSON-serialisable")


@dataclass(frozen=True)
class TableRow:
    arch: dict[str, Any]
    latency_ms: float
    iqr_ms: float | None  # None when the table does not say
    n: int  # timed runs behind latency_ms; 0 when the table does not say
    line: int  # line in the CSV file, for error messages


def read_table(path: Path) -> list[TableRow]:
    """Read and check every row of a device table; errors name the file and line."""
    if not path.is_file():
        raise ProfileError(f"device table not found: {path}")
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise ProfileError(
                f"{path}: missing column(s) {', '.join(missing)}; "
                "a device table needs arch (JSON) and latency_ms"
            )
        return [_parse_row(record, path, reader.line_num) for record in reader]


def _parse_row(record: dict[str, str], path: Path, line: int) -> TableRow:
    where = f"{path}:{line}"
    try:
        arch = json.loads(record["arch"])
    except (json.JSONDecodeError, TypeError):
        arch = None
    if not isinstance(arch, dict):
        raise ProfileError(f"{where}: column 'arch' must be a JSON object, got {record['arch']!r}")
    latency = _number(record, "latency_ms", where)
    if latency is None or latency <= 0:
        raise ProfileError(f"{where}: column 'latency_ms' must be a positive number")
    iqr = _number(record, "iqr_ms", where)
    runs = _number(record, "n", where)
    return TableRow(arch, latency, iqr, int(runs) if runs is not None else 0, line)


def _number(record: dict[str, str], column: str, where: str) -> float | None:
    text = (record.get(column) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ProfileError(f"{where}: column {column!r} must be a finite number, got {text!r}")
    return value
