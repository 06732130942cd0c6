"""Request and response bodies of the HTTP API, with the checks of SPEC 3.4."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
import unicodedata
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from cryptography import x509
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.types import Strict

from tocsin.models import (
    BodyFormat,
    EventType,
    Integration,
    RiskLevel,
    Role,
    Token,
    WebhookSettings,
)
from tocsin.roles import MASK
from tocsin.triggers.definitions import (
    MAX_COUNT,
    MAX_FILTERS,
    MAX_PERIOD,
    MAX_VALUES,
    MIN_PERIOD,
    Action,
    ActionId,
    Condition,
    Filter,
    FilterId,
    Operator,
    Threshold,
    Trigger,
    TriggerSpec,
)
from tocsin.triggers.definitions import MAX_LOCK_TIME as TRIGGER_MAX_LOCK

# RFC 9110 token; matched with fullmatch, since `$` would also accept a trailing newline.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
# No top-level domain is numeric: a name ending so is an IP address in another spelling.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)
_OWNED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
    }
)
# In a header value: the C0 controls but tab (CR, LF and NUL split or cut a header in
# some stack or other), DEL and the C1 controls, and the Unicode line and paragraph
# separators, which str.splitlines and some HTTP stacks read as line ends (NEL is C1).
_UNSAFE_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_BIDI_CONTROLS = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
MAX_HEADERS_BYTES = 16 * 1024
MAX_CA_BYTES = 64 * 1024


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number of seconds")  # noqa: TRY004 - pydantic wants ValueError
    return value


Timeout = Annotated[float, BeforeValidator(_number), Field(ge=1, le=300)]
Text = Annotated[str, Strict()]


def _visible(value: str) -> str:
    visible = [ch for ch in value if not ch.isspace() and unicodedata.category(ch) != "Cf"]
    if not visible or any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value):
        raise ValueError("must be visible text without control characters")
    if _BIDI_CONTROLS.search(value):
        # They reorder the text after them: in a console list, or in the sentence of a
        # system notification, a name could pass itself off as another (Trojan Source).
        raise ValueError("must not contain bidirectional embedding, override or isolate characters")
    return value.strip()


# A name shown in the console and in the sentences of system notifications.
Name = Annotated[Text, Field(min_length=1, max_length=128), AfterValidator(_visible)]
SubscribableEvent = Literal["hit", "vuln", "system", "scope"]


class IntegrationIn(BaseModel):
    """A webhook integration as created or replaced (SPEC 3.1)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook"] = "webhook"
    name: Name
    url: Annotated[Text, Field(min_length=1, max_length=2048)]
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, Text] = Field(default_factory=dict)
    ca_certificate: Annotated[Text, Field(max_length=MAX_CA_BYTES)] | None = None
    verify_tls: StrictBool = True
    request_timeout: Timeout = 15
    connection_timeout: Timeout = 20
    format: BodyFormat = BodyFormat.JSON_ARRAY
    events: list[SubscribableEvent] = Field(
        default_factory=lambda: list[SubscribableEvent](["vuln"])
    )
    vuln_risk_levels: list[RiskLevel] = Field(
        default_factory=lambda: [RiskLevel.HIGH, RiskLevel.MEDIUM, RiskLevel.LOW]
    )
    enabled: StrictBool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value):
            raise ValueError("url must not contain spaces or control characters")
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(
                "url must be an absolute URL such as https://siem.example.com/hook "
                "(http:// where the deployment allows it)"
            )
        if parts.username or parts.password:
            raise ValueError("url must not carry credentials; use an Authorization header")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError("url has an invalid port") from exc
        if port == 0:
            raise ValueError("url has an invalid port")
        _check_host(parts.hostname)
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        size = 0
        for name, text in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            lowered = name.lower()
            if lowered in _OWNED_HEADERS or lowered.startswith("proxy-"):
                raise ValueError(f"header {name!r} is set by tocsin and cannot be configured")
            if _UNSAFE_IN_VALUE.search(text):
                raise ValueError(
                    f"header {name!r} value must not contain control characters "
                    "(CR, LF, NUL and the like) or line separators"
                )
            size += len(name.encode()) + len(text.encode()) + 4
        if size > MAX_HEADERS_BYTES:
            raise ValueError("headers exceed 16 KiB in all")
        return value

    @field_validator("ca_certificate")
    @classmethod
    def _ca(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            x509.load_pem_x509_certificates(value.encode())
            ssl.create_default_context(cadata=value)
        except (ValueError, ssl.SSLError) as exc:
            raise ValueError(
                "ca_certificate is not a PEM certificate (-----BEGIN CERTIFICATE-----)"
            ) from exc
        return value

    @field_validator("events", "vuln_risk_levels")
    @classmethod
    def _unique(cls, value: list[Any]) -> list[Any]:
        return list(dict.fromkeys(value))

    def to_settings(self) -> WebhookSettings:
        return WebhookSettings(
            name=self.name,
            url=self.url,
            method=self.method,
            headers=dict(self.headers),
            ca_certificate=self.ca_certificate,
            verify_tls=self.verify_tls,
            request_timeout=float(self.request_timeout),
            connection_timeout=float(self.connection_timeout),
            format=self.format,
            events=tuple(EventType(event) for event in self.events),
            vuln_risk_levels=tuple(self.vuln_risk_levels),
            enabled=self.enabled,
        )


def _check_host(host: str) -> None:
    """An IP address in its plain form or a DNS name (IDN allowed)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"url host {host!r} is not a valid host name") from exc
    if not _HOST_NAME.fullmatch(ascii_host):
        raise ValueError(f"url host {host!r} is not a valid host name")
    if _NUMERIC_LABEL.fullmatch(ascii_host.rstrip(".").rsplit(".", 1)[-1]):
        # `127.1`, `2130706433`, `0x7f.0.0.1`, `127.0.0.1.`: resolvers and HTTP clients
        # read these as addresses each in their own way; only the plain form is checkable.
        raise ValueError(
            f"url host {host!r} is not a valid host name; write an IP address as 203.0.113.7"
        )


def settings_dict(settings: WebhookSettings) -> dict[str, Any]:
    """The API fields of saved settings (used to merge a PATCH)."""
    return {"type": "webhook", **settings.as_dict()}


class IntegrationOut(BaseModel):
    """An integration as the API shows it."""

    id: int
    type: Literal["webhook"]
    name: str
    url: str
    method: str
    headers: dict[str, str]
    ca_certificate: str | None
    verify_tls: bool
    request_timeout: float
    connection_timeout: float
    format: BodyFormat
    events: list[SubscribableEvent]
    vuln_risk_levels: list[RiskLevel]
    enabled: bool
    status: str
    status_reason: str | None
    last_error: str | None
    signing_secret: str
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, integration: Integration, *, masked: bool = False) -> IntegrationOut:
        """The integration; `masked` shows header values and the signing secret as `***`."""
        shown = settings_dict(integration.settings)
        secret = integration.signing_secret
        if masked:
            shown["headers"] = dict.fromkeys(shown["headers"], MASK)
            secret = MASK
        return cls(
            id=integration.id,
            status=integration.status.value,
            status_reason=integration.disabled_reason,
            last_error=integration.last_error,
            signing_secret=secret,
            created_at=integration.created_at,
            updated_at=integration.updated_at,
            **shown,
        )


class TestResult(BaseModel):
    """What "Test integration" found."""

    ok: bool
    status_code: int | None
    error: str | None
    response_body: str | None
    duration_ms: float


class Accepted(BaseModel):
    accepted: int


class AttemptOut(BaseModel):
    number: int
    time: float
    status_code: int | None
    error: str | None
    duration_ms: float
    request_size: int
    response_body: str | None


class DeliveryOut(BaseModel):
    id: int
    webhook_id: str
    integration_id: int
    status: str
    notifications: int
    attempts_count: int
    next_attempt_at: float | None
    last_error: str | None
    created_at: float
    updated_at: float
    attempts: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_before: int | None


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None


class ErrorOut(BaseModel):
    error: ErrorBody


# clients, users, tokens ------------------------------------------------------------

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value) or _UNSAFE_IN_VALUE.search(value):
        raise ValueError("must be an email address such as alice@example.com")
    return value.lower()


def _aware(value: dt.datetime) -> dt.datetime:
    """A time without a zone is read as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


Email = Annotated[Text, Field(min_length=3, max_length=254), AfterValidator(_email)]
# Unix seconds or ISO 8601 (`2026-12-01T00:00:00Z`); shown back as Unix seconds.
_SPACED_OFFSET = re.compile(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d(?:\.\d+)?)?) ?([+-]\d\d)(\d\d)")


def _offset_with_colon(value: Any) -> Any:
    """`2021-06-10 02:27:15 +0300` (as Wallarm writes times) -> `2021-06-10 02:27:15+03:00`."""
    if isinstance(value, str) and (found := _SPACED_OFFSET.fullmatch(value.strip())):
        return f"{found[1]}{found[2]}:{found[3]}"
    return value


# Unix seconds or ISO 8601 (`2026-12-01T00:00:00Z`, `2026-12-01 02:00:00 +0200`).
Time = Annotated[dt.datetime, BeforeValidator(_offset_with_colon), AfterValidator(_aware)]
Label = Annotated[Text, Field(min_length=1, max_length=32), AfterValidator(_visible)]
ConsoleUrl = Annotated[Text, Field(max_length=2048), Field(pattern=r"^(https?://\S+)?$")]


class ClientIn(BaseModel):
    """A new client (tenant) and its first administrator."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    cloud: Label = "local"
    console_url: ConsoleUrl = ""
    admin_email: Email
    admin_name: Name = "Administrator"


class ClientChange(BaseModel):
    """Rename a client or change its cloud label or console URL (fields left out stay)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    cloud: Label | None = None
    console_url: ConsoleUrl | None = None


class Shown(BaseModel):
    """A response read off a record's attributes of the same names."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, record: object) -> Self:
        return cls.model_validate(record)


class ClientOut(Shown):
    id: int
    name: str
    cloud: str
    console_url: str


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name
    role: Role


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


class UserOut(Shown):
    id: int
    email: str
    name: str
    role: Role
    created_at: float


class ClientCreated(ClientOut):
    """A new client with its administrator and that administrator's token (shown once)."""

    administrator: UserOut
    token: str


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int | None = Field(default=None, description="The holder; you when left out.")
    name: Name | None = None
    expires_at: Time | None = Field(default=None, description="Unix seconds or ISO 8601.")


class TokenOut(BaseModel):
    id: int
    user_id: int
    name: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    active: bool

    @classmethod
    def of(cls, token: Token, now: float) -> TokenOut:
        return cls(
            id=token.id,
            user_id=token.user_id,
            name=token.name,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            active=token.active(now),
        )


class TokenCreated(TokenOut):
    """A new token: `token` is shown this once and stored only as a digest."""

    token: str


# applications, denylist, scope and API changes -----------------------------------------


class ApplicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)] | None = Field(
        default=None, description="The id sensors report; the next free one when left out."
    )
    name: Name


class ApplicationChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class ApplicationOut(Shown):
    id: int
    name: str
    created_at: float
    updated_at: float


MAX_LOCK_TIME = 10 * 365 * 24 * 3600


def _single_address(value: str) -> str:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError as exc:
        raise ValueError("must be one IPv4 or IPv6 address such as 203.0.113.7") from exc
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # `fe80::1%eth0`: the zone names an interface of the sensor, and is free text
        # (spaces, bidirectional controls) that would be stored and shown as the address.
        raise ValueError("must be an address without a zone (%interface)")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # one address, one entry: ::ffff:192.0.2.9 is 192.0.2.9
    return address.compressed


class DenylistIn(BaseModel):
    """Deny an address until `expire_at`, or for `lock_time` seconds from now."""

    model_config = ConfigDict(extra="forbid")

    ip: Annotated[Text, Field(max_length=64), AfterValidator(_single_address)]
    reason: Annotated[Text, Field(max_length=1024)] = ""
    expire_at: Time | None = Field(default=None, description="Unix seconds or ISO 8601.")
    lock_time: Annotated[int, Strict(), Field(ge=1, le=MAX_LOCK_TIME)] | None = Field(
        default=None, description="Seconds from now."
    )
    application: Annotated[int, Strict()] | None = None


class DenylistOut(Shown):
    id: int
    ip: str
    reason: str
    application: int | None
    created_at: float
    expire_at: float
    created_by: str
    trigger_id: int | None = Field(
        default=None, description="The trigger whose denylist_ip action made the entry."
    )


ScopeItem = Annotated[Text, Field(min_length=1, max_length=2048), AfterValidator(_visible)]
ScopeItems = Annotated[list[ScopeItem], Field(max_length=10_000)]


class ScopeDelta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    added: ScopeItems = Field(default_factory=list)
    removed: ScopeItems = Field(default_factory=list)
    changed: ScopeItems = Field(default_factory=list)

    def count(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)


class ScopeChangeIn(BaseModel):
    """Hosts, services (`host:port`) and domains that entered, left or changed in the scope."""

    model_config = ConfigDict(extra="forbid")

    hosts: ScopeDelta = Field(default_factory=ScopeDelta)
    services: ScopeDelta = Field(default_factory=ScopeDelta)
    domains: ScopeDelta = Field(default_factory=ScopeDelta)

    @model_validator(mode="after")
    def _something(self) -> ScopeChangeIn:
        if not (self.hosts.count() or self.services.count() or self.domains.count()):
            raise ValueError(
                "report at least one added, removed or changed host, service or domain"
            )
        return self


HttpMethod = Annotated[Text, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z]+$")]
ApiPath = Annotated[Text, Field(min_length=1, max_length=2048), AfterValidator(_visible)]


class ApiEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: HttpMethod
    path: ApiPath
    domain: Annotated[Text, Field(max_length=255)] | None = None
    application: Annotated[int, Strict()] | None = None


class ApiChange(ApiEndpoint):
    change: Literal["new", "changed", "unused"]


class RogueApi(ApiEndpoint):
    kind: Literal["shadow", "orphan", "zombie"]


class ApiChangesIn(BaseModel):
    """What API discovery found: endpoints new, changed or unused, and rogue APIs."""

    model_config = ConfigDict(extra="forbid")

    changes: Annotated[list[ApiChange], Field(max_length=10_000)] = Field(default_factory=list)
    rogue_apis: Annotated[list[RogueApi], Field(max_length=10_000)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> ApiChangesIn:
        if not (self.changes or self.rogue_apis):
            raise ValueError("report at least one change or rogue API")
        return self


# triggers ------------------------------------------------------------------------------


def _filter_value(value: Any) -> Any:
    """A filter value is text (`sqli`, `203.0.113.7`) or a number (an application, a status)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a string or an integer")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(value, str) and len(value) > MAX_FILTER_TEXT:
        raise ValueError(f"must be at most {MAX_FILTER_TEXT} characters")
    return value


MAX_FILTER_TEXT = 2048
FilterValue = Annotated[str | int, BeforeValidator(_filter_value)]
StrictCount = Annotated[int, Strict()]


class TriggerFilterIn(BaseModel):
    """`{"id": "attack_type", "operator": "eq", "values": ["sqli", "xss"]}`"""

    model_config = ConfigDict(extra="forbid")

    id: FilterId
    operator: Operator = Operator.EQ
    values: Annotated[list[FilterValue], Field(min_length=1, max_length=MAX_VALUES)]


class TriggerThresholdIn(BaseModel):
    """More than `count` items within `period` seconds."""

    model_config = ConfigDict(extra="forbid")

    count: Annotated[StrictCount, Field(ge=1, le=MAX_COUNT)]
    period: Annotated[StrictCount, Field(ge=MIN_PERIOD, le=MAX_PERIOD)] = Field(
        description="Seconds, from 1 to 31 days."
    )
    operator: Literal["gt"] = "gt"


class TriggerActionIn(BaseModel):
    """`{"id": "send_notification", "integration_ids": [1]}` or
    `{"id": "denylist_ip", "lock_time": 3600}` (seconds)."""

    model_config = ConfigDict(extra="forbid")

    id: ActionId
    integration_ids: Annotated[list[StrictCount], Field(max_length=MAX_VALUES)] | None = None
    lock_time: Annotated[StrictCount, Field(ge=1, le=TRIGGER_MAX_LOCK)] | None = None


class TriggerIn(BaseModel):
    """A trigger as created or replaced (SPEC 5); check() applies the rules across fields."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    comment: Annotated[Text, Field(max_length=1024)] = ""
    enabled: StrictBool = True
    condition: Condition
    filters: Annotated[list[TriggerFilterIn], Field(max_length=MAX_FILTERS)] = Field(
        default_factory=list
    )
    threshold: TriggerThresholdIn | None = None
    actions: Annotated[list[TriggerActionIn], Field(max_length=8)]

    def to_spec(self) -> TriggerSpec:
        """The definition as given; the operation checks it against SPEC 5's rules."""
        threshold = self.threshold
        return TriggerSpec(
            name=self.name,
            comment=self.comment,
            enabled=self.enabled,
            condition=self.condition,
            filters=tuple(
                Filter(id=f.id, operator=f.operator, values=tuple(f.values)) for f in self.filters
            ),
            threshold=Threshold(count=threshold.count, period=threshold.period)
            if threshold
            else None,
            actions=tuple(
                Action(
                    id=a.id,
                    integration_ids=tuple(a.integration_ids or ()),
                    lock_time=a.lock_time,
                )
                for a in self.actions
            ),
        )


class TriggerOut(BaseModel):
    """A trigger as the API shows it."""

    id: int
    name: str
    comment: str
    enabled: bool
    condition: Condition
    filters: list[dict[str, Any]]
    threshold: dict[str, Any] | None
    actions: list[dict[str, Any]]
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, trigger: Trigger) -> TriggerOut:
        return cls(
            id=trigger.id,
            created_at=trigger.created_at,
            updated_at=trigger.updated_at,
            **trigger.spec.as_dict(),
        )
