"""Several processes on one PostgreSQL database (SPEC 7): what no single process shows.

Each test opens two PostgresStores on one fresh database, with a pool each, as two
tocsin processes would, and makes them race with asyncio.gather. The contract suite
(tests/unit/test_store_contract.py) covers everything one store does alone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from tests import pg
from tests.conftest import MakeReceiver, make_settings
from tests.unit.test_store_contract import (
    BOOT,
    T0,
    VAULT,
    event,
    hit_key,
    limits,
    numbers,
    record,
    settings,
)
from tocsin import ids, sampling
from tocsin.models import (
    AttemptRecord,
    Claim,
    Client,
    DeliveryStatus,
    EventType,
    Integration,
    IntegrationStatus,
)
from tocsin.service import Tocsin
from tocsin.store import queries
from tocsin.store.postgres import PostgresStore

Pair = tuple[PostgresStore, PostgresStore]


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with pg.database() as url:
        yield url


async def open_pair(dsn: str, max_batch: int = 500) -> Pair:
    return (
        PostgresStore(dsn, vault=VAULT, max_batch=max_batch),
        PostgresStore(dsn, vault=VAULT, max_batch=max_batch),
    )


@pytest.fixture
async def stores(dsn: str, request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    marker = request.node.get_closest_marker("max_batch")
    pair = await open_pair(dsn, marker.args[0] if marker else 500)
    yield pair
    for store in pair:
        await store.close()


@pytest.fixture
async def client(stores: Pair) -> Client:
    assert await stores[0].bootstrap(BOOT, T0)
    found = await stores[1].get_client(1)
    assert found is not None
    return found


async def hook(store: PostgresStore, client: Client, **fields: object) -> Integration:
    return await store.create_integration(client.id, settings(**fields), "whsec_test", T0)


# sampling ---------------------------------------------------------------------


async def test_seven_identical_hits_through_two_processes_notify_five_times(
    stores: Pair, client: Client
) -> None:
    integration = await hook(stores[0], client)
    for kind in range(5):  # five kinds of hit, each raced anew
        key = hit_key(path=f"/race/{kind}")
        await asyncio.gather(
            *(
                stores[n % 2].ingest(client.id, [event(n, sample_key=key)], T0 + n / 1000)
                for n in range(7)
            )
        )
    assert await stores[1].queued_notifications(integration.id) == 5 * 5


async def test_batches_of_identical_hits_through_two_processes_notify_five_times(
    stores: Pair, client: Client
) -> None:
    integration = await hook(stores[0], client)
    key = hit_key()
    first = [event(n, sample_key=key) for n in range(4)]
    second = [event(n, sample_key=key) for n in range(4, 8)]
    counts = await asyncio.gather(
        stores[0].ingest(client.id, first, T0), stores[1].ingest(client.id, second, T0)
    )
    assert counts == [4, 4]
    assert await stores[0].queued_notifications(integration.id) == 5


async def test_the_sampling_sql_follows_the_pure_rule(stores: Pair, client: Client) -> None:
    """Random bursts of two kinds of hit over hours: the database admits what admit() does."""
    integration = await hook(stores[0], client)
    rng = random.Random(7)  # noqa: S311 - a repeatable sequence, not a secret
    reference = sampling.Sampler()
    keys = [hit_key(), hit_key(remote_addr4="9.9.9.9")]
    now, expected = T0, 0
    for step in range(60):
        now += rng.choice([0, 1, 60, 600, 1799, 3599, 3600, 5000])
        burst = [rng.choice(keys) for _ in range(rng.randint(1, 8))]
        expected += sum(reference.admit(client.id, key, now) for key in burst)
        burst_events = [event(step, sample_key=key) for key in burst]
        await stores[step % 2].ingest(client.id, burst_events, now)
        assert await stores[0].queued_notifications(integration.id) == expected, step


# claiming -----------------------------------------------------------------------


async def drain(store: PostgresStore, owner: str, now: float) -> list[int]:
    """Claim until a claim comes back empty; the delivery ids claimed."""
    taken: list[int] = []
    while claims := await store.claim(limits(owner=owner, max_in_flight=1000, limit=7), now):
        taken += [claim.delivery.id for claim in claims]
    return taken


@pytest.mark.max_batch(1)
async def test_two_processes_claiming_at_once_never_get_the_same_delivery(
    stores: Pair, client: Client
) -> None:
    await hook(stores[0], client, name="first")
    await hook(stores[1], client, name="second")
    # Four failed attempts each: retries due, and short of the auto-disable rule.
    await stores[0].ingest(client.id, [event(n) for n in range(4)], T0)
    retrying = await stores[0].claim(limits(max_in_flight=1000), T0)
    assert len(retrying) == 8
    await stores[0].record_attempts([record(c, T0, ok=False, next_at=T0 + 1) for c in retrying], T0)
    await stores[1].ingest(client.id, [event(n) for n in range(4, 40)], T0)

    raced = await asyncio.gather(drain(stores[0], "w1", T0 + 2), drain(stores[1], "w2", T0 + 2))
    rest = await drain(stores[0], "w3", T0 + 2)  # what a claim skipped while the other held it

    taken = [*raced[0], *raced[1], *rest]
    assert len(taken) == len(set(taken)) == 8 + 72
    assert set(taken) >= {claim.delivery.id for claim in retrying}


@pytest.mark.max_batch(2)
async def test_a_claim_locks_only_the_queued_groups_it_takes(stores: Pair, client: Client) -> None:
    """Another process skips queue rows a claim holds locked: locking more than it takes
    hid them (a claim of 36 deliveries of 500 locked up to 18,000 groups)."""
    integration = await hook(stores[0], client)
    for n in range(0, 40, 2):  # 20 full groups of 2
        await stores[0].ingest(client.id, [event(n), event(n + 1)], T0)
    claiming = stores[0]
    pool = await claiming._open()  # the first process's claim, held open ...
    async with pool.acquire() as conn, conn.transaction():
        pending, lease = DeliveryStatus.PENDING, ("w1", T0 + 60)
        made = await claiming._new_deliveries(
            conn, integration, T0, status=pending, lease=lease, most=3
        )
        # ... while the second process claims what is left
        others = await stores[1].claim(limits(owner="w2", max_in_flight=1000), T0)
    assert len(made) == 3
    assert len(others) == 17
    assert sorted(numbers(c.delivery.body) for c in others) == [[n, n + 1] for n in range(6, 40, 2)]


async def test_a_lease_held_by_one_process_is_respected_by_the_other(
    stores: Pair, client: Client
) -> None:
    await hook(stores[0], client)
    await stores[0].ingest(client.id, [event(1)], T0)
    [held] = await stores[0].claim(limits(owner="w1"), T0)
    assert await stores[1].claim(limits(owner="w2"), T0 + 1) == []
    [taken_over] = await stores[1].claim(limits(owner="w2"), held.lease_until)
    assert taken_over.delivery.webhook_id == held.delivery.webhook_id


# auto-disable -------------------------------------------------------------------


@asynccontextmanager
async def held(dsn: str, locking: str) -> AsyncIterator[None]:
    """Hold the row locks `locking` takes, in a transaction of another connection."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(locking)
            yield
    finally:
        await conn.close()


def failures(claimed: Claim, count: int) -> list[AttemptRecord]:
    """Failed attempts, all with one error: recording them leaves last_error as it was."""
    return [record(claimed, T0 + 20, ok=False, next_at=T0 + 21) for _ in range(count)]


@pytest.mark.max_batch(1)
@pytest.mark.parametrize(
    ("first", "second"), [(4, 5), (10, 10)], ids=["crossing-together", "both-crossing"]
)
async def test_integrations_failing_through_two_processes_are_auto_disabled_once_each(
    dsn: str, stores: Pair, client: Client, first: int, second: int
) -> None:
    hooks = [await hook(stores[0], client, name=f"hook-{n}") for n in range(10)]
    await stores[0].ingest(client.id, [event(1), event(2)], T0)
    claims = await stores[0].claim(limits(max_in_flight=1000), T0)
    ones = {c.integration.id: c for c in claims[::2]}
    twos = {c.integration.id: c for c in claims[1::2]}
    assert len(ones) == len(twos) == 10
    # One failure each beforehand: then neither recording alone reaches 10 requests.
    earlier = [r for claimed in ones.values() for r in failures(claimed, 1)]
    assert await stores[0].record_attempts(earlier, T0 + 20) == []

    # A third connection holds the deliveries, so that both recordings start, block,
    # and go on together when it lets go: as close a race as can be arranged.
    async with held(dsn, "SELECT id FROM deliveries FOR UPDATE"):
        racing = asyncio.gather(
            stores[0].record_attempts(
                [r for claimed in ones.values() for r in failures(claimed, first)], T0 + 20
            ),
            stores[1].record_attempts(
                [r for claimed in twos.values() for r in failures(claimed, second)], T0 + 20
            ),
        )
        await asyncio.sleep(0.3)
    reported = await racing

    fired = [found for batch in reported for found in batch]
    assert sorted(found.integration.id for found in fired) == [h.id for h in hooks]
    assert all(found.requests == found.failures >= 10 for found in fired)
    for integration in await stores[1].list_integrations(client.id):
        assert integration.status is IntegrationStatus.AUTO_DISABLED


# disabling while others ingest ------------------------------------------------------


async def test_disabling_while_another_process_ingests_leaves_nothing_queued(
    stores: Pair, client: Client
) -> None:
    integration = await hook(stores[0], client)
    ingests = [stores[0].ingest(client.id, [event(n)], T0) for n in range(30)]
    disable = stores[1].set_enabled(client.id, integration.id, enabled=False, now=T0)
    await asyncio.gather(*ingests[:15], disable, *ingests[15:])

    assert await stores[0].queued_notifications(integration.id) == 0
    log = await stores[0].list_deliveries(client.id, integration.id, limit=100, before=None)
    assert {delivery.status for delivery in log} <= {DeliveryStatus.CANCELLED}
    assert await stores[1].claim(limits(), T0 + 60) == []


# starting up together ------------------------------------------------------------------


async def test_two_processes_migrating_an_empty_database_at_once_apply_each_version_once() -> None:
    async with pg.database(migrated=False) as url:
        pair = await open_pair(url)
        try:
            applied = await asyncio.gather(pair[0].migrate(), pair[1].migrate())
            every = [version for version, _ in queries.migrations("postgres")]
            assert sorted(applied) == [[], every]
            assert await pair[0].migrate() == []
        finally:
            for store in pair:
                await store.close()


async def test_two_processes_starting_on_an_empty_database_create_one_first_client(
    stores: Pair,
) -> None:
    created = await asyncio.gather(stores[0].bootstrap(BOOT, T0), stores[1].bootstrap(BOOT, T0))
    assert sorted(created) == [False, True]
    assert await stores[0].get_client(2) is None


# waking other processes ---------------------------------------------------------------


async def test_an_ingest_wakes_a_listener_in_another_process_at_once(
    stores: Pair, client: Client
) -> None:
    await hook(stores[0], client)
    await stores[1].wait_for_work()  # the first wait returns at once: look after connecting
    waiting = asyncio.create_task(stores[1].wait_for_work())
    await asyncio.sleep(0.2)
    assert not waiting.done()

    started = time.monotonic()
    await stores[0].ingest(client.id, [event(1)], T0)
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 0.5


async def test_a_listener_cut_off_by_the_server_wakes_and_listens_again(
    dsn: str, stores: Pair, client: Client
) -> None:
    await hook(stores[0], client)
    await stores[1].wait_for_work()
    waiting = asyncio.create_task(stores[1].wait_for_work())
    admin = await asyncpg.connect(dsn)
    try:
        cut = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    finally:
        await admin.close()
    assert cut == 1
    await asyncio.wait_for(waiting, 5)  # woken by the broken connection: claim, just in case

    await stores[1].wait_for_work()  # listening again, and looking once
    waiting = asyncio.create_task(stores[1].wait_for_work())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await stores[0].ingest(client.id, [event(1)], T0)
    await asyncio.wait_for(waiting, 5)


async def test_a_dispatcher_delivers_what_another_process_ingested_without_polling(
    dsn: str, make_receiver: MakeReceiver, ca_pem: str, tmp_path: Path
) -> None:
    receiver = make_receiver()
    # Polling once a minute: only the NOTIFY can make this delivery prompt.
    config = make_settings(tmp_path, database_url=dsn, poll_interval=60.0)
    api_side = Tocsin(config, PostgresStore(dsn, vault=VAULT), vault=VAULT)
    worker_side = Tocsin(config, PostgresStore(dsn, vault=VAULT), vault=VAULT)
    await api_side.start(deliver=False)
    await worker_side.start()
    try:
        client = await api_side.store.get_client(1)
        assert client is not None
        fields = {"url": receiver.url, "ca_certificate": ca_pem, "events": (EventType.HIT,)}
        await api_side.store.create_integration(
            client.id, settings(**fields), ids.signing_secret(), T0
        )
        await asyncio.sleep(0.3)  # the worker has claimed nothing and is waiting

        started = time.monotonic()
        await api_side.store.ingest(client.id, [event(1)], T0)  # another process ingests
        assert await receiver.until(lambda r: len(r.requests) == 1, within=10)
        assert time.monotonic() - started < 5
    finally:
        await worker_side.stop()
        await api_side.stop()
