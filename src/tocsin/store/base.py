"""The Store interface: everything tocsin keeps, behind one small async API.

Implementations: `sqlite.SqliteStore` (embedded default, and the unit tests' store in a
temporary directory), `postgres.PostgresStore` (shared by several processes). Callers depend on
this Protocol only. Every method is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar, runtime_checkable

from tocsin.errors import Conflict
from tocsin.models import (
    Application,
    AttemptRecord,
    Claim,
    Client,
    Delivery,
    DeliveryStatus,
    DenylistEntry,
    Integration,
    NewEvent,
    Principal,
    Role,
    Token,
    User,
    WebhookSettings,
)
from tocsin.store.stream import Handler
from tocsin.triggers.definitions import Trigger, TriggerSpec

T = TypeVar("T")

# What a change notifies, rendered from its result inside the change's transaction: the
# store ingests the events in that same transaction, so both commit or neither does.
Audit = Callable[[T], Sequence[NewEvent]]


@dataclass(frozen=True, slots=True)
class Changed(Generic[T]):
    """An object as it was before a change and as the change left it (read in one transaction)."""

    before: T
    after: T


@dataclass(frozen=True, slots=True, kw_only=True)
class Bootstrap:
    """The first client and administrator of an empty database."""

    client_name: str
    cloud: str
    console_url: str
    admin_email: str
    admin_name: str
    token_hash: str
    token_name: str = ""


# The conflicts every store reports, in the same words.

DIGEST_TAKEN = "a token with this digest already exists; generate another token"
CANCEL_BATCHES = 100  # deliveries made per statement when cancelling what is queued


def last_administrator(user: User, action: str) -> Conflict:
    """Refusing to `action` ("delete", "change the role of") a client's last administrator."""
    return Conflict(
        f"cannot {action} {user.email}: it is the client's last administrator; "
        "make another user an administrator first"
    )


def denylisted_already(
    ip: str, application: int | None, *, expire_at: float, entry_id: int
) -> Conflict:
    scope = "every application" if application is None else f"application {application}"
    until = datetime.fromtimestamp(expire_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Conflict(
        f"{ip} is already denylisted for {scope} until {until} (entry {entry_id}); "
        "remove that entry or wait until it expires"
    )


def check_resendable(status: DeliveryStatus, *, integration_exists: bool, enabled: bool) -> None:
    """Conflict unless a delivery may be queued again: failed or cancelled, and its
    integration still there and enabled (pure; the stores call it on the rows they lock)."""
    if status not in (DeliveryStatus.FAILED, DeliveryStatus.CANCELLED):
        raise Conflict(f"only failed or cancelled deliveries can be re-sent; this one is {status}")
    if not integration_exists:
        raise Conflict("the integration of this delivery was deleted")
    if not enabled:
        raise Conflict("enable the integration before re-sending its deliveries")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimLimits:
    """How much work one claim may take.

    `in_flight` is this worker's count of deliveries it holds per integration (sending or
    claimed ahead); an integration gets at most `max_in_flight` plus its `ahead` (the
    deliveries the worker may claim ahead for it) minus that many new deliveries.
    `proven`, when given, holds the integrations whose receivers answered the worker's
    last request; any other gets one request at a time (a probe) instead of
    `max_in_flight`, so a receiver that is down or silent is not sent several at once.
    `max_bytes`, when given, stops making new deliveries once their bodies reach it (the
    integration that crosses it keeps what it got); `after` is where the walk over queued
    integrations starts, after the id the last claim ended with, so that when bytes are
    short every integration gets its turn rather than the lowest ids each time.
    """

    owner: str
    max_in_flight: int
    in_flight: Mapping[int, int]
    lease_margin: float
    limit: int = 1000
    ahead: Mapping[int, int] = field(default_factory=dict)
    proven: AbstractSet[int] | None = None
    max_bytes: int | None = None
    after: int = 0

    def slots(self, integration_id: int) -> int:
        """How many deliveries the worker may hold for the integration."""
        if self.proven is not None and integration_id not in self.proven:
            return 1 + self.ahead.get(integration_id, 0)
        return self.max_in_flight + self.ahead.get(integration_id, 0)

    def bytes_left(self, made: int) -> bool:
        """Whether new deliveries may still be made, `made` bytes of bodies made so far."""
        return self.max_bytes is None or made < self.max_bytes

    def saturated(self) -> list[int]:
        """Integrations with no free slot: their due deliveries must not take up the claim."""
        return [key for key, used in self.in_flight.items() if used >= self.slots(key)]


class ClaimSlots:
    """Free slots per integration during one claim (shared by the stores)."""

    def __init__(self, limits: ClaimLimits) -> None:
        self._limits = limits
        self._used = dict(limits.in_flight)

    def take(self, integration_id: int) -> bool:
        return self.take_up_to(integration_id, 1) == 1

    def take_up_to(self, integration_id: int, wanted: int) -> int:
        """Take as many of `wanted` slots as are free; return how many were taken."""
        used = self._used.get(integration_id, 0)
        taken = max(0, min(wanted, self._limits.slots(integration_id) - used))
        if taken:
            self._used[integration_id] = used + taken
        return taken

    def give_back(self, integration_id: int, count: int = 1) -> None:
        self._used[integration_id] -= count


NewLeased = Callable[[Integration, tuple[str, float], int], Sequence[Delivery]]


def claim_queued(
    integrations: Iterable[Integration],
    limits: ClaimLimits,
    slots: ClaimSlots,
    now: float,
    *,
    room: int,
    new_deliveries: NewLeased,
) -> list[Claim]:
    """Batch each integration's queued groups into leased deliveries while it has free slots.

    `new_deliveries(integration, (owner, lease_until), most)` makes up to `most` deliveries
    of the oldest queued groups, in one go, and returns them (none when nothing is queued).
    """
    claims: list[Claim] = []
    made = 0  # bytes of the bodies made
    for integration in integrations:
        if len(claims) >= room or not limits.bytes_left(made):
            break
        taken = slots.take_up_to(integration.id, room - len(claims))
        if not taken:
            continue
        lease = (limits.owner, now + lease_seconds(integration, limits.lease_margin))
        deliveries = new_deliveries(integration, lease, taken)
        slots.give_back(integration.id, taken - len(deliveries))
        made += sum(len(delivery.body) for delivery in deliveries)
        claims.extend(
            Claim(delivery=delivery, integration=integration, lease_until=lease[1])
            for delivery in deliveries
        )
    return claims


def in_turn(integration_ids: Sequence[int], after: int) -> list[int]:
    """Ascending ids, starting after `after` and wrapping around (pure)."""
    later = [i for i in integration_ids if i > after]
    return later + [i for i in integration_ids if i <= after]


def lease_seconds(integration: Integration, margin: float) -> float:
    """How long a claimed delivery is ours: the longest its request may take, plus a margin."""
    settings = integration.settings
    return settings.connection_timeout + settings.request_timeout + margin


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoDisabled:
    """An integration the store disabled because its failure rate crossed the rule."""

    integration: Integration
    client: Client
    requests: int
    failures: int
    window_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStats:
    """Deployment-wide gauges for /metrics, read in one snapshot.

    `queued_notifications`: accepted and not yet delivered (in the outbox, or in a
    pending or retrying delivery). `integrations`: status value -> count, deleted ones
    left out, every IntegrationStatus present (0 when none).
    """

    queued_notifications: int
    waiting_deliveries: int
    integrations: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """A process asking for the turn of a task that must run once across processes.

    Periodic tasks (pruning the delivery log; trigger evaluation will be another) run in
    one process per turn, whichever processes are up. The first process to ask after
    the last turn ended takes the next, for `length` seconds: until then only `owner`
    runs the task and every other process is told no. The stores keep each task's turn
    in the `maintenance` table and take it in the transaction that does the work
    (PostgreSQL: the task's row FOR UPDATE SKIP LOCKED), so a process that dies midway
    leaves nothing half-done and its turn ends on time.
    """

    owner: str
    length: float


def next_turn(holder: str | None, ends_at: float, turn: Turn, now: float) -> float | None:
    """When the asker's turn ends, or None while another process's turn lasts (pure).

    `holder` and `ends_at` are the task's current turn. One that has ended goes to the
    asker, afresh; one that lasts stays with its holder, who may go on working in it.
    """
    if ends_at <= now:
        return now + turn.length
    return ends_at if holder == turn.owner else None


PRUNE_TASK = "prune"  # the maintenance row of delivery-log retention


@dataclass(frozen=True, slots=True, kw_only=True)
class Pruned:
    """Rows one prune call deleted. `events` counts stored rows (groups of events)."""

    deliveries: int = 0
    attempts: int = 0
    events: int = 0
    denylist: int = 0

    @property
    def rows(self) -> int:
        return self.deliveries + self.attempts + self.events + self.denylist

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            deliveries=self.deliveries + other.deliveries,
            attempts=self.attempts + other.attempts,
            events=self.events + other.events,
            denylist=self.denylist + other.denylist,
        )


@runtime_checkable
class Notifier(Protocol):
    """A store that hears when another process queues work (PostgreSQL's LISTEN/NOTIFY)."""

    async def wait_for_work(self) -> None:
        """Return when work may have been queued (the caller bounds the wait)."""
        ...


class Store(Protocol):
    """What the API and the delivery engine need from a database."""

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        ...

    # clients, users and tokens
    async def bootstrap(self, boot: Bootstrap, now: float) -> bool:
        """Create the first client and administrator if there is no client; True if created."""
        ...

    async def principal(self, token_hashes: Sequence[str], now: float) -> Principal | None:
        """The user holding a token, given the token's digest under each key (crypto.Vault)."""
        ...

    async def get_client(self, client_id: int) -> Client | None: ...

    async def create_client(self, name: str, cloud: str, console_url: str, now: float) -> Client:
        """Add a tenant (with no users yet)."""
        ...

    async def create_client_with_administrator(self, boot: Bootstrap, now: float) -> User:
        """Add a tenant, its first administrator and that one's token, in one transaction."""
        ...

    async def list_clients(self) -> list[Client]:
        """Every client, by id."""
        ...

    async def update_client(
        self, client_id: int, *, name: str, cloud: str, console_url: str
    ) -> Client | None: ...

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
        """Add a user; Conflict when the client already has a user with this email."""
        ...

    async def list_users(self, client_id: int) -> list[User]:
        """The client's users, by id."""
        ...

    async def get_user(self, client_id: int, user_id: int) -> User | None: ...

    async def set_role(
        self,
        client_id: int,
        user_id: int,
        role: Role,
        now: float,
        *,
        audit: Audit[Changed[User]] | None = None,
    ) -> User | None:
        """Change a user's role; Conflict when that leaves the client without an administrator."""
        ...

    async def delete_user(
        self, client_id: int, user_id: int, now: float, *, audit: Audit[User] | None = None
    ) -> User | None:
        """Delete a user and its tokens; return it as it was.

        Conflict when it is the client's last administrator.
        """
        ...

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
        """Store a token's digest for a user of the client; None if no such user."""
        ...

    async def list_tokens(self, client_id: int) -> list[Token]:
        """Every token of the client's users, revoked and expired ones included, by id."""
        ...

    async def revoke_token(self, client_id: int, token_id: int, now: float) -> Token | None:
        """Revoke a token of the client (idempotent: the first revocation time stays)."""
        ...

    # applications and the denylist
    async def create_application(
        self,
        client_id: int,
        *,
        name: str,
        now: float,
        application_id: int | None = None,
        audit: Audit[Application] | None = None,
    ) -> Application:
        """Add an application; without an id it gets the client's highest id + 1.

        Conflict when the client already has an application with this id.
        """
        ...

    async def list_applications(self, client_id: int) -> list[Application]:
        """The client's applications, by id."""
        ...

    async def get_application(self, client_id: int, application_id: int) -> Application | None: ...

    async def rename_application(
        self,
        client_id: int,
        application_id: int,
        name: str,
        now: float,
        *,
        audit: Audit[Changed[Application]] | None = None,
    ) -> Application | None: ...

    async def delete_application(
        self,
        client_id: int,
        application_id: int,
        *,
        now: float | None = None,
        audit: Audit[Application] | None = None,
    ) -> Application | None:
        """Delete an application; return it as it was.

        `now` is when `audit`'s events are stored (the store keeps no deletion time).
        """
        ...

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
        """Denylist an address; Conflict while an unexpired entry has its ip and application."""
        ...

    async def list_denylist(self, client_id: int, now: float) -> list[DenylistEntry]:
        """Entries not yet expired (expire_at > now), by id."""
        ...

    async def remove_denylist(
        self, client_id: int, entry_id: int, now: float
    ) -> DenylistEntry | None:
        """Remove an unexpired entry; None if there is none with this id."""
        ...

    # triggers
    async def create_trigger(
        self,
        client_id: int,
        spec: TriggerSpec,
        now: float,
        *,
        audit: Audit[Trigger] | None = None,
    ) -> Trigger:
        """Save a new trigger (already checked); it counts from `now`."""
        ...

    async def list_triggers(self, client_id: int) -> list[Trigger]: ...

    async def get_trigger(self, client_id: int, trigger_id: int) -> Trigger | None: ...

    async def all_triggers(self) -> list[Trigger]:
        """Every client's triggers, disabled ones too (what trigger evaluation reads)."""
        ...

    async def update_trigger(
        self,
        client_id: int,
        trigger_id: int,
        spec: TriggerSpec,
        now: float,
        *,
        audit: Audit[Changed[Trigger]] | None = None,
    ) -> Trigger | None:
        """Replace a trigger's definition; its counting restarts at `now` when
        definitions.counting_changed says so. None if there is no such trigger."""
        ...

    async def delete_trigger(
        self, client_id: int, trigger_id: int, now: float, *, audit: Audit[Trigger] | None = None
    ) -> Trigger | None:
        """Delete a trigger; return it as it was (None if there is none)."""
        ...

    async def stats(self) -> StoreStats:
        """Gauges of the whole deployment for /metrics."""
        ...

    # integrations
    async def create_integration(
        self,
        client_id: int,
        settings: WebhookSettings,
        signing_secret: str,
        now: float,
        *,
        audit: Audit[Integration] | None = None,
    ) -> Integration: ...

    async def get_integration(self, client_id: int, integration_id: int) -> Integration | None: ...

    async def list_integrations(self, client_id: int) -> list[Integration]: ...

    async def update_integration(
        self,
        client_id: int,
        integration_id: int,
        settings: WebhookSettings,
        now: float,
        *,
        audit: Audit[Changed[Integration]] | None = None,
    ) -> Integration | None:
        """Replace the settings; turning `enabled` off cancels queued work as disable does."""
        ...

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
        """Enable, or disable and cancel queued deliveries."""
        ...

    async def delete_integration(
        self,
        client_id: int,
        integration_id: int,
        now: float,
        *,
        audit: Audit[Integration] | None = None,
    ) -> bool:
        """Remove from view and cancel queued deliveries (kept in the log).

        `audit` gets the integration as it was before.
        """
        ...

    async def rotate_signing_secret(
        self,
        client_id: int,
        integration_id: int,
        secret: str,
        now: float,
        *,
        audit: Audit[Integration] | None = None,
    ) -> Integration | None:
        """Make `secret` current; the old one is still signed with for 24 h."""
        ...

    async def reencrypt(self) -> int:
        """Re-encrypt every stored secret under the current key; return how many rows."""
        ...

    async def queued_notifications(self, integration_id: int) -> int:
        """Notifications accepted for the integration and not yet in a delivery."""
        ...

    # events and the outbox
    async def ingest(self, client_id: int, events: Sequence[NewEvent], now: float) -> int:
        """Store events and, in the same transaction, queue their notifications."""
        ...

    # the event stream
    async def consume(
        self, consumer: str, handle: Handler, *, limit: int, now: float
    ) -> int | None:
        """Read the stream after the consumer's position and act on it, in one transaction.

        Takes the consumer (created at the stream's start on first use), reads up to about
        `limit` events after its position, in order (whole groups, at least one), calls
        `handle(events, state)` even when there are none, stores the reaction's state and
        ingests its events, and moves the position past what was read. Returns how many
        events were read; None, doing nothing, while another process holds the consumer.
        """
        ...

    # deliveries
    async def claim(self, limits: ClaimLimits, now: float) -> list[Claim]:
        """Lease due deliveries and batch queued notifications into new leased deliveries."""
        ...

    async def record_attempts(
        self,
        records: Sequence[AttemptRecord],
        now: float,
        *,
        audit: Audit[AutoDisabled] | None = None,
    ) -> list[AutoDisabled]:
        """Store attempts and their decisions, release leases, apply the auto-disable rule.

        An integration the rule disables gets its system notification (`audit`) in the
        same transaction.
        """
        ...

    async def next_due(self) -> float | None:
        """When the earliest waiting delivery becomes due (or its lease expires)."""
        ...

    async def list_deliveries(
        self, client_id: int, integration_id: int, *, limit: int, before: int | None
    ) -> list[Delivery]: ...

    async def get_delivery(self, client_id: int, delivery_id: int) -> Delivery | None: ...

    async def resend(self, client_id: int, delivery_id: int, now: float) -> Delivery:
        """Queue a failed or cancelled delivery again (NotFound / Conflict otherwise)."""
        ...

    # retention
    async def prune(self, before: float, now: float, *, limit: int, turn: Turn) -> Pruned | None:
        """Delete what retention no longer keeps, in `turn` of the prune task.

        Goes: finished deliveries (delivered, failed, cancelled) last changed before
        `before`, with their attempts; events stored before it that no queued
        notification needs; denylist entries that expired before it. Waiting work
        (outbox rows, pending and retrying deliveries) stays whatever its age. At most
        `limit` deliveries, events and denylist entries each per call: the caller calls
        again while something went. None, deleting nothing, in another process's turn.
        """
        ...
