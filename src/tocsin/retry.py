"""The retry schedule of SPEC 4, as a pure function of how many attempts failed."""

from __future__ import annotations

from tocsin.models import DeliveryStatus

# Three cycles of waits, in seconds, after each failed attempt.
SCHEDULE: tuple[tuple[float, ...], ...] = (
    (1, 3, 5, 10, 10),
    (0, 1, 3, 5, 30),
    (60, 60, 180, 300, 600, 1800),
)
_FLAT: tuple[float, ...] = tuple(wait for cycle in SCHEDULE for wait in cycle)

MAX_ATTEMPTS = len(_FLAT) + 1


def next_wait(failed_attempts: int) -> float | None:
    """Seconds to wait before the next attempt, or None when the delivery has failed for good.

    `failed_attempts` counts the failures so far, the one just recorded included.
    """
    if failed_attempts < 1:
        raise ValueError("next_wait is asked after a failure")
    if failed_attempts > len(_FLAT):
        return None
    return _FLAT[failed_attempts - 1]


# Auto-disable (SPEC 4): over the window, failures reach the rate with at least min requests.
AUTO_DISABLE_WINDOW = 12 * 3600.0
AUTO_DISABLE_RATE = 0.6
AUTO_DISABLE_MIN_REQUESTS = 10


def should_auto_disable(requests: int, failures: int) -> bool:
    """Whether an integration's recent record calls for disabling it."""
    return requests >= AUTO_DISABLE_MIN_REQUESTS and failures >= AUTO_DISABLE_RATE * requests


def auto_disable_reason(requests: int, failures: int, window: float) -> str | None:
    """Why an integration is disabled, in the words it is shown with; None if it is not."""
    if not should_auto_disable(requests, failures):
        return None
    return (
        f"{failures} of {requests} requests failed ({failures / requests:.0%}) "
        f"in the last {window / 3600:.0f} hours"
    )


def decide(failures_before: int, ok: bool, now: float) -> tuple[DeliveryStatus, float | None]:
    """A delivery's status and next attempt time after an attempt.

    `failures_before` counts the delivery's failures before this attempt.
    """
    if ok:
        return DeliveryStatus.DELIVERED, None
    wait = next_wait(failures_before + 1)
    if wait is None:
        return DeliveryStatus.FAILED, None
    return DeliveryStatus.RETRYING, now + wait
