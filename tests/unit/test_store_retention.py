"""The Store contract for retention: what `prune` deletes, what it keeps, and whose turn it is.

Runs on SqliteStore and PostgresStore through the `store` fixture of
test_store_contract.py. Pruning happens at NOW, 40 days after T0, with a retention of
30 days: what finished before BEFORE (T0 + 10 days) goes. The last tests upgrade a
SQLite database from migration 2 and read SQLite's query plans.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from tests.unit import test_store_contract as contract
from tests.unit.sqlite_old import old_delivery, old_ingest
from tests.unit.test_store_contract import (
    HOUR,
    T0,
    VAULT,
    claim,
    claim_one,
    event,
    events,
    hook,
    log,
    numbers,
    record,
    statuses,
)
from tocsin.models import Claim, Client, DeliveryStatus, DenylistEntry, Integration
from tocsin.store import Pruned, Store, Turn, queries
from tocsin.store.sqlite import SqliteStore

# The contract suite's fixtures: `store` is a migrated sqlite or postgres store,
# `client` the bootstrapped client of its administrator.
store = contract.store
client = contract.client

DAY = 86_400.0
NOW = T0 + 40 * DAY
BEFORE = NOW - 30 * DAY
TURN = Turn(owner="worker-1", length=300.0)
OTHER = Turn(owner="worker-2", length=300.0)
DELIVERED, FAILED = DeliveryStatus.DELIVERED, DeliveryStatus.FAILED
RETRYING = DeliveryStatus.RETRYING


# helpers ---------------------------------------------------------------------


async def prune(
    store: Store, now: float = NOW, *, limit: int = 100, turn: Turn = TURN
) -> Pruned | None:
    return await store.prune(BEFORE, now, limit=limit, turn=turn)


async def finish(store: Store, client: Client, at: float, status: DeliveryStatus) -> Claim:
    """A delivery of one new event, made at `at` and finished then after two attempts."""
    await store.ingest(client.id, [event(0)], at)
    claimed = await claim_one(store, at)
    first = record(claimed, at, ok=False, next_at=at)
    last = record(claimed, at, ok=status is DELIVERED, status=status)
    await store.record_attempts([first, last], at)
    return claimed


async def cancel(store: Store, client: Client, integration: Integration, at: float) -> Claim:
    """A delivery that failed once and was cancelled at `at` by disabling its integration."""
    await store.ingest(client.id, [event(7)], at)
    claimed = await claim_one(store, at)
    await store.record_attempts([record(claimed, at, ok=False, next_at=at + 5)], at)
    await store.set_enabled(client.id, integration.id, enabled=False, now=at)
    await store.set_enabled(client.id, integration.id, enabled=True, now=at)
    return claimed


async def deny(store: Store, client: Client, ip: str, expire_at: float) -> DenylistEntry:
    return await store.add_denylist(
        client.id,
        ip=ip,
        reason="scanner",
        application=None,
        expire_at=expire_at,
        created_by="Admin <admin@acme.test>",
        now=T0,
    )


def ids(claims: list[Claim]) -> list[int]:
    return [claimed.delivery.id for claimed in claims]


# what goes ---------------------------------------------------------------------


async def test_finished_deliveries_past_retention_go_with_their_attempts(
    store: Store, client: Client
) -> None:
    integration = await hook(store, client)
    old = [await finish(store, client, T0, DELIVERED), await finish(store, client, T0, FAILED)]
    old.append(await cancel(store, client, integration, T0 + 1))
    recent = [await finish(store, client, BEFORE + 1, status) for status in (DELIVERED, FAILED)]
    # Made long ago, failed for good only lately: judged by when it finished.
    await store.ingest(client.id, [event(9)], T0)
    late = await claim_one(store, T0)
    await store.record_attempts([record(late, T0, ok=False, next_at=BEFORE)], T0)
    await store.record_attempts([record(late, BEFORE + 2, ok=False, status=FAILED)], BEFORE + 2)

    pruned = await prune(store)

    assert pruned == Pruned(deliveries=3, attempts=2 + 2 + 1, events=4)
    kept = await log(store, client, integration)
    assert [delivery.id for delivery in kept] == sorted([*ids(recent), late.delivery.id])[::-1]
    assert [len(delivery.attempts) for delivery in kept] == [2, 2, 2]
    for gone in ids(old):
        assert await store.get_delivery(client.id, gone) is None
    assert await prune(store) == Pruned()


async def test_waiting_work_stays_whatever_its_age(store: Store, client: Client) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    pending = await claim_one(store, T0)  # leased by a process that died
    await store.ingest(client.id, [event(2)], T0)
    retrying = await claim_one(store, T0)
    await store.record_attempts([record(retrying, T0, ok=False, next_at=T0 + 60)], T0)
    await store.ingest(client.id, events(2, start=3), T0)  # queued, in no delivery yet

    # Only the events that are now in deliveries go: a delivery holds its own body.
    assert await prune(store) == Pruned(events=2)

    kept = await log(store, client, integration)
    assert statuses(kept) == [DeliveryStatus.RETRYING, DeliveryStatus.PENDING]
    assert [len(delivery.attempts) for delivery in kept] == [1, 0]
    assert await store.queued_notifications(integration.id) == 2
    claims = await claim(store, NOW)
    assert ids(claims)[:2] == [pending.delivery.id, retrying.delivery.id]
    assert [numbers(c.delivery.body) for c in claims] == [[1], [2], [3, 4]]


async def test_events_past_retention_go_unless_they_are_queued(
    store: Store, client: Client
) -> None:
    await store.ingest(client.id, [event(1)], T0)  # no integration yet: stored, never queued
    integration = await hook(store, client)
    await store.ingest(client.id, [event(2, notify=False)], T0)
    await store.ingest(client.id, [event(3)], T0)
    await store.ingest(client.id, [event(4)], BEFORE + 1)

    assert await prune(store) == Pruned(events=2)

    assert await store.queued_notifications(integration.id) == 2
    assert numbers((await claim_one(store, NOW)).delivery.body) == [3, 4]


async def test_denylist_entries_go_once_expired_for_longer_than_the_retention(
    store: Store, client: Client
) -> None:
    await deny(store, client, "198.51.100.1", expire_at=BEFORE - 1)
    lately = await deny(store, client, "198.51.100.2", expire_at=BEFORE + 1)
    active = await deny(store, client, "198.51.100.3", expire_at=NOW + DAY)

    assert await prune(store) == Pruned(denylist=1)

    assert await store.list_denylist(client.id, NOW) == [active]
    assert await store.list_denylist(client.id, BEFORE) == [lately, active]


async def test_one_call_prunes_at_most_limit_of_each_kind_oldest_first(
    store: Store, client: Client
) -> None:
    integration = await hook(store, client)
    made = [await finish(store, client, T0 + n * HOUR, DELIVERED) for n in range(5)]
    for n in range(3):
        await deny(store, client, f"198.51.100.{n}", expire_at=T0 + n)

    first = await prune(store, limit=2)

    assert first == Pruned(deliveries=2, attempts=4, events=2, denylist=2)
    kept = await log(store, client, integration)
    assert [delivery.id for delivery in kept] == ids(made[2:])[::-1]
    assert await prune(store, limit=2) == Pruned(deliveries=2, attempts=4, events=2, denylist=1)
    assert await prune(store, limit=2) == Pruned(deliveries=1, attempts=2, events=1)
    assert await prune(store, limit=2) == Pruned()
    assert await log(store, client, integration) == []


# whose turn -----------------------------------------------------------------------


async def test_another_process_is_told_no_until_the_turn_ends(store: Store, client: Client) -> None:
    integration = await hook(store, client)
    await finish(store, client, T0, DELIVERED)
    assert await prune(store, NOW, turn=TURN) == Pruned(deliveries=1, attempts=2, events=1)

    second = await finish(store, client, T0 + 1, DELIVERED)
    assert await prune(store, NOW + 10, turn=OTHER) is None
    assert await store.get_delivery(client.id, second.delivery.id) is not None
    # The holder goes on working in its turn (the next batch, say).
    assert await prune(store, NOW + 10, turn=TURN) == Pruned(deliveries=1, attempts=2, events=1)

    await finish(store, client, T0 + 2, DELIVERED)
    assert await prune(store, NOW + 299, turn=OTHER) is None
    assert await prune(store, NOW + 300, turn=OTHER) == Pruned(deliveries=1, attempts=2, events=1)
    assert await prune(store, NOW + 301, turn=TURN) is None
    assert await prune(store, NOW + 600, turn=TURN) == Pruned()
    assert await log(store, client, integration) == []


# SQLite: upgrading, and the indexes ----------------------------------------------------


async def test_a_sqlite_database_at_migration_2_upgrades_keeping_its_queued_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    every = queries.migrations("sqlite")
    assert [version for version, _ in every][:3] == [1, 2, 3]
    with monkeypatch.context() as patched:
        patched.setattr(queries, "migrations", lambda _: [m for m in every if m[0] <= 2])
        old = SqliteStore(path, vault=VAULT, synchronous="NORMAL")
        assert await old.migrate() == [1, 2]
        assert await old.bootstrap(contract.BOOT, T0)
        acme = await client_of(old)
        integration = await hook(old, acme)
        old_ingest(path, acme.id, [event(0)], T0)
        delivered = old_delivery(path, integration, status=DELIVERED, at=T0, attempts=[False, True])
        old_ingest(path, acme.id, [event(1)], T0)
        retrying = old_delivery(
            path, integration, status=RETRYING, at=T0, attempts=[False], next_at=T0 + 60
        )
        old_ingest(path, acme.id, events(2, start=2), T0)
        await old.close()
    assert "deliveries_finished" not in indexes(path)

    new = SqliteStore(path, vault=VAULT, synchronous="NORMAL")
    try:
        assert await new.migrate() == [version for version, _ in every if version >= 3]
        assert {"deliveries_finished", "events_created", "denylist_expire"} <= indexes(path)
        stats = await new.stats()
        assert (stats.queued_notifications, stats.waiting_deliveries) == (3, 1)

        assert await prune(new) == Pruned(deliveries=1, attempts=2, events=2)

        assert await new.get_delivery(acme.id, delivered) is None
        claims = await claim(new, NOW)
        assert ids(claims)[0] == retrying
        assert [numbers(c.delivery.body) for c in claims] == [[1], [2, 3]]
        assert statuses(await log(new, acme, integration)) == [
            DeliveryStatus.PENDING,
            DeliveryStatus.RETRYING,
        ]
    finally:
        await new.close()


async def client_of(store: Store) -> Client:
    principal = await store.principal([contract.TOKEN_HASH], T0)
    assert principal is not None
    return principal.client


def indexes(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}


async def test_sqlite_finds_what_to_prune_through_its_indexes(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    made = SqliteStore(path, vault=VAULT, synchronous="NORMAL")
    await made.migrate()
    await made.close()
    sql = queries.load("sqlite")
    params = {"before": BEFORE, "limit": 100, "ids": "[]"}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        plans = {
            name: " | ".join(
                row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql[name]}", params)
            )
            for name in (
                "old_deliveries",
                "delete_attempts_of_deliveries",
                "prune_events",
                "prune_denylist",
            )
        }
    assert "INDEX deliveries_finished" in plans["old_deliveries"]
    assert "attempts_delivery" in plans["delete_attempts_of_deliveries"]
    assert "INDEX events_created" in plans["prune_events"]
    assert "INDEX denylist_expire" in plans["prune_denylist"]
    for plan in plans.values():
        assert "SCAN deliveries" not in plan
        assert "SCAN attempts" not in plan
        assert "SCAN events" not in plan
