from __future__ import annotations

import gc

import pytest

from tocsin import retry, sampling
from tocsin.models import DeliveryStatus


def test_schedule_is_the_three_cycles_of_spec_4() -> None:
    waits = [retry.next_wait(n) for n in range(1, 17)]
    assert waits == [1, 3, 5, 10, 10, 0, 1, 3, 5, 30, 60, 60, 180, 300, 600, 1800]
    assert retry.next_wait(17) is None
    assert retry.MAX_ATTEMPTS == 17


def test_next_wait_is_asked_after_a_failure_only() -> None:
    with pytest.raises(ValueError, match="after a failure"):
        retry.next_wait(0)


def test_decide() -> None:
    assert retry.decide(0, ok=True, now=100) == (DeliveryStatus.DELIVERED, None)
    assert retry.decide(0, ok=False, now=100) == (DeliveryStatus.RETRYING, 101)
    assert retry.decide(1, ok=False, now=100) == (DeliveryStatus.RETRYING, 103)
    assert retry.decide(16, ok=False, now=100) == (DeliveryStatus.FAILED, None)


@pytest.mark.parametrize(
    ("requests", "failures", "expected"),
    [(10, 6, True), (10, 5, False), (9, 9, False), (100, 60, True), (100, 59, False)],
)
def test_auto_disable_rule(requests: int, failures: int, expected: bool) -> None:
    assert retry.should_auto_disable(requests, failures) is expected


def test_sampling_first_five_per_hour() -> None:
    window = None
    admitted = []
    for second in range(7):
        ok, window = sampling.admit(window, 1000.0 + second)
        admitted.append(ok)
    assert admitted == [True] * 5 + [False] * 2
    ok, window = sampling.admit(window, 1000.0 + 3600)
    assert ok
    assert window == (4600.0, 1)  # (started_at, count)


def test_sampler_counts_per_client_and_key_and_forgets_the_oldest_beyond_capacity() -> None:
    sampler = sampling.Sampler(capacity=2)
    assert [sampler.admit(1, 7, 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert sampler.admit(2, 7, 100.0)  # another client has its own window
    assert sampler.admit(1, 8, 100.0)  # a third window pushes out the oldest (1, 7)
    assert len(sampler) == 2
    assert sampler.admit(1, 7, 100.0)  # forgotten: it may notify again
    assert sampler.admit(1, 7, 100.0 + 3600)  # and a new hour opens a new window


def test_a_full_sampler_leaves_nothing_for_the_garbage_collector_to_walk() -> None:
    # A full collection pauses the whole process and walks every tracked object; the
    # Sampler holds up to 200,000 windows for as long as the process lives.
    gc.collect()
    before = len(gc.get_objects())
    sampler = sampling.Sampler(capacity=10_000)
    for key in range(20_000):
        sampler.admit(1, key, 100.0)
        sampler.admit(1, key, 101.0)  # a counted window is a new value
    gc.collect()
    assert len(sampler) == 10_000
    assert len(gc.get_objects()) - before < 100  # was 10,000 windows more


def test_sampler_keeps_a_renewed_window_young_and_stays_at_capacity_under_a_flood() -> None:
    sampler = sampling.Sampler(capacity=3)
    sampler.admit(1, 1, 0.0)
    sampler.admit(1, 2, 10.0)
    sampler.admit(1, 3, 20.0)
    for _ in range(4):
        sampler.admit(1, 1, 30.0)  # key 1 uses up its window: 5 notified
    assert not sampler.admit(1, 1, 40.0)
    assert sampler.admit(1, 1, 3600.0)  # a new hour: key 1's window renews, the youngest now
    assert sampler.admit(1, 4, 3601.0)  # so the fourth key pushes out key 2, the oldest
    assert len(sampler) == 3
    for _ in range(4):
        assert sampler.admit(1, 1, 3602.0)
    assert not sampler.admit(1, 1, 3603.0)  # key 1 was kept: its new window is full
    for key in range(100, 1100):  # a flood of distinct hits: each notifies, memory bounded
        assert sampler.admit(1, key, 3604.0)
    assert len(sampler) == 3
