"""Memoised derived weights for inference, inside an explicit scope.

An elastic layer derives its weights on every forward (a slice, a gathered qkv, a resampled
position embedding, a transformed kernel). In training that must stay in the autograd graph; with
autograd off (evaluation, search, benchmarks) the derived tensor only changes when the active size
or the parameters change, so it can be computed once and reused: a contiguous copy, which also
spares the matmul a strided weight.

Reuse needs to know when a parameter changed. In-place ops bump its version and ``.to()`` moves its
storage, but a write through ``p.data`` (``p.data.mul_(2)``, ``vector_to_parameters`` assigning
``p.data``) does neither, so no key of versions can be trusted for long. Caching is therefore
scoped: only inside ``with inference_cache():`` (``supernet.evaluate.accuracy`` opens one per
subnet), where the caller promises not to write weights through ``.data``, and every scope starts
afresh. Outside a scope every forward derives from the weights as they are.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")

_scope = {"depth": 0, "generation": 0}  # open scopes; a count of scopes opened, part of every key


@contextmanager
def inference_cache() -> Iterator[None]:
    """Within it, with autograd off, derived weights and a supernet's static subnet are reused
    between forwards; nothing computed before it is."""
    if _scope["depth"] == 0:
        _scope["generation"] += 1
    _scope["depth"] += 1
    try:
        yield
    finally:
        _scope["depth"] -= 1


def caching() -> bool:
    """True inside ``inference_cache()`` with autograd off: derived values may be reused."""
    return _scope["depth"] > 0 and not torch.is_grad_enabled()


class InferenceCache:
    """Holds one derived value, recomputed when its key, a parameter's version/storage or the scope
    changes; outside ``inference_cache()`` it computes every time."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value = None

    def get(self, key: tuple, params: tuple[torch.Tensor | None, ...], compute: Callable[[], T]) -> T:
        if not caching():
            return compute()
        # _version counts in-place updates (optimizer steps, load_state_dict); data_ptr catches .to()
        full_key = (_scope["generation"], *key, *((p._version, p.data_ptr()) for p in params if p is not None))
        if full_key != self._key:
            self._value, self._key = compute(), full_key
        return self._value

    def clear(self) -> None:
        self._key = self._value = None
