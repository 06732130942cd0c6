"""The sliding window of a threshold trigger (SPEC 5). Pure.

A window fires when more than `count` items fall within the last `period` seconds (an
item at time t counts until t + period), once per crossing: it stays quiet until the
count has stayed at or under `count` for a whole period. A window that denylists also
re-arms once the denylisting it made has run out, so an address still attacking after its
lock is denylisted again.

Only the most recent count + 1 items matter for a crossing, so the window keeps no more
than those, as runs of (time, items): the items of one stored batch share their time, and
items in one slot of period / RESOLUTION seconds merge into one run, stamped with the
latest time (an item may so count up to one slot longer), so a window holds at most
about RESOLUTION runs whatever the count.
"""

from __future__ import annotations

from collections import deque
from typing import Any

RESOLUTION = 1000


class Window:
    """One window: items counted, whether it may fire, and until when it counts as over."""

    __slots__ = ("armed", "fired_at", "over_until", "runs", "total")

    def __init__(self) -> None:
        self.runs: deque[list[float]] = deque()  # [time, items], oldest first
        self.total = 0  # items in `runs`
        self.armed = True
        self.over_until = 0.0  # the count exceeds the threshold until this time
        self.fired_at = 0.0

    def add(self, at: float, items: int, *, count: int, period: float, lock: float | None) -> bool:
        """Count `items` at time `at`; True if they make the window fire."""
        if not self.armed:
            self.armed = self._rearmed(at, period, lock)
        self._expire(at, period)
        self._append(at, items, period / RESOLUTION)
        self._trim(count + 1)
        if self.total <= count:
            return False
        self.over_until = self.runs[0][0] + period
        if not self.armed:
            return False
        self.armed = False
        self.fired_at = at
        return True

    def _rearmed(self, at: float, period: float, lock: float | None) -> bool:
        quiet = at >= self.over_until + period
        return quiet or (lock is not None and at >= self.fired_at + lock)

    def _expire(self, now: float, period: float) -> None:
        runs = self.runs
        while runs and runs[0][0] <= now - period:
            self.total -= int(runs.popleft()[1])

    def _append(self, at: float, items: int, resolution: float) -> None:
        runs = self.runs
        if runs and at // resolution == runs[-1][0] // resolution:
            last = runs[-1]
            last[0] = max(last[0], at)
            last[1] += items
        else:
            runs.append([at, float(items)])
        self.total += items

    def _trim(self, needed: int) -> None:
        """Drop the oldest runs not needed to hold the most recent `needed` items."""
        runs = self.runs
        while runs and self.total - runs[0][1] >= needed:
            self.total -= int(runs.popleft()[1])

    def idle(self, now: float, period: float, lock: float | None) -> bool:
        """Whether the window holds nothing that matters: it can be forgotten."""
        self._expire(now, period)
        return not self.runs and (self.armed or self._rearmed(now, period, lock))

    def dump(self) -> list[Any]:
        flat = [value for run in self.runs for value in run]
        return [flat, self.armed, self.over_until, self.fired_at]

    @classmethod
    def load(cls, row: list[Any]) -> Window:
        flat, armed, over_until, fired_at = row
        window = cls()
        window.runs = deque([float(flat[i]), float(flat[i + 1])] for i in range(0, len(flat), 2))
        window.total = int(sum(run[1] for run in window.runs))
        window.armed = bool(armed)
        window.over_until = float(over_until)
        window.fired_at = float(fired_at)
        return window
