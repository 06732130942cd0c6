"""Ingestion rate per token: a token bucket per key, in this process (pure; time is passed in).

A request that finds the bucket not in debt is admitted whatever its size and may
put the bucket in debt; the next request waits until the debt is paid back. So a
sensor's large batch is never refused for its size alone, and a token keeps to
`rate` events per second on average, with bursts up to `burst`.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    """Events per second per key; remembers at most `max_keys` keys (least recent dropped)."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._max_keys = max_keys
        self._buckets: OrderedDict[int, tuple[float, float]] = OrderedDict()  # key -> (level, at)

    def take(self, key: int, count: int, now: float) -> float:
        """Admit `count` events and return 0, or return the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        level, at = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + (now - at) * self.rate)
        if level < 0:
            self._buckets[key] = (level, now)
            return -level / self.rate
        self._buckets[key] = (level - count, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return 0.0
