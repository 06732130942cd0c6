"""The dispatcher: claims due work, sends it, records what happened.

Three small loops share one process:
- `_claim_loop` leases work whenever woken (new events, a freed slot, a retry
  coming due) and starts one task per delivery;
- each `_deliver` task sends one request and queues its record;
- `_record_loop` writes queued records in batches, one transaction per batch.
On a store that hears other processes queue work (`Notifier`: PostgreSQL's
LISTEN/NOTIFY), `_listen_loop` wakes the claim loop when they do. Periodic work that is
not delivery (retention, triggers) runs in the process's scheduler (`tocsin.scheduler`).
A slow integration only ever holds its own `max_in_flight` slots.

Claiming waits for a commit (an fsync on SQLite), a request for a round trip; for an
integration whose last request succeeded quickly the claim loop therefore claims ahead,
up to `PREFETCH` times `max_in_flight` deliveries more, kept leased and ready, so that
a request that ends starts the next one at once. Requests in flight stay bounded by
`max_in_flight`; an integration that is slow, fails or has not yet succeeded gets no
claims ahead. A change to an integration made in this process reaches its ready claims
at once (`changed`): disabled or deleted, they are dropped; changed, they carry the new
settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import replace

from tocsin import retry
from tocsin.clock import Clock
from tocsin.config import Settings
from tocsin.delivery.sender import Sender
from tocsin.errors import StoreError
from tocsin.metrics import Metrics
from tocsin.models import AttemptRecord, Claim, Integration
from tocsin.store import AutoDisabled, ClaimLimits, Notifier, Store
from tocsin.store.base import Audit, lease_seconds

log = logging.getLogger("tocsin.delivery")

_RECORD_BATCH = 1000
_RELISTEN_DELAY = 5.0  # seconds between tries to listen again; polling goes on meanwhile
# Deliveries claimed ahead per healthy integration, in units of max_in_flight: enough to
# keep its slots busy while the next claim waits its turn on the store (a commit, and on
# SQLite the GIL with ingestion); 8 against 2 gave section `single` of `make bench` about
# a fifth more (docs/performance.md). The unsent-bytes budget bounds what it holds.
PREFETCH = 8
_QUICK_MS = 250.0  # a request answered within this is quick enough to claim ahead for
_UNSENT_BUDGET = 32 << 20  # bytes of claimed bodies not yet written, above which none is claimed


class Dispatcher:
    """Delivers everything in the outbox, with retries, for one process."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        settings: Settings,
        clock: Clock,
        *,
        audit_auto_disabled: Audit[AutoDisabled] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._sender = sender
        self._settings = settings
        self._clock = clock
        # Renders the system notification of an integration the store auto-disables, for
        # the store to write in the transaction that disables it.
        self._audit_auto_disabled = audit_auto_disabled
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()
        self._records: asyncio.Queue[AttemptRecord] = asyncio.Queue()
        self._in_flight: Counter[int] = Counter()  # requests running, per integration
        self._ready: dict[int, deque[Claim]] = {}  # claimed ahead, waiting for a slot
        # integration -> ms its last request took to succeed; absent: failed or unknown
        self._answered: dict[int, float] = {}
        self._changes: Counter[int] = Counter()  # changes per integration, in this process
        self._unsent = 0  # bytes of claimed bodies not yet written to their receivers
        self._after = 0  # the integration the last claim ended with: the next starts after it
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._loops) and not any(task.done() for task in self._loops)

    def wake(self) -> None:
        """New work may be waiting: claim now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="tocsin-claim"),
            asyncio.create_task(self._record_loop(), name="tocsin-record"),
        ]
        if isinstance(self._store, Notifier):
            listen = self._listen_loop(self._store)
            self._loops.append(asyncio.create_task(listen, name="tocsin-listen"))

    async def stop(self) -> None:
        """Stop claiming, let requests in flight finish briefly, write their records.

        Ready claims are not sent: their leases expire and they are claimed again.
        """
        self._stopping = True
        for ready in self._ready.values():
            self._let_go(ready)
        self._ready.clear()
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
            if not await self._claim():
                await self._idle()

    async def _claim(self) -> int:
        """Claim what the free slots allow and start it; how many deliveries were claimed.

        A method of its own so that no claim outlives it here: once sent, a request's
        body is held by nothing (see `_deliver`).
        """
        room = _UNSENT_BUDGET - self._unsent
        if room <= 0:
            return 0  # a body that gets written frees room and wakes us
        try:
            claims = await self._store.claim(self._limits(room), self._clock.now())
        except StoreError:
            log.exception("claiming deliveries failed; retrying shortly")
            return 0
        for claim in claims:
            self._unsent += len(claim.delivery.body)
            self._start(claim)
        if claims:
            self._after = claims[-1].integration.id
        return len(claims)

    def _limits(self, room: int) -> ClaimLimits:
        """Running and ready deliveries hold a slot each; healthy integrations claim ahead.

        Integrations not proven by an answer get one request at a time. New deliveries
        stop at `room` bytes of bodies, and while less than half the budget is left
        nobody claims ahead: what room there is goes to requests that can start now, each
        integration in its turn.
        """
        held: Counter[int] = Counter(self._in_flight)
        for integration_id, ready in self._ready.items():
            held[integration_id] += len(ready)
        most = self._settings.max_in_flight
        return ClaimLimits(
            owner=self.owner,
            max_in_flight=most,
            in_flight=held,
            lease_margin=self._settings.lease_margin,
            ahead=self._ahead(most * PREFETCH) if 2 * room >= _UNSENT_BUDGET else {},
            proven=frozenset(self._answered),
            max_bytes=room,
            after=self._after,
        )

    def _ahead(self, count: int) -> dict[int, int]:
        """Claims ahead for each integration whose last request succeeded quickly."""
        return {i: count for i, took in self._answered.items() if took < _QUICK_MS}

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
        """Send now if the integration has a free slot, else keep the claim ready."""
        integration_id = claim.integration.id
        if self._in_flight[integration_id] >= self._settings.max_in_flight:
            self._ready.setdefault(integration_id, deque()).append(claim)
            return
        self._in_flight[integration_id] += 1
        task = asyncio.create_task(self._deliver(claim))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def changed(self, integration: Integration, *, gone: bool) -> None:
        """An integration was changed in this process: update or drop its ready claims.

        Dropped claims stay leased until their lease expires; a disabled or deleted
        integration's deliveries are cancelled in the database meanwhile.
        """
        self._answered.pop(integration.id, None)  # its receiver may be another one now
        self._changes[integration.id] += 1  # answers to requests sent before prove nothing
        if gone or not integration.settings.enabled:
            self._let_go(self._ready.pop(integration.id, ()))
            return
        ready = self._ready.get(integration.id)
        if ready:
            self._ready[integration.id] = deque(
                replace(claim, integration=integration) for claim in ready
            )

    def _start_ready(self, integration_id: int) -> None:
        """A slot came free: start the oldest ready claim whose lease still covers a request.

        One whose lease ran short (it waited behind slow requests) is let go: the lease
        expires and the delivery is claimed again, so no request outlives its lease.
        """
        if self._stopping:
            return
        ready = self._ready.get(integration_id)
        now = self._clock.now()
        while ready:
            claim = ready.popleft()
            if claim.lease_until - now >= lease_seconds(claim.integration, 0.0):
                self._start(claim)
                break
            self._let_go([claim])
        if not ready:
            self._ready.pop(integration_id, None)

    def _let_go(self, claims: Iterable[Claim]) -> None:
        """Claims that will not be sent here: their bodies no longer count as unsent."""
        for claim in claims:
            self._written(len(claim.delivery.body))

    def _written(self, size: int) -> None:
        """A claimed body was written (or never will be): room for more, if claiming waits."""
        waiting = self._unsent >= _UNSENT_BUDGET
        self._unsent -= size
        if waiting and self._unsent < _UNSENT_BUDGET:
            self.wake()

    # sending ----------------------------------------------------------------

    async def _deliver(self, claim: Claim) -> None:
        integration, delivery = claim.integration, claim.delivery
        delivery_id, failures = delivery.id, delivery.failures
        changes = self._changes[integration.id]
        written = _Once(functools.partial(self._written, len(delivery.body)))
        try:
            sending = self._sender.send(
                integration.settings,
                secrets=integration.signing_secrets(self._clock.now()),
                webhook_id=delivery.webhook_id,
                body=delivery.body,
                on_written=written,
            )
            # From here only the request holds the body, and it lets go once the body is
            # written: a receiver that never answers does not keep bodies in memory.
            del claim, delivery
            outcome = await sending
            if not outcome.ok:
                self._answered.pop(integration.id, None)
            elif changes == self._changes[integration.id]:  # the integration is as it was sent
                self._answered[integration.id] = outcome.duration_ms
            status, next_at = retry.decide(failures, outcome.ok, self._clock.now())
            record = AttemptRecord(
                delivery_id=delivery_id,
                integration_id=integration.id,
                outcome=outcome,
                status=status,
                next_attempt_at=next_at,
            )
            self._records.put_nowait(record)
        finally:
            written()  # if the body was never written in full
            self._in_flight[integration.id] -= 1
            if self._in_flight[integration.id] <= 0:
                del self._in_flight[integration.id]
            self._start_ready(integration.id)
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
            disabled = await self._store.record_attempts(
                batch, self._clock.now(), audit=self._audit_auto_disabled
            )
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
        for found in disabled:
            self.changed(found.integration, gone=True)
        self.wake()


class _Once:
    """Calls `action` the first time it is called, and never again."""

    __slots__ = ("_action",)

    def __init__(self, action: Callable[[], object]) -> None:
        self._action: Callable[[], object] | None = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()
