"""Immutable records shared by the API, the store and the delivery engine.

Enum values equal the strings stored in the database and shown in the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """Event types an integration subscribes to (SPEC 3.1 `events`)."""

    HIT = "hit"
    VULN = "vuln"
    SYSTEM = "system"
    SCOPE = "scope"
    # Stored for triggers (SPEC 5); no integration subscribes to these by `events`.
    IP_DENYLISTED = "ip_denylisted"
    API_CHANGE = "api_change"
    # A trigger's notification: it goes to the integrations the trigger names (targets).
    TRIGGER = "trigger"


class RiskLevel(StrEnum):
    """Vulnerability risk levels an integration may filter on."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class BodyFormat(StrEnum):
    """How several notifications are put in one request body."""

    JSON_ARRAY = "json_array"
    NDJSON = "ndjson"


class IntegrationStatus(StrEnum):
    """What a user sees of an integration's health."""

    ACTIVE = "active"
    DISABLED = "disabled"
    AUTO_DISABLED = "auto_disabled"
    FAILING = "failing"


class DeliveryStatus(StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Role(StrEnum):
    """User roles (SPEC 6.3)."""

    ADMINISTRATOR = "administrator"
    ANALYST = "analyst"
    READ_ONLY = "read_only"
    DEPLOY = "deploy"
    API_DEVELOPER = "api_developer"


ALL_RISK_LEVELS = (RiskLevel.HIGH, RiskLevel.MEDIUM, RiskLevel.LOW)
SECRET_OVERLAP = 24 * 3600.0  # after a rotation, both signatures are sent this long


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    """A tenant; its name, cloud and console URL appear in every notification."""

    id: int
    name: str
    cloud: str
    console_url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is calling the API: a user of one client, through one token."""

    client: Client
    user_id: int
    email: str
    role: Role
    token_id: int = 0
    name: str = ""
    token_expires_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """A person (or a sensor's identity) of one client."""

    id: int
    client_id: int
    email: str
    name: str
    role: Role
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """An API token as listed: never its secret, only who holds it and when it ends."""

    id: int
    user_id: int
    name: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True, slots=True, kw_only=True)
class Application:
    """An application of a client; hits and triggers refer to it by id (unique per client)."""

    id: int
    client_id: int
    name: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DenylistEntry:
    """An IP address denied until `expire_at` (SPEC 1: IP denylisted)."""

    id: int
    client_id: int
    ip: str
    reason: str
    application: int | None
    created_at: float
    expire_at: float
    created_by: str
    trigger_id: int | None = None  # the trigger whose denylist_ip action made it


@dataclass(frozen=True, slots=True, kw_only=True)
class Denylisting:
    """A denylist entry a trigger's denylist_ip action makes, with its `ip_denylisted`
    event; the store adds both unless the address is already denylisted (for every
    application)."""

    client_id: int
    ip: str
    reason: str
    expire_at: float
    created_by: str
    trigger_id: int
    event: NewEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    """Everything a user configures on a webhook integration (SPEC 3.1)."""

    name: str
    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    ca_certificate: str | None = None
    verify_tls: bool = True
    request_timeout: float = 15.0
    connection_timeout: float = 20.0
    format: BodyFormat = BodyFormat.JSON_ARRAY
    events: tuple[EventType, ...] = (EventType.VULN,)
    vuln_risk_levels: tuple[RiskLevel, ...] = ALL_RISK_LEVELS
    enabled: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON values, named as in the API."""
        return {
            "name": self.name,
            "url": self.url,
            "method": self.method,
            "headers": dict(self.headers),
            "ca_certificate": self.ca_certificate,
            "verify_tls": self.verify_tls,
            "request_timeout": self.request_timeout,
            "connection_timeout": self.connection_timeout,
            "format": self.format.value,
            "events": [event.value for event in self.events],
            "vuln_risk_levels": [level.value for level in self.vuln_risk_levels],
            "enabled": self.enabled,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Integration:
    """A saved webhook destination of one client."""

    id: int
    client_id: int
    settings: WebhookSettings
    signing_secret: str
    disabled_reason: str | None = None
    auto_disabled: bool = False
    last_error: str | None = None
    enabled_at: float = 0.0
    previous_signing_secret: str | None = None
    secret_rotated_at: float | None = None
    created_at: float
    updated_at: float

    def signing_secrets(self, now: float) -> list[str]:
        """The secrets to sign with: the current one, and for 24 h after a rotation the old one."""
        secrets = [self.signing_secret]
        rotated = self.secret_rotated_at
        if self.previous_signing_secret and rotated is not None and now - rotated < SECRET_OVERLAP:
            secrets.append(self.previous_signing_secret)
        return secrets

    @property
    def status(self) -> IntegrationStatus:
        if not self.settings.enabled:
            if self.auto_disabled:
                return IntegrationStatus.AUTO_DISABLED
            return IntegrationStatus.DISABLED
        if self.last_error is not None:
            return IntegrationStatus.FAILING
        return IntegrationStatus.ACTIVE

    def wants(self, event_type: EventType, risk: RiskLevel | None = None) -> bool:
        """Whether an event of this type (and vulnerability risk) goes to this integration."""
        if not self.settings.enabled or event_type not in self.settings.events:
            return False
        if event_type is EventType.VULN and risk is not None:
            return risk in self.settings.vuln_risk_levels
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event ready to store: its notification is already rendered.

    `sample_key` is set for hits: identical hits share it (SPEC 2.1 sampling).
    `notify` is False for events that are stored but never notify (experimental hits).
    `skip_integration` is an integration the event is about and must not be told of.
    `targets`, when set, are the only integrations told of it, whatever their `events`
    (a trigger notifies the integrations it names).
    `facts` are the structured keys consumers of the event stream read (triggers): a
    compact JSON object built by `events.py`, never parsed back out of `notification`.
    """

    type: EventType
    notification: bytes
    risk: RiskLevel | None = None
    sample_key: int | None = None
    notify: bool = True
    skip_integration: int | None = None
    targets: tuple[int, ...] | None = None
    facts: bytes = b"{}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEvent:
    """An accepted event as a consumer of the event stream reads it.

    `group_id` is the stored group (events row) it belongs to and `index` its place there;
    `at` is when it was stored; `facts` its structured keys (see `NewEvent.facts`; empty
    for events stored before the stream existed).
    """

    group_id: int
    index: int
    client_id: int
    type: EventType
    at: float
    facts: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One HTTP request of a delivery, as recorded."""

    number: int
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    response_body: str | None
    request_size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One request body for one integration, with its attempts."""

    id: int
    webhook_id: str
    integration_id: int
    status: DeliveryStatus
    notification_count: int
    body: bytes
    attempt_count: int
    failures: int = 0
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    last_error: str | None = None
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A delivery leased to one worker, with the integration it goes to."""

    delivery: Delivery
    integration: Integration
    lease_until: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptOutcome:
    """What happened when a request was sent (no decision attached)."""

    ok: bool
    status_code: int | None
    error: str | None
    response_body: str | None
    duration_ms: float
    started_at: float
    request_size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """An outcome plus the decision taken on it, ready to store."""

    delivery_id: int
    integration_id: int
    outcome: AttemptOutcome
    status: DeliveryStatus
    next_attempt_at: float | None
