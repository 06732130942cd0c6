"""Retention in a running process: a turn prunes batch after batch, and delivering starts it.

On SQLite in a temporary directory with a fake clock; what each store deletes is the contract of
test_store_retention.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.test_store_contract import BOOT, T0, VAULT, claim_one, event, record, settings
from tocsin import retention
from tocsin.clock import FakeClock
from tocsin.config import Settings
from tocsin.errors import ConfigError
from tocsin.models import Client
from tocsin.service import Tocsin
from tocsin.store import Pruned, Turn
from tocsin.store.sqlite import SqliteStore

DAY = retention.DAY
TURN = Turn(owner="worker-1", length=retention.PRUNE_EVERY)


class Stores:
    """SQLite stores in the test's directory, closed when the test ends."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.opened: list[SqliteStore] = []

    async def new(self) -> SqliteStore:
        path = self.directory / f"log{len(self.opened)}.db"
        store = SqliteStore(path, vault=VAULT, synchronous="OFF")
        self.opened.append(store)
        await store.migrate()
        return store


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    made = Stores(tmp_path)
    yield made
    for store in made.opened:
        await store.close()


async def delivered_log(days: int, stores: Stores) -> tuple[SqliteStore, Client]:
    """A store whose log holds one delivered delivery a day, for `days` days from T0."""
    store = await stores.new()
    await store.bootstrap(BOOT, T0)
    [client] = await store.list_clients()
    await store.create_integration(client.id, settings(), "whsec_test", T0)
    for day in range(days):
        at = T0 + day * DAY
        await store.ingest(client.id, [event(day)], at)
        claimed = await claim_one(store, at)
        await store.record_attempts([record(claimed, at)], at)
    return store, client


async def test_a_turn_prunes_batch_after_batch_and_says_what_went(
    caplog: pytest.LogCaptureFixture, stores: Stores
) -> None:
    store, client = await delivered_log(10, stores)
    clock = FakeClock(T0 + 37 * DAY)  # 30 days' retention: the first 7 days go

    with caplog.at_level(logging.INFO, logger="tocsin.retention"):
        pruned = await retention.prune_log(store, clock, TURN, 30, batch=3)

    assert pruned == Pruned(deliveries=7, attempts=7, events=7)
    deliveries = await store.list_deliveries(client.id, 1, limit=100, before=None)
    assert [d.created_at for d in deliveries] == [T0 + day * DAY for day in range(9, 6, -1)]
    [message] = caplog.messages
    assert message == (
        "pruned what is older than 30 days: 7 deliveries with 7 attempts, 7 event groups, "
        "0 expired denylist entries"
    )


async def test_another_process_s_turn_prunes_nothing_and_says_nothing(
    caplog: pytest.LogCaptureFixture, stores: Stores
) -> None:
    store, client = await delivered_log(3, stores)
    clock = FakeClock(T0 + 40 * DAY)
    other = Turn(owner="worker-2", length=retention.PRUNE_EVERY)
    assert await retention.prune_log(store, clock, other, 30) == Pruned(
        deliveries=3, attempts=3, events=3
    )
    await store.ingest(client.id, [event(9)], T0)
    await store.record_attempts([record(await claim_one(store, T0), T0)], T0)

    with caplog.at_level(logging.INFO, logger="tocsin.retention"):
        assert await retention.prune_log(store, clock, TURN, 30) is None

    assert caplog.messages == []
    assert len(await store.list_deliveries(client.id, 1, limit=100, before=None)) == 1


async def test_a_delivering_process_prunes_as_it_starts(stores: Stores) -> None:
    store, client = await delivered_log(3, stores)
    clock = FakeClock(T0 + 32 * DAY)
    runtime = Tocsin(Settings(retention_days=30.5), store, vault=VAULT, clock=clock)

    await runtime.start()
    try:
        async with asyncio.timeout(5):
            while len(await store.list_deliveries(client.id, 1, limit=9, before=None)) > 1:
                await asyncio.sleep(0.01)
        [kept] = await store.list_deliveries(client.id, 1, limit=9, before=None)  # still open
    finally:
        await runtime.stop()

    assert kept.created_at == T0 + 2 * DAY


def test_a_retention_shorter_than_a_day_is_refused() -> None:
    # The auto-disable rule counts the attempts of the last 12 hours: they must be kept.
    with pytest.raises(ConfigError, match="TOCSIN_RETENTION_DAYS must be at least 1"):
        Settings(retention_days=0.5)
