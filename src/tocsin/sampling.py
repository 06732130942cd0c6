"""Hit sampling (SPEC 2.1): of identical hits, only the first 5 per hour notify. Pure."""

from __future__ import annotations

from collections import OrderedDict

SAMPLE_LIMIT = 5
SAMPLE_WINDOW = 3600.0


# How many identical hits notified since the window opened: (started_at, count). A plain
# tuple of two numbers, not a class: a Sampler holds up to 200,000 of them, and the
# garbage collector stops tracking such tuples, where it walks every instance of a class
# at each full collection (57 ms a collection with 100,000 windows, the whole process
# paused meanwhile; bench/sampler.py measures it).
SampleWindow = tuple[float, int]


def admit(window: SampleWindow | None, now: float) -> tuple[bool, SampleWindow]:
    """Whether a hit notifies, and the window after counting it.

    A window opens with the first hit of its kind and lasts an hour; the next
    identical hit after that opens a new one.
    """
    if window is None or now - window[0] >= SAMPLE_WINDOW:
        return True, (now, 1)
    started_at, count = window
    if count >= SAMPLE_LIMIT:
        return False, window
    return True, (started_at, count + 1)


class Sampler:
    """The sample windows of one process, oldest forgotten first beyond `capacity` keys.

    Forgetting a window only lets that kind of hit notify again (at most 5 more times
    in the hour), so memory stays bounded under a flood of distinct hits.

    An OrderedDict, not a dict: a flood of distinct hits forgets one window per hit, and
    a plain dict finds its oldest entry by skipping every entry deleted before it (until
    it next resizes), which made each hit beyond capacity cost up to hundreds of
    microseconds on the store's thread (bench/sampler.py).
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._windows: OrderedDict[tuple[int, int], SampleWindow] = OrderedDict()

    def admit(self, client_id: int, key: int, now: float) -> bool:
        """Whether this hit notifies; counts it."""
        slot = (client_id, key)
        before = self._windows.get(slot)
        admitted, after = admit(before, now)
        if after is not before:
            self._windows[slot] = after
            if before is None:
                self._forget_oldest()
            elif after[0] != before[0]:
                self._windows.move_to_end(slot)  # a new window moves to the young end
        return admitted

    def _forget_oldest(self) -> None:
        while len(self._windows) > self._capacity:
            self._windows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._windows)
