"""The embedded store: SQLite in WAL mode, driven from one dedicated thread.

Every Store method becomes one function run as one transaction on that thread,
so the event loop never waits on disk and SQLite sees a single writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tocsin import ids, retry, sampling
from tocsin.crypto import Vault
from tocsin.errors import Conflict, MigrationError, NotFound, StoreError
from tocsin.models import (
    Application,
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
    claim_queued,
    denylisted_already,
    in_turn,
    last_administrator,
    lease_seconds,
    next_turn,
)
from tocsin.store.stream import Handler
from tocsin.triggers.definitions import Trigger, TriggerSpec, counting_changed

T = TypeVar("T")
_Call = tuple[Callable[[sqlite3.Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]
_GROUP_MAX = 256  # calls committed together at most
Q = queries.load("sqlite")
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


class SqliteStore:
    """Store on one SQLite file."""

    def __init__(
        self, path: Path, *, vault: Vault, synchronous: str = "FULL", max_batch: int = 500
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise StoreError(f"sqlite synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self._path = path
        self._synchronous = synchronous.upper()
        self._max_batch = max_batch
        self._codec = codec.Secrets(vault)
        self._sampler = sampling.Sampler()  # one process per SQLite file: windows in memory
        self._conn: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = False  # set by close(): later calls fail instead of waiting forever
        self._thread = threading.Thread(target=self._serve, name="tocsin-sqlite", daemon=True)
        self._thread.start()

    # plumbing -------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` as one transaction on the store's thread; return once it is committed.

        The thread settles the awaited future through the loop directly: no concurrent
        Future chained to it, whose reference cycle would keep a claim's request bodies
        alive until the garbage collector's next full pass.
        """
        if self._closed:
            raise StoreError(f"the SQLite store of {self._path} is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, loop, waiter))
        return await waiter

    def _serve(self) -> None:
        """The store's thread: commits waiting calls in groups, until close() says stop.

        Calls that arrive while a commit is on its way to disk wait in the queue and then
        share the next one: each is its own SAVEPOINT (an error undoes that call only),
        and a call's result is handed back only after the COMMIT that holds it. One fsync
        then serves as many calls as were waiting, instead of one each.
        """
        while True:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            stop = False
            while len(group) < _GROUP_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
            self._commit_group(group)
            if stop:
                break
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _commit_group(self, group: list[_Call]) -> None:
        calls = [call for call in group if not call[2].cancelled()]  # cancelled while queued
        if not calls:
            return
        done: list[_Done] = []
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, future in calls:
                conn.execute("SAVEPOINT call")
                try:
                    result = fn(conn)
                except BaseException as exc:
                    conn.execute("ROLLBACK TO call")
                    conn.execute("RELEASE call")
                    done.append((future, None, self._error(exc)))
                    continue
                conn.execute("RELEASE call")
                done.append((future, result, None))
            conn.commit()
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if self._conn is not None and self._conn.in_transaction:
                    self._conn.rollback()
            failed = self._error(exc)
            done = [(future, None, failed) for _, _, future in calls]
        by_loop: dict[asyncio.AbstractEventLoop, list[_Done]] = {}
        for (_, loop, _), outcome in zip(calls, done, strict=True):
            by_loop.setdefault(loop, []).append(outcome)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop was closed: nobody waits
                loop.call_soon_threadsafe(_settle, settled)

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            failed = StoreError(f"SQLite error on {self._path}: {exc}")
            failed.__cause__ = exc
            return failed
        return exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=10000")
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        """Commit what is queued, close the database and end the store's thread."""
        self._closed = True  # what is queued before the None below is still served
        if self._thread.is_alive():
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def migrate(self) -> list[int]:
        return await self._run(_migrate)

    # clients, users, tokens -------------------------------------------------

    async def bootstrap(self, boot: Bootstrap, now: float) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            if conn.execute(Q["count_clients"]).fetchone()[0]:
                return False
            _new_client(conn, boot, now)
            return True

        return await self._run(tx)

    async def create_client_with_administrator(self, boot: Bootstrap, now: float) -> User:
        return await self._run(lambda conn: _new_client(conn, boot, now))

    async def principal(self, token_hashes: Sequence[str], now: float) -> Principal | None:
        def tx(conn: sqlite3.Connection) -> Principal | None:
            params = {"token_hashes": json.dumps(list(token_hashes)), "now": now}
            row = conn.execute(Q["principal_by_token"], params).fetchone()
            return None if row is None else codec.principal_from_row(row)

        return await self._run(tx)

    async def get_client(self, client_id: int) -> Client | None:
        def tx(conn: sqlite3.Connection) -> Client | None:
            row = conn.execute(Q["client_by_id"], {"id": client_id}).fetchone()
            return None if row is None else Client(**dict(row))

        return await self._run(tx)

    async def create_client(self, name: str, cloud: str, console_url: str, now: float) -> Client:
        def tx(conn: sqlite3.Connection) -> Client:
            params = {"name": name, "cloud": cloud, "console_url": console_url, "now": now}
            client_id = _insert(conn, "insert_client", params)
            return Client(id=client_id, name=name, cloud=cloud, console_url=console_url)

        return await self._run(tx)

    async def list_clients(self) -> list[Client]:
        def tx(conn: sqlite3.Connection) -> list[Client]:
            return [Client(**dict(row)) for row in conn.execute(Q["all_clients"])]

        return await self._run(tx)

    async def update_client(
        self, client_id: int, *, name: str, cloud: str, console_url: str
    ) -> Client | None:
        def tx(conn: sqlite3.Connection) -> Client | None:
            params = {"id": client_id, "name": name, "cloud": cloud, "console_url": console_url}
            if not conn.execute(Q["update_client"], params).rowcount:
                return None
            return Client(id=client_id, name=name, cloud=cloud, console_url=console_url)

        return await self._run(tx)

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
        def tx(conn: sqlite3.Connection) -> User:
            key = {"client_id": client_id, "email": email}
            if conn.execute(Q["user_by_email"], key).fetchone() is not None:
                raise Conflict(f"a user with email {email} already exists")
            params = key | {"name": name, "role": role.value, "now": now}
            user = _user(conn, client_id, _insert(conn, "insert_user", params))
            self._audit(conn, client_id, audit, user, now)
            return user

        return await self._run(tx)

    async def list_users(self, client_id: int) -> list[User]:
        def tx(conn: sqlite3.Connection) -> list[User]:
            rows = conn.execute(Q["users_of_client"], {"client_id": client_id})
            return [codec.user_from_row(row) for row in rows]

        return await self._run(tx)

    async def get_user(self, client_id: int, user_id: int) -> User | None:
        def tx(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(Q["user_of_client"], {"id": user_id, "client_id": client_id})
            found = row.fetchone()
            return None if found is None else codec.user_from_row(found)

        return await self._run(tx)

    async def set_role(
        self,
        client_id: int,
        user_id: int,
        role: Role,
        now: float,
        *,
        audit: Audit[Changed[User]] | None = None,
    ) -> User | None:
        def tx(conn: sqlite3.Connection) -> User | None:
            key = {"id": user_id, "client_id": client_id}
            row = conn.execute(Q["user_of_client"], key).fetchone()
            if row is None:
                return None
            before = codec.user_from_row(row)
            if role is not Role.ADMINISTRATOR:
                _keep_an_administrator(conn, before, "change the role of")
            conn.execute(Q["set_user_role"], key | {"role": role.value})
            after = _user(conn, client_id, user_id)
            self._audit(conn, client_id, audit, Changed(before, after), now)
            return after

        return await self._run(tx)

    async def delete_user(
        self,
        client_id: int,
        user_id: int,
        now: float,
        *,
        audit: Audit[User] | None = None,
    ) -> User | None:
        def tx(conn: sqlite3.Connection) -> User | None:
            key = {"id": user_id, "client_id": client_id}
            row = conn.execute(Q["user_of_client"], key).fetchone()
            if row is None:
                return None
            user = codec.user_from_row(row)
            _keep_an_administrator(conn, user, "delete")
            conn.execute(Q["delete_tokens_of_user"], {"user_id": user_id})
            conn.execute(Q["delete_user"], key)
            self._audit(conn, client_id, audit, user, now)
            return user

        return await self._run(tx)

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
        def tx(conn: sqlite3.Connection) -> Token | None:
            key = {"id": user_id, "client_id": client_id}
            if conn.execute(Q["user_of_client"], key).fetchone() is None:
                return None
            if conn.execute(Q["token_by_hash"], {"token_hash": token_hash}).fetchone():
                raise Conflict(DIGEST_TAKEN)
            params = {"user_id": user_id, "name": name, "token_hash": token_hash}
            token_id = _insert(
                conn, "insert_token", params | {"expires_at": expires_at, "now": now}
            )
            return _token(conn, client_id, token_id)

        return await self._run(tx)

    async def list_tokens(self, client_id: int) -> list[Token]:
        def tx(conn: sqlite3.Connection) -> list[Token]:
            rows = conn.execute(Q["tokens_of_client"], {"client_id": client_id})
            return [Token(**dict(row)) for row in rows]

        return await self._run(tx)

    async def revoke_token(self, client_id: int, token_id: int, now: float) -> Token | None:
        def tx(conn: sqlite3.Connection) -> Token | None:
            key = {"id": token_id, "client_id": client_id}
            if conn.execute(Q["token_of_client"], key).fetchone() is None:
                return None
            conn.execute(Q["revoke_token"], {"id": token_id, "now": now})
            return _token(conn, client_id, token_id)

        return await self._run(tx)

    # applications and the denylist ----------------------------------------------

    async def create_application(
        self,
        client_id: int,
        *,
        name: str,
        now: float,
        application_id: int | None = None,
        audit: Audit[Application] | None = None,
    ) -> Application:
        def tx(conn: sqlite3.Connection) -> Application:
            new_id = application_id
            if new_id is None:
                new_id = int(
                    conn.execute(Q["next_application_id"], {"client_id": client_id}).fetchone()[0]
                )
            key = {"client_id": client_id, "id": new_id}
            if conn.execute(Q["application_of_client"], key).fetchone() is not None:
                raise Conflict(f"an application with id {new_id} already exists")
            conn.execute(Q["insert_application"], key | {"name": name, "now": now})
            created = Application(
                id=new_id, client_id=client_id, name=name, created_at=now, updated_at=now
            )
            self._audit(conn, client_id, audit, created, now)
            return created

        return await self._run(tx)

    async def list_applications(self, client_id: int) -> list[Application]:
        def tx(conn: sqlite3.Connection) -> list[Application]:
            rows = conn.execute(Q["applications_of_client"], {"client_id": client_id})
            return [Application(**dict(row)) for row in rows]

        return await self._run(tx)

    async def get_application(self, client_id: int, application_id: int) -> Application | None:
        def tx(conn: sqlite3.Connection) -> Application | None:
            return _application(conn, client_id, application_id)

        return await self._run(tx)

    async def rename_application(
        self,
        client_id: int,
        application_id: int,
        name: str,
        now: float,
        *,
        audit: Audit[Changed[Application]] | None = None,
    ) -> Application | None:
        def tx(conn: sqlite3.Connection) -> Application | None:
            before = _application(conn, client_id, application_id)
            params = {"client_id": client_id, "id": application_id, "name": name, "now": now}
            if before is None or not conn.execute(Q["rename_application"], params).rowcount:
                return None
            after = _application(conn, client_id, application_id)
            if after is None:
                return None
            self._audit(conn, client_id, audit, Changed(before, after), now)
            return after

        return await self._run(tx)

    async def delete_application(
        self,
        client_id: int,
        application_id: int,
        *,
        now: float | None = None,
        audit: Audit[Application] | None = None,
    ) -> Application | None:
        def tx(conn: sqlite3.Connection) -> Application | None:
            found = _application(conn, client_id, application_id)
            if found is None:
                return None
            conn.execute(Q["delete_application"], {"client_id": client_id, "id": found.id})
            stamp = time.time() if now is None else now
            self._audit(conn, client_id, audit, found, stamp)
            return found

        return await self._run(tx)

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
        def tx(conn: sqlite3.Connection) -> DenylistEntry:
            key = {"client_id": client_id, "ip": ip, "application": application}
            found = conn.execute(Q["denylisted_already"], key | {"now": now}).fetchone()
            if found is not None:
                raise denylisted_already(
                    ip, application, expire_at=found["expire_at"], entry_id=found["id"]
                )
            fields = {"reason": reason, "expire_at": expire_at, "created_by": created_by}
            entry_id = _insert(conn, "insert_denylist", key | fields | {"now": now})
            entry = DenylistEntry(
                id=entry_id,
                client_id=client_id,
                ip=ip,
                reason=reason,
                application=application,
                created_at=now,
                expire_at=expire_at,
                created_by=created_by,
            )
            self._audit(conn, client_id, audit, entry, now)
            return entry

        return await self._run(tx)

    async def list_denylist(self, client_id: int, now: float) -> list[DenylistEntry]:
        def tx(conn: sqlite3.Connection) -> list[DenylistEntry]:
            rows = conn.execute(Q["denylist_of_client"], {"client_id": client_id, "now": now})
            return [DenylistEntry(**dict(row)) for row in rows]

        return await self._run(tx)

    async def remove_denylist(
        self, client_id: int, entry_id: int, now: float
    ) -> DenylistEntry | None:
        def tx(conn: sqlite3.Connection) -> DenylistEntry | None:
            key = {"id": entry_id, "client_id": client_id, "now": now}
            row = conn.execute(Q["denylist_entry"], key).fetchone()
            if row is None:
                return None
            conn.execute(Q["delete_denylist"], {"id": entry_id})
            return DenylistEntry(**dict(row))

        return await self._run(tx)

    # triggers ---------------------------------------------------------------------

    async def create_trigger(
        self,
        client_id: int,
        spec: TriggerSpec,
        now: float,
        *,
        audit: Audit[Trigger] | None = None,
    ) -> Trigger:
        def tx(conn: sqlite3.Connection) -> Trigger:
            params = codec.trigger_params(spec) | {"client_id": client_id, "now": now}
            trigger_id = _insert(conn, "insert_trigger", params)
            created = _trigger(conn, client_id, trigger_id)
            if created is None:
                raise StoreError("a trigger just saved cannot be read back")
            self._audit(conn, client_id, audit, created, now)
            return created

        return await self._run(tx)

    async def list_triggers(self, client_id: int) -> list[Trigger]:
        def tx(conn: sqlite3.Connection) -> list[Trigger]:
            rows = conn.execute(Q["triggers_of_client"], {"client_id": client_id})
            return [codec.trigger_from_row(row) for row in rows]

        return await self._run(tx)

    async def get_trigger(self, client_id: int, trigger_id: int) -> Trigger | None:
        def tx(conn: sqlite3.Connection) -> Trigger | None:
            return _trigger(conn, client_id, trigger_id)

        return await self._run(tx)

    async def all_triggers(self) -> list[Trigger]:
        def tx(conn: sqlite3.Connection) -> list[Trigger]:
            return [codec.trigger_from_row(row) for row in conn.execute(Q["all_triggers"])]

        return await self._run(tx)

    async def update_trigger(
        self,
        client_id: int,
        trigger_id: int,
        spec: TriggerSpec,
        now: float,
        *,
        audit: Audit[Changed[Trigger]] | None = None,
    ) -> Trigger | None:
        def tx(conn: sqlite3.Connection) -> Trigger | None:
            before = _trigger(conn, client_id, trigger_id)
            if before is None:
                return None
            since = now if counting_changed(before.spec, spec) else before.counting_since
            params = codec.trigger_params(spec) | {"client_id": client_id, "id": trigger_id}
            conn.execute(Q["update_trigger"], params | {"now": now, "counting_since": since})
            after = _trigger(conn, client_id, trigger_id)
            if after is None:
                return None
            self._audit(conn, client_id, audit, Changed(before, after), now)
            return after

        return await self._run(tx)

    async def delete_trigger(
        self, client_id: int, trigger_id: int, now: float, *, audit: Audit[Trigger] | None = None
    ) -> Trigger | None:
        def tx(conn: sqlite3.Connection) -> Trigger | None:
            before = _trigger(conn, client_id, trigger_id)
            if before is None:
                return None
            conn.execute(Q["delete_trigger"], {"client_id": client_id, "id": trigger_id})
            self._audit(conn, client_id, audit, before, now)
            return before

        return await self._run(tx)

    async def stats(self) -> StoreStats:
        def tx(conn: sqlite3.Connection) -> StoreStats:
            queued, waiting = conn.execute(Q["stats_queued"]).fetchone()
            integrations = dict.fromkeys((status.value for status in IntegrationStatus), 0)
            for row in conn.execute(Q["stats_integrations"]):
                integrations[row["status"]] = row["n"]
            return StoreStats(
                queued_notifications=int(queued),
                waiting_deliveries=int(waiting),
                integrations=integrations,
            )

        return await self._run(tx)

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
        def tx(conn: sqlite3.Connection) -> Integration:
            new_id = _insert(
                conn,
                "insert_integration",
                {
                    "client_id": client_id,
                    "settings": self._codec.settings_json(settings),
                    "enabled": settings.enabled,
                    "signing_secret": self._codec.seal(signing_secret),
                    "now": now,
                },
            )
            created = _integration(conn, self._codec, client_id, new_id)
            self._audit(conn, client_id, audit, created, now)
            return created

        return await self._run(tx)

    async def get_integration(self, client_id: int, integration_id: int) -> Integration | None:
        def tx(conn: sqlite3.Connection) -> Integration | None:
            row = conn.execute(
                Q["integration_by_id"], {"id": integration_id, "client_id": client_id}
            ).fetchone()
            return None if row is None else self._codec.integration(row)

        return await self._run(tx)

    async def list_integrations(self, client_id: int) -> list[Integration]:
        def tx(conn: sqlite3.Connection) -> list[Integration]:
            rows = conn.execute(Q["integrations_of_client"], {"client_id": client_id})
            return [self._codec.integration(row) for row in rows]

        return await self._run(tx)

    async def update_integration(
        self,
        client_id: int,
        integration_id: int,
        settings: WebhookSettings,
        now: float,
        *,
        audit: Audit[Changed[Integration]] | None = None,
    ) -> Integration | None:
        def tx(conn: sqlite3.Connection) -> Integration | None:
            key = {"id": integration_id, "client_id": client_id}
            before = conn.execute(Q["integration_by_id"], key).fetchone()
            if before is None:
                return None
            params = key | {
                "settings": self._codec.settings_json(settings),
                "enabled": settings.enabled,
                "now": now,
            }
            conn.execute(Q["update_integration_settings"], params)
            after = _integration(conn, self._codec, client_id, integration_id)
            if before["enabled"] and not settings.enabled:
                self._cancel_queued(conn, after, now)
            changed = Changed(self._codec.integration(before), after)
            self._audit(conn, client_id, audit, changed, now)
            return after

        return await self._run(tx)

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
        def tx(conn: sqlite3.Connection) -> Integration | None:
            key = {"id": integration_id, "client_id": client_id, "now": now}
            row = conn.execute(Q["integration_by_id"], key).fetchone()
            if row is None:
                return None
            if enabled:
                changed = conn.execute(Q["enable_integration"], key).rowcount
            else:
                changed = conn.execute(
                    Q["disable_integration"], key | {"auto": 0, "reason": reason}
                ).rowcount
            if not changed:
                return None
            integration = _integration(conn, self._codec, client_id, integration_id)
            if not enabled:
                self._cancel_queued(conn, integration, now)
            switched = Changed(self._codec.integration(row), integration)
            self._audit(conn, client_id, audit, switched, now)
            return integration

        return await self._run(tx)

    async def delete_integration(
        self,
        client_id: int,
        integration_id: int,
        now: float,
        *,
        audit: Audit[Integration] | None = None,
    ) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            key = {"id": integration_id, "client_id": client_id}
            row = conn.execute(Q["integration_by_id"], key).fetchone()
            if row is None:
                return False
            conn.execute(Q["delete_integration"], key | {"now": now})
            before = self._codec.integration(row)
            self._cancel_queued(conn, before, now)
            self._audit(conn, client_id, audit, before, now)
            return True

        return await self._run(tx)

    def _cancel_queued(
        self, conn: sqlite3.Connection, integration: Integration, now: float
    ) -> None:
        """Cancel waiting deliveries and turn queued notifications into cancelled deliveries.

        They stay in the delivery log so that they can be re-sent after re-enabling.
        """
        conn.execute(Q["cancel_waiting_deliveries"], {"integration_id": integration.id, "now": now})
        cancelled = DeliveryStatus.CANCELLED
        while self._new_deliveries(
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
        def tx(conn: sqlite3.Connection) -> Integration | None:
            key = {"id": integration_id, "client_id": client_id}
            row = conn.execute(Q["integration_by_id"], key).fetchone()
            if row is None:
                return None
            params = key | {"secret": self._codec.seal(secret), "now": now}
            conn.execute(Q["rotate_signing_secret"], params)
            rotated = _integration(conn, self._codec, client_id, integration_id)
            self._audit(conn, client_id, audit, rotated, now)
            return rotated

        return await self._run(tx)

    async def reencrypt(self) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            rows = conn.execute(Q["all_integration_secrets"]).fetchall()
            vault = self._codec.vault
            for row in rows:
                previous = row["previous_signing_secret"]
                params = {
                    "id": row["id"],
                    "settings": self._codec.reencrypted_settings(row["settings"]),
                    "signing_secret": vault.rotate(row["signing_secret"]),
                    "previous": None if previous is None else vault.rotate(previous),
                }
                conn.execute(Q["store_integration_secrets"], params)
            return len(rows)

        return await self._run(tx)

    async def queued_notifications(self, integration_id: int) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute(Q["count_outbox"], {"integration_id": integration_id}).fetchone()[0]
            )

        return await self._run(tx)

    # ingestion ----------------------------------------------------------------

    async def ingest(self, client_id: int, events: Sequence[NewEvent], now: float) -> int:
        return await self._run(lambda conn: self._ingest(conn, client_id, events, now))

    def _denylist(self, conn: sqlite3.Connection, entry: Denylisting, now: float) -> None:
        """A trigger's denylisting and its event, unless the address is denylisted already."""
        key = {"client_id": entry.client_id, "ip": entry.ip, "application": None, "now": now}
        if conn.execute(Q["denylisted_already"], key).fetchone() is not None:
            return
        fields = {"reason": entry.reason, "expire_at": entry.expire_at}
        fields |= {"created_by": entry.created_by, "trigger_id": entry.trigger_id}
        conn.execute(Q["insert_trigger_denylist"], key | fields)
        self._ingest(conn, entry.client_id, [entry.event], now)

    def _ingest(
        self, conn: sqlite3.Connection, client_id: int, events: Sequence[NewEvent], now: float
    ) -> int:
        """Store events in groups and queue their notifications (inside a transaction)."""
        rows = conn.execute(Q["enabled_integrations_of_client"], {"client_id": client_id})
        integrations = [self._codec.integration(row) for row in rows]
        notify = [
            event.notify
            and (event.sample_key is None or self._sampler.admit(client_id, event.sample_key, now))
            for event in events
        ]
        groups = list(grouping.group(events, notify, self._max_batch))
        # The write lock is ours (BEGIN IMMEDIATE): ids can be assigned up front.
        first = conn.execute(Q["next_event_id"]).fetchone()[0]
        conn.executemany(
            Q["insert_event"],
            [
                (
                    first + n,
                    client_id,
                    g.type.value,
                    len(g.notifications),
                    g.notify,
                    g.blob,
                    g.facts_blob,
                    now,
                )
                for n, g in enumerate(groups)
            ],
        )
        group_ids = range(first, first + len(groups))
        conn.executemany(Q["insert_outbox"], routing.outbox_rows(groups, group_ids, integrations))
        return len(events)

    # the event stream -------------------------------------------------------------

    async def consume(
        self, consumer: str, handle: Handler, *, limit: int, now: float
    ) -> int | None:
        def tx(conn: sqlite3.Connection) -> int:
            conn.execute(Q["add_consumer"], {"name": consumer})
            position, state = conn.execute(Q["consumer"], {"name": consumer}).fetchone()
            rows = conn.execute(
                Q["stream_after"], {"position": position, "limit": limit}
            ).fetchall()
            rows = rows[: grouping.fitting([row["count"] for row in rows], limit)]
            read = [event for row in rows for event in stream.decoded(row)]
            reaction = handle(read, bytes(state))
            for client_id, new in stream.by_client(reaction.events):
                self._ingest(conn, client_id, new, now)
            for entry in reaction.denylist:
                self._denylist(conn, entry, now)
            moved = {"position": rows[-1]["id"] if rows else position, "now": now}
            conn.execute(Q["move_consumer"], moved | {"name": consumer, "state": reaction.state})
            return len(read)

        return await self._run(tx)

    def _audit(
        self,
        conn: sqlite3.Connection,
        client_id: int,
        audit: Audit[T] | None,
        subject: T,
        now: float,
    ) -> None:
        """Ingest, in the change's transaction, what `audit` says the change notifies."""
        if audit is not None and (events := audit(subject)):
            self._ingest(conn, client_id, events, now)

    # delivery -------------------------------------------------------------------

    async def claim(self, limits: ClaimLimits, now: float) -> list[Claim]:
        def tx(conn: sqlite3.Connection) -> list[Claim]:
            slots = ClaimSlots(limits)
            claims = self._claim_due(conn, limits, slots, now)
            room = limits.limit - len(claims)
            claims.extend(self._claim_outbox(conn, limits, slots, now, room=room))
            return claims

        return await self._run(tx)

    def _claim_due(
        self, conn: sqlite3.Connection, limits: ClaimLimits, slots: ClaimSlots, now: float
    ) -> list[Claim]:
        params = {"now": now, "limit": limits.limit, "busy": json.dumps(limits.saturated())}
        rows = conn.execute(Q["due_deliveries"], params).fetchall()
        cache = _IntegrationCache(conn, self._codec)
        claims: list[Claim] = []
        for row in rows:
            integration = cache.get(row["integration_id"])
            if (
                integration is None
                or not integration.settings.enabled
                or not slots.take(integration.id)
            ):
                continue
            lease_until = now + lease_seconds(integration, limits.lease_margin)
            conn.execute(
                Q["lease_delivery"],
                {"id": row["id"], "owner": limits.owner, "lease_until": lease_until},
            )
            claims.append(
                Claim(
                    delivery=codec.delivery_from_row(row),
                    integration=integration,
                    lease_until=lease_until,
                )
            )
        return claims

    def _claim_outbox(
        self,
        conn: sqlite3.Connection,
        limits: ClaimLimits,
        slots: ClaimSlots,
        now: float,
        *,
        room: int,
    ) -> list[Claim]:
        cache = _IntegrationCache(conn, self._codec)
        queued = in_turn([row[0] for row in conn.execute(Q["outbox_integrations"])], limits.after)
        return claim_queued(
            (found for found in map(cache.get, queued) if found is not None),
            limits,
            slots,
            now,
            room=room,
            new_deliveries=lambda integration, lease, most: self._new_deliveries(
                conn, integration, now, status=DeliveryStatus.PENDING, lease=lease, most=most
            ),
        )

    def _new_deliveries(
        self,
        conn: sqlite3.Connection,
        integration: Integration,
        now: float,
        *,
        status: DeliveryStatus,
        lease: tuple[str, float] | None,
        most: int,
    ) -> list[Delivery]:
        """Move up to `most` batches of the integration's queued notifications into deliveries.

        One read of the queue, one delete and one insert statement for all of them: the
        write lock is ours (BEGIN IMMEDIATE), so ids are assigned up front, as SQLite would.
        """
        batch = self._max_batch
        params = {"integration_id": integration.id, "limit": most * batch}
        counts = conn.execute(Q["outbox_counts"], params).fetchall()
        if not counts:
            return []
        sizes = grouping.batches([row[1] for row in counts], batch, most)
        upto = {"integration_id": integration.id, "last_id": counts[sum(sizes) - 1][0]}
        rows = conn.execute(Q["outbox_upto"], upto).fetchall()  # the groups taken, with blobs
        conn.execute(Q["delete_outbox_upto"], upto)
        first = conn.execute(Q["next_delivery_id"]).fetchone()[0]
        waiting = status is DeliveryStatus.PENDING
        lease_owner, lease_until = lease or (None, None)
        queued = [(row[1], bytes(row[2])) for row in rows]
        made = [
            Delivery(
                id=first + n,
                webhook_id=ids.webhook_id(),
                integration_id=integration.id,
                status=status,
                notification_count=count,
                body=body,
                attempt_count=0,
                next_attempt_at=now if waiting else None,
                created_at=now,
                updated_at=now,
            )
            for n, (count, body) in enumerate(
                grouping.deliveries(queued, sizes, integration.settings.format)
            )
        ]
        conn.executemany(
            Q["insert_delivery"],
            [
                (
                    d.id,
                    d.webhook_id,
                    integration.id,
                    integration.client_id,
                    status.value,
                    d.notification_count,
                    d.next_attempt_at,
                    lease_owner,
                    lease_until,
                    now,
                    now,
                )
                for d in made
            ],
        )
        conn.executemany(Q["insert_delivery_body"], [(d.id, d.body) for d in made])
        return made

    async def record_attempts(
        self,
        records: Sequence[AttemptRecord],
        now: float,
        *,
        audit: Audit[AutoDisabled] | None = None,
    ) -> list[AutoDisabled]:
        def tx(conn: sqlite3.Connection) -> list[AutoDisabled]:
            # An attempt's number comes from the delivery's count so far: all inserts, then
            # all updates, unless a delivery has two records here; then one at a time.
            if len({record.delivery_id for record in records}) == len(records):
                conn.executemany(Q["insert_attempt"], map(_attempt_params, records))
                conn.executemany(Q["finish_attempt"], [_finish_params(r, now) for r in records])
            else:
                for record in records:
                    conn.execute(Q["insert_attempt"], _attempt_params(record))
                    conn.execute(Q["finish_attempt"], _finish_params(record, now))
            last: dict[int, str | None] = {}
            for record in records:
                last[record.integration_id] = record.outcome.error
            conn.executemany(
                Q["set_integration_error"], [{"id": k, "error": v} for k, v in last.items()]
            )
            failing = {r.integration_id for r in records if not r.outcome.ok}
            disabled = [f for i in sorted(failing) if (f := self._auto_disable(conn, i, now))]
            for found in disabled:
                self._audit(conn, found.client.id, audit, found, now)
            return disabled

        return await self._run(tx)

    def _auto_disable(
        self, conn: sqlite3.Connection, integration_id: int, now: float
    ) -> AutoDisabled | None:
        window = retry.AUTO_DISABLE_WINDOW
        found = conn.execute(Q["integration_by_id_any_client"], {"id": integration_id}).fetchone()
        since = max(now - window, found["enabled_at"])
        params = {"integration_id": integration_id, "since": since}
        requests, failures = conn.execute(Q["attempt_stats"], params).fetchone()
        reason = retry.auto_disable_reason(requests, failures, window)
        if reason is None:
            return None
        key = {"id": integration_id, "reason": reason, "now": now}
        if not conn.execute(Q["auto_disable_integration"], key).rowcount:
            return None
        row = conn.execute(Q["integration_by_id_any_client"], {"id": integration_id}).fetchone()
        integration = self._codec.integration(row)
        self._cancel_queued(conn, integration, now)
        client = conn.execute(Q["client_by_id"], {"id": integration.client_id}).fetchone()
        return AutoDisabled(
            integration=integration,
            client=Client(**dict(client)),
            requests=requests,
            failures=failures,
            window_seconds=window,
        )

    async def next_due(self) -> float | None:
        def tx(conn: sqlite3.Connection) -> float | None:
            value = conn.execute(Q["next_due"]).fetchone()[0]
            return None if value is None else float(value)

        return await self._run(tx)

    async def list_deliveries(
        self, client_id: int, integration_id: int, *, limit: int, before: int | None
    ) -> list[Delivery]:
        def tx(conn: sqlite3.Connection) -> list[Delivery]:
            params = {
                "client_id": client_id,
                "integration_id": integration_id,
                "limit": limit,
                "before": before if before is not None else 2**62,
            }
            rows = conn.execute(Q["deliveries_page"], params).fetchall()
            return [_with_attempts(conn, row) for row in rows]

        return await self._run(tx)

    async def get_delivery(self, client_id: int, delivery_id: int) -> Delivery | None:
        def tx(conn: sqlite3.Connection) -> Delivery | None:
            row = conn.execute(
                Q["delivery_of_client"], {"id": delivery_id, "client_id": client_id}
            ).fetchone()
            return None if row is None else _with_attempts(conn, row)

        return await self._run(tx)

    async def resend(self, client_id: int, delivery_id: int, now: float) -> Delivery:
        def tx(conn: sqlite3.Connection) -> Delivery:
            row = conn.execute(
                Q["delivery_of_client"], {"id": delivery_id, "client_id": client_id}
            ).fetchone()
            if row is None:
                raise NotFound(f"delivery {delivery_id} not found")
            integration = conn.execute(
                Q["integration_by_id"], {"id": row["integration_id"], "client_id": client_id}
            ).fetchone()
            check_resendable(
                DeliveryStatus(row["status"]),
                integration_exists=integration is not None,
                enabled=integration is not None and bool(integration["enabled"]),
            )
            conn.execute(Q["requeue_delivery"], {"id": delivery_id, "now": now})
            fresh = conn.execute(Q["delivery_by_id"], {"id": delivery_id}).fetchone()
            return _with_attempts(conn, fresh)

        return await self._run(tx)

    # retention ------------------------------------------------------------------

    async def prune(self, before: float, now: float, *, limit: int, turn: Turn) -> Pruned | None:
        def tx(conn: sqlite3.Connection) -> Pruned | None:
            if not _take_turn(conn, PRUNE_TASK, turn, now):
                return None
            params = {"before": before, "limit": limit}
            old = json.dumps([row[0] for row in conn.execute(Q["old_deliveries"], params)])
            attempts = conn.execute(Q["delete_attempts_of_deliveries"], {"ids": old}).rowcount
            conn.execute(Q["delete_bodies_of_deliveries"], {"ids": old})
            return Pruned(
                deliveries=conn.execute(Q["delete_deliveries"], {"ids": old}).rowcount,
                attempts=attempts,
                events=conn.execute(Q["prune_events"], params).rowcount,
                denylist=conn.execute(Q["prune_denylist"], params).rowcount,
            )

        return await self._run(tx)


# helpers (run on the store thread) ---------------------------------------------


def _take_turn(conn: sqlite3.Connection, task: str, turn: Turn, now: float) -> bool:
    """Whether this is `turn.owner`'s turn of `task`, taking a new turn if the last one ended.

    The write lock is ours (BEGIN IMMEDIATE): no other process can take the turn meanwhile.
    """
    row = conn.execute(Q["turn_of_task"], {"task": task}).fetchone()
    if row is None:
        raise StoreError(f"no maintenance row for task {task!r}: is the schema migrated?")
    ends_at = next_turn(row["holder"], row["ends_at"], turn, now)
    if ends_at is None:
        return False
    if ends_at != row["ends_at"]:
        params = {"task": task, "holder": turn.owner, "now": now, "ends_at": ends_at}
        conn.execute(Q["start_turn"], params)
    return True


def _migrate(conn: sqlite3.Connection) -> list[int]:
    conn.execute(Q["create_schema_migrations"])
    done = {row[0] for row in conn.execute(Q["schema_versions"])}
    applied = []
    for version, script in queries.migrations("sqlite"):
        if version in done:
            continue
        try:
            for statement in _statements(script):
                conn.execute(statement)
        except sqlite3.Error as exc:
            raise MigrationError(f"migration {version} failed: {exc}") from exc
        conn.execute(Q["insert_schema_version"], {"version": version, "now": time.time()})
        applied.append(version)
    return applied


def _statements(script: str) -> Iterable[str]:
    """Split a migration script into statements (our scripts hold no `;` inside literals)."""
    buffer: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buffer.append(line)
        if line.rstrip().endswith(";"):
            yield "\n".join(buffer)
            buffer = []
    if "".join(buffer).strip():
        yield "\n".join(buffer)


def _settle(settled: list[_Done]) -> None:
    """On the loop: hand each call's result or error to whoever still waits for it."""
    for future, result, error in settled:
        if future.done():  # cancelled meanwhile
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _insert(conn: sqlite3.Connection, name: str, params: Mapping[str, Any]) -> int:
    cursor = conn.execute(Q[name], params)
    if cursor.lastrowid is None:
        raise StoreError(f"{name} inserted no row")
    return cursor.lastrowid


def _new_client(conn: sqlite3.Connection, boot: Bootstrap, now: float) -> User:
    """A client with its first administrator and that one's token; the administrator."""
    client = {"name": boot.client_name, "cloud": boot.cloud}
    client_id = _insert(
        conn, "insert_client", client | {"console_url": boot.console_url, "now": now}
    )
    user_id = _insert(
        conn,
        "insert_user",
        {
            "client_id": client_id,
            "email": boot.admin_email,
            "name": boot.admin_name,
            "role": Role.ADMINISTRATOR.value,
            "now": now,
        },
    )
    token = {"user_id": user_id, "name": boot.token_name, "token_hash": boot.token_hash}
    _insert(conn, "insert_token", token | {"expires_at": None, "now": now})
    return _user(conn, client_id, user_id)


def _user(conn: sqlite3.Connection, client_id: int, user_id: int) -> User:
    row = conn.execute(Q["user_of_client"], {"id": user_id, "client_id": client_id}).fetchone()
    return codec.user_from_row(row)


def _keep_an_administrator(conn: sqlite3.Connection, leaving: User, action: str) -> None:
    """Conflict if `leaving` is its client's last administrator."""
    if leaving.role is not Role.ADMINISTRATOR:
        return
    key = {"client_id": leaving.client_id, "id": leaving.id}
    if not conn.execute(Q["other_administrators"], key).fetchone()[0]:
        raise last_administrator(leaving, action)


def _token(conn: sqlite3.Connection, client_id: int, token_id: int) -> Token:
    row = conn.execute(Q["token_of_client"], {"id": token_id, "client_id": client_id}).fetchone()
    return Token(**dict(row))


def _application(
    conn: sqlite3.Connection, client_id: int, application_id: int
) -> Application | None:
    row = conn.execute(
        Q["application_of_client"], {"client_id": client_id, "id": application_id}
    ).fetchone()
    return None if row is None else Application(**dict(row))


def _integration(
    conn: sqlite3.Connection, secrets: codec.Secrets, client_id: int, integration_id: int
) -> Integration:
    row = conn.execute(
        Q["integration_by_id"], {"id": integration_id, "client_id": client_id}
    ).fetchone()
    return secrets.integration(row)


def _attempt_params(record: AttemptRecord) -> dict[str, Any]:
    outcome = record.outcome
    return {
        "delivery_id": record.delivery_id,
        "integration_id": record.integration_id,
        "started_at": outcome.started_at,
        "duration_ms": outcome.duration_ms,
        "ok": outcome.ok,
        "status_code": outcome.status_code,
        "error": outcome.error,
        "response_body": outcome.response_body,
        "request_size": outcome.request_size,
    }


def _finish_params(record: AttemptRecord, now: float) -> dict[str, Any]:
    return {
        "delivery_id": record.delivery_id,
        "status": record.status.value,
        "next_attempt_at": record.next_attempt_at,
        "failed": 0 if record.outcome.ok else 1,
        "error": record.outcome.error,
        "now": now,
    }


def _with_attempts(conn: sqlite3.Connection, row: sqlite3.Row) -> Delivery:
    attempts = conn.execute(Q["attempts_of_delivery"], {"delivery_id": row["id"]})
    return codec.delivery_from_row(row, [codec.attempt_from_row(a) for a in attempts])


class _IntegrationCache:
    def __init__(self, conn: sqlite3.Connection, secrets: codec.Secrets) -> None:
        self._conn = conn
        self._secrets = secrets
        self._seen: dict[int, Integration | None] = {}

    def get(self, integration_id: int) -> Integration | None:
        if integration_id not in self._seen:
            row = self._conn.execute(
                Q["integration_by_id_any_client"], {"id": integration_id}
            ).fetchone()
            found = (
                None
                if row is None or row["deleted_at"] is not None
                else self._secrets.integration(row)
            )
            self._seen[integration_id] = found
        return self._seen[integration_id]


def _trigger(conn: sqlite3.Connection, client_id: int, trigger_id: int) -> Trigger | None:
    row = conn.execute(Q["trigger_of_client"], {"client_id": client_id, "id": trigger_id})
    found = row.fetchone()
    return None if found is None else codec.trigger_from_row(found)
