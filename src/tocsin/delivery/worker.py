"""The dispatcher: claims due work, sends it, records what happened.

Three small loops share one process:
- `_claim_loop` leases work whenever woken (new events, a freed slot, a retry
  coming due) and starts one task per delivery;
- each `_deliver` task sends one request and queues its record;
- `_record_loop` writes queued records in batches, one transaction per batch.
On a store that hears other processes queue work (`Notifier`: PostgreSQL's
LISTEN/NOTIFY), `_listen_loop` wakes the claim loop when they do. A last loop,
`retention.prune_loop`, prunes the delivery log past its retention in this process's
turns (one process per turn, across processes).
A slow integration only ever holds its own `max_in_flight` slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from tocsin import retention, retry
from tocsin.clock import Clock
from tocsin.config import Settings
from tocsin.delivery.sender import Sender
from tocsin.errors import StoreError, TocsinError
from tocsin.metrics import Metrics
from tocsin.models import AttemptRecord, Claim
from tocsin.store import AutoDisabled, ClaimLimits, Notifier, Store

log = logging.getLogger("tocsin.delivery")

OnAutoDisabled = Callable[[Sequence[AutoDisabled]], Awaitable[None]]
_RECORD_BATCH = 1000
_RELISTEN_DELAY = 5.0  # seconds between tries to listen again; polling goes on meanwhile


class Dispatcher:
    """Delivers everything in the outbox, with retries, for one process."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        settings: Settings,
        clock: Clock,
        *,
        on_auto_disabled: OnAutoDisabled | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._sender = sender
        self._settings = settings
        self._clock = clock
        self._on_auto_disabled = on_auto_disabled
        self._owner = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()
        self._records: asyncio.Queue[AttemptRecord] = asyncio.Queue()
        self._in_flight: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._loops) and not any(task.done() for task in self._loops)

    def wake(self) -> None:
        """New work may be waiting: claim now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="tocsin-claim"),
            asyncio.create_task(self._record_loop(), name="tocsin-record"),
        ]
        if isinstance(self._store, Notifier):
            listen = self._listen_loop(self._store)
            self._loops.append(asyncio.create_task(listen, name="tocsin-listen"))
        prune = retention.prune_loop(
            self._store,
            self._clock,
            owner=self._owner,
            retention_days=self._settings.retention_days,
        )
        self._loops.append(asyncio.create_task(prune, name="tocsin-prune"))

    async def stop(self) -> None:
        """Stop claiming, let requests in flight finish briefly, write their records."""
        self._loops[0].cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loops[0]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._records.join(), 10)
        for loop in self._loops[1:]:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        self._loops = []

    # claiming -------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                claims = await self._store.claim(self._limits(), self._clock.now())
            except StoreError:
                log.exception("claiming deliveries failed; retrying shortly")
                claims = []
            for claim in claims:
                self._start(claim)
            if not claims:
                await self._idle()

    def _limits(self) -> ClaimLimits:
        return ClaimLimits(
            owner=self._owner,
            max_in_flight=self._settings.max_in_flight,
            in_flight=dict(self._in_flight),
            lease_margin=self._settings.lease_margin,
        )

    async def _idle(self) -> None:
        """Wait for a wake-up, the next retry coming due, or the poll interval."""
        timeout = self._settings.poll_interval
        with contextlib.suppress(StoreError):
            due = await self._store.next_due()
            # A due time already past belongs to an integration with no free slot:
            # the request that frees one wakes us, so there is nothing to poll for.
            if due is not None and due > self._clock.now():
                timeout = min(timeout, due - self._clock.now())
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel of stop().
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _listen_loop(self, notifier: Notifier) -> None:
        """Wake the claim loop whenever another process (or this one) queues work."""
        while True:
            try:
                await notifier.wait_for_work()
            except StoreError:
                log.warning("cannot listen for new work; polling until it can", exc_info=True)
                await asyncio.sleep(_RELISTEN_DELAY)
                continue
            self.wake()

    def _start(self, claim: Claim) -> None:
        self._in_flight[claim.integration.id] += 1
        task = asyncio.create_task(self._deliver(claim))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # sending ----------------------------------------------------------------

    async def _deliver(self, claim: Claim) -> None:
        delivery, integration = claim.delivery, claim.integration
        try:
            outcome = await self._sender.send(
                integration.settings,
                secrets=integration.signing_secrets(self._clock.now()),
                webhook_id=delivery.webhook_id,
                body=delivery.body,
            )
            status, next_at = retry.decide(delivery.failures, outcome.ok, self._clock.now())
            record = AttemptRecord(
                delivery_id=delivery.id,
                integration_id=integration.id,
                outcome=outcome,
                status=status,
                next_attempt_at=next_at,
            )
            self._records.put_nowait(record)
        finally:
            self._in_flight[integration.id] -= 1
            if self._in_flight[integration.id] <= 0:
                del self._in_flight[integration.id]
            self.wake()

    # recording --------------------------------------------------------------

    async def _record_loop(self) -> None:
        while True:
            batch = [await self._records.get()]
            while len(batch) < _RECORD_BATCH and not self._records.empty():
                batch.append(self._records.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._records.task_done()

    async def _write(self, batch: list[AttemptRecord]) -> None:
        try:
            disabled = await self._store.record_attempts(batch, self._clock.now())
        except Exception:
            # Whatever failed, the recording loop must live on: the leases expire and the
            # deliveries are sent again, so at-least-once holds.
            log.exception("recording %d attempts failed", len(batch))
            return
        if self._metrics is not None:
            self._metrics.attempted(batch)
        for record in batch:
            if record.outcome.error:
                log.warning("delivery %s: %s", record.delivery_id, record.outcome.error)
        if disabled and self._on_auto_disabled is not None:
            try:
                await self._on_auto_disabled(disabled)
            except TocsinError:
                log.exception("notifying about auto-disabled integrations failed")
        self.wake()
