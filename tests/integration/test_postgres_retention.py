"""Retention on PostgreSQL shared by several processes: pruned once, through its indexes.

Each PostgresStore here has a pool of its own, as a tocsin process would; they race
with asyncio.gather. What one store prunes alone is the contract of
tests/unit/test_store_retention.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests import pg
from tests.unit.test_store_contract import BOOT, T0, VAULT, event, settings
from tests.unit.test_store_retention import BEFORE, DAY, NOW, deny, finish
from tocsin.models import Client, DeliveryStatus
from tocsin.store import Pruned, Turn, queries
from tocsin.store.postgres import PostgresStore

PROCESSES = 4
LENGTH = 300.0
DELIVERED = DeliveryStatus.DELIVERED


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with pg.database() as url:
        yield url


@pytest.fixture
async def stores(dsn: str) -> AsyncIterator[list[PostgresStore]]:
    made = [PostgresStore(dsn, vault=VAULT) for _ in range(PROCESSES)]
    for store in made:
        await store.ping()  # every pool open: the race below is between transactions
    yield made
    for store in made:
        await store.close()


@pytest.fixture
async def client(stores: list[PostgresStore]) -> Client:
    store = stores[0]
    assert await store.bootstrap(BOOT, T0)
    [found] = await store.list_clients()
    await store.create_integration(found.id, settings(), "whsec_test", T0)
    return found


async def age(store: PostgresStore, client: Client, deliveries: int, *, day: int) -> None:
    """History of T0 + `day`: finished deliveries (two attempts each), an unqueued event
    and two denylist entries that expired then."""
    start = T0 + day * DAY
    for n in range(deliveries):
        await finish(store, client, start + n, DELIVERED)
    await store.ingest(client.id, [event(0, notify=False)], start)
    for n in range(2):
        await deny(store, client, f"198.51.{day}.{n}", expire_at=start)


async def prune_turn(store: PostgresStore, owner: str, now: float) -> Pruned | None:
    """What a process's prune loop does in one turn: batches of 5 until nothing goes."""
    turn = Turn(owner=owner, length=LENGTH)
    total: Pruned | None = None
    while (pruned := await store.prune(BEFORE, now, limit=5, turn=turn)) is not None:
        total = pruned if total is None else total + pruned
        if not pruned.rows:
            break
    return total


async def history(dsn: str) -> tuple[int, int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM attempts), "
            "(SELECT count(*) FROM events), (SELECT count(*) FROM denylist)"
        )
    finally:
        await conn.close()
    assert row is not None
    return (row[0], row[1], row[2], row[3])


async def test_processes_pruning_at_once_delete_each_row_once_in_one_process_per_turn(
    dsn: str, stores: list[PostgresStore], client: Client
) -> None:
    for interval, deliveries in enumerate((23, 7, 11)):
        await age(stores[interval % PROCESSES], client, deliveries, day=interval)
        now = NOW + interval * LENGTH

        turns = await asyncio.gather(
            *(prune_turn(store, f"process-{n}", now) for n, store in enumerate(stores))
        )

        workers = [pruned for pruned in turns if pruned is not None]
        assert workers == [
            Pruned(
                deliveries=deliveries, attempts=2 * deliveries, events=deliveries + 1, denylist=2
            )
        ], turns
        assert await history(dsn) == (0, 0, 0, 0)
        # Within the turn every other process is still told no, whatever it asks.
        idle = [n for n, pruned in enumerate(turns) if pruned is None]
        assert await prune_turn(stores[idle[0]], "late", now + LENGTH - 1) is None


async def test_a_process_finding_the_turn_taken_is_told_no_without_waiting(
    dsn: str, stores: list[PostgresStore], client: Client
) -> None:
    await age(stores[0], client, 3, day=0)
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():  # a process in the middle of its prune transaction
            await holder.execute("SELECT * FROM maintenance WHERE task = 'prune' FOR UPDATE")
            async with asyncio.timeout(2):
                assert await prune_turn(stores[1], "process-1", NOW) is None
            assert await history(dsn) == (3, 6, 4, 2)
    finally:
        await holder.close()

    assert await prune_turn(stores[1], "process-1", NOW) == Pruned(
        deliveries=3, attempts=6, events=4, denylist=2
    )


async def test_a_delivery_another_transaction_holds_is_skipped_until_it_is_free(
    dsn: str, stores: list[PostgresStore], client: Client
) -> None:
    await age(stores[0], client, 3, day=0)
    turn = Turn(owner="process-0", length=LENGTH)
    resend = await asyncpg.connect(dsn)
    try:
        async with resend.transaction():  # say, a re-send of the oldest, not yet committed
            await resend.execute("SELECT * FROM deliveries WHERE id = 1 FOR UPDATE")
            async with asyncio.timeout(2):
                pruned = await stores[0].prune(BEFORE, NOW, limit=10, turn=turn)
            assert pruned is not None
            assert (pruned.deliveries, pruned.attempts) == (2, 4)
    finally:
        await resend.close()

    again = await stores[0].prune(BEFORE, NOW + 1, limit=10, turn=turn)
    assert again == Pruned(deliveries=1, attempts=2)
    assert await history(dsn) == (0, 0, 0, 0)


async def test_pruning_reads_only_what_it_deletes_through_the_indexes(dsn: str) -> None:
    """With a log of 60 days (2 % of it waiting), each statement walks its indexes."""
    await pg.require()
    conn = await asyncpg.connect(dsn)
    try:
        for statement in SIXTY_DAYS_OF_HISTORY:
            await conn.execute(statement, NOW)
        await conn.execute("ANALYZE")
        sql = queries.load("postgres")
        plans = {
            name: "\n".join(
                row[0] for row in await conn.fetch(f"EXPLAIN {sql[name]}", BEFORE, 1000)
            )
            for name in ("prune_deliveries", "prune_events", "prune_denylist")
        }
    finally:
        await conn.close()
    assert "deliveries_finished" in plans["prune_deliveries"], plans["prune_deliveries"]
    assert "attempts_delivery" in plans["prune_deliveries"], plans["prune_deliveries"]
    assert "events_created" in plans["prune_events"], plans["prune_events"]
    assert "denylist_expire" in plans["prune_denylist"], plans["prune_denylist"]
    for plan in plans.values():
        # Walked in index order and stopped after a batch: nothing read whole, nothing sorted.
        assert "Sort" not in plan, plan
        for table in ("deliveries", "attempts", "events", "denylist"):
            assert f"Seq Scan on {table}" not in plan, plan


# 50,000 deliveries over 60 days before $1 (every 50th still waiting), an attempt each,
# 50,000 event groups, 200 of them queued in the outbox, and 5,000 denylist entries.
SIXTY_DAYS_OF_HISTORY = [
    """
INSERT INTO deliveries (webhook_id, integration_id, client_id, status, notification_count, body,
    next_attempt_at, created_at, updated_at)
SELECT 'msg_' || n, 1, 1,
    CASE WHEN n % 50 = 0 THEN 'retrying' WHEN n % 7 = 0 THEN 'failed' ELSE 'delivered' END,
    1, '\\x5b5d'::bytea, CASE WHEN n % 50 = 0 THEN $1::double precision END,
    $1::double precision - 60 * 86400 + n * 103.68, $1::double precision - 60 * 86400 + n * 103.68
FROM generate_series(1, 50000) AS n
""",
    """
INSERT INTO attempts (delivery_id, integration_id, number, started_at, duration_ms, ok,
    request_size)
SELECT id, 1, 1, updated_at, 10, true, 2 FROM deliveries WHERE $1::double precision > 0
""",
    """
INSERT INTO events (client_id, type, count, notify, notifications, created_at)
SELECT 1, 'hit', 1, true, '\\x7b7d'::bytea, $1::double precision - 60 * 86400 + n * 103.68
FROM generate_series(1, 50000) AS n
""",
    """
INSERT INTO outbox (integration_id, event_id, count)
SELECT 1, id, 1 FROM events WHERE $1::double precision > 0 ORDER BY id DESC LIMIT 200
""",
    """
INSERT INTO clients (id, name, cloud, console_url, created_at)
VALUES (1, 'Acme', 'EU', '', $1::double precision)
""",
    """
INSERT INTO denylist (client_id, ip, reason, application, created_at, expire_at, created_by)
SELECT 1, '198.51.100.' || n % 250, 'x', NULL, 0, $1::double precision - 60 * 86400 + n * 1036.8,
    'test'
FROM generate_series(1, 5000) AS n
""",
]
