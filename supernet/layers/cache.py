"""Memoised derived weights for inference.

An elastic layer derives its weights on every forward (a slice, a gathered qkv, a resampled
position embedding, a transformed kernel). In training that must stay in the autograd graph; with
autograd off (evaluation, search, benchmarks) the derived tensor only changes when the active size
or the parameters change, so it is computed once and reused: a contiguous copy, which also spares
the matmul a strided weight.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


class InferenceCache:
    """Holds one derived value, recomputed when its key or a parameter's version/storage changes."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value = None

    def get(self, key: tuple, params: tuple[torch.Tensor | None, ...], compute: Callable[[], T]) -> T:
        if torch.is_grad_enabled():
            return compute()
        # _version counts in-place updates (optimizer steps, load_state_dict); data_ptr catches .to()
        full_key = key + tuple((p._version, p.data_ptr()) for p in params if p is not None)
        if full_key != self._key:
            self._value, self._key = compute(), full_key
        return self._value

    def clear(self) -> None:
        self._key = self._value = None
