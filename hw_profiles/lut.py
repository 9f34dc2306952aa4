"""Per-layer latency lookup tables: a subnet's latency is the sum of its layers' measured means.

The file format is Once-for-All's (read as published, e.g. its Samsung Note10 tables)::

    expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0:
      count: 54
      mean: 4.812240740740741      # ms
      std: 0.08956353738593026

A key is the layer's op, then ``field:value`` pairs joined by ``-``; shapes are ``HxWxC``. A layer
is handed to the table as that key, or as a record (a mapping) ``{"op": ..., field: value, ...}``
whose fields, in order, make the key (``layer_key``); lists and tuples are written ``AxBxC``.

A table is one YAML file, or a folder of ``<resolution>_lookup_table.yaml`` files (OFA measures
one per input resolution): then each query names its resolution.

Works on plain records; imports neither ``supernet`` nor ``search``.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hw_profiles.errors import ProfileError
from hw_profiles.files import write_text_atomic

FILE_PATTERN = re.compile(r"^(\d+)_lookup_table\.ya?ml$")


def layer_key(layer: str | Mapping[str, Any]) -> str:
    """The table key of one layer: a string as is, a record as ``op-field:value-...``."""
    if isinstance(layer, str):
        return layer
    if not isinstance(layer, Mapping) or not isinstance(layer.get("op"), str):
        raise ProfileError(f"a lookup-table layer is a key string or a mapping with an 'op' name, got {layer!r}")
    parts = [layer["op"]]
    for name, value in layer.items():
        if name == "op":
            continue
        if isinstance(value, (list, tuple)):
            value = "x".join(str(int(v)) for v in value)
        elif isinstance(value, bool):
            value = int(value)
        parts.append(f"{name}:{value}")
    return "-".join(parts)


def read_lut_file(path: Path) -> dict[str, float]:
    """``{key: mean ms}`` of one table file; errors name the file and the entry."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ProfileError(f"cannot read lookup table {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise ProfileError(f"{path}: not valid YAML: {reason}") from None
    if not isinstance(document, dict) or not document:
        raise ProfileError(f"{path}: a lookup table is a non-empty mapping of layer keys to {{count, mean, std}}")
    table = {}
    for key, entry in document.items():
        mean = entry.get("mean") if isinstance(entry, Mapping) else entry
        if isinstance(mean, bool) or not isinstance(mean, (int, float)) or not math.isfinite(mean) or mean < 0:
            raise ProfileError(f"{path}: entry {key!r} needs a finite mean >= 0 (ms), got {entry!r}")
        table[str(key)] = float(mean)
    return table


class LookupTable:
    """One device's per-layer table(s). ``tables`` maps a resolution (or None, for a single table
    that serves every resolution) to ``{key: mean ms}``."""

    def __init__(self, tables: Mapping[int | None, Mapping[str, float]], origin: str):
        if not tables:
            raise ProfileError(f"{origin}: no lookup table found")
        self.tables, self.origin = {r: dict(t) for r, t in tables.items()}, origin

    @classmethod
    def load(cls, path: str | os.PathLike) -> LookupTable:
        """A YAML file, or a folder of ``<resolution>_lookup_table.yaml`` files."""
        path = Path(path).expanduser()
        if path.is_file():
            return cls({None: read_lut_file(path)}, str(path))
        if not path.is_dir():
            raise ProfileError(f"lookup table not found: {path} (a .yaml file or a folder of "
                               "<resolution>_lookup_table.yaml files)")
        files = {int(m.group(1)): p for p in sorted(path.iterdir()) if (m := FILE_PATTERN.match(p.name))}
        if not files:
            raise ProfileError(f"{path}: no <resolution>_lookup_table.yaml file in the folder")
        return cls({r: read_lut_file(p) for r, p in sorted(files.items())}, str(path))

    @property
    def resolutions(self) -> list[int]:
        return sorted(r for r in self.tables if r is not None)

    def table_for(self, resolution: int | None) -> dict[str, float]:
        if None in self.tables:
            return self.tables[None]
        if resolution is None:
            raise ProfileError(f"lookup table {self.origin} has one table per resolution "
                               f"({', '.join(map(str, self.resolutions))}): pass resolution=")
        table = self.tables.get(int(resolution))
        if table is None:
            raise ProfileError(f"lookup table {self.origin} has no table for resolution {resolution}; "
                               f"resolutions: {', '.join(map(str, self.resolutions))}")
        return table

    def layer_ms(self, layers: Iterable[str | Mapping[str, Any]], resolution: int | None = None) -> list[float]:
        """Each layer's mean ms; a key the table lacks is an error that names it."""
        table = self.table_for(resolution)
        out = []
        for layer in layers:
            key = layer_key(layer)
            ms = table.get(key)
            if ms is None:
                where = f" (resolution {resolution})" if None not in self.tables else ""
                raise ProfileError(f"layer {key!r} is not in the lookup table {self.origin}{where} "
                                   f"({len(table)} keys); measure it with python -m search.measure --lut")
            out.append(ms)
        return out

    def latency_ms(self, layers: Sequence[str | Mapping[str, Any]], resolution: int | None = None) -> float:
        """The sum of the layers' means, in ms."""
        return float(sum(self.layer_ms(layers, resolution)))


def write_lut(path: str | os.PathLike, entries: Mapping[str, Mapping[str, float]], header: str = "") -> Path:
    """Writes ``{key: {count, mean, ...}}`` as a table file in OFA's format, atomically; ``header``
    (lines of text) goes first as YAML comments, to say where the figures come from."""
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    text = yaml.safe_dump({key: {name: (int(v) if name == "count" else float(v)) for name, v in entry.items()}
                           for key, entry in entries.items()}, sort_keys=True)
    return write_text_atomic(path, comment + text)
