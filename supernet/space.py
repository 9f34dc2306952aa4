"""Search spaces: the choices of one supernet and everything done with an arch.

An *arch* is a JSON-serialisable dict whose keys are the space's dimensions. A dimension is either
one value for the whole net (``length=None``) or a list with one value per block/stage. The family
subclasses (``ViTSpace`` ...) add what depends on the network: which entries are active, the exact
cardinality and the analytic cost model (``layer_costs``), from which MACs, params and model size
follow.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURE_SETS = ("accuracy", "latency")
# The op kinds of cost records (the same as ``hw_profiles.roofline.OP_KINDS``; supernet imports
# nothing from there, a test keeps the two equal).
LATENCY_OPS = ("conv", "dwconv", "linear", "matmul", "norm", "act", "add", "pool", "embed")
LATENCY_FEATURE_NAMES = ("layers", *(f"{stat}.{op}" for op in LATENCY_OPS for stat in ("layers", "macs", "act_bytes")),
                         "layers.quantized", "macs", "params", "weight_bytes", "act_bytes")
_OP_COLUMN = {op: 1 + 3 * i for i, op in enumerate(LATENCY_OPS)}


def latency_features(layer_costs: Sequence[dict]) -> np.ndarray:
    """``space.features(arch, "latency")`` from the arch's cost records (``LATENCY_FEATURE_NAMES``).

    At batch 1 on a GPU, kernel launches rather than arithmetic set the time, so layer counts per op
    kind come first; MACs and bytes per op kind let a model tell compute- from memory-bound work.
    ``layers.quantized`` counts the layers below 32 bits: fake-quantized layers run extra
    (de)quantize kernels, so fewer bytes need not mean less time."""
    out = np.zeros(len(LATENCY_FEATURE_NAMES))
    out[0] = len(layer_costs)
    for layer in layer_costs:
        column = _OP_COLUMN.get(layer["op"])
        if column is None:
            raise ValueError(f"layer {layer['name']!r}: op kind {layer['op']!r} is not one of {', '.join(LATENCY_OPS)}")
        out[column:column + 3] += (1, layer["macs"], layer["act_bytes"])
        out[-5:] += (layer["bits"] < 32, layer["macs"], layer["params"], layer["weight_bytes"], layer["act_bytes"])
    return out


class ArchError(ValueError):
    """An arch that does not belong to the space: names the key, the bad value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: Any):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"arch key {key!r}: got {value!r}, allowed: {allowed}")


@dataclass(frozen=True)
class Dim:
    """One elastic dimension: its sorted choices and, for per-block dimensions, the list length."""

    name: str
    choices: tuple
    length: int | None = None

    def __post_init__(self):
        if not self.choices:
            raise ValueError(f"dimension {self.name!r} has no choices")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"dimension {self.name!r} has repeated choices: {list(self.choices)}")
        object.__setattr__(self, "choices", tuple(sorted(self.choices)))
        object.__setattr__(self, "_positions", {float(c): i for i, c in enumerate(self.choices)})

    @property
    def num_genes(self) -> int:
        return 1 if self.length is None else self.length

    def index(self, value: Any) -> int | None:
        """Position of ``value`` among the choices, or None. Compares by value so that 4 == 4.0 and
        numpy scalars from a decoded vector are accepted; the tolerance admits ratios written with
        rounding error."""
        if value.__class__ is not bool:  # True == 1 must not pass for a choice of 1
            try:
                i = self._positions.get(value)  # hash(4) == hash(4.0) == hash(np.int64(4))
            except TypeError:  # unhashable, e.g. a list where a scalar belongs
                return None
            if i is not None:
                return i
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            return None
        for i, choice in enumerate(self.choices):
            if math.isclose(float(value), float(choice), rel_tol=0, abs_tol=1e-9):
                return i
        return None


def arch_key(arch: dict) -> str:
    """A stable string for an arch (sorted-key JSON): for de-duplication and table look-ups."""
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


class SearchSpace:
    """The generic part of a space: sampling, validation, integer encoding and features.

    Subclasses implement ``canonical`` (inactive entries set to a fixed value), ``cardinality``
    and ``_layers`` (the analytic per-layer cost table).
    """

    family: str = ""
    feature_extras = ("macs", "params", "model_size_bytes")

    def __init__(self, dims: Sequence[Dim]):
        self.dims = tuple(dims)
        self._by_name = {d.name: d for d in self.dims}

    # -- description -------------------------------------------------------------------------
    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    def choices(self) -> dict[str, list]:
        return {d.name: list(d.choices) for d in self.dims}

    @property
    def num_genes(self) -> int:
        return sum(d.num_genes for d in self.dims)

    def gene_upper_bounds(self) -> np.ndarray:
        """Inclusive upper bound of each gene (lower bounds are 0): for pymoo's integer variables."""
        return np.array([len(d.choices) - 1 for d in self.dims for _ in range(d.num_genes)])

    def to_dict(self) -> dict:
        """The choices, as stored in checkpoints."""
        return {"family": self.family,
                "dims": [{"name": d.name, "choices": list(d.choices), "length": d.length} for d in self.dims]}

    def __repr__(self) -> str:
        body = ", ".join(f"{d.name}={list(d.choices)}" + (f"x{d.length}" if d.length else "") for d in self.dims)
        return f"{type(self).__name__}({body})"

    # -- archs -------------------------------------------------------------------------------
    def _from_indices(self, indices: Sequence[int]) -> dict:
        arch, pos = {}, 0
        for d in self.dims:
            if d.length is None:
                arch[d.name] = d.choices[int(indices[pos])]
            else:
                arch[d.name] = [d.choices[int(i)] for i in indices[pos:pos + d.length]]
            pos += d.num_genes
        return arch

    def _locked_check(self, unlocked) -> set[str] | None:
        if unlocked is None:
            return None
        unknown = sorted(set(unlocked) - set(self.keys))
        if unknown:
            raise ValueError(f"unknown dimension {unknown[0]!r} to unlock; dimensions: {list(self.keys)}")
        return set(unlocked)

    def sample(self, rng: np.random.Generator | int | None = None, unlocked=None) -> dict:
        """An arch drawn uniformly over each entry's choices. With ``unlocked`` (dimension names),
        the other dimensions stay at their largest choice: a progressive-shrinking phase."""
        rng, unlocked = np.random.default_rng(rng), self._locked_check(unlocked)
        return self._from_indices([rng.integers(0, len(d.choices)) if unlocked is None or d.name in unlocked
                                   else len(d.choices) - 1 for d in self.dims for _ in range(d.num_genes)])

    def largest(self) -> dict:
        return self._from_indices([len(d.choices) - 1 for d in self.dims for _ in range(d.num_genes)])

    def smallest(self, unlocked=None) -> dict:
        """The smallest arch (of the ``unlocked`` dimensions; the others at their largest)."""
        unlocked = self._locked_check(unlocked)
        return self._from_indices([0 if unlocked is None or d.name in unlocked else len(d.choices) - 1
                                   for d in self.dims for _ in range(d.num_genes)])

    def median(self, num_samples: int = 200, seed: int = 0) -> dict:
        """The arch of median MACs among ``num_samples`` uniform draws: a typical mid-size subnet."""
        rng = np.random.default_rng(seed)
        return sorted((self.sample(rng) for _ in range(num_samples)), key=self.macs)[num_samples // 2]

    def validate(self, arch: dict) -> dict:
        """Returns a normalised copy of ``arch`` (values taken from the choices) or raises ArchError."""
        if not isinstance(arch, dict):
            raise ArchError("<arch>", arch, f"a dict with keys {list(self.keys)}")
        unknown = [k for k in arch if k not in self._by_name]
        if unknown:
            raise ArchError(unknown[0], arch[unknown[0]], f"keys {list(self.keys)}")
        return self._from_indices(self._indices(arch))

    def _indices(self, arch: dict) -> list[int]:
        out = []
        for d in self.dims:
            if d.name not in arch:
                raise ArchError(d.name, "<missing>", list(d.choices))
            value = arch[d.name]
            if d.length is None:
                i = d.index(value)
                if i is None:
                    raise ArchError(d.name, value, list(d.choices))
                out.append(i)
                continue
            if not isinstance(value, (list, tuple)) or len(value) != d.length:
                raise ArchError(d.name, value, f"a list of {d.length} values from {list(d.choices)}")
            for pos, v in enumerate(value):
                i = d.index(v)
                if i is None:
                    raise ArchError(f"{d.name}[{pos}]", v, list(d.choices))
                out.append(i)
        return out

    def encode(self, arch: dict) -> np.ndarray:
        """Fixed-length vector of choice indices (the pymoo genes)."""
        return np.array(self._indices(arch), dtype=np.int64)

    def decode(self, genes: Sequence[int]) -> dict:
        genes = np.asarray(genes)
        if genes.shape != (self.num_genes,):
            raise ArchError("<genes>", genes.tolist(), f"a vector of {self.num_genes} choice indices")
        bounds = self.gene_upper_bounds()
        rounded = np.rint(genes).astype(np.int64)
        bad = np.flatnonzero((rounded < 0) | (rounded > bounds))
        if bad.size:
            i = int(bad[0])
            raise ArchError(f"<gene {i}>", genes[i].item(), f"an index in 0..{bounds[i]}")
        return self._from_indices(rounded)

    def key(self, arch: dict) -> str:
        """Equal for two archs that describe the same subnet (inactive entries ignored)."""
        return arch_key(self.canonical(arch))

    def active_genes(self, arch: dict) -> np.ndarray:
        """Per gene (``encode``'s order), whether its entry runs in ``arch``: False for the entries of
        blocks beyond a depth, which ``canonical`` fixes to the largest choice. Found from
        ``canonical`` alone, so every family gets it: a per-block dimension set to its smallest
        choice throughout, an entry that ``canonical`` moves off it does not run."""
        arch = self.canonical(arch)
        mask = []
        for d in self.dims:
            if d.length is None or len(d.choices) == 1:
                mask += [True] * d.num_genes
                continue
            lowest = self.canonical({**arch, d.name: [d.choices[0]] * d.length})[d.name]
            mask += [value == d.choices[0] for value in lowest]
        return np.array(mask, dtype=bool)

    def one_hot(self, arch: dict) -> np.ndarray:
        """Per entry of each dimension with more than one choice, a one-hot of its choice; all zero
        for an entry that does not run (``active_genes``). For OFA's MobileNetV3 space the kernel
        and expand columns are exactly the input of OFA's accuracy predictor."""
        arch = self.canonical(arch)
        genes, active = self.encode(arch), self.active_genes(arch)
        out, pos = [], 0
        for d in self.dims:
            for gene in range(pos, pos + d.num_genes):
                if len(d.choices) > 1:
                    column = np.zeros(len(d.choices))
                    if active[gene]:
                        column[genes[gene]] = 1.0
                    out.append(column)
            pos += d.num_genes
        return np.concatenate(out) if out else np.zeros(0)

    def features(self, arch: dict, for_: str = "accuracy") -> np.ndarray:
        """Predictor features of one arch, for the quantity ``for_`` predicts (``FEATURE_SETS``).

        ``accuracy``: ``one_hot(arch)`` (each running entry's choice, an entry that does not run
        all zero), then MACs, params, model size. A linear model on it gives each choice of each
        block its own weight (on choice indices it could only scale one slope per block, and an
        inactive block read as its largest choice); OFA's own accuracy predictor is an MLP on this
        encoding. ``latency``: what drives run time, from ``layer_costs`` (no choices): the number
        of layers, then per op kind of ``LATENCY_OPS`` its layer count, MACs and activation bytes,
        then total MACs, params, weight bytes and activation bytes. Every family gives the same
        latency columns (``feature_names(for_)``), zero for an op kind it lacks.
        """
        if for_ not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {for_!r}; allowed: {', '.join(FEATURE_SETS)}")
        arch = self.canonical(arch)
        if for_ == "latency":
            return latency_features(self.layer_costs(arch))
        layers = self._layers(arch)  # once for all three totals
        extras = [sum(layer[2] for layer in layers), sum(layer[3] for layer in layers),
                  sum(layer[3] * layer[5] // 8 for layer in layers)]
        return np.concatenate([self.one_hot(arch), np.array(extras, dtype=np.float64)])

    def feature_names(self, for_: str = "accuracy") -> list[str]:
        if for_ not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {for_!r}; allowed: {', '.join(FEATURE_SETS)}")
        if for_ == "latency":
            return list(LATENCY_FEATURE_NAMES)
        names = [f"{d.name}={c}" if d.length is None else f"{d.name}[{i}]={c}"
                 for d in self.dims if len(d.choices) > 1 for i in range(d.num_genes) for c in d.choices]
        return names + list(self.feature_extras)

    # -- costs: all derived from the family's analytic per-layer table ----------------------
    def layer_costs(self, arch: dict) -> list[dict]:
        """Per layer: ``{name, op, macs, params, weight_bytes, act_bytes, bits}`` at batch 1.

        ``act_bytes`` counts input + output activations; weights and activations of a quantized
        layer are stored at its bit width, every other layer as float32."""
        out = []
        for name, op, macs, params, act_elems, bits in self._layers(self.validate(arch)):
            out.append({"name": name, "op": op, "macs": macs, "params": params,
                        "weight_bytes": params * bits // 8, "act_bytes": act_elems * bits // 8, "bits": bits})
        return out

    def macs(self, arch: dict) -> int:
        """Multiply-accumulates of one image through the subnet (batch 1)."""
        return sum(layer[2] for layer in self._layers(self.validate(arch)))

    def params(self, arch: dict) -> int:
        """Parameters of the exported subnet."""
        return sum(layer[3] for layer in self._layers(self.validate(arch)))

    def model_size_bytes(self, arch: dict) -> int:
        """Weight storage: each layer's parameters times its bit width / 8."""
        return sum(layer[3] * layer[5] // 8 for layer in self._layers(self.validate(arch)))

    # -- family-specific ---------------------------------------------------------------------
    def canonical(self, arch: dict) -> dict:
        raise NotImplementedError

    def cardinality(self) -> int:
        """The exact number of distinct subnets (archs that differ only in inactive entries count once)."""
        raise NotImplementedError

    def _layers(self, arch: dict) -> list[tuple[str, str, int, int, int, int]]:
        """The analytic cost table of a validated arch: ``(name, op, macs, params, act_elems, bits)``
        per layer (tuples, because MACs of thousands of archs are counted per search generation)."""
        raise NotImplementedError
