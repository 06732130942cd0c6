"""The one scheduler of a process: periodic work that is not delivery.

Jobs today: pruning the delivery log (`retention`) and the event stream's consumers
(trigger evaluation). Each job runs in a loop of its own, every `every` seconds or at
once when woken (`wake`, e.g. after an ingest), one run at a time; a run that fails is
logged and the job goes on. Work that must happen once across processes takes its turn
in the store (`Turn`, `Store.consume`), not here: every process runs the same jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("tocsin.scheduler")


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A named piece of periodic work; `run` returns nothing worth keeping."""

    name: str
    every: float
    run: Callable[[], Awaitable[object]]


class Scheduler:
    """Runs its jobs until stopped."""

    def __init__(self, jobs: list[Job] | None = None) -> None:
        self._jobs: dict[str, Job] = {}
        self._woken: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        for job in jobs or []:
            self.add(job)

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def add(self, job: Job) -> None:
        """Add a job (before `start`; one added later starts with the next start)."""
        if job.name in self._jobs:
            raise ValueError(f"a job named {job.name!r} is already scheduled")
        self._jobs[job.name] = job
        self._woken[job.name] = asyncio.Event()

    def wake(self, name: str) -> None:
        """Run the job now rather than at its next period (no-op for an unknown name)."""
        if (event := self._woken.get(name)) is not None:
            event.set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(job), name=f"tocsin-{job.name}")
            for job in self._jobs.values()
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self, job: Job) -> None:
        woken = self._woken[job.name]
        while True:
            woken.clear()
            try:
                await job.run()
            except Exception:
                log.exception("%s failed; trying again in %g s", job.name, job.every)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), job.every)
