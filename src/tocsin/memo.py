"""A bounded memo: values remembered by key, all forgotten at once when it is full."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Remembers what `make` returned for a key, up to `capacity` keys.

    For values that are a pure function of their key (a decrypted secret, a decoded
    row), where recomputing one is the only cost of forgetting it. Shared by the event
    loop and the store's thread: dict lookups and the rebinding are each atomic.
    """

    __slots__ = ("_capacity", "_known")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._known: dict[K, V] = {}

    def get(self, key: K, make: Callable[[], V]) -> V:
        known = self._known.get(key)
        if known is None:
            known = make()
            if len(self._known) >= self._capacity:
                self._known = {}  # start afresh: a rebinding is safe from any thread
            self._known[key] = known
        return known
