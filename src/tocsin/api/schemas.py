"""Request and response bodies of the HTTP API, with the checks of SPEC 3.4."""

from __future__ import annotations

import ipaddress
import re
import ssl
import unicodedata
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
)
from pydantic.types import Strict

from tocsin.models import BodyFormat, EventType, Integration, RiskLevel, WebhookSettings

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


class IntegrationIn(BaseModel):
    """A webhook integration as created or replaced (SPEC 3.1)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook"] = "webhook"
    name: Annotated[Text, Field(min_length=1, max_length=128)]
    url: Annotated[Text, Field(min_length=1, max_length=2048)]
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, Text] = Field(default_factory=dict)
    ca_certificate: Annotated[Text, Field(max_length=MAX_CA_BYTES)] | None = None
    verify_tls: StrictBool = True
    request_timeout: Timeout = 15
    connection_timeout: Timeout = 20
    format: BodyFormat = BodyFormat.JSON_ARRAY
    events: list[EventType] = Field(default_factory=lambda: [EventType.VULN])
    vuln_risk_levels: list[RiskLevel] = Field(
        default_factory=lambda: [RiskLevel.HIGH, RiskLevel.MEDIUM, RiskLevel.LOW]
    )
    enabled: StrictBool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        visible = [ch for ch in value if not ch.isspace() and unicodedata.category(ch) != "Cf"]
        if not visible or any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value):
            raise ValueError("name must be visible text without control characters")
        if _BIDI_CONTROLS.search(value):
            # They reorder the text after them: in a console list, or in the sentence of a
            # system notification, a name could pass itself off as another (Trojan Source).
            raise ValueError(
                "name must not contain bidirectional embedding, override or isolate characters"
            )
        return value.strip()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value):
            raise ValueError("url must not contain spaces or control characters")
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("url must be an absolute https:// URL")
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
            events=tuple(self.events),
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
    events: list[EventType]
    vuln_risk_levels: list[RiskLevel]
    enabled: bool
    status: str
    status_reason: str | None
    last_error: str | None
    signing_secret: str
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, integration: Integration) -> IntegrationOut:
        return cls(
            id=integration.id,
            status=integration.status.value,
            status_reason=integration.disabled_reason,
            last_error=integration.last_error,
            signing_secret=integration.signing_secret,
            created_at=integration.created_at,
            updated_at=integration.updated_at,
            **settings_dict(integration.settings),
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
