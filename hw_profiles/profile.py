"""Hardware profiles: load and validate `conf/hw/*.yaml`, and answer latency queries.

A profile's `kind` says where its latencies come from:
- `measured`: time the real model here (PyTorch or ONNX Runtime, on cpu or cuda);
- `estimated`: a roofline estimate from per-layer cost records, for a device we cannot run on;
- `table`: look the arch up in a CSV measured on the device;
- `lut`: sum the per-layer entries of a lookup table measured on the device (`hw_profiles.lut`).
Any kind may name a `table`; its rows (`table_rows()`) train the search's latency predictor.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from numbers import Real
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml
from torch import nn

from hw_profiles.errors import ArchNotInTableError, ProfileError
from hw_profiles.lut import LookupTable
from hw_profiles.roofline import OP_KINDS, PRECISIONS, Roofline
from hw_profiles.table import TableRow, canonical_arch, read_table
from hw_profiles.timing import ONNX_BACKENDS, time_interleaved

PROFILE_DIR = Path(__file__).resolve().parent.parent / "conf" / "hw"
KINDS = ("measured", "estimated", "table", "lut")


@dataclass(frozen=True)
class LatencyResult:
    # Latency of one forward pass of the profile's batch. When timed: the fastest pass, since load
    # from other processes only ever adds time (README, "Predictors": how repeatable each is).
    ms: float
    iqr_ms: float | None  # interquartile range of the timed runs; None when nothing was timed here
    source: str  # "measured" | "estimated" | "table" | "lut"
    profile: str  # the profile's name
    n: int  # timed runs behind `ms`; 0 for an estimate


@dataclass(frozen=True)
class HardwareProfile:
    """One validated `conf/hw/*.yaml`. Build it with `load_profile`, which checks every field."""

    name: str
    kind: str
    origin: str  # the file it was loaded from ("profile mapping" for a mapping), for error messages
    description: str = ""
    batch_size: int = 1
    # kind: measured
    device: str | None = None
    backend: str | None = None
    threads: int | None = None
    warmup: int | None = None
    repeats: int | None = None
    rounds: int = 1  # measure_many spreads the repeats over this many interleaved rounds (at most repeats)
    # kind: estimated
    peak_gmacs: Mapping[str, float] | None = None
    memory_gbps: float | None = None
    efficiency: Mapping[str, float] | None = None
    launch_overhead_ms: float | None = None
    # kind: table (optional for the others)
    table: Path | None = None
    # kind: lut: a per-layer table file, or a folder of <resolution>_lookup_table.yaml files
    lut: Path | None = None
    # written by `python -m search.measure --calibrate`: what the roofline was fitted on, how well
    calibration: Mapping[str, Any] | None = None

    def latency_ms(
        self,
        model: nn.Module | None = None,
        input_shape: Sequence[int] | None = None,
        *,
        layer_costs: Sequence[Mapping[str, Any]] | None = None,
        arch: Mapping[str, Any] | None = None,
        layers: Sequence[str | Mapping[str, Any]] | None = None,
        resolution: int | None = None,
    ) -> LatencyResult:
        """Latency of one forward pass of `batch_size` inputs, from the source the kind names.

        measured: times `model` on random inputs of `input_shape` (one sample's shape, without the
        batch dimension, e.g. (3, 32, 32)); estimated: sums the roofline estimate over
        `layer_costs` (`net.layer_costs(arch)`); table: looks `arch` up in the device table;
        lut: sums the lookup table's entries of `layers` (keys or records, `hw_profiles.lut`) at
        `resolution` (`search.lut.lut_layers(space, arch)` makes them for a space).
        """
        if self.kind == "measured":
            if model is None or input_shape is None:
                raise ProfileError(f"profile {self.name!r} times a model: pass model and input_shape")
            return self.measure_many([(model, input_shape)])[0]
        if self.kind == "estimated":
            if layer_costs is None:
                raise ProfileError(
                    f"profile {self.name!r} estimates latency from per-layer costs: "
                    "pass layer_costs=net.layer_costs(arch)"
                )
            return LatencyResult(self.estimate_ms(layer_costs), None, "estimated", self.name, 0)
        if self.kind == "lut":
            if layers is None:
                raise ProfileError(f"profile {self.name!r} sums a per-layer lookup table: pass layers=...")
            return LatencyResult(self.lookup_table.latency_ms(layers, resolution), None, "lut", self.name, 0)
        if arch is None:
            raise ProfileError(f"profile {self.name!r} reads latencies from a table: pass arch=...")
        return self.lookup(arch)

    def estimate_ms(self, layer_costs: Sequence[Mapping[str, Any]], batch_size: int | None = None) -> float:
        """Roofline latency in ms of the layers in `layer_costs`, at `batch_size` (default: the
        profile's). See `hw_profiles.roofline` for the model and the record keys."""
        if self.peak_gmacs is None or self.memory_gbps is None or self.efficiency is None:
            raise ProfileError(
                f"{self.origin}: profile {self.name!r} has no roofline fields "
                "(peak_gmacs, memory_gbps, efficiency, launch_overhead_ms)"
            )
        roofline = Roofline(
            self.peak_gmacs, self.memory_gbps, self.efficiency, self.launch_overhead_ms or 0.0
        )
        return roofline.total_ms(layer_costs, self.batch_size if batch_size is None else batch_size)

    def table_rows(self) -> tuple[list[dict[str, Any]], list[float]]:
        """The device table's archs and their latencies in ms, in file order (read once, on first use)."""
        return [row.arch for row in self._rows], [row.latency_ms for row in self._rows]

    def lookup(self, arch: Mapping[str, Any]) -> LatencyResult:
        """The table's latency for `arch` (matched by canonical JSON, so key order does not matter)."""
        row = self._index.get(canonical_arch(arch))
        if row is None:
            raise ArchNotInTableError(
                f"arch {canonical_arch(arch)} is not in the device table {self.table} of profile "
                f"{self.name!r} ({len(self._rows)} rows); fit a latency predictor on table_rows()"
            )
        return LatencyResult(row.latency_ms, row.iqr_ms, "table", self.name, row.n)

    @cached_property
    def lookup_table(self) -> LookupTable:
        """The per-layer lookup table (field `lut`), read once, on first use."""
        if self.lut is None:
            raise ProfileError(f"{self.origin}: profile {self.name!r} has no lookup table (field 'lut')")
        return LookupTable.load(self.lut)

    @cached_property
    def _rows(self) -> list[TableRow]:
        if self.table is None:
            raise ProfileError(f"{self.origin}: profile {self.name!r} has no device table (field 'table')")
        return read_table(self.table)

    @cached_property
    def _index(self) -> dict[str, TableRow]:
        index: dict[str, TableRow] = {}
        for row in self._rows:
            key = canonical_arch(row.arch)
            if key in index:
                # Two latencies for one arch: which one is right is not ours to guess.
                raise ProfileError(
                    f"{self.table}: arch {key} appears twice (lines {index[key].line} and {row.line})"
                )
            index[key] = row
        return index

    def measure_many(self, models: Sequence[tuple[nn.Module | bytes, Sequence[int]]]) -> list[LatencyResult]:
        """Time several `(model, input_shape)` in `rounds` interleaved rounds (measured kind only).
        A model is a module or, with `backend: onnxruntime` or `openvino`, a serialized ONNX model.

        Interleaving spreads each model's passes over the whole measurement, so a burst of load
        from another process slows a few passes of many models instead of all passes of one.
        """
        if self.kind != "measured":
            raise ProfileError(
                f"{self.origin}: profile {self.name!r} is {self.kind!r}, not measured; time models "
                "with local_cpu or local_gpu, on the device itself"
            )
        self.check_available()
        all_times = time_interleaved(
            [(model, tuple(int(size) for size in shape)) for model, shape in models],
            device=self.device,
            backend=self.backend,
            threads=self.threads,
            warmup=self.warmup,
            repeats=self.repeats,
            rounds=self.rounds,
            batch_size=self.batch_size,
        )
        return [self._result(times) for times in all_times]

    def _result(self, times: Sequence[float]) -> LatencyResult:
        first_quartile, third_quartile = np.percentile(times, [25, 75])
        return LatencyResult(
            float(min(times)), float(third_quartile - first_quartile), "measured", self.name, len(times)
        )

    def check_available(self) -> None:
        """Raises ProfileError when this machine cannot time on the profile's device or backend."""
        if self.backend in ONNX_BACKENDS:
            for package in (self.backend, "onnx", "onnxscript"):  # the runtime; the subnet's export
                if importlib.util.find_spec(package) is None:
                    raise ProfileError(
                        f"profile {self.name!r} ({self.origin}) times with {self.backend}, but {package!r} is not "
                        f"installed here; pip install {self.backend} onnx onnxscript, or time with hw.backend=torch"
                    )
        if self.device != "cuda":
            return
        if self.backend == "torch" and not torch.cuda.is_available():
            raise ProfileError(
                f"profile {self.name!r} ({self.origin}) times on CUDA, but no CUDA device is "
                "available here (torch.cuda.is_available() is False); use local_cpu"
            )
        if self.backend == "onnxruntime" and (
            "CUDAExecutionProvider" not in _onnxruntime().get_available_providers()
        ):
            raise ProfileError(
                f"profile {self.name!r} ({self.origin}) times on CUDA, but no CUDA device is "
                "available to onnxruntime (no CUDAExecutionProvider; it needs onnxruntime-gpu)"
            )


def _onnxruntime():
    import onnxruntime  # only for the onnxruntime backend: a device that times with torch need not install it

    return onnxruntime


def known_profiles() -> list[str]:
    """Names of the packaged profiles in conf/hw/."""
    return sorted(path.stem for path in PROFILE_DIR.glob("*.yaml"))


def load_profile(source: str | os.PathLike | Mapping[str, Any], **overrides: Any) -> HardwareProfile:
    """Load and validate a hardware profile.

    `source` is a packaged profile's name (`conf/hw/<name>.yaml`), a path to a YAML file, or a
    mapping of fields (e.g. `OmegaConf.to_container(cfg.hw)`). `overrides` replace fields before
    validation (`load_profile("local_cpu", repeats=5)`). A relative `table` path is relative to
    the working directory. Raises ProfileError naming the field and the file.
    """
    if isinstance(source, Mapping):
        config, origin = dict(source), "profile mapping"
    else:
        path = _profile_path(source)
        config, origin = _read_yaml(path), str(path)
    config.update(overrides)
    return _validate(config, origin)


def _profile_path(source: str | os.PathLike) -> Path:
    text = os.fspath(source)
    looks_like_path = (
        isinstance(source, os.PathLike) or text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text
    )
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProfileError(f"profile file not found: {path}")
        return path
    path = PROFILE_DIR / f"{text}.yaml"
    if not path.is_file():
        raise ProfileError(
            f"unknown hardware profile {text!r}; known profiles: {', '.join(known_profiles())} "
            "(or pass a path to a .yaml file)"
        )
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise ProfileError(f"{path}: not valid YAML: {reason}") from None
    if not isinstance(config, dict):
        raise ProfileError(f"{path}: expected a mapping of profile fields, got {type(config).__name__}")
    return config


# --- validation --------------------------------------------------------------------------------


class _Invalid(Exception):
    """A field's value is wrong; the message says how (without the field name)."""


def _got(value: Any) -> str:
    return f"got {value!r} ({type(value).__name__})"


def _text(choices: Sequence[str] = ()) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise _Invalid(f"must be a non-empty string, {_got(value)}")
        if choices and value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, {_got(value)}")
        return value

    return check


def _integer(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        # bool is an int in Python, but `threads: yes` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Invalid(f"must be an integer >= {minimum}, {_got(value)}")
        return value

    return check


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)


def _number(minimum: float, *, inclusive: bool, maximum: float | None = None) -> Callable[[Any], float]:
    low = f"{'>=' if inclusive else '>'} {minimum}"
    wanted = f"a number {low}" + (f" and <= {maximum}" if maximum is not None else "")

    def check(value: Any) -> float:
        ok = _is_number(value) and (value >= minimum if inclusive else value > minimum)
        if not ok or (maximum is not None and value > maximum):
            raise _Invalid(f"must be {wanted}, {_got(value)}")
        return float(value)

    return check


def _number_map(
    keys: Sequence[str], required: Sequence[str], value_check: Callable[[Any], float]
) -> Callable[[Any], dict[str, float]]:
    def check(value: Any) -> dict[str, float]:
        if not isinstance(value, Mapping):
            raise _Invalid(f"must be a mapping with keys from {', '.join(keys)}, {_got(value)}")
        unknown = [str(key) for key in value if key not in keys]
        if unknown:
            raise _Invalid(f"has unknown key {unknown[0]!r}; allowed keys: {', '.join(keys)}")
        absent = [key for key in required if key not in value]
        if absent:
            raise _Invalid(f"lacks key {absent[0]!r}")
        checked = {}
        for key, entry in value.items():
            try:
                checked[key] = value_check(entry)
            except _Invalid as bad:
                raise _Invalid(f"entry {key!r} {bad}") from None
        return checked

    return check


def _record(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(f"must be a mapping (what the profile was calibrated on), {_got(value)}")
    return dict(value)


class _Field(NamedTuple):
    check: Callable[[Any], Any]
    required_by: tuple[str, ...]  # the kinds that need this field


_FIELDS: dict[str, _Field] = {
    "name": _Field(_text(), KINDS),
    "kind": _Field(_text(KINDS), KINDS),
    "description": _Field(_text(), ()),
    "batch_size": _Field(_integer(1), ("measured", "estimated")),
    "device": _Field(_text(("cpu", "cuda")), ("measured",)),
    "backend": _Field(_text(("torch", *ONNX_BACKENDS)), ("measured",)),
    "threads": _Field(_integer(1), ("measured",)),
    "warmup": _Field(_integer(0), ("measured",)),
    "repeats": _Field(_integer(1), ("measured",)),
    "rounds": _Field(_integer(1), ()),
    "peak_gmacs": _Field(_number_map(PRECISIONS, ("fp32",), _number(0, inclusive=False)), ("estimated",)),
    "memory_gbps": _Field(_number(0, inclusive=False), ("estimated",)),
    "efficiency": _Field(
        _number_map((*OP_KINDS, "default"), ("default",), _number(0, inclusive=False, maximum=1)),
        ("estimated",),
    ),
    "launch_overhead_ms": _Field(_number(0, inclusive=True), ("estimated",)),
    "table": _Field(_text(), ("table",)),
    "lut": _Field(_text(), ("lut",)),
    "calibration": _Field(_record, ()),
}


def _validate(config: dict[str, Any], origin: str) -> HardwareProfile:
    unknown = [str(key) for key in config if key not in _FIELDS]
    if unknown:
        raise ProfileError(f"{origin}: unknown field {unknown[0]!r}; allowed fields: {', '.join(_FIELDS)}")
    if config.get("kind") is None:
        raise ProfileError(f"{origin}: missing field 'kind' (one of {', '.join(KINDS)})")
    kind = _checked(_FIELDS["kind"], "kind", config["kind"], origin)
    values: dict[str, Any] = {}
    for field, spec in _FIELDS.items():
        # YAML `table:` and Hydra's `table: null` mean "not set".
        if config.get(field) is None:
            if kind in spec.required_by:
                raise ProfileError(f"{origin}: missing field {field!r} (required for kind {kind!r})")
            continue
        values[field] = _checked(spec, field, config[field], origin)
    if values.get("backend") == "openvino" and values.get("device") != "cpu":
        raise ProfileError(f"{origin}: backend 'openvino' times on the CPU only (device: cpu), "
                           f"got device {values.get('device')!r}")
    if "table" in values:
        values["table"] = Path(values["table"]).expanduser()
        if kind == "table" and not values["table"].is_file():
            raise ProfileError(f"{origin}: field 'table': file not found: {values['table']}")
    if "lut" in values:
        values["lut"] = Path(values["lut"]).expanduser()
        if not values["lut"].exists():
            raise ProfileError(f"{origin}: field 'lut': not found: {values['lut']} (a lookup-table .yaml file "
                               "or a folder of <resolution>_lookup_table.yaml files)")
    return HardwareProfile(origin=origin, **values)


def _checked(spec: _Field, field: str, value: Any, origin: str) -> Any:
    try:
        return spec.check(value)
    except _Invalid as bad:
        raise ProfileError(f"{origin}: field {field!r} {bad}") from None
