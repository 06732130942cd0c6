"""The threshold window against a brute-force reading of SPEC 5's rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.triggers.window import Window


def reference(times: list[int], count: int, period: int) -> list[int]:
    """Fire at an arrival when more than `count` items lie in (t - period, t], unless the
    last firing's crossing has not yet stayed at or under `count` for a whole period.

    Brute force over whole seconds: with items at whole seconds, the count is constant
    from one second to the next, so checking each second is exact.
    """

    def in_window(s: int, upto: int) -> int:
        return sum(1 for t in times[:upto] if s - period < t <= s)

    fired: list[int] = []
    armed = True
    for index, at in enumerate(times):
        if not armed:
            # At or under the threshold for a whole period up to `at` (the items before
            # this one only: those stored at `at` too count at `at`).
            armed = all(in_window(s, index) <= count for s in range(at - period, at + 1))
        if in_window(at, index + 1) > count and armed:
            fired.append(at)
            armed = False
    return fired


def through_window(times: list[int], count: int, period: int) -> list[int]:
    window = Window()
    return [t for t in times if window.add(t, 1, count=count, period=period, lock=None)]


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 30), min_size=1, max_size=80),
    count=st.integers(1, 6),
    period=st.integers(1, 40),
)
def test_window_fires_exactly_when_the_rule_says(gaps: list[int], count: int, period: int) -> None:
    times = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    assert through_window(times, count, period) == reference(times, count, period)


def test_window_state_round_trips() -> None:
    window = Window()
    for t in range(5):
        window.add(t, 1, count=3, period=60, lock=None)
    copy = Window.load(window.dump())
    assert copy.dump() == window.dump()
    assert not copy.add(6, 1, count=3, period=60, lock=None)  # fired at t=3 already


def test_a_window_keeps_no_more_than_it_needs() -> None:
    window = Window()
    for t in range(100_000):
        window.add(t * 0.001, 1, count=1_000_000, period=3600, lock=None)
    assert len(window.runs) < 100  # the items of each 3.6 s slot share a run
    window = Window()
    for t in range(1000):
        window.add(t, 1, count=10, period=600, lock=None)
    assert window.total == 11  # the 11 most recent decide a crossing
