"""The trigger consumer: reads the event stream through `Store.consume`, one batch per
call, and commits what the pure evaluator (tocsin.triggers) decides in that transaction.

The evaluator's state — windows, attacks in progress, open vulnerabilities — is the
consumer's state in the store, committed with its position: a `kill -9` at any moment
resumes from the last commit, counting neither lost nor doubled. With several processes
on one PostgreSQL database, the consumer row is taken `FOR UPDATE SKIP LOCKED`: one
process evaluates a batch, the others skip the call, so a crossing fires once.

The trigger definitions are read before a call (a Snapshot, kept a few seconds). They
are never older than what they are evaluated against: a batch holding a trigger change
the snapshot does not show, or a state evaluated (by another process) with newer
definitions than the snapshot's, makes the handler raise Stale; the transaction rolls
back and the call is made again with definitions read afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tocsin import formats
from tocsin.clock import Clock
from tocsin.models import Client, EventType, StreamEvent
from tocsin.scheduler import Job
from tocsin.store import Store
from tocsin.store.stream import Handler, Reaction
from tocsin.triggers.evaluator import Evaluator
from tocsin.triggers.reactions import Snapshot, react

log = logging.getLogger("tocsin.triggers")

CONSUMER = "triggers"
BATCH = 5000  # events read per transaction
_TRIGGER_CHANGES = frozenset({"trigger_created", "trigger_changed", "trigger_deleted"})
_SNAPSHOT_CHANGES = _TRIGGER_CHANGES | {
    "application_created",
    "application_changed",
    "application_deleted",
    "client_changed",
}
POLL = 0.2  # seconds between reads of the stream when it was read to its end
SNAPSHOT_TTL = 5.0  # seconds a snapshot serves at most (names in notifications)


class Stale(Exception):  # noqa: N818 - a signal to retry, not a failure
    """The batch holds a trigger change the snapshot was read before."""


def reflects(snapshot: Snapshot, facts: Mapping[str, Any]) -> bool:
    """Whether a trigger change event's result is in the snapshot."""
    changed = facts.get("trigger")
    if not isinstance(changed, Mapping):
        return True
    known = {trigger.id: trigger for trigger in snapshot.triggers}
    found = known.get(changed.get("id"))  # type: ignore[arg-type]
    if facts.get("kind") == "trigger_deleted":
        return found is None
    updated_at = changed.get("updated_at")
    return (
        found is not None
        and isinstance(updated_at, int | float)
        and (found.updated_at >= updated_at)
    )


def _unseen(snapshot: Snapshot, facts: Mapping[str, Any]) -> bool:
    return facts.get("kind") in _TRIGGER_CHANGES and not reflects(snapshot, facts)


def _changes(events: Sequence[StreamEvent]) -> list[Mapping[str, Any]]:
    return [
        event.facts
        for event in events
        if event.type is EventType.SYSTEM and event.facts.get("kind") in _SNAPSHOT_CHANGES
    ]


class TriggerConsumer:
    """Evaluates every client's triggers over the stream; one per process."""

    def __init__(self, store: Store, clock: Clock, settings_of: Any, *, batch: int = BATCH) -> None:
        self._store = store
        self._clock = clock
        self._settings_of = settings_of  # Client -> formats.NotifySettings
        self._batch = batch
        self._snapshot: Snapshot | None = None
        self._snapshot_at = 0.0
        # The evaluator as the last call left it, keyed by the state it dumped: the next
        # call is handed that state back unless the transaction failed or another process
        # moved on, and then the state is read afresh.
        self._cached: tuple[bytes, Evaluator] | None = None

    async def run_once(self) -> int | None:
        """One batch; how many events were read (None: another process holds the consumer)."""
        for attempt in range(3):
            snapshot = await self._current()
            now = self._clock.now()
            # Once read afresh, definitions still older than the state's are of triggers
            # deleted since (the stream has not reached their deletion yet): go on.
            handler = self._handler(snapshot, now, check_versions=attempt == 0)
            try:
                return await self._store.consume(CONSUMER, handler, limit=self._batch, now=now)
            except Stale:
                self._snapshot = None
        return 0

    def job(self, every: float = POLL) -> Job:
        """The scheduler's job: batches until the stream is read to its end."""
        return Job(name=CONSUMER, every=every, run=self.drain)

    async def drain(self) -> int:
        """Read batches while they come full; how many events were read."""
        total = 0
        while True:
            read = await self.run_once()
            total += read or 0
            if read is None or read < self._batch:
                return total

    async def _current(self) -> Snapshot:
        now = self._clock.now()
        if self._snapshot is None or now - self._snapshot_at >= SNAPSHOT_TTL:
            self._snapshot = await load_snapshot(self._store, self._settings_of)
            self._snapshot_at = now
        return self._snapshot

    def _handler(self, snapshot: Snapshot, now: float, *, check_versions: bool) -> Handler:
        def handle(events: Sequence[StreamEvent], state: bytes) -> Reaction:
            changes = _changes(events)
            if any(_unseen(snapshot, facts) for facts in changes):
                raise Stale
            evaluator = self._evaluator(state)
            if check_versions and evaluator.behind(snapshot.triggers):
                raise Stale
            if changes:
                self._snapshot = None  # names may have changed: read again next call
            firings = evaluator.run(snapshot.triggers, events, now)
            new_state = evaluator.dump()
            self._cached = (new_state, evaluator)
            outcome = react(firings, snapshot, now)
            return Reaction(state=new_state, events=outcome.events, denylist=outcome.denylist)

        return handle

    def _evaluator(self, state: bytes) -> Evaluator:
        cached = self._cached
        if cached is not None and cached[0] == state:
            return cached[1]
        return Evaluator(state)


async def load_snapshot(store: Store, settings_of: Any) -> Snapshot:
    """Every trigger, and each client's notification settings and application names."""
    clients: list[Client] = await store.list_clients()
    settings: dict[int, formats.NotifySettings] = {c.id: settings_of(c) for c in clients}
    applications = {
        c.id: {a.id: a.name for a in await store.list_applications(c.id)} for c in clients
    }
    return Snapshot(
        triggers=await store.all_triggers(), settings=settings, applications=applications
    )
