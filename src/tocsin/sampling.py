"""Hit sampling (SPEC 2.1): of identical hits, only the first 5 per hour notify. Pure."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_LIMIT = 5
SAMPLE_WINDOW = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleWindow:
    """How many identical hits notified since the window opened."""

    started_at: float
    count: int


def admit(window: SampleWindow | None, now: float) -> tuple[bool, SampleWindow]:
    """Whether a hit notifies, and the window after counting it.

    A window opens with the first hit of its kind and lasts an hour; the next
    identical hit after that opens a new one.
    """
    if window is None or now - window.started_at >= SAMPLE_WINDOW:
        return True, SampleWindow(started_at=now, count=1)
    if window.count >= SAMPLE_LIMIT:
        return False, window
    return True, SampleWindow(started_at=window.started_at, count=window.count + 1)


def admit_all(
    windows: dict[int, SampleWindow], keys: list[int | None], now: float
) -> tuple[list[bool], dict[int, SampleWindow]]:
    """`admit` for a batch: which hits notify, and the windows that changed.

    `windows` holds the stored window of every key in `keys` that has one; a key
    of None (not a hit) always notifies.
    """
    current = dict(windows)
    changed: dict[int, SampleWindow] = {}
    admitted = []
    for key in keys:
        if key is None:
            admitted.append(True)
            continue
        ok, after = admit(current.get(key), now)
        if after != current.get(key):
            current[key] = changed[key] = after
        admitted.append(ok)
    return admitted, changed
