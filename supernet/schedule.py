"""Progressive shrinking: phases that each unlock more elastic dimensions, and the learning rate.

A phase trains for its own epochs at its own peak learning rate, over the dimensions unlocked so far
(cumulative, as OFA: full net -> kernel -> depth -> width; ViT: depth -> heads/MLP/embed width).
Within a phase the learning rate warms up linearly, then follows a cosine down to a floor of
``min_lr_ratio * lr`` (BigNAS: a constant floor, not zero). The rate is a pure function of the
global step, so a resumed run needs only the step.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    lr: float
    unlock: tuple[str, ...] = ()
    warmup_epochs: float = 0.0


def _phase(entry: dict) -> Phase:
    fields = set(Phase.__dataclass_fields__)
    unknown = sorted(set(entry) - fields)
    if unknown or "name" not in entry:
        raise ConfigError(f"schedule phase {entry}: {'unknown key ' + repr(unknown[0]) if unknown else 'no name'}; "
                          f"keys: {sorted(fields)}")
    return Phase(**{**entry, "unlock": tuple(entry.get("unlock") or ())})


class Schedule:
    def __init__(self, phases: Sequence[dict | Phase], steps_per_epoch: int, dims: Sequence[str],
                 min_lr_ratio: float = 0.05):
        self.phases = [p if isinstance(p, Phase) else _phase(p) for p in phases]
        if not self.phases:
            raise ConfigError("the schedule has no phases")
        for p in self.phases:
            unknown = sorted(set(p.unlock) - set(dims))
            if unknown:
                raise ConfigError(f"phase {p.name!r} unlocks {unknown[0]!r}, not a dimension of the space: "
                                  f"{list(dims)}")
            if not (isinstance(p.epochs, int) and p.epochs >= 1 and isinstance(p.lr, (int, float))
                    and math.isfinite(p.lr) and p.lr > 0):
                raise ConfigError(f"phase {p.name!r} needs epochs >= 1 and lr > 0 (got {p.epochs}, {p.lr})")
        self.steps_per_epoch, self.min_lr_ratio = steps_per_epoch, min_lr_ratio
        self._first_epoch = [0]
        for p in self.phases:
            self._first_epoch.append(self._first_epoch[-1] + p.epochs)

    @property
    def total_epochs(self) -> int:
        return self._first_epoch[-1]

    def first_epoch(self, phase_index: int) -> int:
        return self._first_epoch[phase_index]

    def phase_index(self, epoch: int) -> int:
        for i in range(len(self.phases)):
            if epoch < self._first_epoch[i + 1]:
                return i
        raise ValueError(f"epoch {epoch} is past the schedule's {self.total_epochs} epochs")

    def unlocked(self, phase_index: int) -> tuple[str, ...]:
        """The dimensions elastic in a phase: those of every phase up to it."""
        dims: list[str] = []
        for p in self.phases[: phase_index + 1]:
            dims += [d for d in p.unlock if d not in dims]
        return tuple(dims)

    def lr(self, step: int) -> float:
        """Learning rate at a global step (counted from the start of training)."""
        epoch = min(step // self.steps_per_epoch, self.total_epochs - 1)
        i = self.phase_index(epoch)
        phase = self.phases[i]
        start = self._first_epoch[i] * self.steps_per_epoch
        length = phase.epochs * self.steps_per_epoch
        t = step - start
        warmup = int(phase.warmup_epochs * self.steps_per_epoch)
        if t < warmup:
            return phase.lr * (t + 1) / warmup
        progress = min((t - warmup) / max(length - warmup, 1), 1.0)
        floor = phase.lr * self.min_lr_ratio
        return floor + (phase.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
