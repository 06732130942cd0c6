"""The in-memory store: the Store Protocol on plain dicts, for unit tests.

No threads and no I/O. Every method runs to completion without awaiting, so it
is one transaction as far as the event loop can tell. The semantics follow
`SqliteStore` rule for rule; `tests/unit/test_store_contract.py` runs the same
suite against both.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from tocsin import ids, retry, sampling
from tocsin.errors import Conflict, NotFound, StoreError
from tocsin.models import (
    Application,
    Attempt,
    AttemptRecord,
    Claim,
    Client,
    Delivery,
    DeliveryStatus,
    DenylistEntry,
    Integration,
    IntegrationStatus,
    NewEvent,
    Principal,
    Role,
    Token,
    User,
    WebhookSettings,
)
from tocsin.store import grouping
from tocsin.store.base import (
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
    claim_queued,
    denylisted_already,
    in_turn,
    last_administrator,
    lease_seconds,
    next_turn,
)

T = TypeVar("T")
R = TypeVar("R")
_WAITING = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)
_FINISHED = (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    """A row of the events table: one group of events (store/grouping.py)."""

    id: int
    client_id: int
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class _Queued:
    """An outbox row: an event group's notifications, waiting for one integration."""

    event_id: int
    notifications: tuple[bytes, ...]


@dataclass(slots=True, kw_only=True)
class _DeliveryRow:
    """A row of the deliveries table: the record plus its client and lease."""

    id: int
    webhook_id: str
    integration_id: int
    client_id: int
    status: DeliveryStatus
    notification_count: int
    body: bytes
    attempt_count: int = 0
    failures: int = 0
    next_attempt_at: float | None
    lease_owner: str | None = None
    lease_until: float | None = None
    last_error: str | None = None
    created_at: float
    updated_at: float

    def record(self, attempts: Sequence[Attempt] = ()) -> Delivery:
        return Delivery(
            id=self.id,
            webhook_id=self.webhook_id,
            integration_id=self.integration_id,
            status=self.status,
            notification_count=self.notification_count,
            body=self.body,
            attempt_count=self.attempt_count,
            failures=self.failures,
            next_attempt_at=self.next_attempt_at,
            created_at=self.created_at,
            updated_at=self.updated_at,
            last_error=self.last_error,
            attempts=tuple(attempts),
        )

    def due(self, now: float) -> bool:
        return (
            self.status in _WAITING
            and self.next_attempt_at is not None
            and self.next_attempt_at <= now
            and (self.lease_until is None or self.lease_until <= now)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _AttemptRow:
    delivery_id: int
    integration_id: int
    ok: bool
    attempt: Attempt


class MemoryStore:
    """Store in process memory; lost when the object goes."""

    def __init__(self, *, max_batch: int = 500) -> None:
        self._max_batch = max_batch
        self._closed = False
        self._ids: dict[str, Iterator[int]] = {}
        self._clients: dict[int, Client] = {}
        self._client_created: dict[int, float] = {}
        self._users: dict[int, User] = {}
        self._tokens: dict[int, Token] = {}
        self._token_ids: dict[str, int] = {}  # token digest -> token id
        self._applications: dict[tuple[int, int], Application] = {}  # (client id, id)
        self._denylist: dict[int, DenylistEntry] = {}
        self._integrations: dict[int, Integration] = {}
        self._deleted: set[int] = set()
        self._events: dict[int, _Event] = {}
        self._outbox: dict[int, list[_Queued]] = {}  # integration id -> its queue
        self._sampler = sampling.Sampler()
        self._deliveries: dict[int, _DeliveryRow] = {}
        self._attempts: list[_AttemptRow] = []
        self._turns: dict[str, tuple[str | None, float]] = {}  # task -> holder, ends_at

    def _next_id(self, table: str) -> int:
        return next(self._ids.setdefault(table, itertools.count(1)))

    # plumbing -------------------------------------------------------------

    async def migrate(self) -> list[int]:
        return []

    async def close(self) -> None:
        self._closed = True

    async def ping(self) -> None:
        if self._closed:
            raise StoreError("the memory store is closed")

    # clients, users, tokens -------------------------------------------------

    async def bootstrap(self, boot: Bootstrap, now: float) -> bool:
        if self._clients:
            return False
        client = self._add_client(boot.client_name, boot.cloud, boot.console_url, now)
        user = self._add_user(
            client.id,
            email=boot.admin_email,
            name=boot.admin_name,
            role=Role.ADMINISTRATOR,
            now=now,
        )
        self._add_token(user.id, name="", token_hash=boot.token_hash, expires_at=None, now=now)
        return True

    async def create_client_with_administrator(self, boot: Bootstrap, now: float) -> User:
        client = self._add_client(boot.client_name, boot.cloud, boot.console_url, now)
        user = self._add_user(
            client.id,
            email=boot.admin_email,
            name=boot.admin_name,
            role=Role.ADMINISTRATOR,
            now=now,
        )
        self._add_token(
            user.id, name=boot.token_name, token_hash=boot.token_hash, expires_at=None, now=now
        )
        return user

    async def principal(self, token_hashes: Sequence[str], now: float) -> Principal | None:
        found = next((self._token_ids[h] for h in token_hashes if h in self._token_ids), None)
        token = None if found is None else self._tokens[found]
        if token is None or not token.active(now):
            return None
        user = self._users[token.user_id]
        return Principal(
            client=self._clients[user.client_id],
            user_id=user.id,
            email=user.email,
            role=user.role,
            token_id=token.id,
            name=user.name,
            token_expires_at=token.expires_at,
        )

    async def get_client(self, client_id: int) -> Client | None:
        return self._clients.get(client_id)

    async def create_client(self, name: str, cloud: str, console_url: str, now: float) -> Client:
        return self._add_client(name, cloud, console_url, now)

    def _add_client(self, name: str, cloud: str, console_url: str, now: float) -> Client:
        client = Client(
            id=self._next_id("clients"), name=name, cloud=cloud, console_url=console_url
        )
        self._clients[client.id] = client
        self._client_created[client.id] = now
        return client

    async def list_clients(self) -> list[Client]:
        return sorted(self._clients.values(), key=lambda client: client.id)

    async def update_client(
        self, client_id: int, *, name: str, cloud: str, console_url: str
    ) -> Client | None:
        if client_id not in self._clients:
            return None
        client = Client(id=client_id, name=name, cloud=cloud, console_url=console_url)
        self._clients[client_id] = client
        return client

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
        if any(user.email == email for user in self._users_of(client_id)):
            raise Conflict(f"a user with email {email} already exists")
        user = self._add_user(client_id, email=email, name=name, role=role, now=now)
        return await self._audit(client_id, audit, user, user, now)

    async def _audit(
        self, client_id: int, audit: Audit[T] | None, subject: T, result: R, now: float
    ) -> R:
        """`result`, after ingesting `audit`'s events (not undone if rendering fails: the
        memory store is no transactional store, and is being retired)."""
        if audit is not None:
            await self.ingest(client_id, audit(subject), now)
        return result

    def _add_user(self, client_id: int, *, email: str, name: str, role: Role, now: float) -> User:
        user = User(
            id=self._next_id("users"),
            client_id=client_id,
            email=email,
            name=name,
            role=role,
            created_at=now,
        )
        self._users[user.id] = user
        return user

    def _users_of(self, client_id: int) -> list[User]:
        return sorted(
            (user for user in self._users.values() if user.client_id == client_id),
            key=lambda user: user.id,
        )

    def _user(self, client_id: int, user_id: int) -> User | None:
        user = self._users.get(user_id)
        return user if user is not None and user.client_id == client_id else None

    async def list_users(self, client_id: int) -> list[User]:
        return self._users_of(client_id)

    async def get_user(self, client_id: int, user_id: int) -> User | None:
        return self._user(client_id, user_id)

    async def set_role(
        self,
        client_id: int,
        user_id: int,
        role: Role,
        now: float,
        *,
        audit: Audit[Changed[User]] | None = None,
    ) -> User | None:
        user = self._user(client_id, user_id)
        if user is None:
            return None
        if role is not Role.ADMINISTRATOR:
            self._keep_an_administrator(user, "change the role of")
        after = self._users[user_id] = replace(user, role=role)
        return await self._audit(client_id, audit, Changed(user, after), after, now)

    async def delete_user(
        self,
        client_id: int,
        user_id: int,
        now: float,
        *,
        audit: Audit[User] | None = None,
    ) -> User | None:
        user = self._user(client_id, user_id)
        if user is None:
            return None
        self._keep_an_administrator(user, "delete")
        for token in [t for t in self._tokens.values() if t.user_id == user_id]:
            del self._tokens[token.id]
        self._token_ids = {h: i for h, i in self._token_ids.items() if i in self._tokens}
        del self._users[user_id]
        return await self._audit(client_id, audit, user, user, now)

    def _keep_an_administrator(self, leaving: User, action: str) -> None:
        """Conflict if `leaving` is its client's last administrator."""
        if leaving.role is not Role.ADMINISTRATOR:
            return
        others = [
            user
            for user in self._users_of(leaving.client_id)
            if user.role is Role.ADMINISTRATOR and user.id != leaving.id
        ]
        if not others:
            raise last_administrator(leaving, action)

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
        if self._user(client_id, user_id) is None:
            return None
        if token_hash in self._token_ids:
            raise Conflict(DIGEST_TAKEN)
        return self._add_token(
            user_id, name=name, token_hash=token_hash, expires_at=expires_at, now=now
        )

    def _add_token(
        self, user_id: int, *, name: str, token_hash: str, expires_at: float | None, now: float
    ) -> Token:
        token = Token(
            id=self._next_id("tokens"),
            user_id=user_id,
            name=name,
            created_at=now,
            expires_at=expires_at,
            revoked_at=None,
        )
        self._tokens[token.id] = token
        self._token_ids[token_hash] = token.id
        return token

    def _token(self, client_id: int, token_id: int) -> Token | None:
        token = self._tokens.get(token_id)
        if token is None or self._user(client_id, token.user_id) is None:
            return None
        return token

    async def list_tokens(self, client_id: int) -> list[Token]:
        return [
            token
            for token in sorted(self._tokens.values(), key=lambda token: token.id)
            if self._user(client_id, token.user_id) is not None
        ]

    async def revoke_token(self, client_id: int, token_id: int, now: float) -> Token | None:
        token = self._token(client_id, token_id)
        if token is None or token.revoked_at is not None:
            return token
        self._tokens[token_id] = replace(token, revoked_at=now)
        return self._tokens[token_id]

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
        taken = [key[1] for key in self._applications if key[0] == client_id]
        new_id = max(taken, default=0) + 1 if application_id is None else application_id
        if new_id in taken:
            raise Conflict(f"an application with id {new_id} already exists")
        application = Application(
            id=new_id, client_id=client_id, name=name, created_at=now, updated_at=now
        )
        self._applications[client_id, new_id] = application
        return await self._audit(client_id, audit, application, application, now)

    async def list_applications(self, client_id: int) -> list[Application]:
        return [
            application
            for key, application in sorted(self._applications.items())
            if key[0] == client_id
        ]

    async def get_application(self, client_id: int, application_id: int) -> Application | None:
        return self._applications.get((client_id, application_id))

    async def rename_application(
        self,
        client_id: int,
        application_id: int,
        name: str,
        now: float,
        *,
        audit: Audit[Changed[Application]] | None = None,
    ) -> Application | None:
        before = self._applications.get((client_id, application_id))
        if before is None:
            return None
        after = replace(before, name=name, updated_at=now)
        self._applications[client_id, application_id] = after
        return await self._audit(client_id, audit, Changed(before, after), after, now)

    async def delete_application(
        self,
        client_id: int,
        application_id: int,
        *,
        now: float | None = None,
        audit: Audit[Application] | None = None,
    ) -> Application | None:
        found = self._applications.pop((client_id, application_id), None)
        if found is None:
            return None
        return await self._audit(client_id, audit, found, found, now or found.updated_at)

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
        for found in self._unexpired(client_id, now):
            if found.ip == ip and found.application == application:
                raise denylisted_already(
                    ip, application, expire_at=found.expire_at, entry_id=found.id
                )
        entry = DenylistEntry(
            id=self._next_id("denylist"),
            client_id=client_id,
            ip=ip,
            reason=reason,
            application=application,
            created_at=now,
            expire_at=expire_at,
            created_by=created_by,
        )
        self._denylist[entry.id] = entry
        return await self._audit(client_id, audit, entry, entry, now)

    def _unexpired(self, client_id: int, now: float) -> list[DenylistEntry]:
        return [
            entry
            for entry in sorted(self._denylist.values(), key=lambda entry: entry.id)
            if entry.client_id == client_id and entry.expire_at > now
        ]

    async def list_denylist(self, client_id: int, now: float) -> list[DenylistEntry]:
        return self._unexpired(client_id, now)

    async def remove_denylist(
        self, client_id: int, entry_id: int, now: float
    ) -> DenylistEntry | None:
        entry = self._denylist.get(entry_id)
        if entry is None or entry.client_id != client_id or entry.expire_at <= now:
            return None
        return self._denylist.pop(entry_id)

    async def stats(self) -> StoreStats:
        waiting = [row for row in self._deliveries.values() if row.status in _WAITING]
        queued = sum(len(q.notifications) for queue in self._outbox.values() for q in queue)
        integrations = dict.fromkeys(IntegrationStatus, 0)
        for integration in self._integrations.values():
            if integration.id not in self._deleted:
                integrations[integration.status] += 1
        return StoreStats(
            queued_notifications=queued + sum(row.notification_count for row in waiting),
            waiting_deliveries=len(waiting),
            integrations={status.value: count for status, count in integrations.items()},
        )

    # integrations -----------------------------------------------------------

    def _visible(self, client_id: int, integration_id: int) -> Integration | None:
        found = self._live(integration_id)
        return found if found is not None and found.client_id == client_id else None

    def _live(self, integration_id: int) -> Integration | None:
        """An integration that is not deleted, whatever its client."""
        if integration_id in self._deleted:
            return None
        return self._integrations.get(integration_id)

    def _save(self, integration: Integration) -> Integration:
        self._integrations[integration.id] = integration
        return integration

    async def create_integration(
        self,
        client_id: int,
        settings: WebhookSettings,
        signing_secret: str,
        now: float,
        *,
        audit: Audit[Integration] | None = None,
    ) -> Integration:
        created = self._save(
            Integration(
                id=self._next_id("integrations"),
                client_id=client_id,
                settings=replace(settings, headers=dict(settings.headers)),
                signing_secret=signing_secret,
                enabled_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        return await self._audit(client_id, audit, created, created, now)

    async def get_integration(self, client_id: int, integration_id: int) -> Integration | None:
        return self._visible(client_id, integration_id)

    async def list_integrations(self, client_id: int) -> list[Integration]:
        return self._of_client(client_id)

    def _of_client(self, client_id: int) -> list[Integration]:
        return [
            found
            for found in sorted(self._integrations.values(), key=lambda i: i.id)
            if found.client_id == client_id and found.id not in self._deleted
        ]

    async def update_integration(
        self,
        client_id: int,
        integration_id: int,
        settings: WebhookSettings,
        now: float,
        *,
        audit: Audit[Changed[Integration]] | None = None,
    ) -> Integration | None:
        before = self._visible(client_id, integration_id)
        if before is None:
            return None
        enabled = settings.enabled
        fresh = enabled and not before.settings.enabled  # the same fresh start as set_enabled
        after = self._save(
            replace(
                before,
                settings=replace(settings, headers=dict(settings.headers)),
                auto_disabled=False if enabled else before.auto_disabled,
                disabled_reason=None if enabled else before.disabled_reason,
                last_error=None if fresh else before.last_error,
                enabled_at=now if fresh else before.enabled_at,
                updated_at=now,
            )
        )
        if before.settings.enabled and not enabled:
            self._cancel_queued(after, now)
        return await self._audit(client_id, audit, Changed(before, after), after, now)

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
        before = self._visible(client_id, integration_id)
        if before is None:
            return None
        after = self._save(
            replace(
                before,
                settings=replace(before.settings, enabled=enabled),
                auto_disabled=False,
                disabled_reason=None if enabled else reason,
                # enabling starts afresh; disabling keeps the last error to show
                last_error=None if enabled else before.last_error,
                enabled_at=now if enabled and not before.settings.enabled else before.enabled_at,
                updated_at=now,
            )
        )
        if not enabled:
            self._cancel_queued(after, now)
        return await self._audit(client_id, audit, Changed(before, after), after, now)

    async def delete_integration(
        self,
        client_id: int,
        integration_id: int,
        now: float,
        *,
        audit: Audit[Integration] | None = None,
    ) -> bool:
        before = self._visible(client_id, integration_id)
        if before is None:
            return False
        self._save(
            replace(before, settings=replace(before.settings, enabled=False), updated_at=now)
        )
        self._deleted.add(integration_id)
        self._cancel_queued(before, now)
        return await self._audit(client_id, audit, before, True, now)  # noqa: FBT003

    def _cancel_queued(self, integration: Integration, now: float) -> None:
        """Cancel waiting deliveries and turn queued notifications into cancelled deliveries."""
        for row in self._deliveries.values():
            if row.integration_id == integration.id and row.status in _WAITING:
                row.status = DeliveryStatus.CANCELLED
                row.next_attempt_at = None
                row.updated_at = now
        cancelled = DeliveryStatus.CANCELLED
        while self._new_delivery(integration, now, status=cancelled, lease=None) is not None:
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
        before = self._visible(client_id, integration_id)
        if before is None:
            return None
        rotated = self._save(
            replace(
                before,
                signing_secret=secret,
                previous_signing_secret=before.signing_secret,
                secret_rotated_at=now,
                updated_at=now,
            )
        )
        return await self._audit(client_id, audit, rotated, rotated, now)

    async def reencrypt(self) -> int:
        return 0  # nothing is kept at rest

    async def queued_notifications(self, integration_id: int) -> int:
        return sum(len(queued.notifications) for queued in self._outbox.get(integration_id, ()))

    # ingestion ----------------------------------------------------------------

    async def ingest(self, client_id: int, events: Sequence[NewEvent], now: float) -> int:
        integrations = [found for found in self._of_client(client_id) if found.settings.enabled]
        notify = [
            event.notify
            and (event.sample_key is None or self._sampler.admit(client_id, event.sample_key, now))
            for event in events
        ]
        for found in grouping.group(events, notify, self._max_batch):
            stored = _Event(id=self._next_id("events"), client_id=client_id, created_at=now)
            self._events[stored.id] = stored
            if not found.notify:
                continue
            queued = _Queued(event_id=stored.id, notifications=found.notifications)
            for integration in integrations:
                if integration.id != found.skip_integration and integration.wants(
                    found.type, found.risk
                ):
                    self._outbox.setdefault(integration.id, []).append(queued)
        return len(events)

    # delivery -------------------------------------------------------------------

    async def claim(self, limits: ClaimLimits, now: float) -> list[Claim]:
        slots = ClaimSlots(limits)
        claims = self._claim_due(limits, slots, now)
        claims.extend(self._claim_outbox(limits, slots, now, room=limits.limit - len(claims)))
        return claims

    def _lease(self, integration: Integration, limits: ClaimLimits, now: float) -> float:
        return now + lease_seconds(integration, limits.lease_margin)

    def _claim_due(self, limits: ClaimLimits, slots: ClaimSlots, now: float) -> list[Claim]:
        busy = set(limits.saturated())
        due = sorted(
            (
                row
                for row in self._deliveries.values()
                if row.due(now) and row.integration_id not in busy
            ),
            key=lambda row: (row.next_attempt_at, row.id),
        )
        claims: list[Claim] = []
        for row in due[: limits.limit]:
            integration = self._live(row.integration_id)
            if (
                integration is None
                or not integration.settings.enabled
                or not slots.take(integration.id)
            ):
                continue
            claims.append(
                Claim(
                    delivery=row.record(),
                    integration=integration,
                    lease_until=self._lease(integration, limits, now),
                )
            )
            row.lease_owner, row.lease_until = limits.owner, claims[-1].lease_until
        return claims

    def _claim_outbox(
        self, limits: ClaimLimits, slots: ClaimSlots, now: float, *, room: int
    ) -> list[Claim]:
        queued = (self._live(i) for i in in_turn(sorted(self._outbox), limits.after))
        return claim_queued(
            (found for found in queued if found is not None),
            limits,
            slots,
            now,
            room=room,
            new_deliveries=lambda integration, lease, most: self._new_deliveries(
                integration, now, lease=lease, most=most
            ),
        )

    def _new_deliveries(
        self, integration: Integration, now: float, *, lease: tuple[str, float], most: int
    ) -> list[Delivery]:
        made: list[Delivery] = []
        while len(made) < most:
            delivery = self._new_delivery(
                integration, now, status=DeliveryStatus.PENDING, lease=lease
            )
            if delivery is None:
                break
            made.append(delivery)
        return made

    def _new_delivery(
        self,
        integration: Integration,
        now: float,
        *,
        status: DeliveryStatus,
        lease: tuple[str, float] | None,
    ) -> Delivery | None:
        """Move up to one batch of the integration's queued notifications into a new delivery."""
        queued = self._outbox.pop(integration.id, [])
        size = self._max_batch
        fit = grouping.fitting([len(group.notifications) for group in queued], size)
        groups, rest = queued[:fit], queued[fit:]
        if rest:
            self._outbox[integration.id] = rest
        if not groups:
            return None
        row = _DeliveryRow(
            id=self._next_id("deliveries"),
            webhook_id=ids.webhook_id(),
            integration_id=integration.id,
            client_id=integration.client_id,
            status=status,
            notification_count=sum(len(group.notifications) for group in groups),
            body=grouping.body(
                [b"\n".join(group.notifications) for group in groups],
                integration.settings.format,
            ),
            next_attempt_at=now if status is DeliveryStatus.PENDING else None,
            lease_owner=lease[0] if lease else None,
            lease_until=lease[1] if lease else None,
            created_at=now,
            updated_at=now,
        )
        self._deliveries[row.id] = row
        return row.record()

    async def record_attempts(
        self, records: Sequence[AttemptRecord], now: float
    ) -> list[AutoDisabled]:
        last_error: dict[int, str | None] = {}
        for record in records:
            self._record_attempt(record, now)
            last_error[record.integration_id] = record.outcome.error
        for integration_id, error in last_error.items():
            found = self._integrations.get(integration_id)
            if found is not None:
                self._save(replace(found, last_error=error))
        failing = {record.integration_id for record in records if not record.outcome.ok}
        return [done for i in sorted(failing) if (done := self._auto_disable(i, now))]

    def _record_attempt(self, record: AttemptRecord, now: float) -> None:
        row = self._deliveries.get(record.delivery_id)
        if row is None:
            return
        outcome = record.outcome
        attempt = Attempt(
            number=row.attempt_count + 1,
            started_at=outcome.started_at,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            response_body=outcome.response_body,
            request_size=outcome.request_size,
        )
        self._attempts.append(
            _AttemptRow(
                delivery_id=row.id,
                integration_id=record.integration_id,
                ok=outcome.ok,
                attempt=attempt,
            )
        )
        # A delivery cancelled while its request was in flight stays cancelled unless it succeeded.
        keep_cancelled = (
            row.status is DeliveryStatus.CANCELLED and record.status is not DeliveryStatus.DELIVERED
        )
        row.status = DeliveryStatus.CANCELLED if keep_cancelled else record.status
        row.next_attempt_at = None if keep_cancelled else record.next_attempt_at
        row.attempt_count += 1
        row.failures += 0 if outcome.ok else 1
        row.last_error = outcome.error
        row.lease_owner = row.lease_until = None
        row.updated_at = now

    def _auto_disable(self, integration_id: int, now: float) -> AutoDisabled | None:
        window = retry.AUTO_DISABLE_WINDOW
        current = self._live(integration_id)
        since = max(now - window, current.enabled_at if current else 0.0)
        recent = [
            row
            for row in self._attempts
            if row.integration_id == integration_id and row.attempt.started_at >= since
        ]
        requests, failures = len(recent), sum(not row.ok for row in recent)
        if not retry.should_auto_disable(requests, failures):
            return None
        found = self._live(integration_id)
        if found is None or not found.settings.enabled:
            return None
        reason = (
            f"{failures} of {requests} requests failed ({failures / requests:.0%}) "
            f"in the last {window / 3600:.0f} hours"
        )
        integration = self._save(
            replace(
                found,
                settings=replace(found.settings, enabled=False),
                auto_disabled=True,
                disabled_reason=reason,
                updated_at=now,
            )
        )
        self._cancel_queued(integration, now)
        return AutoDisabled(
            integration=integration, requests=requests, failures=failures, window_seconds=window
        )

    async def next_due(self) -> float | None:
        times = [
            row.lease_until if row.lease_until is not None else row.next_attempt_at
            for row in self._deliveries.values()
            if row.status in _WAITING
        ]
        return min((t for t in times if t is not None), default=None)

    async def list_deliveries(
        self, client_id: int, integration_id: int, *, limit: int, before: int | None
    ) -> list[Delivery]:
        rows = [
            row
            for row in self._deliveries.values()
            if row.client_id == client_id
            and row.integration_id == integration_id
            and (before is None or row.id < before)
        ]
        rows.sort(key=lambda row: row.id, reverse=True)
        return [self._with_attempts(row) for row in rows[:limit]]

    async def get_delivery(self, client_id: int, delivery_id: int) -> Delivery | None:
        row = self._deliveries.get(delivery_id)
        if row is None or row.client_id != client_id:
            return None
        return self._with_attempts(row)

    async def resend(self, client_id: int, delivery_id: int, now: float) -> Delivery:
        row = self._deliveries.get(delivery_id)
        if row is None or row.client_id != client_id:
            raise NotFound(f"delivery {delivery_id} not found")
        _check_resendable(row.status, self._visible(client_id, row.integration_id))
        row.status = DeliveryStatus.PENDING
        row.failures = 0
        row.next_attempt_at = now
        row.lease_owner = row.lease_until = None
        row.updated_at = now
        return self._with_attempts(row)

    def _with_attempts(self, row: _DeliveryRow) -> Delivery:
        attempts = [a.attempt for a in self._attempts if a.delivery_id == row.id]
        return row.record(sorted(attempts, key=lambda attempt: attempt.number))

    # retention ------------------------------------------------------------------

    async def prune(self, before: float, now: float, *, limit: int, turn: Turn) -> Pruned | None:
        holder, ends_at = self._turns.get(PRUNE_TASK, (None, -math.inf))
        mine_until = next_turn(holder, ends_at, turn, now)
        if mine_until is None:
            return None
        self._turns[PRUNE_TASK] = (turn.owner, mine_until)
        deliveries, attempts = self._prune_deliveries(before, limit)
        return Pruned(
            deliveries=deliveries,
            attempts=attempts,
            events=self._prune_events(before, limit),
            denylist=self._prune_denylist(before, limit),
        )

    def _prune_deliveries(self, before: float, limit: int) -> tuple[int, int]:
        old = sorted(
            (
                row
                for row in self._deliveries.values()
                if row.status in _FINISHED and row.updated_at < before
            ),
            key=lambda row: (row.updated_at, row.id),
        )[:limit]
        gone = {row.id for row in old}
        for delivery_id in gone:
            del self._deliveries[delivery_id]
        kept = [row for row in self._attempts if row.delivery_id not in gone]
        pruned = len(self._attempts) - len(kept)
        self._attempts = kept
        return len(gone), pruned

    def _prune_events(self, before: float, limit: int) -> int:
        queued = {q.event_id for queue in self._outbox.values() for q in queue}
        old = [
            found.id
            for found in sorted(
                self._events.values(), key=lambda found: (found.created_at, found.id)
            )
            if found.created_at < before and found.id not in queued
        ][:limit]
        for event_id in old:
            del self._events[event_id]
        return len(old)

    def _prune_denylist(self, before: float, limit: int) -> int:
        old = sorted(
            (entry for entry in self._denylist.values() if entry.expire_at < before),
            key=lambda entry: entry.expire_at,
        )[:limit]
        for entry in old:
            del self._denylist[entry.id]
        return len(old)


def _check_resendable(status: DeliveryStatus, integration: Integration | None) -> None:
    if status not in (DeliveryStatus.FAILED, DeliveryStatus.CANCELLED):
        raise Conflict(f"only failed or cancelled deliveries can be re-sent; this one is {status}")
    if integration is None:
        raise Conflict("the integration of this delivery was deleted")
    if not integration.settings.enabled:
        raise Conflict("enable the integration before re-sending its deliveries")
