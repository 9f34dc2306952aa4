"""Real evaluations of a trained supernet's subnets, for one hardware profile.

Accuracy: the subnet on a held-out split, batch norms recalibrated first (CNNs; OFA).
Latency: from the profile's own source, named in ``latency_source`` beside every value:
- measured (``local_cpu``, ``local_gpu``): the exported static subnet timed here (with
  ``backend: onnxruntime`` its ONNX export, integer kernels included: ``deployable``); slow, so the
  search predicts it between real evaluations;
- estimated (``jetson``, ``rpi4``, ...): the roofline sum over ``net.layer_costs(arch)``; cheap and
  exact for the model, so the search uses it directly on every candidate;
- table (a profile with ``table:``): the device table's row for the arch, else a predictor fit on
  the table's rows (``latency_source: table-predicted``);
- lut (``kind: lut``, e.g. ``note10``): the sum of the per-layer lookup table's entries of the arch's
  layers (``search.lut``); cheap, so the search uses it directly on every candidate.

Over several processes (``torchrun ... -m search.run``, ``dist``): rank 0 runs the search and calls
the evaluator; every call first broadcasts the archs to the other ranks, which wait in ``serve``.
Then every rank evaluates them on its shard of the split (and of the calibration images), counts
and batch-norm statistics summed over the ranks (``supernet.evaluate.accuracy``). Latency is
rank 0's alone, taken after the accuracies while the other ranks wait: a measured profile times the
device rank 0 runs on, with no other rank's work beside it.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np
import torch
from torch.utils.data import DataLoader

from hw_profiles import HardwareProfile
from hw_profiles.table import canonical_arch
from predictors import create_predictor
from supernet.distributed import Dist
from supernet.evaluate import accuracy

from .features import objective_features
from .lut import lut_layers
from .measure import deployable


class SupernetEvaluator:
    """``evaluator(archs) -> {"accuracy", "latency_ms", "latency_source", "profile"}`` for a search."""

    def __init__(self, net: torch.nn.Module, profile: HardwareProfile, loader: DataLoader,
                 calib_loader: DataLoader | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 dist: Dist | None = None, loaders: dict[str, DataLoader] | None = None):
        """``loader``: the split every evaluation scores; ``loaders``: other splits by name, for
        ``accuracies(archs, name)``. With ``dist``, all of them and ``calib_loader`` are this rank's
        shards (``supernet.distributed.shard``)."""
        self.net, self.profile, self.loader, self.calib_loader = net, profile, loader, calib_loader
        self.device, self.seed, self.dist = device, seed, dist or Dist()
        self.loaders = {None: loader, **(loaders or {})}
        self._busy = False  # rank 0 is inside a command the other ranks take part in
        self._released = False

    def __call__(self, archs: list[dict]) -> dict[str, list]:
        accuracies = self.accuracies(archs)
        if self.measures:  # timed together, in interleaved rounds: a burst of load hits all of them a little
            results = self.profile.measure_many([deployable(self.net, arch, self.profile) for arch in archs])
            latencies = [(r.ms, "measured") for r in results]
        else:
            latencies = [self.latency(arch) for arch in archs]
        return {"accuracy": accuracies, "latency_ms": [ms for ms, _ in latencies],
                "latency_source": [source for _, source in latencies], "profile": [self.profile.name] * len(archs)}

    def accuracies(self, archs: list[dict], split: str | None = None) -> list[float]:
        """The accuracy of each arch on ``split`` (a name of ``loaders``; None: the search's split).
        On rank 0 of several, the other ranks are told to evaluate the same archs alongside."""
        if self.dist.world > 1 and self.dist.main:
            self._busy = True
            self.dist.broadcast(("accuracy", split, archs))
        accuracies = [accuracy(self.net, arch, self.loaders[split], self.device, self.calib_loader, self.dist)
                      for arch in archs]
        self._busy = False
        return accuracies

    def serve(self) -> None:
        """Ranks other than 0: evaluate what rank 0 sends (``accuracies``) until it says stop."""
        while True:
            message = self.dist.broadcast()
            if message[0] == "stop":
                return
            _, split, archs = message
            self.accuracies(archs, split)

    def release(self) -> None:
        """Rank 0, done (or failed outside an evaluation): the other ranks' ``serve`` returns. Not
        after a failure inside one: the others are then inside a collective, and torchrun ends them
        when rank 0 exits."""
        if self.dist.world > 1 and self.dist.main and not self._busy and not self._released:
            self.dist.broadcast(("stop",))
            self._released = True

    @property
    def measures(self) -> bool:
        """True when latency is timed here (a measured profile without a device table)."""
        return self.profile.kind == "measured" and self.profile.table is None

    def latency(self, arch: dict) -> tuple[float, str]:
        """One arch's latency from the lookup table, the device table or the roofline estimate
        (``measures`` is False)."""
        if self.profile.kind == "lut":  # the per-layer sum covers every arch: no table rows needed
            result = self.profile.latency_ms(layers=lut_layers(self.net.space, arch), resolution=arch["resolution"])
            return result.ms, result.source
        if self.profile.table is not None:
            return self._from_table(arch)
        return self.profile.estimate_ms(self.net.layer_costs(arch)), "estimated"

    def exact(self) -> dict[str, Callable[[list[dict]], np.ndarray]]:
        """Latency as an exact objective when it costs no measurement (estimate, lookup or device table)."""
        if self.measures:
            return {}
        return {"latency_ms": lambda archs: np.array([self.latency(arch)[0] for arch in archs])}

    def _from_table(self, arch: dict) -> tuple[float, str]:
        by_key, predictor = self._table
        found = by_key.get(canonical_arch(self.net.space.canonical(arch)))
        if found is not None:
            return found, "table"
        X = objective_features(self.net.space, [arch], "latency_ms", self.profile)
        return float(predictor.predict(X)[0]), "table-predicted"

    @cached_property
    def _table(self):
        """The device table by arch, and a predictor fit on all its rows for the archs it lacks."""
        archs, latencies = self.profile.table_rows()
        space = self.net.space
        by_key = {canonical_arch(space.canonical(a)): ms for a, ms in zip(archs, latencies, strict=True)}
        # structural latency features (+ the profile's roofline, if it has one), median-like fit
        X = objective_features(space, archs, "latency_ms", self.profile)
        return by_key, create_predictor("xgboost", seed=self.seed, loss="relative").fit(X, np.asarray(latencies))
