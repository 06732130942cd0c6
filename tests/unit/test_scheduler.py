"""The scheduler: jobs run every period, at once when woken, and live on past a failure."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tocsin.scheduler import Job, Scheduler


async def test_a_job_runs_at_start_and_again_when_woken() -> None:
    runs: list[int] = []
    ran = asyncio.Event()

    async def run() -> None:
        runs.append(len(runs))
        ran.set()

    scheduler = Scheduler([Job(name="count", every=3600, run=run)])
    await scheduler.start()
    try:
        await asyncio.wait_for(ran.wait(), 5)
        ran.clear()
        scheduler.wake("count")  # long before its hour is up
        await asyncio.wait_for(ran.wait(), 5)
    finally:
        await scheduler.stop()
    assert runs == [0, 1]
    assert not scheduler.running


async def test_a_failing_run_is_logged_and_the_job_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    twice = asyncio.Event()

    async def run() -> None:
        runs.append(1)
        if len(runs) == 2:
            twice.set()
        raise RuntimeError("the database went away")

    scheduler = Scheduler([Job(name="flaky", every=0.01, run=run)])
    with caplog.at_level(logging.ERROR, logger="tocsin.scheduler"):
        await scheduler.start()
        try:
            await asyncio.wait_for(twice.wait(), 5)
        finally:
            await scheduler.stop()
    assert "flaky failed; trying again in 0.01 s" in caplog.messages


def test_two_jobs_of_one_name_are_refused() -> None:
    async def run() -> None: ...

    scheduler = Scheduler([Job(name="prune", every=1, run=run)])
    with pytest.raises(ValueError, match="a job named 'prune' is already scheduled"):
        scheduler.add(Job(name="prune", every=1, run=run))
