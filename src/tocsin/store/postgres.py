"""The shared store: PostgreSQL through an asyncpg pool, for any number of processes.

The same semantics as SqliteStore, method for method; what differs is how several
processes stay out of each other's way (the SQL is in `sql/postgres.sql`):

- Claims take due deliveries and queued outbox groups with `FOR UPDATE SKIP LOCKED`
  and never wait for a lock: two workers never get the same delivery.
- Row locks on integrations order the rest. Changing an integration's settings or
  state takes `FOR UPDATE`; ingestion and claims take `FOR KEY SHARE`, so a disable
  waits for the ingests that saw the integration enabled and then cancels what they
  queued; recording attempts takes `FOR NO KEY UPDATE`, so the attempts of one
  integration are recorded one transaction at a time and the auto-disable rule sees
  every committed attempt (and fires once: its UPDATE is conditional).
- Hit sampling is counted in `hit_samples` (one upsert per ingest), not in memory, so
  the first 5 identical hits per hour notify once in total whichever process takes them.
- Ingestion sends `NOTIFY tocsin_work` on commit; `wait_for_work` listens on a
  dedicated connection, so a dispatcher in another process wakes within milliseconds.
- Periodic tasks that must run once across processes (pruning the delivery log, and
  later trigger evaluation) take their turn with `_take_turn`: the task's row in
  `maintenance`, locked FOR UPDATE SKIP LOCKED in the transaction that does the work.
- Account changes whose check reads other rows (the last administrator, the next
  application id, an unexpired denylist entry) first lock the client's row, so the
  check and the change of one transaction are never interleaved with another's.
  Duplicate emails and application ids are refused by unique keys.
- An administrative change and its system notification (`audit`, see store/base.py) are
  one transaction: the notification is ingested by the same code as `ingest`, after the
  change. Integration changes lock the client's row before the integration's, so that two
  changes of one client's integrations never hold one integration each while their
  ingests wait for the other's (FOR KEY SHARE on every enabled integration of the client).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import asyncpg

from tocsin import ids, retry, sampling
from tocsin.crypto import Vault
from tocsin.errors import Conflict, MigrationError, NotFound, StoreError
from tocsin.models import (
    Application,
    Attempt,
    AttemptRecord,
    Claim,
    Client,
    Delivery,
    DeliveryStatus,
    DenylistEntry,
    Denylisting,
    Integration,
    IntegrationStatus,
    NewEvent,
    Principal,
    Role,
    Token,
    User,
    WebhookSettings,
)
from tocsin.store import codec, grouping, queries, routing, stream
from tocsin.store.base import (
    CANCEL_BATCHES,
    DIGEST_TAKEN,
    PRUNE_TASK,
    Audit,
    AutoDisabled,
    Bootstrap,
    Changed,
    ClaimLimits,
    ClaimSlots,
    Pruned,
    StoreStats,
    Turn,
    check_resendable,
    denylisted_already,
    in_turn,
    last_administrator,
    lease_seconds,
    next_turn,
)
from tocsin.store.stream import Handler
from tocsin.triggers.definitions import Trigger, TriggerSpec, counting_changed

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")
Q = queries.load("postgres")
CHANNEL = "tocsin_work"  # NOTIFY tocsin_work in sql/postgres.sql
log = logging.getLogger("tocsin.store")

_DEADLOCK_TRIES = 3
_PRUNE_EVERY = 60.0
# Windows are forgotten a minute after they end, so that a process whose clock is a
# little behind never finds its window gone early.
_PRUNE_AFTER = sampling.SAMPLE_WINDOW + 60.0
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class PostgresStore:
    """Store on one PostgreSQL database, shared by every tocsin process that names it."""

    def __init__(
        self, dsn: str, *, vault: Vault, max_batch: int = 500, pool_size: int = 10
    ) -> None:
        self._dsn = dsn
        self._where = describe(dsn)
        self._max_batch = max_batch
        self._pool_size = pool_size
        self._codec = codec.Secrets(vault)
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._opening = asyncio.Lock()
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._work = asyncio.Event()
        self._pruned_at = -math.inf
        self._consumers: set[str] = set()  # stream consumers whose row is known to exist

    # plumbing -------------------------------------------------------------

    async def _tx(self, fn: Callable[[Conn], Awaitable[T]], *, snapshot: bool = False) -> T:
        """Run `fn` as one transaction; a deadlock (never expected) is retried.

        `snapshot`: a read-only REPEATABLE READ transaction, so that a read of several
        statements (a delivery, then its attempts) sees one moment, not two.
        """
        isolation: Literal["repeatable_read"] | None = "repeatable_read" if snapshot else None
        pool = await self._open()
        tries = 0
        while True:
            tries += 1
            try:
                async with (
                    pool.acquire() as conn,
                    conn.transaction(isolation=isolation, readonly=snapshot),
                ):
                    return await fn(conn)
            except asyncpg.DeadlockDetectedError as exc:
                if tries >= _DEADLOCK_TRIES:
                    raise StoreError(f"PostgreSQL at {self._where}: {exc}") from exc
                log.warning("deadlock on %s; retrying the transaction", self._where)
            except _DRIVER_ERRORS as exc:
                raise StoreError(f"PostgreSQL at {self._where}: {exc}") from exc

    async def _open(self) -> asyncpg.Pool[asyncpg.Record]:
        async with self._opening:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self._pool_size
                    )
                except _DRIVER_ERRORS as exc:
                    where = self._where
                    raise StoreError(f"cannot connect to PostgreSQL at {where}: {exc}") from exc
            return self._pool

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        pool, self._pool = self._pool, None
        if listener is not None and not listener.is_closed():
            await listener.close()
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        await self._tx(lambda conn: conn.fetchval(Q["ping"]))

    async def migrate(self) -> list[int]:
        return await self._tx(_migrate)

    # waking other processes ------------------------------------------------

    async def wait_for_work(self) -> None:
        """Return when some process may have queued work (or the listening connection broke).

        Raises StoreError when PostgreSQL cannot be reached to listen.
        """
        await self._listen()
        await self._work.wait()
        self._work.clear()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        listener: asyncpg.Connection[asyncpg.Record] | None = None
        try:
            listener = await asyncpg.connect(self._dsn)
            await listener.add_listener(CHANNEL, self._on_notify)
        except _DRIVER_ERRORS as exc:
            if listener is not None:
                listener.terminate()
            raise StoreError(f"cannot listen on PostgreSQL at {self._where}: {exc}") from exc
        listener.add_termination_listener(self._on_notify)  # wake, then listen again
        self._listener = listener
        self._work.set()  # whatever was queued while nobody listened: look once

    def _on_notify(self, *_: object) -> None:
        self._work.set()

    # clients, users, tokens -------------------------------------------------

    async def bootstrap(self, boot: Bootstrap, now: float) -> bool:
        async def tx(conn: Conn) -> bool:
            await conn.execute(Q["lock_bootstrap"])
            if await conn.fetchval(Q["count_clients"]):
                return False
            await _new_client(conn, boot, now)
            return True

        return await self._tx(tx)

    async def create_client_with_administrator(self, boot: Bootstrap, now: float) -> User:
        return await self._tx(lambda conn: _new_client(conn, boot, now))

    async def principal(self, token_hashes: Sequence[str], now: float) -> Principal | None:
        async def tx(conn: Conn) -> Principal | None:
            row = await conn.fetchrow(Q["principal_by_token"], list(token_hashes), now)
            return None if row is None else codec.principal_from_row(row)

        return await self._tx(tx)

    async def get_client(self, client_id: int) -> Client | None:
        async def tx(conn: Conn) -> Client | None:
            row = await conn.fetchrow(Q["client_by_id"], client_id)
            return None if row is None else Client(**dict(row))

        return await self._tx(tx)

    async def create_client(self, name: str, cloud: str, console_url: str, now: float) -> Client:
        async def tx(conn: Conn) -> Client:
            client_id = await conn.fetchval(Q["insert_client"], name, cloud, console_url, now)
            return Client(id=client_id, name=name, cloud=cloud, console_url=console_url)

        return await self._tx(tx)

    async def list_clients(self) -> list[Client]:
        async def tx(conn: Conn) -> list[Client]:
            return [Client(**dict(row)) for row in await conn.fetch(Q["all_clients"])]

        return await self._tx(tx)

    async def update_client(
        self, client_id: int, *, name: str, cloud: str, console_url: str
    ) -> Client | None:
        async def tx(conn: Conn) -> Client | None:
            row = await conn.fetchrow(Q["update_client"], client_id, name, cloud, console_url)
            return None if row is None else Client(**dict(row))

        return await self._tx(tx)

    async def create_user(
        self,
        client_id: int,
        *,
        email: str,
        name: str,
        role: Role,
        now: float,
        audit: Audit[User] | None = None,
    ) -> User:
        async def tx(conn: Conn) -> User:
            try:
                row = await conn.fetchrow(Q["insert_user"], client_id, email, name, role.value, now)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"this client already has a user with email {email}") from exc
            except asyncpg.ForeignKeyViolationError as exc:
                raise NotFound(f"client {client_id} not found") from exc
            user = codec.user_from_row(_one(row))
            await self._audit(conn, client_id, audit, user, now)
            return user

        return await self._tx(tx)

    async def list_users(self, client_id: int) -> list[User]:
        async def tx(conn: Conn) -> list[User]:
            return [
                codec.user_from_row(row)
                for row in await conn.fetch(Q["users_of_client"], client_id)
            ]

        return await self._tx(tx)

    async def get_user(self, client_id: int, user_id: int) -> User | None:
        async def tx(conn: Conn) -> User | None:
            row = await conn.fetchrow(Q["user_by_id"], client_id, user_id)
            return None if row is None else codec.user_from_row(row)

        return await self._tx(tx)

    async def set_role(
        self,
        client_id: int,
        user_id: int,
        role: Role,
        now: float,
        *,
        audit: Audit[Changed[User]] | None = None,
    ) -> User | None:
        async def tx(conn: Conn) -> User | None:
            user = await _locked_user(conn, client_id, user_id)
            if user is None:
                return None
            if role is not Role.ADMINISTRATOR:
                await _keep_an_administrator(conn, user, "change the role of")
            after = codec.user_from_row(
                _one(await conn.fetchrow(Q["set_role"], client_id, user_id, role.value))
            )
            await self._audit(conn, client_id, audit, Changed(user, after), now)
            return after

        return await self._tx(tx)

    async def delete_user(
        self, client_id: int, user_id: int, now: float, *, audit: Audit[User] | None = None
    ) -> User | None:
        async def tx(conn: Conn) -> User | None:
            user = await _locked_user(conn, client_id, user_id)
            if user is None:
                return None
            await _keep_an_administrator(conn, user, "delete")
            await conn.execute(Q["delete_tokens_of_user"], user_id)
            await conn.execute(Q["delete_user"], client_id, user_id)
            await self._audit(conn, client_id, audit, user, now)
            return user

        return await self._tx(tx)

    async def create_token(
        self,
        client_id: int,
        user_id: int,
        *,
        name: str,
        token_hash: str,
        expires_at: float | None,
        now: float,
    ) -> Token | None:
        async def tx(conn: Conn) -> Token | None:
            try:
                row = await conn.fetchrow(
                    Q["insert_named_token"], client_id, user_id, name, token_hash, expires_at, now
                )
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(DIGEST_TAKEN) from exc
            return None if row is None else Token(**dict(row))

        return await self._tx(tx)

    async def list_tokens(self, client_id: int) -> list[Token]:
        async def tx(conn: Conn) -> list[Token]:
            return [
                Token(**dict(row)) for row in await conn.fetch(Q["tokens_of_client"], client_id)
            ]

        return await self._tx(tx)

    async def revoke_token(self, client_id: int, token_id: int, now: float) -> Token | None:
        async def tx(conn: Conn) -> Token | None:
            row = await conn.fetchrow(Q["revoke_token"], client_id, token_id, now)
            return None if row is None else Token(**dict(row))

        return await self._tx(tx)

    # applications and the denylist ---------------------------------------------

    async def create_application(
        self,
        client_id: int,
        *,
        name: str,
        now: float,
        application_id: int | None = None,
        audit: Audit[Application] | None = None,
    ) -> Application:
        async def tx(conn: Conn) -> Application:
            # Locked, so that two creations never both take the client's highest id + 1.
            await _lock_client(conn, client_id)
            wanted = application_id
            if wanted is None:
                wanted = int(await conn.fetchval(Q["next_application_id"], client_id))
            try:
                row = await conn.fetchrow(Q["insert_application"], client_id, wanted, name, now)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(
                    f"application {wanted} already exists; choose another id or rename it"
                ) from exc
            created = Application(**dict(_one(row)))
            await self._audit(conn, client_id, audit, created, now)
            return created

        return await self._tx(tx)

    async def list_applications(self, client_id: int) -> list[Application]:
        async def tx(conn: Conn) -> list[Application]:
            rows = await conn.fetch(Q["applications_of_client"], client_id)
            return [Application(**dict(row)) for row in rows]

        return await self._tx(tx)

    async def get_application(self, client_id: int, application_id: int) -> Application | None:
        async def tx(conn: Conn) -> Application | None:
            row = await conn.fetchrow(Q["application_by_id"], client_id, application_id)
            return None if row is None else Application(**dict(row))

        return await self._tx(tx)

    async def rename_application(
        self,
        client_id: int,
        application_id: int,
        name: str,
        now: float,
        *,
        audit: Audit[Changed[Application]] | None = None,
    ) -> Application | None:
        async def tx(conn: Conn) -> Application | None:
            await conn.execute(Q["lock_client"], client_id)  # `before` stays what it read
            before = await conn.fetchrow(Q["application_by_id"], client_id, application_id)
            row = await conn.fetchrow(Q["rename_application"], client_id, application_id, name, now)
            if before is None or row is None:
                return None
            after = Application(**dict(row))
            changed = Changed(Application(**dict(before)), after)
            await self._audit(conn, client_id, audit, changed, now)
            return after

        return await self._tx(tx)

    async def delete_application(
        self,
        client_id: int,
        application_id: int,
        *,
        now: float | None = None,
        audit: Audit[Application] | None = None,
    ) -> Application | None:
        async def tx(conn: Conn) -> Application | None:
            row = await conn.fetchrow(Q["delete_application"], client_id, application_id)
            if row is None:
                return None
            deleted = Application(**dict(row))
            stamp = time.time() if now is None else now
            await self._audit(conn, client_id, audit, deleted, stamp)
            return deleted

        return await self._tx(tx)

    async def add_denylist(
        self,
        client_id: int,
        *,
        ip: str,
        reason: str,
        application: int | None,
        expire_at: float,
        created_by: str,
        now: float,
        audit: Audit[DenylistEntry] | None = None,
    ) -> DenylistEntry:
        async def tx(conn: Conn) -> DenylistEntry:
            # Locked, so that of two concurrent additions the second sees the first.
            await _lock_client(conn, client_id)
            found = await conn.fetchrow(
                Q["unexpired_denylist_entry"], client_id, ip, application, now
            )
            if found is not None:
                raise denylisted_already(
                    found["ip"],
                    found["application"],
                    expire_at=found["expire_at"],
                    entry_id=found["id"],
                )
            row = await conn.fetchrow(
                Q["insert_denylist"],
                client_id,
                ip,
                reason,
                application,
                now,
                expire_at,
                created_by,
            )
            entry = DenylistEntry(**dict(_one(row)))
            await self._audit(conn, client_id, audit, entry, now)
            return entry

        return await self._tx(tx)

    async def list_denylist(self, client_id: int, now: float) -> list[DenylistEntry]:
        async def tx(conn: Conn) -> list[DenylistEntry]:
            rows = await conn.fetch(Q["denylist_of_client"], client_id, now)
            return [DenylistEntry(**dict(row)) for row in rows]

        return await self._tx(tx)

    async def remove_denylist(
        self, client_id: int, entry_id: int, now: float
    ) -> DenylistEntry | None:
        async def tx(conn: Conn) -> DenylistEntry | None:
            row = await conn.fetchrow(Q["delete_denylist"], client_id, entry_id, now)
            return None if row is None else DenylistEntry(**dict(row))

        return await self._tx(tx)

    # triggers ---------------------------------------------------------------------

    async def create_trigger(
        self,
        client_id: int,
        spec: TriggerSpec,
        now: float,
        *,
        audit: Audit[Trigger] | None = None,
    ) -> Trigger:
        async def tx(conn: Conn) -> Trigger:
            row = await conn.fetchrow(Q["insert_trigger"], client_id, *_trigger_args(spec), now)
            created = codec.trigger_from_row(_one(row))
            await self._audit(conn, client_id, audit, created, now)
            return created

        return await self._tx(tx)

    async def list_triggers(self, client_id: int) -> list[Trigger]:
        async def tx(conn: Conn) -> list[Trigger]:
            rows = await conn.fetch(Q["triggers_of_client"], client_id)
            return [codec.trigger_from_row(row) for row in rows]

        return await self._tx(tx)

    async def get_trigger(self, client_id: int, trigger_id: int) -> Trigger | None:
        async def tx(conn: Conn) -> Trigger | None:
            row = await conn.fetchrow(Q["trigger_of_client"], client_id, trigger_id)
            return None if row is None else codec.trigger_from_row(row)

        return await self._tx(tx)

    async def all_triggers(self) -> list[Trigger]:
        async def tx(conn: Conn) -> list[Trigger]:
            return [codec.trigger_from_row(row) for row in await conn.fetch(Q["all_triggers"])]

        return await self._tx(tx)

    async def update_trigger(
        self,
        client_id: int,
        trigger_id: int,
        spec: TriggerSpec,
        now: float,
        *,
        audit: Audit[Changed[Trigger]] | None = None,
    ) -> Trigger | None:
        async def tx(conn: Conn) -> Trigger | None:
            # Locked: `before` is what this change replaces, not what another one did.
            row = await conn.fetchrow(Q["trigger_for_update"], client_id, trigger_id)
            if row is None:
                return None
            before = codec.trigger_from_row(row)
            since = now if counting_changed(before.spec, spec) else before.counting_since
            args = (client_id, trigger_id, *_trigger_args(spec), now, since)
            after = codec.trigger_from_row(_one(await conn.fetchrow(Q["update_trigger"], *args)))
            await self._audit(conn, client_id, audit, Changed(before, after), now)
            return after

        return await self._tx(tx)

    async def delete_trigger(
        self, client_id: int, trigger_id: int, now: float, *, audit: Audit[Trigger] | None = None
    ) -> Trigger | None:
        async def tx(conn: Conn) -> Trigger | None:
            row = await conn.fetchrow(Q["delete_trigger"], client_id, trigger_id)
            if row is None:
                return None
            before = codec.trigger_from_row(row)
            await self._audit(conn, client_id, audit, before, now)
            return before

        return await self._tx(tx)

    async def stats(self) -> StoreStats:
        async def tx(conn: Conn) -> StoreStats:
            queue = _one(await conn.fetchrow(Q["stats_queue"]))
            counts = {
                row["status"]: int(row["count"])
                for row in await conn.fetch(Q["stats_integrations"])
            }
            return StoreStats(
                queued_notifications=int(queue["queued_notifications"]),
                waiting_deliveries=int(queue["waiting_deliveries"]),
                integrations={
                    status.value: counts.get(status.value, 0) for status in IntegrationStatus
                },
            )

        return await self._tx(tx, snapshot=True)

    # integrations -----------------------------------------------------------

    async def create_integration(
        self,
        client_id: int,
        settings: WebhookSettings,
        signing_secret: str,
        now: float,
        *,
        audit: Audit[Integration] | None = None,
    ) -> Integration:
        async def tx(conn: Conn) -> Integration:
            await conn.execute(Q["lock_client"], client_id)
            row = await conn.fetchrow(
                Q["insert_integration"],
                client_id,
                self._codec.settings_json(settings),
                settings.enabled,
                self._codec.seal(signing_secret),
                now,
            )
            created = self._codec.integration(_one(row))
            await self._audit(conn, client_id, audit, created, now)
            return created

        return await self._tx(tx)

    async def get_integration(self, client_id: int, integration_id: int) -> Integration | None:
        async def tx(conn: Conn) -> Integration | None:
            row = await conn.fetchrow(Q["integration_by_id"], integration_id, client_id)
            return None if row is None else self._codec.integration(row)

        return await self._tx(tx)

    async def list_integrations(self, client_id: int) -> list[Integration]:
        async def tx(conn: Conn) -> list[Integration]:
            rows = await conn.fetch(Q["integrations_of_client"], client_id)
            return [self._codec.integration(row) for row in rows]

        return await self._tx(tx)

    async def update_integration(
        self,
        client_id: int,
        integration_id: int,
        settings: WebhookSettings,
        now: float,
        *,
        audit: Audit[Changed[Integration]] | None = None,
    ) -> Integration | None:
        async def tx(conn: Conn) -> Integration | None:
            await conn.execute(Q["lock_client"], client_id)
            before = await conn.fetchrow(Q["lock_integration"], integration_id, client_id)
            if before is None:
                return None
            row = await conn.fetchrow(
                Q["update_integration_settings"],
                integration_id,
                client_id,
                self._codec.settings_json(settings),
                settings.enabled,
                now,
            )
            after = self._codec.integration(_one(row))
            if before["enabled"] and not settings.enabled:
                await self._cancel_queued(conn, after, now)
            changed = Changed(self._codec.integration(before), after)
            await self._audit(conn, client_id, audit, changed, now)
            return after

        return await self._tx(tx)

    async def set_enabled(
        self,
        client_id: int,
        integration_id: int,
        *,
        enabled: bool,
        now: float,
        reason: str | None = None,
        audit: Audit[Changed[Integration]] | None = None,
    ) -> Integration | None:
        async def tx(conn: Conn) -> Integration | None:
            await conn.execute(Q["lock_client"], client_id)
            before = await conn.fetchrow(Q["lock_integration"], integration_id, client_id)
            if before is None:
                return None
            if enabled:
                row = await conn.fetchrow(Q["enable_integration"], integration_id, client_id, now)
            else:
                row = await conn.fetchrow(
                    Q["disable_integration"], integration_id, client_id, now, reason
                )
            integration = self._codec.integration(_one(row))
            if not enabled:
                await self._cancel_queued(conn, integration, now)
            changed = Changed(self._codec.integration(before), integration)
            await self._audit(conn, client_id, audit, changed, now)
            return integration

        return await self._tx(tx)

    async def delete_integration(
        self,
        client_id: int,
        integration_id: int,
        now: float,
        *,
        audit: Audit[Integration] | None = None,
    ) -> bool:
        async def tx(conn: Conn) -> bool:
            await conn.execute(Q["lock_client"], client_id)
            row = await conn.fetchrow(Q["lock_integration"], integration_id, client_id)
            if row is None:
                return False
            await conn.execute(Q["delete_integration"], integration_id, client_id, now)
            before = self._codec.integration(row)
            await self._cancel_queued(conn, before, now)
            await self._audit(conn, client_id, audit, before, now)
            return True

        return await self._tx(tx)

    async def _cancel_queued(self, conn: Conn, integration: Integration, now: float) -> None:
        """Cancel waiting deliveries and turn queued notifications into cancelled deliveries.

        They stay in the delivery log so that they can be re-sent after re-enabling. The
        caller holds the integration FOR UPDATE: no claim holds its outbox rows.
        """
        await conn.execute(Q["cancel_waiting_deliveries"], integration.id, now)
        cancelled = DeliveryStatus.CANCELLED
        while await self._new_deliveries(
            conn, integration, now, status=cancelled, lease=None, most=CANCEL_BATCHES
        ):
            pass

    async def rotate_signing_secret(
        self,
        client_id: int,
        integration_id: int,
        secret: str,
        now: float,
        *,
        audit: Audit[Integration] | None = None,
    ) -> Integration | None:
        async def tx(conn: Conn) -> Integration | None:
            await conn.execute(Q["lock_client"], client_id)
            row = await conn.fetchrow(
                Q["rotate_signing_secret"],
                integration_id,
                client_id,
                self._codec.seal(secret),
                now,
            )
            if row is None:
                return None
            rotated = self._codec.integration(row)
            await self._audit(conn, client_id, audit, rotated, now)
            return rotated

        return await self._tx(tx)

    async def reencrypt(self) -> int:
        async def tx(conn: Conn) -> int:
            rows = await conn.fetch(Q["all_integration_secrets"])
            vault = self._codec.vault
            await conn.executemany(
                Q["store_integration_secrets"],
                [
                    (
                        row["id"],
                        self._codec.reencrypted_settings(row["settings"]),
                        vault.rotate(row["signing_secret"]),
                        _rotated(vault, row["previous_signing_secret"]),
                    )
                    for row in rows
                ],
            )
            return len(rows)

        return await self._tx(tx)

    async def queued_notifications(self, integration_id: int) -> int:
        async def tx(conn: Conn) -> int:
            return int(await conn.fetchval(Q["count_outbox"], integration_id))

        return await self._tx(tx)

    # ingestion ----------------------------------------------------------------

    async def ingest(self, client_id: int, events: Sequence[NewEvent], now: float) -> int:
        return await self._tx(lambda conn: self._ingest(conn, client_id, events, now))

    async def _ingest(
        self, conn: Conn, client_id: int, events: Sequence[NewEvent], now: float
    ) -> int:
        """Store events in groups and queue their notifications (inside a transaction)."""
        rows = await conn.fetch(Q["enabled_integrations_of_client"], client_id)
        integrations = [self._codec.integration(row) for row in rows]
        notify = await _sample(conn, client_id, events, now)
        groups = list(grouping.group(events, notify, self._max_batch))
        if not groups:
            return 0
        event_ids = await _store_groups(conn, client_id, groups, now)
        outbox = routing.outbox_rows(groups, event_ids, integrations)
        if outbox:
            await conn.execute(Q["insert_outbox"], *map(list, zip(*outbox, strict=True)))
            await conn.execute(Q["notify_work"])
        return len(events)

    # the event stream -------------------------------------------------------------

    async def consume(
        self, consumer: str, handle: Handler, *, limit: int, now: float
    ) -> int | None:
        if consumer not in self._consumers:  # its row, made once (a transaction of its own)
            await self._tx(lambda conn: conn.execute(Q["add_consumer"], consumer))
            self._consumers.add(consumer)

        async def tx(conn: Conn) -> int | None:
            taken = await conn.fetchrow(Q["take_consumer"], consumer)
            if taken is None:
                return None
            xid, position = taken["position_xid"], taken["position_id"]
            horizon = await conn.fetchval(Q["stream_horizon"])
            rows = await conn.fetch(Q["stream_after"], xid, position, limit, horizon)
            rows = rows[: grouping.fitting([row["count"] for row in rows], limit)]
            read = [event for row in rows for event in stream.decoded(row)]
            reaction = handle(read, bytes(taken["state"]))
            for client_id, new in stream.by_client(reaction.events):
                await self._ingest(conn, client_id, new, now)
            for entry in reaction.denylist:
                await self._denylist(conn, entry, now)
            if rows:
                xid, position = rows[-1]["xid"], rows[-1]["id"]
            await conn.execute(Q["move_consumer"], consumer, xid, position, reaction.state, now)
            return len(read)

        return await self._tx(tx)

    async def _denylist(self, conn: Conn, entry: Denylisting, now: float) -> None:
        """A trigger's denylisting and its event, unless the address is denylisted already."""
        await _lock_client(conn, entry.client_id)  # as add_denylist: one of two sees the other
        added = await conn.fetchval(
            Q["insert_trigger_denylist"],
            entry.client_id,
            entry.ip,
            entry.reason,
            now,
            entry.expire_at,
            entry.created_by,
            entry.trigger_id,
        )
        if added is not None:
            await self._ingest(conn, entry.client_id, [entry.event], now)

    async def _audit(
        self, conn: Conn, client_id: int, audit: Audit[T] | None, subject: T, now: float
    ) -> None:
        """Ingest, in the change's transaction, what `audit` says the change notifies."""
        if audit is not None and (events := audit(subject)):
            await self._ingest(conn, client_id, events, now)

    # delivery -------------------------------------------------------------------

    async def claim(self, limits: ClaimLimits, now: float) -> list[Claim]:
        await self._prune_samples(now)

        async def tx(conn: Conn) -> list[Claim]:
            slots = ClaimSlots(limits)
            claims = await self._claim_due(conn, limits, slots, now)
            room = limits.limit - len(claims)
            claims.extend(await self._claim_outbox(conn, limits, slots, now, room=room))
            return claims

        return await self._tx(tx)

    async def _prune_samples(self, now: float) -> None:
        """Forget ended sampling windows, at most once a minute, in a transaction of its own."""
        if now - self._pruned_at < _PRUNE_EVERY:
            return
        self._pruned_at = now
        await self._tx(lambda conn: conn.execute(Q["prune_hit_samples"], now, _PRUNE_AFTER))

    async def _claim_due(
        self, conn: Conn, limits: ClaimLimits, slots: ClaimSlots, now: float
    ) -> list[Claim]:
        rows = await conn.fetch(Q["due_deliveries"], now, limits.saturated(), limits.limit)
        found = await self._integrations(conn, {row["integration_id"] for row in rows})
        claims: list[Claim] = []
        for row in rows:
            integration = found.get(row["integration_id"])
            if integration is None or not slots.take(integration.id):
                continue
            lease_until = now + lease_seconds(integration, limits.lease_margin)
            delivery = codec.delivery_from_row(row)
            claim = Claim(delivery=delivery, integration=integration, lease_until=lease_until)
            claims.append(claim)
        if claims:
            await conn.execute(
                Q["lease_deliveries"],
                limits.owner,
                [claim.delivery.id for claim in claims],
                [claim.lease_until for claim in claims],
            )
        return claims

    async def _integrations(self, conn: Conn, wanted: Iterable[int]) -> dict[int, Integration]:
        """The enabled, undeleted integrations among `wanted`, by id."""
        rows = await conn.fetch(Q["integrations_by_ids"], list(wanted))
        return {
            row["id"]: self._codec.integration(row)
            for row in rows
            if row["enabled"] and row["deleted_at"] is None
        }

    async def _claim_outbox(
        self, conn: Conn, limits: ClaimLimits, slots: ClaimSlots, now: float, *, room: int
    ) -> list[Claim]:
        claims: list[Claim] = []
        made = 0  # bytes of the bodies made
        queued = [row[0] for row in await conn.fetch(Q["outbox_integrations"])]
        for integration_id in in_turn(queued, limits.after):
            if len(claims) >= room or not limits.bytes_left(made):
                break
            row = await conn.fetchrow(Q["integration_for_claim"], integration_id)
            if row is not None:
                integration = self._codec.integration(row)
                left = room - len(claims)
                batches = await self._batches(conn, integration, limits, slots, now, room=left)
                made += sum(len(claim.delivery.body) for claim in batches)
                claims += batches
        return claims

    async def _batches(
        self,
        conn: Conn,
        integration: Integration,
        limits: ClaimLimits,
        slots: ClaimSlots,
        now: float,
        *,
        room: int,
    ) -> list[Claim]:
        """New leased deliveries of one integration's queued notifications, slots allowing."""
        taken = slots.take_up_to(integration.id, room)
        if not taken:
            return []
        lease = (limits.owner, now + lease_seconds(integration, limits.lease_margin))
        pending = DeliveryStatus.PENDING
        made = await self._new_deliveries(
            conn, integration, now, status=pending, lease=lease, most=taken
        )
        slots.give_back(integration.id, taken - len(made))
        return [Claim(delivery=d, integration=integration, lease_until=lease[1]) for d in made]

    async def _new_deliveries(
        self,
        conn: Conn,
        integration: Integration,
        now: float,
        *,
        status: DeliveryStatus,
        lease: tuple[str, float] | None,
        most: int,
    ) -> list[Delivery]:
        """Move up to `most` batches of the integration's queued notifications into deliveries.

        Four round trips for all of them, where SQLite needs its one read, delete and
        insert: how many queued groups that takes (their counts, unlocked: up to `most` x
        `max_batch` rows may be read to find out), just those groups locked (others'
        locked rows skipped, the batches made of what was locked), the groups taken with
        their notifications, and one insert of every delivery.
        """
        batch = self._max_batch
        ahead = await conn.fetch(Q["outbox_counts"], integration.id, most * batch)
        wanted = sum(grouping.batches([row["count"] for row in ahead], batch, most))
        if not wanted:
            return []
        queued = await conn.fetch(Q["outbox_batch"], integration.id, wanted)
        if not queued:
            return []
        sizes = grouping.batches([row["count"] for row in queued], batch, most)
        queued = queued[: sum(sizes)]
        taken = await conn.fetch(Q["take_outbox"], [row["id"] for row in queued])
        blobs = {row["id"]: bytes(row["notifications"]) for row in taken}
        groups = [(row["count"], blobs[row["id"]]) for row in queued]
        made = grouping.deliveries(groups, sizes, integration.settings.format)
        waiting = status is DeliveryStatus.PENDING
        rows = await conn.fetch(
            Q["insert_deliveries"],
            [ids.webhook_id() for _ in made],
            integration.id,
            integration.client_id,
            status.value,
            [count for count, _ in made],
            [body for _, body in made],
            now if waiting else None,
            lease[0] if lease else None,
            lease[1] if lease else None,
            now,
        )
        return sorted((codec.delivery_from_row(row) for row in rows), key=lambda d: d.id)

    async def record_attempts(
        self,
        records: Sequence[AttemptRecord],
        now: float,
        *,
        audit: Audit[AutoDisabled] | None = None,
    ) -> list[AutoDisabled]:
        if not records:
            return []

        async def tx(conn: Conn) -> list[AutoDisabled]:
            touched = sorted({record.integration_id for record in records})
            await conn.execute(Q["lock_integrations_for_records"], touched)
            # In order: an attempt's number comes from the delivery's count so far.
            await conn.executemany(Q["record_attempt"], [_attempt_args(r, now) for r in records])
            last = {record.integration_id: _text(record.outcome.error) for record in records}
            await conn.executemany(Q["set_integration_error"], sorted(last.items()))
            failing = sorted({r.integration_id for r in records if not r.outcome.ok})
            disabled = [f for i in failing if (f := await self._auto_disable(conn, i, now))]
            for found in disabled:
                await self._audit(conn, found.client.id, audit, found, now)
            return disabled

        return await self._tx(tx)

    async def _auto_disable(
        self, conn: Conn, integration_id: int, now: float
    ) -> AutoDisabled | None:
        window = retry.AUTO_DISABLE_WINDOW
        found = await conn.fetchrow(Q["integration_by_id_any_client"], integration_id)
        if found is None:
            return None
        since = max(now - window, found["enabled_at"])
        stats = _one(await conn.fetchrow(Q["attempt_stats"], integration_id, since))
        requests, failures = int(stats[0]), int(stats[1])
        reason = retry.auto_disable_reason(requests, failures, window)
        if reason is None:
            return None
        # FOR UPDATE waits for the ingests that saw it enabled: their work is cancelled too.
        await conn.execute(Q["lock_integration_any_client"], integration_id)
        row = await conn.fetchrow(Q["auto_disable_integration"], integration_id, reason, now)
        if row is None:
            return None
        integration = self._codec.integration(row)
        await self._cancel_queued(conn, integration, now)
        client = _one(await conn.fetchrow(Q["client_by_id"], integration.client_id))
        return AutoDisabled(
            integration=integration,
            client=Client(**dict(client)),
            requests=requests,
            failures=failures,
            window_seconds=window,
        )

    async def next_due(self) -> float | None:
        async def tx(conn: Conn) -> float | None:
            value = await conn.fetchval(Q["next_due"])
            return None if value is None else float(value)

        return await self._tx(tx)

    async def list_deliveries(
        self, client_id: int, integration_id: int, *, limit: int, before: int | None
    ) -> list[Delivery]:
        async def tx(conn: Conn) -> list[Delivery]:
            below = before if before is not None else 2**62
            rows = await conn.fetch(Q["deliveries_page"], client_id, integration_id, below, limit)
            return await _with_attempts(conn, rows)

        return await self._tx(tx, snapshot=True)

    async def get_delivery(self, client_id: int, delivery_id: int) -> Delivery | None:
        async def tx(conn: Conn) -> Delivery | None:
            row = await conn.fetchrow(Q["delivery_of_client"], delivery_id, client_id)
            return None if row is None else (await _with_attempts(conn, [row]))[0]

        return await self._tx(tx, snapshot=True)

    async def resend(self, client_id: int, delivery_id: int, now: float) -> Delivery:
        async def tx(conn: Conn) -> Delivery:
            row = await conn.fetchrow(Q["delivery_of_client"], delivery_id, client_id)
            if row is None:
                raise NotFound(f"delivery {delivery_id} not found")
            # FOR KEY SHARE: a disable in progress is waited for, and seen.
            integration = await conn.fetchrow(
                Q["integration_for_resend"], row["integration_id"], client_id
            )
            check_resendable(
                DeliveryStatus(row["status"]),
                integration_exists=integration is not None,
                enabled=integration is not None and bool(integration["enabled"]),
            )
            fresh = await conn.fetchrow(Q["requeue_delivery"], delivery_id, now)
            if fresh is None:
                raise Conflict("this delivery was re-sent or changed meanwhile; reload it")
            return (await _with_attempts(conn, [fresh]))[0]

        return await self._tx(tx)

    # retention ------------------------------------------------------------------

    async def prune(self, before: float, now: float, *, limit: int, turn: Turn) -> Pruned | None:
        async def tx(conn: Conn) -> Pruned | None:
            if not await _take_turn(conn, PRUNE_TASK, turn, now):
                return None
            gone = _one(await conn.fetchrow(Q["prune_deliveries"], before, limit))
            return Pruned(
                deliveries=gone["deliveries"],
                attempts=gone["attempts"],
                events=await conn.fetchval(Q["prune_events"], before, limit),
                denylist=await conn.fetchval(Q["prune_denylist"], before, limit),
            )

        return await self._tx(tx)


# helpers ----------------------------------------------------------------------


async def _take_turn(conn: Conn, task: str, turn: Turn, now: float) -> bool:
    """Whether this transaction may do `task` now: `turn.owner`'s turn, taken if free.

    The task's row stays locked until the transaction ends, so the turn is taken and the
    work done (or both undone) together; a process that finds the row locked is told no
    at once, without waiting.
    """
    row = await conn.fetchrow(Q["turn_of_task"], task)
    if row is None:
        return False  # another process holds the row: the task is being done
    ends_at = next_turn(row["holder"], row["ends_at"], turn, now)
    if ends_at is None:
        return False
    if ends_at != row["ends_at"]:
        await conn.execute(Q["start_turn"], task, turn.owner, now, ends_at)
    return True


def describe(dsn: str) -> str:
    """Where a DSN points, for messages: host, port and database, never the password."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    database = parts.path.lstrip("/") or parts.username or "postgres"
    return f"{host}:{parts.port or 5432}/{database}"


async def _migrate(conn: Conn) -> list[int]:
    await conn.execute(Q["lock_migrations"])
    await conn.execute(Q["create_schema_migrations"])
    done = {row[0] for row in await conn.fetch(Q["schema_versions"])}
    applied = []
    for version, script in queries.migrations("postgres"):
        if version in done:
            continue
        try:
            await conn.execute(script)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"migration {version} failed: {exc}") from exc
        await conn.execute(Q["insert_schema_version"], version, time.time())
        applied.append(version)
    return applied


async def _sample(conn: Conn, client_id: int, events: Sequence[NewEvent], now: float) -> list[bool]:
    """Which events notify: hit sampling (SPEC 2.1) counted in hit_samples."""
    hits = Counter(e.sample_key for e in events if e.notify and e.sample_key is not None)
    admitted: dict[int, int] = {}
    if hits:
        rows = await conn.fetch(
            Q["admit_hits"],
            client_id,
            now,
            list(hits),
            list(hits.values()),
            sampling.SAMPLE_LIMIT,
            sampling.SAMPLE_WINDOW,
        )
        admitted = {row["key"]: row["admitted"] for row in rows}
    return notify_flags(events, admitted)


def notify_flags(events: Sequence[NewEvent], admitted: dict[int, int]) -> list[bool]:
    """Of the identical hits of one ingest, the first `admitted[key]` notify."""
    left = dict(admitted)
    flags: list[bool] = []
    for event in events:
        key = event.sample_key
        if not event.notify or key is None:
            flags.append(event.notify)
            continue
        flags.append(left.get(key, 0) > 0)
        left[key] = left.get(key, 0) - 1
    return flags


async def _store_groups(
    conn: Conn, client_id: int, groups: Sequence[grouping.Group], now: float
) -> list[int]:
    """Insert the groups as event rows; their ids, in order."""
    event_ids = sorted(row[0] for row in await conn.fetch(Q["next_event_ids"], len(groups)))
    await conn.execute(
        Q["insert_events"],
        client_id,
        now,
        event_ids,
        [group.type.value for group in groups],
        [len(group.notifications) for group in groups],
        [group.notify for group in groups],
        [group.blob for group in groups],
        [group.facts_blob for group in groups],
    )
    return event_ids


def _attempt_args(record: AttemptRecord, now: float) -> tuple[Any, ...]:
    outcome = record.outcome
    return (
        record.delivery_id,
        record.integration_id,
        record.status.value,
        record.next_attempt_at,
        outcome.started_at,
        outcome.duration_ms,
        outcome.ok,
        outcome.status_code,
        _text(outcome.error),
        _text(outcome.response_body),
        outcome.request_size,
        now,
    )


def _text(value: str | None) -> str | None:
    """What a receiver sent, storable: PostgreSQL `text` rejects NUL, so it becomes U+FFFD."""
    return None if value is None else value.replace("\x00", "\ufffd")


async def _with_attempts(conn: Conn, rows: Sequence[asyncpg.Record]) -> list[Delivery]:
    found = await conn.fetch(Q["attempts_of_deliveries"], [row["id"] for row in rows])
    attempts: dict[int, list[Attempt]] = {}
    for attempt in found:
        attempts.setdefault(attempt["delivery_id"], []).append(codec.attempt_from_row(attempt))
    return [codec.delivery_from_row(row, attempts.get(row["id"], [])) for row in rows]


def _rotated(vault: Vault, stored: str | None) -> str | None:
    return None if stored is None else vault.rotate(stored)


async def _new_client(conn: Conn, boot: Bootstrap, now: float) -> User:
    """A client with its first administrator and that one's token; the administrator."""
    client_id = await conn.fetchval(
        Q["insert_client"], boot.client_name, boot.cloud, boot.console_url, now
    )
    row = await conn.fetchrow(
        Q["insert_user"],
        client_id,
        boot.admin_email,
        boot.admin_name,
        Role.ADMINISTRATOR.value,
        now,
    )
    user = codec.user_from_row(_one(row))
    await conn.execute(
        Q["insert_named_token"], client_id, user.id, boot.token_name, boot.token_hash, None, now
    )
    return user


async def _lock_client(conn: Conn, client_id: int) -> None:
    """Order this transaction's account changes after the client's others (NotFound if none)."""
    if await conn.fetchval(Q["lock_client"], client_id) is None:
        raise NotFound(f"client {client_id} not found")


async def _locked_user(conn: Conn, client_id: int, user_id: int) -> User | None:
    """The user, read after the client is locked: no other role change or deletion is midway."""
    if await conn.fetchval(Q["lock_client"], client_id) is None:
        return None
    row = await conn.fetchrow(Q["user_by_id"], client_id, user_id)
    return None if row is None else codec.user_from_row(row)


async def _keep_an_administrator(conn: Conn, user: User, action: str) -> None:
    """Conflict when `user` is the client's last administrator (the client is locked)."""
    if user.role is not Role.ADMINISTRATOR:
        return
    if await conn.fetchval(Q["count_administrators"], user.client_id) <= 1:
        raise last_administrator(user, action)


def _one(row: asyncpg.Record | None) -> asyncpg.Record:
    if row is None:
        raise StoreError("a statement that returns a row returned none")
    return row


def _trigger_args(spec: TriggerSpec) -> tuple[Any, ...]:
    """name, comment, enabled, condition, definition: the order the statements take them."""
    params = codec.trigger_params(spec)
    return tuple(params[key] for key in ("name", "comment", "enabled", "condition", "definition"))
