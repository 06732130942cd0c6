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
