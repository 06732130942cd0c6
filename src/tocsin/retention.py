"""Delivery-log retention: what is older than `TOCSIN_RETENTION_DAYS` is pruned.

Every delivering process's scheduler runs `prune_job`, and the store lets one of them prune per
turn (`store.Turn`): every `PRUNE_EVERY` seconds the first process to ask takes the
turn and deletes, in transactions of `PRUNE_BATCH` rows, the finished deliveries and
their attempts, the events and the expired denylist entries that are past retention;
the others are told it is not their turn. Waiting work is never pruned.
"""

from __future__ import annotations

import logging

from tocsin.clock import Clock
from tocsin.scheduler import Job
from tocsin.store import Pruned, Store, Turn

log = logging.getLogger("tocsin.retention")

DAY = 86_400.0
PRUNE_EVERY = 300.0  # seconds between turns, and how long a turn lasts
PRUNE_BATCH = 1000  # rows of each kind per transaction: no lock is held for long


def prune_job(store: Store, clock: Clock, *, owner: str, retention_days: float) -> Job:
    """The scheduler's job pruning the log every `PRUNE_EVERY` seconds, in this process's turns."""
    turn = Turn(owner=owner, length=PRUNE_EVERY)
    return Job(
        name="prune",
        every=PRUNE_EVERY,
        run=lambda: prune_log(store, clock, turn, retention_days),
    )


async def prune_log(
    store: Store, clock: Clock, turn: Turn, retention_days: float, *, batch: int = PRUNE_BATCH
) -> Pruned | None:
    """Prune what is past retention, batch after batch, until one deletes nothing.

    Returns the total, or None when it is another process's turn.
    """
    before = clock.now() - retention_days * DAY
    total: Pruned | None = None
    while (pruned := await store.prune(before, clock.now(), limit=batch, turn=turn)) is not None:
        total = pruned if total is None else total + pruned
        if not pruned.rows:
            break
    if total is not None and total.rows:
        log.info(
            "pruned what is older than %g days: %d deliveries with %d attempts, "
            "%d event groups, %d expired denylist entries",
            retention_days,
            total.deliveries,
            total.attempts,
            total.events,
            total.denylist,
        )
    return total
