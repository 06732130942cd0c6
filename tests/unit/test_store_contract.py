"""The Store contract: one suite, run against SqliteStore and PostgresStore.

Times are explicit floats, so leases, retries, sampling windows and the
auto-disable window are tested without sleeping.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import pg
from tocsin import formats
from tocsin.crypto import Vault
from tocsin.errors import Conflict, NotFound
from tocsin.models import (
    AttemptOutcome,
    AttemptRecord,
    BodyFormat,
    Claim,
    Client,
    Delivery,
    DeliveryStatus,
    EventType,
    Integration,
    IntegrationStatus,
    NewEvent,
    RiskLevel,
    Role,
    WebhookSettings,
)
from tocsin.store import AutoDisabled, Bootstrap, ClaimLimits, Store
from tocsin.store.postgres import PostgresStore
from tocsin.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
HOUR = 3600.0
VAULT = Vault([Vault.generate_key()])
TOKEN_HASH = VAULT.token_digest("tcs_contract_admin")
BOOT = Bootstrap(
    client_name="Acme",
    cloud="EU",
    console_url="https://console.acme.test",
    admin_email="admin@acme.test",
    admin_name="Admin",
    token_hash=TOKEN_HASH,
)
# connection_timeout 20 + request_timeout 15 + lease_margin 5
LEASE = 40.0


# helpers ---------------------------------------------------------------------


def settings(name: str = "hook", **fields: Any) -> WebhookSettings:
    base: dict[str, Any] = {
        "url": f"https://receiver.test/{name}",
        "events": (EventType.HIT, EventType.VULN, EventType.SYSTEM),
    }
    return WebhookSettings(**(base | {"name": name} | fields))


def event(n: int = 0, kind: EventType = EventType.HIT, **fields: Any) -> NewEvent:
    notification = formats.encode({"summary": f"event {n}", "details": {"n": n}})
    return NewEvent(type=kind, notification=notification, **fields)


def events(count: int, kind: EventType = EventType.HIT, start: int = 0) -> list[NewEvent]:
    return [event(n, kind) for n in range(start, start + count)]


def hit_key(**fields: Any) -> str:
    hit = {"type": "sqli", "domain": "shop.test", "path": "/q", "remote_addr4": "8.8.8.8"}
    return formats.sample_key(hit | fields)


def numbers(body: bytes, body_format: BodyFormat = BodyFormat.JSON_ARRAY) -> list[int]:
    """The `n` of every notification in a request body."""
    if body_format is BodyFormat.NDJSON:
        items = [orjson.loads(line) for line in body.splitlines()]
    else:
        items = orjson.loads(body)
    return [item["details"]["n"] for item in items]


def limits(**fields: Any) -> ClaimLimits:
    base: dict[str, Any] = {
        "owner": "worker-1",
        "max_in_flight": 4,
        "in_flight": {},
        "lease_margin": 5.0,
    }
    return ClaimLimits(**(base | fields))


def record(
    claim: Claim,
    at: float,
    *,
    ok: bool = True,
    status: DeliveryStatus | None = None,
    next_at: float | None = None,
) -> AttemptRecord:
    outcome = AttemptOutcome(
        ok=ok,
        status_code=200 if ok else 503,
        error=None if ok else f"HTTP 503 at {at}",
        response_body="ok" if ok else "busy",
        duration_ms=12.5,
        started_at=at,
        request_size=len(claim.delivery.body),
    )
    default = DeliveryStatus.DELIVERED if ok else DeliveryStatus.RETRYING
    return AttemptRecord(
        delivery_id=claim.delivery.id,
        integration_id=claim.integration.id,
        outcome=outcome,
        status=status or default,
        next_attempt_at=next_at,
    )


def statuses(deliveries: Sequence[Delivery]) -> list[DeliveryStatus]:
    return [delivery.status for delivery in deliveries]


# fixtures --------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    marker = request.node.get_closest_marker("max_batch")
    batch = marker.args[0] if marker else 500
    async with contextlib.AsyncExitStack() as stack:
        made = await make_store(request.param, batch, tmp_path, stack)
        await made.migrate()
        yield made
        await made.close()


async def make_store(
    kind: str, batch: int, tmp_path: Path, stack: contextlib.AsyncExitStack
) -> Store:
    if kind == "sqlite":
        return SqliteStore(tmp_path / "t.db", vault=VAULT, synchronous="NORMAL", max_batch=batch)
    dsn = await stack.enter_async_context(pg.database())  # a fresh clone of the template
    return PostgresStore(dsn, vault=VAULT, max_batch=batch)


@pytest.fixture
async def client(store: Store) -> Client:
    assert await store.bootstrap(BOOT, T0)
    principal = await store.principal([TOKEN_HASH], T0)
    assert principal is not None
    return principal.client


async def hook(store: Store, client: Client, name: str = "hook", **fields: Any) -> Integration:
    return await store.create_integration(client.id, settings(name, **fields), "whsec_test", T0)


async def claim(store: Store, now: float = T0, **fields: Any) -> list[Claim]:
    return await store.claim(limits(**fields), now)


async def claim_one(store: Store, now: float = T0, **fields: Any) -> Claim:
    claims = await claim(store, now, **fields)
    assert len(claims) == 1, claims
    return claims[0]


async def log(store: Store, client: Client, integration: Integration) -> list[Delivery]:
    return await store.list_deliveries(client.id, integration.id, limit=100, before=None)


# clients, users and tokens -------------------------------------------------


async def test_bootstrap_creates_the_first_client_and_administrator_once(store: Store) -> None:
    assert await store.bootstrap(BOOT, T0)
    assert not await store.bootstrap(BOOT, T0 + 1)

    principal = await store.principal([TOKEN_HASH], T0 + 2)
    assert principal is not None
    assert principal.email == "admin@acme.test"
    assert principal.role is Role.ADMINISTRATOR
    assert principal.client == await store.get_client(principal.client.id)
    assert principal.client.name == "Acme"
    assert principal.client.console_url == "https://console.acme.test"


async def test_an_unknown_token_is_nobody(store: Store, client: Client) -> None:
    assert await store.principal([VAULT.token_digest("tcs_guessed")], T0) is None
    assert await store.get_client(client.id + 100) is None


async def test_create_client_adds_a_tenant_and_bootstrap_then_does_nothing(store: Store) -> None:
    other = await store.create_client("Globex", "US", "https://console.globex.test", T0)
    assert await store.get_client(other.id) == other
    assert other.cloud == "US"
    assert not await store.bootstrap(BOOT, T0)


# integrations ------------------------------------------------------------------


async def test_integrations_are_created_listed_updated_and_deleted(
    store: Store, client: Client
) -> None:
    first = await hook(store, client, "first", headers={"Authorization": "Bearer x"})
    second = await hook(store, client, "second", format=BodyFormat.NDJSON)
    assert first.settings == settings("first", headers={"Authorization": "Bearer x"})
    assert first.status is IntegrationStatus.ACTIVE
    assert await store.list_integrations(client.id) == [first, second]

    changed = settings("renamed", events=(EventType.VULN,), vuln_risk_levels=(RiskLevel.HIGH,))
    updated = await store.update_integration(client.id, first.id, changed, T0 + 5)
    assert updated is not None
    assert updated.settings == changed
    assert updated.updated_at == T0 + 5
    assert await store.get_integration(client.id, first.id) == updated

    assert await store.delete_integration(client.id, first.id, T0 + 6)
    assert await store.get_integration(client.id, first.id) is None
    assert await store.list_integrations(client.id) == [second]
    assert not await store.delete_integration(client.id, first.id, T0 + 7)
    assert await store.update_integration(client.id, first.id, changed, T0 + 8) is None


async def test_routing_and_claims_follow_an_integration_changed_between_ingests(
    store: Store, client: Client
) -> None:
    # Stores remember decoded integrations across transactions; a change is seen at once.
    integration = await hook(store, client, events=(EventType.HIT,))
    await store.ingest(client.id, [event(1)], T0)
    first = await claim_one(store)
    assert first.integration.settings.events == (EventType.HIT,)
    await store.record_attempts([record(first, T0, ok=True)], T0)

    vulns_only = settings(events=(EventType.VULN,), headers={"X-Team": "red"})
    await store.update_integration(client.id, integration.id, vulns_only, T0 + 1)
    await store.ingest(client.id, [event(2)], T0 + 2)
    assert await claim(store, T0 + 2) == []  # a hit no longer goes to it

    rotated = await store.rotate_signing_secret(client.id, integration.id, "whsec_new", T0 + 3)
    assert rotated is not None
    await store.ingest(client.id, [event(3, EventType.VULN)], T0 + 4)
    second = await claim_one(store, T0 + 4)
    assert second.integration.settings == vulns_only
    assert second.integration.signing_secret == rotated.signing_secret
    assert second.integration.signing_secret != first.integration.signing_secret


async def test_another_client_can_neither_see_nor_change_an_integration(
    store: Store, client: Client
) -> None:
    mine = await hook(store, client)
    other = await store.create_client("Globex", "US", "https://console.globex.test", T0)

    assert await store.get_integration(other.id, mine.id) is None
    assert await store.list_integrations(other.id) == []
    assert await store.update_integration(other.id, mine.id, settings("x"), T0) is None
    assert await store.set_enabled(other.id, mine.id, enabled=False, now=T0) is None
    assert not await store.delete_integration(other.id, mine.id, T0)
    assert await store.get_integration(client.id, mine.id) == mine


async def test_another_client_can_neither_see_nor_resend_a_delivery(
    store: Store, client: Client
) -> None:
    mine = await hook(store, client)
    other = await store.create_client("Globex", "US", "https://console.globex.test", T0)
    await store.ingest(client.id, [event(1)], T0)
    delivered = await claim_one(store)
    await store.record_attempts([record(delivered, T0, ok=False, status=DeliveryStatus.FAILED)], T0)

    assert await store.get_delivery(other.id, delivered.delivery.id) is None
    assert await store.list_deliveries(other.id, mine.id, limit=10, before=None) == []
    with pytest.raises(NotFound):
        await store.resend(other.id, delivered.delivery.id, T0 + 1)
    assert await store.get_delivery(client.id, delivered.delivery.id) is not None


async def test_events_of_one_client_never_reach_another_clients_integrations(
    store: Store, client: Client
) -> None:
    mine = await hook(store, client)
    other = await store.create_client("Globex", "US", "https://console.globex.test", T0)
    assert await store.ingest(other.id, events(3), T0) == 3
    assert await store.queued_notifications(mine.id) == 0
    assert await claim(store) == []


# ingest and claim ---------------------------------------------------------------


async def test_a_claim_gives_each_integration_one_delivery_with_its_notifications_in_order(
    store: Store, client: Client
) -> None:
    first = await hook(store, client, "first")
    second = await hook(store, client, "second")
    assert await store.ingest(client.id, events(3), T0) == 3
    assert await store.queued_notifications(first.id) == 3

    claims = await claim(store)

    assert sorted(c.integration.id for c in claims) == [first.id, second.id]
    for found in claims:
        assert found.delivery.status is DeliveryStatus.PENDING
        assert found.delivery.notification_count == 3
        assert found.delivery.webhook_id.startswith("msg_")
        assert numbers(found.delivery.body) == [0, 1, 2]
        assert found.lease_until == T0 + LEASE
    assert claims[0].delivery.webhook_id != claims[1].delivery.webhook_id
    assert await store.queued_notifications(first.id) == 0
    assert await claim(store, T0 + 1) == []


async def test_an_ndjson_integration_gets_one_notification_per_line(
    store: Store, client: Client
) -> None:
    await hook(store, client, format=BodyFormat.NDJSON)
    await store.ingest(client.id, events(3), T0)
    body = (await claim_one(store)).delivery.body
    assert body.endswith(b"\n")
    assert numbers(body, BodyFormat.NDJSON) == [0, 1, 2]


async def test_max_batch_splits_twelve_hundred_notifications_into_500_500_200(
    store: Store, client: Client
) -> None:
    await hook(store, client)
    await store.ingest(client.id, events(1200), T0)

    claims = await claim(store)

    assert [c.delivery.notification_count for c in claims] == [500, 500, 200]
    sent = [n for c in claims for n in numbers(c.delivery.body)]
    assert sent == list(range(1200))


@pytest.mark.max_batch(2)
async def test_deliveries_made_in_one_claim_are_the_ones_stored(
    store: Store, client: Client
) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, events(7), T0)

    claims = await claim(store)

    assert [numbers(c.delivery.body) for c in claims] == [[0, 1], [2, 3], [4, 5], [6]]
    assert len({c.delivery.webhook_id for c in claims}) == 4
    ids = [c.delivery.id for c in claims]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    stored = {d.id: d for d in await log(store, client, integration)}
    for found in claims:
        assert stored[found.delivery.id] == found.delivery
    assert await store.queued_notifications(integration.id) == 0


@pytest.mark.max_batch(1)
async def test_a_byte_limit_stops_new_deliveries_and_each_integration_gets_its_turn(
    store: Store, client: Client
) -> None:
    first, second, third = [await hook(store, client, name) for name in ("a", "b", "c")]
    await store.ingest(client.id, events(3), T0)
    one_each = {"max_bytes": 1, "max_in_flight": 1}

    taken = await claim(store, **one_each)
    assert [c.integration.id for c in taken] == [first.id]  # it crossed the limit: the end
    taken = await claim(store, **one_each, after=first.id)
    assert [c.integration.id for c in taken] == [second.id]
    taken = await claim(store, **one_each, after=third.id)  # wraps around
    assert [c.integration.id for c in taken] == [first.id]
    everything = await claim(store, max_in_flight=1, after=second.id)
    assert [c.integration.id for c in everything] == [third.id, first.id, second.id]
    left = [await store.queued_notifications(i.id) for i in (first, second, third)]
    assert left == [0, 1, 2]


@pytest.mark.max_batch(1)
async def test_max_in_flight_bounds_each_integration_without_starving_others(
    store: Store, client: Client
) -> None:
    busy = await hook(store, client, "busy")
    idle = await hook(store, client, "idle")
    await store.ingest(client.id, events(5), T0)

    claims = await claim(store, max_in_flight=2, in_flight={busy.id: 1})

    assert [c.integration.id for c in claims].count(busy.id) == 1
    assert [c.integration.id for c in claims].count(idle.id) == 2
    assert await store.queued_notifications(busy.id) == 4
    assert await store.queued_notifications(idle.id) == 3


@pytest.mark.max_batch(1)
async def test_limit_caps_the_claims_of_one_call(store: Store, client: Client) -> None:
    await hook(store, client)
    await store.ingest(client.id, events(2), T0)
    retried = await claim(store)
    await store.record_attempts([record(c, T0, ok=False, next_at=T0 + 1) for c in retried], T0)
    await store.ingest(client.id, events(5, start=2), T0 + 1)

    claims = await claim(store, T0 + 1, max_in_flight=10, limit=3)

    assert [c.delivery.id for c in claims[:2]] == [c.delivery.id for c in retried]
    assert len(claims) == 3


async def test_a_claimed_delivery_comes_back_with_its_webhook_id_when_the_lease_expires(
    store: Store, client: Client
) -> None:
    await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    first = await claim_one(store, owner="worker-1")

    assert await claim(store, T0 + LEASE - 1, owner="worker-2") == []
    assert await store.next_due() == first.lease_until

    again = await claim_one(store, T0 + LEASE, owner="worker-2")
    assert again.delivery.id == first.delivery.id
    assert again.delivery.webhook_id == first.delivery.webhook_id
    assert again.delivery.body == first.delivery.body
    assert again.lease_until == T0 + 2 * LEASE


# recording attempts ----------------------------------------------------------------


async def test_a_successful_attempt_delivers(store: Store, client: Client) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)

    assert await store.record_attempts([record(claimed, T0 + 1)], T0 + 2) == []

    delivery = await store.get_delivery(client.id, claimed.delivery.id)
    assert delivery is not None
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.next_attempt_at is None
    assert (delivery.attempt_count, delivery.failures) == (1, 0)
    assert [(a.number, a.status_code, a.started_at) for a in delivery.attempts] == [
        (1, 200, T0 + 1)
    ]
    assert await store.next_due() is None
    assert await claim(store, T0 + 2 * LEASE) == []
    assert await store.get_integration(client.id, integration.id) == integration


async def test_two_attempts_of_one_delivery_recorded_together_are_numbered_in_order(
    store: Store, client: Client
) -> None:
    await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)
    failed = record(claimed, T0, ok=False, next_at=T0 + 3)

    await store.record_attempts([failed, record(claimed, T0 + 1)], T0 + 2)

    delivery = await store.get_delivery(client.id, claimed.delivery.id)
    assert delivery is not None
    assert delivery.status is DeliveryStatus.DELIVERED
    assert (delivery.attempt_count, delivery.failures) == (2, 1)
    assert [(a.number, a.status_code) for a in delivery.attempts] == [(1, 503), (2, 200)]


async def test_a_failed_attempt_retries_only_when_due(store: Store, client: Client) -> None:
    await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)

    await store.record_attempts([record(claimed, T0, ok=False, next_at=T0 + 3)], T0 + 1)

    delivery = await store.get_delivery(client.id, claimed.delivery.id)
    assert delivery is not None
    assert delivery.status is DeliveryStatus.RETRYING
    assert delivery.next_attempt_at == T0 + 3
    assert delivery.last_error == f"HTTP 503 at {T0}"
    assert await store.next_due() == T0 + 3
    assert await claim(store, T0 + 2.9) == []
    retried = await claim_one(store, T0 + 3)
    assert retried.delivery.id == claimed.delivery.id
    assert retried.delivery.failures == 1
    assert retried.delivery.webhook_id == claimed.delivery.webhook_id
    integration = (await store.list_integrations(client.id))[0]
    assert integration.status is IntegrationStatus.FAILING
    assert integration.last_error == f"HTTP 503 at {T0}"


async def test_a_success_after_failures_clears_the_integration_error(
    store: Store, client: Client
) -> None:
    await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)
    failed = record(claimed, T0, ok=False, next_at=T0)
    await store.record_attempts([failed, record(claimed, T0 + 1)], T0 + 1)

    delivery = await store.get_delivery(client.id, claimed.delivery.id)
    assert delivery is not None
    assert [a.number for a in delivery.attempts] == [1, 2]
    assert (delivery.status, delivery.attempt_count, delivery.failures) == (
        DeliveryStatus.DELIVERED,
        2,
        1,
    )
    assert (await store.list_integrations(client.id))[0].last_error is None


async def test_a_delivery_that_failed_for_good_is_never_claimed_again(
    store: Store, client: Client
) -> None:
    await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)

    await store.record_attempts([record(claimed, T0, ok=False, status=DeliveryStatus.FAILED)], T0)

    delivery = await store.get_delivery(client.id, claimed.delivery.id)
    assert delivery is not None
    assert delivery.status is DeliveryStatus.FAILED
    assert await store.next_due() is None
    assert await claim(store, T0 + 10 * HOUR) == []


# disabling, cancelling, re-sending ------------------------------------------------


async def test_disabling_cancels_waiting_and_queued_work_and_keeps_it_in_the_log(
    store: Store, client: Client
) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    waiting = await claim_one(store)
    await store.record_attempts([record(waiting, T0, ok=False, next_at=T0 + 5)], T0)
    await store.ingest(client.id, events(3, start=2), T0 + 1)

    disabled = await store.set_enabled(
        client.id, integration.id, enabled=False, now=T0 + 2, reason="maintenance"
    )

    assert disabled is not None
    assert disabled.status is IntegrationStatus.DISABLED
    assert disabled.disabled_reason == "maintenance"
    deliveries = await log(store, client, integration)
    assert statuses(deliveries) == [DeliveryStatus.CANCELLED, DeliveryStatus.CANCELLED]
    assert numbers(deliveries[0].body) == [2, 3, 4]
    assert deliveries[1].id == waiting.delivery.id
    assert await store.queued_notifications(integration.id) == 0
    assert await store.next_due() is None
    assert await claim(store, T0 + HOUR) == []


async def test_a_disabled_integration_is_not_queued_for(store: Store, client: Client) -> None:
    integration = await hook(store, client, enabled=False)
    await store.ingest(client.id, events(2), T0)
    assert await store.queued_notifications(integration.id) == 0


async def test_disabling_through_update_cancels_queued_work(store: Store, client: Client) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, events(2), T0)
    await store.update_integration(client.id, integration.id, settings(enabled=False), T0 + 1)
    assert statuses(await log(store, client, integration)) == [DeliveryStatus.CANCELLED]
    assert await store.queued_notifications(integration.id) == 0


async def test_cancelled_work_can_be_resent_after_re_enabling(store: Store, client: Client) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, events(2), T0)
    await store.set_enabled(client.id, integration.id, enabled=False, now=T0 + 1)
    [cancelled] = await log(store, client, integration)
    with pytest.raises(Conflict):
        await store.resend(client.id, cancelled.id, T0 + 2)

    enabled = await store.set_enabled(client.id, integration.id, enabled=True, now=T0 + 3)
    assert enabled is not None
    assert enabled.status is IntegrationStatus.ACTIVE
    pending = await store.resend(client.id, cancelled.id, T0 + 4)

    assert pending.status is DeliveryStatus.PENDING
    assert pending.next_attempt_at == T0 + 4
    with pytest.raises(Conflict):
        await store.resend(client.id, cancelled.id, T0 + 4)
    claimed = await claim_one(store, T0 + 4)
    assert (claimed.delivery.id, claimed.delivery.webhook_id) == (
        cancelled.id,
        cancelled.webhook_id,
    )
    assert numbers(claimed.delivery.body) == [0, 1]


async def test_a_failed_delivery_can_be_resent_and_starts_the_schedule_afresh(
    store: Store, client: Client
) -> None:
    await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)
    await store.record_attempts([record(claimed, T0, ok=False, status=DeliveryStatus.FAILED)], T0)

    resent = await store.resend(client.id, claimed.delivery.id, T0 + 1)

    assert (resent.status, resent.failures, resent.attempt_count) == (
        DeliveryStatus.PENDING,
        0,
        1,
    )
    assert len(resent.attempts) == 1
    assert (await claim_one(store, T0 + 1)).delivery.id == claimed.delivery.id


async def test_resend_refuses_delivered_and_unknown_deliveries(
    store: Store, client: Client
) -> None:
    await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)
    with pytest.raises(Conflict):
        await store.resend(client.id, claimed.delivery.id, T0)
    await store.record_attempts([record(claimed, T0)], T0)
    with pytest.raises(Conflict):
        await store.resend(client.id, claimed.delivery.id, T0)
    with pytest.raises(NotFound):
        await store.resend(client.id, claimed.delivery.id + 100, T0)


async def test_deleting_cancels_queued_work_that_can_no_longer_be_resent(
    store: Store, client: Client
) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, events(2), T0)
    assert await store.delete_integration(client.id, integration.id, T0 + 1)

    [cancelled] = await log(store, client, integration)
    assert cancelled.status is DeliveryStatus.CANCELLED
    assert await store.queued_notifications(integration.id) == 0
    with pytest.raises(Conflict):
        await store.resend(client.id, cancelled.id, T0 + 2)
    await store.ingest(client.id, events(2), T0 + 3)
    assert await claim(store, T0 + 3) == []


@pytest.mark.parametrize(
    ("ok", "expected"),
    [(False, DeliveryStatus.CANCELLED), (True, DeliveryStatus.DELIVERED)],
)
async def test_a_delivery_cancelled_in_flight_stays_cancelled_unless_it_succeeded(
    store: Store, client: Client, ok: bool, expected: DeliveryStatus
) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)
    await store.set_enabled(client.id, integration.id, enabled=False, now=T0 + 1)

    next_at = None if ok else T0 + 3
    await store.record_attempts([record(claimed, T0, ok=ok, next_at=next_at)], T0 + 2)

    delivery = await store.get_delivery(client.id, claimed.delivery.id)
    assert delivery is not None
    assert delivery.status is expected
    assert delivery.next_attempt_at is None
    assert delivery.attempt_count == 1
    assert await store.next_due() is None


# auto-disable -----------------------------------------------------------------------


async def attempts(
    store: Store, claimed: Claim, outcomes: Sequence[bool], at: float
) -> list[AutoDisabled]:
    """Record one attempt per outcome, a second apart; return what auto-disable reported."""
    reported: list[AutoDisabled] = []
    for offset, ok in enumerate(outcomes):
        now = at + offset
        reported += await store.record_attempts([record(claimed, now, ok=ok, next_at=now + 1)], now)
    return reported


@pytest.mark.parametrize(
    ("outcomes", "fires"),
    [
        ([True] * 4 + [False] * 6, True),
        ([False] * 9, False),
        ([True] * 5 + [False] * 5, False),
    ],
    ids=["6-of-10", "9-requests", "5-of-10"],
)
async def test_auto_disable_needs_60_percent_failures_of_at_least_10_requests(
    store: Store, client: Client, outcomes: list[bool], fires: bool
) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)

    reported = await attempts(store, claimed, outcomes, T0)

    found = await store.get_integration(client.id, integration.id)
    assert found is not None
    assert (found.status is IntegrationStatus.AUTO_DISABLED) is fires
    assert len(reported) == int(fires)


async def test_auto_disable_fires_once_and_cancels_queued_work(
    store: Store, client: Client
) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)
    await store.ingest(client.id, events(2, start=2), T0)

    reported = await attempts(store, claimed, [True] * 4 + [False] * 8, T0)

    [fired] = reported
    assert (fired.requests, fired.failures) == (10, 6)
    assert fired.window_seconds == 12 * HOUR
    assert fired.integration.id == integration.id
    assert fired.integration.status is IntegrationStatus.AUTO_DISABLED
    assert fired.integration.disabled_reason == (
        "6 of 10 requests failed (60%) in the last 12 hours"
    )
    newest = (await log(store, client, integration))[0]
    assert (newest.status, numbers(newest.body)) == (DeliveryStatus.CANCELLED, [2, 3])
    assert await store.queued_notifications(integration.id) == 0


async def test_auto_disable_counts_only_the_last_twelve_hours(store: Store, client: Client) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)
    await attempts(store, claimed, [False] * 8, T0)

    reported = await attempts(store, claimed, [True] + [False] * 3, T0 + 13 * HOUR)

    assert reported == []
    found = await store.get_integration(client.id, integration.id)
    assert found is not None
    assert found.status is IntegrationStatus.FAILING


async def test_auto_disable_leaves_other_integrations_alone(store: Store, client: Client) -> None:
    await hook(store, client, "failing")
    healthy = await hook(store, client, "healthy")
    await store.ingest(client.id, [event(1)], T0)
    claims = {c.integration.id: c for c in await claim(store)}
    failing = next(c for i, c in claims.items() if i != healthy.id)

    await attempts(store, failing, [False] * 10, T0)
    await attempts(store, claims[healthy.id], [True] * 10, T0)

    found = await store.get_integration(client.id, healthy.id)
    assert found is not None
    assert found.status is IntegrationStatus.ACTIVE


# what gets queued -----------------------------------------------------------------------


async def test_of_identical_hits_only_five_per_hour_notify(store: Store, client: Client) -> None:
    integration = await hook(store, client)
    same = [event(n, sample_key=hit_key()) for n in range(7)]
    assert await store.ingest(client.id, same, T0) == 7
    assert await store.queued_notifications(integration.id) == 5

    await store.ingest(client.id, [event(7, sample_key=hit_key())], T0 + HOUR - 1)
    assert await store.queued_notifications(integration.id) == 5
    await store.ingest(client.id, [event(8, sample_key=hit_key())], T0 + HOUR)
    assert await store.queued_notifications(integration.id) == 6
    assert numbers((await claim_one(store, T0 + HOUR)).delivery.body) == [0, 1, 2, 3, 4, 8]


async def test_hits_from_another_source_or_client_are_sampled_apart(
    store: Store, client: Client
) -> None:
    integration = await hook(store, client)
    other = await store.create_client("Globex", "US", "https://console.globex.test", T0)
    other_hook = await hook(store, other, "globex")
    await store.ingest(client.id, [event(n, sample_key=hit_key()) for n in range(5)], T0)

    elsewhere = hit_key(remote_addr4="9.9.9.9")
    await store.ingest(client.id, [event(5, sample_key=elsewhere)], T0)
    await store.ingest(other.id, [event(6, sample_key=hit_key())], T0)

    assert await store.queued_notifications(integration.id) == 6
    assert await store.queued_notifications(other_hook.id) == 1


async def test_events_that_do_not_notify_are_stored_but_never_queued(
    store: Store, client: Client
) -> None:
    integration = await hook(store, client)
    assert await store.ingest(client.id, [event(1, notify=False)], T0) == 1
    assert await store.queued_notifications(integration.id) == 0
    assert await claim(store) == []


async def test_an_event_about_an_integration_skips_that_integration(
    store: Store, client: Client
) -> None:
    subject = await hook(store, client, "subject")
    bystander = await hook(store, client, "bystander")
    about = event(1, EventType.SYSTEM, skip_integration=subject.id)
    await store.ingest(client.id, [about], T0)
    assert await store.queued_notifications(subject.id) == 0
    assert await store.queued_notifications(bystander.id) == 1


async def test_vulnerabilities_are_filtered_by_risk_level(store: Store, client: Client) -> None:
    high_only = await hook(store, client, "high", vuln_risk_levels=(RiskLevel.HIGH,))
    every = await hook(store, client, "every")
    vulns = [event(n, EventType.VULN, risk=risk) for n, risk in enumerate(RiskLevel)]
    await store.ingest(client.id, vulns, T0)

    claims = {c.integration.id: c for c in await claim(store)}

    assert numbers(claims[high_only.id].delivery.body) == [0]
    assert numbers(claims[every.id].delivery.body) == [0, 1, 2]


async def test_only_subscribed_event_types_are_queued(store: Store, client: Client) -> None:
    vulns = await hook(store, client, "vulns", events=(EventType.VULN,))
    hits = await hook(store, client, "hits", events=(EventType.HIT,))
    kinds = [EventType.HIT, EventType.VULN, EventType.SYSTEM, EventType.SCOPE]
    await store.ingest(client.id, [event(n, kind) for n, kind in enumerate(kinds)], T0)

    claims = {c.integration.id: c for c in await claim(store)}

    assert numbers(claims[vulns.id].delivery.body) == [1]
    assert numbers(claims[hits.id].delivery.body) == [0]


# the delivery log -----------------------------------------------------------------------


@pytest.mark.max_batch(1)
async def test_the_delivery_log_pages_newest_first(store: Store, client: Client) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, events(5), T0)
    claims = await claim(store, max_in_flight=5)
    await store.record_attempts([record(c, T0) for c in claims], T0 + 1)

    pages: list[list[int]] = []
    before: int | None = None
    while page := await store.list_deliveries(client.id, integration.id, limit=2, before=before):
        pages.append([numbers(d.body)[0] for d in page])
        before = page[-1].id

    assert pages == [[4, 3], [2, 1], [0]]
    [newest] = await store.list_deliveries(client.id, integration.id, limit=1, before=None)
    assert [a.status_code for a in newest.attempts] == [200]


async def test_re_enabling_starts_the_auto_disable_count_afresh(
    store: Store, client: Client
) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)
    [fired] = await attempts(store, claimed, [False] * 10, T0)
    assert fired.integration.status is IntegrationStatus.AUTO_DISABLED

    await store.set_enabled(client.id, integration.id, enabled=True, now=T0 + 60)
    await store.ingest(client.id, [event(2)], T0 + 60)
    again = await claim_one(store, T0 + 60)
    reported = await attempts(store, again, [False] * 3, T0 + 61)

    assert reported == []
    found = await store.get_integration(client.id, integration.id)
    assert found is not None
    assert found.status is IntegrationStatus.FAILING


async def test_enabling_through_update_is_a_fresh_start_too(store: Store, client: Client) -> None:
    integration = await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    await attempts(store, await claim_one(store), [False] * 10, T0)

    updated = await store.update_integration(client.id, integration.id, settings(), T0 + 60)

    assert updated is not None
    assert updated.status is IntegrationStatus.ACTIVE
    assert updated.last_error is None


@pytest.mark.max_batch(1)
async def test_due_retries_of_a_saturated_integration_do_not_starve_others(
    store: Store, client: Client
) -> None:
    busy = await hook(store, client, "busy", events=(EventType.HIT,))
    await store.ingest(client.id, events(3), T0)
    for claimed in await claim(store):
        await store.record_attempts([record(claimed, T0, ok=False, next_at=T0 + 1)], T0)
    other = await hook(store, client, "other", events=(EventType.VULN,))
    await store.ingest(client.id, [event(9, EventType.VULN)], T0)
    [first] = await claim(store, T0)
    await store.record_attempts([record(first, T0, ok=False, next_at=T0 + 1)], T0)

    claims = await claim(store, T0 + 2, limit=1, in_flight={busy.id: 4})

    assert [c.integration.id for c in claims] == [other.id]
