"""The event stream contract: events read after a durable position, in order, acted on once.

Runs on SqliteStore and PostgresStore through the contract suite's `store` fixture; the
kill -9 and two-process cases are in tests/integration/test_stream_processes.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import orjson
import pytest

from tests import pg
from tests.stream_consumer import CONSUMER, handle, probe
from tests.unit import test_store_contract as contract
from tests.unit.sqlite_old import old_ingest
from tests.unit.test_store_contract import T0, VAULT, event, hook
from tocsin import events, formats
from tocsin.models import Client, EventType, NewEvent, Role, StreamEvent
from tocsin.store import Reaction, Store, queries
from tocsin.store.postgres import PostgresStore
from tocsin.store.sqlite import SqliteStore

store = contract.store
client = contract.client
SETTINGS = formats.NotifySettings(client_name="Acme", cloud="EU", console_url="", partner_name="")


async def probes(store: Store, client: Client, *sizes: int) -> None:
    """Ingest probes in calls of these sizes, numbered on from 0."""
    start = 0
    for size in sizes:
        await store.ingest(client.id, [probe(n) for n in range(start, start + size)], T0)
        start += size


async def state_of(store: Store, consumer: str = CONSUMER) -> list[int]:
    """The consumer's state once it has read everything (reading on changes no state)."""
    kept: list[bytes] = []

    def peek(_events: Sequence[StreamEvent], state: bytes) -> Reaction:
        kept.append(state)
        return Reaction(state=state)

    while await store.consume(consumer, peek, limit=100, now=T0):
        pass
    return orjson.loads(kept[-1]) if kept[-1] else []


async def drain(store: Store, consumer: str, limit: int) -> list[int]:
    """Consume until nothing is left; how many events each call read."""
    reads: list[int] = []
    while read := await store.consume(consumer, handle, limit=limit, now=T0):
        reads.append(read)
    return reads


async def test_a_consumer_reads_every_event_after_its_position_in_order(
    store: Store, client: Client
) -> None:
    await probes(store, client, 5, 1, 7)

    reads = await drain(store, CONSUMER, limit=4)

    # Whole stored groups (one per ingest here), at least one a call; then the echoes.
    assert reads[:3] == [5, 1, 7]
    assert await state_of(store) == list(range(13))
    await probes(store, client, 0)  # an empty ingest adds nothing to read
    await store.ingest(client.id, [probe(13), probe(14)], T0)
    assert await store.consume(CONSUMER, handle, limit=100, now=T0) == 2
    assert await state_of(store) == list(range(15))


async def test_a_reaction_is_committed_with_the_position(store: Store, client: Client) -> None:
    await probes(store, client, 3, 4)
    await drain(store, CONSUMER, limit=2)

    seen: list[int] = []

    def audit(read: Sequence[StreamEvent], state: bytes) -> Reaction:
        seen.extend(e.facts["n"] for e in read if e.facts.get("kind") == "seen")
        return Reaction(state=state)

    while await store.consume("audit", audit, limit=50, now=T0):
        pass
    assert sorted(seen) == list(range(7))  # each probe's echo stored exactly once


async def test_consumers_keep_their_own_positions(store: Store, client: Client) -> None:
    await probes(store, client, 2)
    assert await store.consume(CONSUMER, handle, limit=10, now=T0) == 2
    assert await store.consume("other", lambda e, s: Reaction(state=s), limit=10, now=T0) == 4
    assert await store.consume(CONSUMER, handle, limit=10, now=T0) == 2  # the echoes


async def test_a_reaction_notifies_only_its_targets(store: Store, client: Client) -> None:
    hits = await hook(store, client, "hits", events=(EventType.HIT,))
    quiet = await hook(store, client, "quiet", events=(EventType.SYSTEM,))
    off = await hook(store, client, "off", events=(EventType.HIT,), enabled=False)
    alert = NewEvent(type=EventType.HIT, notification=b'{"alert":1}', targets=(quiet.id, off.id))

    def fire(_read: Sequence[StreamEvent], state: bytes) -> Reaction:
        return Reaction(state=state, events=[(client.id, alert)])

    assert await store.consume("alerts", fire, limit=10, now=T0) == 0
    assert [await store.queued_notifications(i.id) for i in (hits, quiet, off)] == [0, 1, 0]


async def test_a_hit_s_facts_are_what_triggers_count_by(store: Store, client: Client) -> None:
    settings = SETTINGS
    reported = [
        {
            "type": "sqli",
            "domain": "shop.test",
            "path": "/q",
            "remote_addr4": "8.8.8.8",
            "parameter": "q",
            "response_status": 200,
            "applications": [7],
        },
        {"type": "xss", "remote_addr6": "2001:db8::1", "experimental": True, "incident": True},
    ]
    new = events.hit_events(reported, settings, now=T0, new_id=lambda: ["1", "2"])
    await store.ingest(client.id, new, T0)
    read: list[StreamEvent] = []

    def keep(found: Sequence[StreamEvent], state: bytes) -> Reaction:
        read.extend(found)
        return Reaction(state=state)

    assert await store.consume("facts", keep, limit=10, now=T0) == 2
    first, second = (dict(e.facts) for e in read)
    assert [e.type for e in read] == [EventType.HIT, EventType.HIT]
    assert {k: first[k] for k in ("attack_type", "domain", "path", "parameter", "ip")} == {
        "attack_type": "sqli",
        "domain": "shop.test",
        "path": "/q",
        "parameter": "q",
        "ip": "8.8.8.8",
    }
    assert (first["response_status"], first["applications"], first["experimental"]) == (
        200,
        [7],
        False,
    )
    assert (second["ip"], second["experimental"], second["incident"]) == (
        "2001:db8::1",
        True,
        True,
    )


async def test_a_system_event_s_facts_name_its_kind_and_subject(
    store: Store, client: Client
) -> None:
    settings = SETTINGS
    user = await store.create_user(client.id, email="a@x.test", name="A", role=Role.ANALYST, now=T0)
    created = events.user_event("user_created", user, settings, actor="Admin <admin@x>", now=T0)
    await store.ingest(client.id, [created], T0)
    read: list[StreamEvent] = []

    def keep(found: Sequence[StreamEvent], state: bytes) -> Reaction:
        read.extend(found)
        return Reaction(state=state)

    await store.consume("facts", keep, limit=10, now=T0)
    [facts] = [e.facts for e in read]
    assert facts["kind"] == "user_created"
    assert facts["user"]["role"] == "analyst"
    assert facts["actor"] == "Admin <admin@x>"


# PostgreSQL: several processes -----------------------------------------------------


@pytest.fixture
async def pg_store() -> AsyncIterator[PostgresStore]:
    async with pg.database() as dsn:
        made = PostgresStore(dsn, vault=VAULT)
        await made.migrate()
        yield made
        await made.close()


async def connect(store: PostgresStore) -> asyncpg.Connection[asyncpg.Record]:
    """A connection of another process's, to the store's database."""
    return await asyncpg.connect(store._dsn)


async def pg_client(store: PostgresStore) -> Client:
    assert await store.bootstrap(contract.BOOT, T0)
    principal = await store.principal([contract.TOKEN_HASH], T0)
    assert principal is not None
    return principal.client


async def test_a_consumer_another_process_holds_is_skipped(pg_store: PostgresStore) -> None:
    acme = await pg_client(pg_store)
    await probes(pg_store, acme, 3)
    assert await pg_store.consume(CONSUMER, handle, limit=1, now=T0) == 3  # row now exists
    other = await connect(pg_store)
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM consumers WHERE name = $1 FOR UPDATE", CONSUMER)
            await probes(pg_store, acme, 2)
            assert await pg_store.consume(CONSUMER, handle, limit=10, now=T0) is None
    finally:
        await other.close()
    assert await pg_store.consume(CONSUMER, handle, limit=10, now=T0) == 3 + 2  # echoes + new


async def test_an_ingest_committing_late_is_read_in_its_turn_not_skipped(
    pg_store: PostgresStore,
) -> None:
    acme = await pg_client(pg_store)
    slow = await connect(pg_store)
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.execute(  # an ingest that began first, and commits last
            "INSERT INTO events (client_id, type, count, notify, notifications, facts,"
            " created_at) VALUES ($1, 'hit', 1, false, $2, $2, $3)",
            acme.id,
            orjson.dumps({"kind": "probe", "n": 0}),
            T0,
        )
        await pg_store.ingest(acme.id, [probe(1)], T0)
        assert await pg_store.consume(CONSUMER, handle, limit=10, now=T0) == 0
        await tx.commit()
    finally:
        await slow.close()
    assert await pg_store.consume(CONSUMER, handle, limit=10, now=T0) == 2
    assert await state_of(pg_store) == [0, 1]  # in the order the ingests began


# upgrading ---------------------------------------------------------------------------


async def test_a_sqlite_database_at_migration_4_upgrades_keeping_its_queued_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    every = queries.migrations("sqlite")
    with monkeypatch.context() as patched:
        patched.setattr(queries, "migrations", lambda _: [m for m in every if m[0] <= 4])
        old = SqliteStore(path, vault=VAULT, synchronous="NORMAL")
        assert await old.migrate() == [1, 2, 3, 4]
        assert await old.bootstrap(contract.BOOT, T0)
        [acme] = await old.list_clients()
        integration = await hook(old, acme)
        old_ingest(path, acme.id, [event(0), event(1)], T0)
        await old.close()

    new = SqliteStore(path, vault=VAULT, synchronous="NORMAL")
    try:
        assert await new.migrate() == [version for version, _ in every if version >= 5]
        assert await new.queued_notifications(integration.id) == 2
        await new.ingest(acme.id, [probe(0)], T0 + 1)
        read: list[StreamEvent] = []

        def keep(found: Sequence[StreamEvent], state: bytes) -> Reaction:
            read.extend(found)
            return Reaction(state=state)

        assert await new.consume("upgrade", keep, limit=10, now=T0) == 3
        # Events stored before the stream have no facts; they are read all the same.
        assert [dict(e.facts) for e in read] == [{}, {}, {"kind": "probe", "n": 0}]
        [claimed] = await new.claim(contract.limits(), T0 + 2)
        assert claimed.delivery.notification_count == 3
    finally:
        await new.close()
