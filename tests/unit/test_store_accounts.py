"""The Store contract for accounts: clients, users, tokens, applications, the denylist, stats.

Runs on SqliteStore and PostgresStore through the `store` fixture of
test_store_contract.py; the last test upgrades a SQLite database from migration 1.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from tests.unit import test_store_contract as contract
from tests.unit.sqlite_old import old_delivery, old_ingest
from tests.unit.test_store_contract import (
    BOOT,
    HOUR,
    T0,
    TOKEN_HASH,
    VAULT,
    attempts,
    claim,
    claim_one,
    event,
    events,
    hook,
    numbers,
    record,
    settings,
)
from tocsin.errors import Conflict
from tocsin.models import (
    Application,
    Client,
    DeliveryStatus,
    DenylistEntry,
    EventType,
    IntegrationStatus,
    Role,
    Token,
    User,
)
from tocsin.store import Store, StoreStats, queries
from tocsin.store.sqlite import SqliteStore

# The contract suite's fixtures: `store` is a migrated sqlite or postgres store,
# `client` the bootstrapped client of its administrator (TOKEN_HASH).
store = contract.store
client = contract.client

ZERO = {status.value: 0 for status in IntegrationStatus}


# helpers ---------------------------------------------------------------------


async def other_client(store: Store) -> Client:
    return await store.create_client("Globex", "US", "https://console.globex.test", T0)


async def add_user(
    store: Store,
    client: Client,
    email: str = "ann@acme.test",
    role: Role = Role.ANALYST,
    name: str = "Ann",
) -> User:
    return await store.create_user(client.id, email=email, name=name, role=role, now=T0 + 1)


async def add_token(
    store: Store,
    client: Client,
    user: User,
    secret: str = "tcs_ann",  # noqa: S107 - a test token
    *,
    expires_at: float | None = None,
    name: str = "laptop",
) -> Token:
    made = await store.create_token(
        client.id,
        user.id,
        name=name,
        token_hash=VAULT.token_digest(secret),
        expires_at=expires_at,
        now=T0 + 2,
    )
    assert made is not None
    return made


async def admin(store: Store, client: Client) -> User:
    principal = await store.principal([TOKEN_HASH], T0)
    assert principal is not None
    found = await store.get_user(client.id, principal.user_id)
    assert found is not None
    return found


async def who(store: Store, secret: str, now: float = T0 + 3) -> tuple[int, str, str] | None:
    """(token id, user name, client name) of the principal holding a token, or None."""
    principal = await store.principal([VAULT.token_digest(secret)], now)
    if principal is None:
        return None
    return principal.token_id, principal.name, principal.client.name


# clients ---------------------------------------------------------------------


async def test_clients_are_listed_by_id_and_updated(store: Store, client: Client) -> None:
    other = await other_client(store)
    assert await store.list_clients() == [client, other]

    updated = await store.update_client(
        other.id, name="Globex Corp", cloud="RU", console_url="https://console.globex.example"
    )

    assert updated == Client(
        id=other.id, name="Globex Corp", cloud="RU", console_url="https://console.globex.example"
    )
    assert await store.get_client(other.id) == updated
    assert await store.list_clients() == [client, updated]
    missing = await store.update_client(other.id + 100, name="x", cloud="x", console_url="x")
    assert missing is None


# users -----------------------------------------------------------------------


async def test_users_are_created_listed_and_read(store: Store, client: Client) -> None:
    first = await admin(store, client)
    ann = await add_user(store, client)

    assert ann == User(
        id=ann.id,
        client_id=client.id,
        email="ann@acme.test",
        name="Ann",
        role=Role.ANALYST,
        created_at=T0 + 1,
    )
    assert first.email == BOOT.admin_email
    assert first.name == BOOT.admin_name
    assert first.role is Role.ADMINISTRATOR
    assert await store.list_users(client.id) == [first, ann]
    assert await store.get_user(client.id, ann.id) == ann
    assert await store.get_user(client.id, ann.id + 100) is None


async def test_an_email_is_taken_once_per_client(store: Store, client: Client) -> None:
    await add_user(store, client)
    with pytest.raises(Conflict, match=r"ann@acme\.test"):
        await add_user(store, client, name="Another Ann", role=Role.READ_ONLY)
    assert len(await store.list_users(client.id)) == 2

    other = await other_client(store)
    elsewhere = await add_user(store, other)
    assert elsewhere.client_id == other.id
    assert await store.list_users(other.id) == [elsewhere]


async def test_a_role_changes_while_an_administrator_remains(store: Store, client: Client) -> None:
    first = await admin(store, client)
    ann = await add_user(store, client)

    promoted = await store.set_role(client.id, ann.id, Role.ADMINISTRATOR, T0 + 5)
    assert promoted is not None
    assert promoted.role is Role.ADMINISTRATOR
    demoted = await store.set_role(client.id, first.id, Role.DEPLOY, T0 + 6)
    assert demoted is not None
    assert demoted.role is Role.DEPLOY
    assert await store.get_user(client.id, first.id) == demoted
    assert await store.set_role(client.id, ann.id + 100, Role.ANALYST, T0 + 7) is None


async def test_the_last_administrator_keeps_the_role(store: Store, client: Client) -> None:
    first = await admin(store, client)
    await add_user(store, client)

    with pytest.raises(Conflict, match="administrator"):
        await store.set_role(client.id, first.id, Role.ANALYST, T0 + 5)
    assert await store.get_user(client.id, first.id) == first
    # Staying an administrator leaves one.
    same = await store.set_role(client.id, first.id, Role.ADMINISTRATOR, T0 + 6)
    assert same == first


async def test_deleting_a_user_removes_it_and_its_tokens(store: Store, client: Client) -> None:
    ann = await add_user(store, client)
    bob = await add_user(store, client, "bob@acme.test", name="Bob")
    await add_token(store, client, ann, "tcs_ann_1")
    await add_token(store, client, ann, "tcs_ann_2")
    kept = await add_token(store, client, bob, "tcs_bob")
    assert await who(store, "tcs_ann_1") is not None

    deleted = await store.delete_user(client.id, ann.id, T0 + 5)

    assert deleted == ann
    assert await store.get_user(client.id, ann.id) is None
    assert ann not in await store.list_users(client.id)
    assert await who(store, "tcs_ann_1") is None
    assert await who(store, "tcs_ann_2") is None
    assert [t.id for t in await store.list_tokens(client.id) if t.user_id == ann.id] == []
    assert await who(store, "tcs_bob") == (kept.id, "Bob", "Acme")
    assert await store.delete_user(client.id, ann.id, T0 + 6) is None


async def test_the_last_administrator_cannot_be_deleted(store: Store, client: Client) -> None:
    first = await admin(store, client)
    ann = await add_user(store, client, role=Role.ADMINISTRATOR)

    assert await store.delete_user(client.id, ann.id, T0 + 5) == ann
    with pytest.raises(Conflict, match="administrator"):
        await store.delete_user(client.id, first.id, T0 + 6)
    assert await store.get_user(client.id, first.id) == first
    assert await store.principal([TOKEN_HASH], T0 + 7) is not None


async def test_another_client_can_neither_see_nor_change_a_user(
    store: Store, client: Client
) -> None:
    ann = await add_user(store, client)
    other = await other_client(store)

    assert await store.list_users(other.id) == []
    assert await store.get_user(other.id, ann.id) is None
    assert await store.set_role(other.id, ann.id, Role.ADMINISTRATOR, T0) is None
    assert await store.delete_user(other.id, ann.id, T0) is None
    assert await store.get_user(client.id, ann.id) == ann


# tokens ----------------------------------------------------------------------


async def test_the_bootstrap_principal_names_its_token_and_user(
    store: Store, client: Client
) -> None:
    [bootstrap_token] = await store.list_tokens(client.id)
    principal = await store.principal([TOKEN_HASH], T0)

    assert principal is not None
    assert principal.token_id == bootstrap_token.id
    assert principal.name == BOOT.admin_name
    assert bootstrap_token.user_id == principal.user_id
    assert bootstrap_token.revoked_at is None
    assert bootstrap_token.expires_at is None


async def test_a_token_authenticates_its_user(store: Store, client: Client) -> None:
    ann = await add_user(store, client, role=Role.DEPLOY)
    made = await add_token(store, client, ann, expires_at=T0 + HOUR, name="sensor")

    assert made.user_id == ann.id
    assert made.name == "sensor"
    assert (made.created_at, made.expires_at, made.revoked_at) == (T0 + 2, T0 + HOUR, None)
    # The digest under an older key is tried too (crypto.Vault key rotation).
    principal = await store.principal(["stale-digest", VAULT.token_digest("tcs_ann")], T0 + 3)
    assert principal is not None
    assert (principal.token_id, principal.user_id, principal.name) == (made.id, ann.id, "Ann")
    assert (principal.email, principal.role) == ("ann@acme.test", Role.DEPLOY)
    assert principal.client == client


async def test_an_expired_token_is_nobody(store: Store, client: Client) -> None:
    ann = await add_user(store, client)
    made = await add_token(store, client, ann, expires_at=T0 + HOUR)

    assert await who(store, "tcs_ann", T0 + HOUR - 1) == (made.id, "Ann", "Acme")
    assert await who(store, "tcs_ann", T0 + HOUR) is None
    assert made in await store.list_tokens(client.id)


async def test_tokens_are_listed_by_id_with_revoked_and_expired_ones(
    store: Store, client: Client
) -> None:
    [first] = await store.list_tokens(client.id)
    ann = await add_user(store, client)
    expired = await add_token(store, client, ann, "tcs_old", expires_at=T0)
    revoked = await add_token(store, client, ann, "tcs_revoked")
    await store.revoke_token(client.id, revoked.id, T0 + 3)

    listed = await store.list_tokens(client.id)

    assert [t.id for t in listed] == [first.id, expired.id, revoked.id]
    assert listed[1] == expired
    assert listed[2].revoked_at == T0 + 3
    assert not listed[1].active(T0 + 3)
    assert not listed[2].active(T0 + 3)


async def test_revoking_is_idempotent_and_keeps_the_first_time(
    store: Store, client: Client
) -> None:
    ann = await add_user(store, client)
    made = await add_token(store, client, ann)

    revoked = await store.revoke_token(client.id, made.id, T0 + 5)
    again = await store.revoke_token(client.id, made.id, T0 + 9)

    assert revoked is not None
    assert revoked.revoked_at == T0 + 5
    assert again == revoked
    assert await who(store, "tcs_ann", T0 + 6) is None
    assert await store.revoke_token(client.id, made.id + 100, T0 + 9) is None


async def test_a_token_for_an_unknown_user_is_refused(store: Store, client: Client) -> None:
    other = await other_client(store)
    stranger = await add_user(store, other, "eve@globex.test")

    refused = await store.create_token(
        client.id,
        stranger.id,
        name="sneaky",
        token_hash=VAULT.token_digest("tcs_eve"),
        expires_at=None,
        now=T0,
    )

    assert refused is None
    assert await who(store, "tcs_eve") is None
    assert len(await store.list_tokens(client.id)) == 1


async def test_another_client_can_neither_see_nor_revoke_a_token(
    store: Store, client: Client
) -> None:
    ann = await add_user(store, client)
    made = await add_token(store, client, ann)
    other = await other_client(store)
    eve = await add_user(store, other, "eve@globex.test", name="Eve")
    theirs = await add_token(store, other, eve, "tcs_eve")

    assert await store.list_tokens(other.id) == [theirs]
    assert await store.revoke_token(other.id, made.id, T0 + 5) is None
    assert await who(store, "tcs_ann") == (made.id, "Ann", "Acme")
    assert await who(store, "tcs_eve") == (theirs.id, "Eve", "Globex")


# applications ----------------------------------------------------------------


async def test_applications_get_the_next_free_id_per_client(store: Store, client: Client) -> None:
    shop = await store.create_application(client.id, name="shop", now=T0)
    api = await store.create_application(client.id, name="api", now=T0 + 1)
    legacy = await store.create_application(client.id, name="legacy", now=T0 + 2, application_id=10)
    after = await store.create_application(client.id, name="after", now=T0 + 3)
    other = await other_client(store)
    theirs = await store.create_application(other.id, name="theirs", now=T0)

    assert [shop.id, api.id, legacy.id, after.id] == [1, 2, 10, 11]
    assert shop == Application(id=1, client_id=client.id, name="shop", created_at=T0, updated_at=T0)
    assert (theirs.id, theirs.client_id) == (1, other.id)
    assert await store.list_applications(client.id) == [shop, api, legacy, after]
    assert await store.list_applications(other.id) == [theirs]
    assert await store.get_application(client.id, 10) == legacy
    assert await store.get_application(client.id, 3) is None


async def test_an_application_id_is_taken_once_per_client(store: Store, client: Client) -> None:
    first = await store.create_application(client.id, name="shop", now=T0, application_id=7)
    with pytest.raises(Conflict, match="7"):
        await store.create_application(client.id, name="dup", now=T0, application_id=7)
    assert await store.list_applications(client.id) == [first]


async def test_applications_are_renamed_and_deleted(store: Store, client: Client) -> None:
    shop = await store.create_application(client.id, name="shop", now=T0)

    renamed = await store.rename_application(client.id, shop.id, "storefront", T0 + 5)

    assert renamed is not None
    assert (renamed.name, renamed.created_at, renamed.updated_at) == ("storefront", T0, T0 + 5)
    assert await store.get_application(client.id, shop.id) == renamed
    assert await store.delete_application(client.id, shop.id) == renamed
    assert await store.get_application(client.id, shop.id) is None
    assert await store.list_applications(client.id) == []
    assert await store.delete_application(client.id, shop.id) is None
    assert await store.rename_application(client.id, shop.id, "gone", T0 + 6) is None


async def test_another_client_can_neither_see_nor_change_an_application(
    store: Store, client: Client
) -> None:
    shop = await store.create_application(client.id, name="shop", now=T0)
    other = await other_client(store)

    assert await store.get_application(other.id, shop.id) is None
    assert await store.rename_application(other.id, shop.id, "mine", T0 + 1) is None
    assert await store.delete_application(other.id, shop.id) is None
    assert await store.get_application(client.id, shop.id) == shop


# denylist --------------------------------------------------------------------


async def deny(
    store: Store,
    client: Client,
    ip: str = "203.0.113.7",
    *,
    application: int | None = None,
    expire_at: float = T0 + HOUR,
    now: float = T0,
) -> DenylistEntry:
    return await store.add_denylist(
        client.id,
        ip=ip,
        reason="scanner",
        application=application,
        expire_at=expire_at,
        created_by="ann@acme.test",
        now=now,
    )


async def test_denylisted_addresses_are_listed_until_they_expire(
    store: Store, client: Client
) -> None:
    first = await store.add_denylist(
        client.id,
        ip="203.0.113.7",
        reason="scanner",
        application=None,
        expire_at=T0 + HOUR,
        created_by="ann@acme.test",
        now=T0,
    )
    second = await store.add_denylist(
        client.id,
        ip="2001:db8::1",
        reason="brute force",
        application=3,
        expire_at=T0 + 2 * HOUR,
        created_by="api",
        now=T0 + 1,
    )

    assert (first.client_id, first.ip, first.reason, first.application) == (
        client.id,
        "203.0.113.7",
        "scanner",
        None,
    )
    assert (first.created_at, first.expire_at, first.created_by) == (T0, T0 + HOUR, "ann@acme.test")
    assert (second.application, second.created_by) == (3, "api")
    assert await store.list_denylist(client.id, T0 + 2) == [first, second]
    assert await store.list_denylist(client.id, T0 + HOUR) == [second]
    assert await store.list_denylist(client.id, T0 + 2 * HOUR) == []


async def test_an_address_is_denylisted_once_per_application_until_it_expires(
    store: Store, client: Client
) -> None:
    await deny(store, client)
    with pytest.raises(Conflict, match=r"203\.0\.113\.7"):
        await deny(store, client, now=T0 + 1)
    await deny(store, client, application=1)
    with pytest.raises(Conflict):
        await deny(store, client, application=1, now=T0 + 1)
    await deny(store, client, "203.0.113.8")
    assert len(await store.list_denylist(client.id, T0 + 1)) == 3

    # Once expired, the same address and application can be denylisted again.
    await deny(store, client, expire_at=T0 + 2 * HOUR, now=T0 + HOUR)
    listed = await store.list_denylist(client.id, T0 + HOUR)
    assert [(e.ip, e.application) for e in listed] == [("203.0.113.7", None)]


async def test_removing_a_denylist_entry(store: Store, client: Client) -> None:
    kept = await deny(store, client)
    gone = await deny(store, client, "203.0.113.8")

    assert await store.remove_denylist(client.id, gone.id, T0 + 1) == gone
    assert await store.list_denylist(client.id, T0 + 1) == [kept]
    assert await store.remove_denylist(client.id, gone.id, T0 + 2) is None
    # An expired entry is no longer there to remove.
    assert await store.remove_denylist(client.id, kept.id, T0 + HOUR) is None
    # Removed, an address can be denylisted again at once.
    await deny(store, client, "203.0.113.8", now=T0 + 3)


async def test_another_client_can_neither_see_nor_remove_a_denylist_entry(
    store: Store, client: Client
) -> None:
    mine = await deny(store, client)
    other = await other_client(store)

    assert await store.list_denylist(other.id, T0) == []
    assert await store.remove_denylist(other.id, mine.id, T0) is None
    # The same address is the other client's own business.
    await deny(store, other)
    assert await store.list_denylist(client.id, T0) == [mine]


# events stored for triggers --------------------------------------------------


async def test_denylist_and_api_change_events_are_stored_but_queue_nothing(
    store: Store, client: Client
) -> None:
    integration = await hook(
        store, client, events=(EventType.HIT, EventType.VULN, EventType.SYSTEM, EventType.SCOPE)
    )
    stored = [event(1, EventType.IP_DENYLISTED), event(2, EventType.API_CHANGE)]

    assert await store.ingest(client.id, stored, T0) == 2

    assert await store.queued_notifications(integration.id) == 0
    assert (await store.stats()).queued_notifications == 0


# stats -----------------------------------------------------------------------


async def test_stats_of_an_empty_deployment_are_zero(store: Store, client: Client) -> None:
    assert await store.stats() == StoreStats(
        queued_notifications=0, waiting_deliveries=0, integrations=ZERO
    )


async def test_stats_count_queued_work_and_integrations_of_every_client(
    store: Store, client: Client
) -> None:
    mine = await hook(store, client, "mine")
    off = await hook(store, client, "off")
    await store.set_enabled(client.id, off.id, enabled=False, now=T0)
    gone = await hook(store, client, "gone")
    await store.delete_integration(client.id, gone.id, T0)
    other = await other_client(store)
    theirs = await store.create_integration(other.id, settings("theirs"), "whsec_test", T0)

    await store.ingest(client.id, events(3), T0)
    await store.ingest(other.id, events(2), T0)
    stats = await store.stats()
    assert (stats.queued_notifications, stats.waiting_deliveries) == (5, 0)
    assert stats.integrations == ZERO | {"active": 2, "disabled": 1}

    claims = {c.integration.id: c for c in await claim(store)}
    assert (await store.stats()).queued_notifications == 5
    assert (await store.stats()).waiting_deliveries == 2

    failed = record(claims[mine.id], T0, ok=False, next_at=T0 + 60)
    await store.record_attempts([failed, record(claims[theirs.id], T0)], T0)
    await store.ingest(client.id, events(1, start=3), T0 + 1)

    stats = await store.stats()
    assert (stats.queued_notifications, stats.waiting_deliveries) == (4, 1)
    assert stats.integrations == ZERO | {"active": 1, "failing": 1, "disabled": 1}


async def test_stats_count_auto_disabled_integrations_and_drop_cancelled_work(
    store: Store, client: Client
) -> None:
    await hook(store, client)
    await store.ingest(client.id, [event(1)], T0)
    claimed = await claim_one(store)
    await store.ingest(client.id, events(2, start=2), T0)

    await attempts(store, claimed, [False] * 10, T0)

    delivery = await store.get_delivery(client.id, claimed.delivery.id)
    assert delivery is not None
    assert delivery.status is DeliveryStatus.CANCELLED
    assert await store.stats() == StoreStats(
        queued_notifications=0, waiting_deliveries=0, integrations=ZERO | {"auto_disabled": 1}
    )


# migration -------------------------------------------------------------------


async def test_a_sqlite_database_at_migration_1_upgrades_keeping_its_queued_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    every = queries.migrations("sqlite")
    assert [version for version, _ in every][:2] == [1, 2]
    with monkeypatch.context() as patched:
        patched.setattr(queries, "migrations", lambda dialect: queries_upto(every, 1))
        old = SqliteStore(path, vault=VAULT, synchronous="NORMAL")
        assert await old.migrate() == [1]
        acme = version_1_bootstrap(path)
        integration = await hook(old, acme)
        old_ingest(path, acme.id, events(2), T0)
        retrying = old_delivery(
            path,
            integration,
            status=DeliveryStatus.RETRYING,
            at=T0,
            attempts=[False],
            next_at=T0 + 60,
        )
        old_ingest(path, acme.id, events(3, start=2), T0 + 1)
        await old.close()
    assert "name" not in columns(path, "tokens")

    new = SqliteStore(path, vault=VAULT, synchronous="NORMAL")
    try:
        assert await new.migrate() == [version for version, _ in every if version >= 2]
        assert await new.migrate() == []
        assert "name" in columns(path, "tokens")

        kept = await new.get_integration(acme.id, integration.id)
        assert kept is not None
        assert (kept.settings, kept.status) == (integration.settings, IntegrationStatus.FAILING)
        assert await new.queued_notifications(integration.id) == 3
        stats = await new.stats()
        assert (stats.queued_notifications, stats.waiting_deliveries) == (5, 1)
        upgraded = await new.principal([TOKEN_HASH], T0 + 60)
        assert upgraded is not None
        assert upgraded.name == BOOT.admin_name
        [kept_token] = await new.list_tokens(acme.id)
        assert (upgraded.token_id, kept_token.name) == (kept_token.id, "")

        claims = await claim(new, T0 + 60)
        assert claims[0].delivery.id == retrying
        assert [numbers(c.delivery.body) for c in claims] == [[0, 1], [2, 3, 4]]
        assert (await new.create_application(acme.id, name="shop", now=T0)).id == 1
        assert await new.list_denylist(acme.id, T0) == []
    finally:
        await new.close()


def version_1_bootstrap(path: Path) -> Client:
    """The first client, administrator and token as version 1 wrote them (tokens unnamed)."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        client_id = conn.execute(
            "INSERT INTO clients (name, cloud, console_url, created_at) VALUES (?, ?, ?, ?)",
            (BOOT.client_name, BOOT.cloud, BOOT.console_url, T0),
        ).lastrowid
        user_id = conn.execute(
            "INSERT INTO users (client_id, email, name, role, created_at) VALUES (?, ?, ?, ?, ?)",
            (client_id, BOOT.admin_email, BOOT.admin_name, "administrator", T0),
        ).lastrowid
        conn.execute(
            "INSERT INTO tokens (user_id, token_hash, created_at) VALUES (?, ?, ?)",
            (user_id, TOKEN_HASH, T0),
        )
    assert client_id is not None
    return Client(
        id=client_id, name=BOOT.client_name, cloud=BOOT.cloud, console_url=BOOT.console_url
    )


def columns(path: Path, table: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def queries_upto(every: list[tuple[int, str]], version: int) -> list[tuple[int, str]]:
    return [(number, script) for number, script in every if number <= version]
