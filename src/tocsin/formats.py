"""Events -> notification objects and request bodies, in Wallarm's webhook format.

Pure: no I/O, no clock. SPEC section 2; the golden vectors in shared/vectors test it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from tocsin.models import BodyFormat, RiskLevel

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifySettings:
    """What a notification says about where it comes from."""

    client_name: str
    cloud: str
    console_url: str
    partner_name: str
    summary_prefix: str = "[Wallarm]"


# The keys every hit carries (SPEC 2.1), with the JSON type of the seed's example.
HIT_FIELD_TYPES: Mapping[str, type | tuple[type, ...]] = {
    "domain": str,
    "heur_distance": (int, float),
    "method": str,
    "parameter": str,
    "path": str,
    "payloads": list,
    "point": list,
    "probability": (int, float),
    "remote_country": str,
    "remote_port": int,
    "remote_addr4": str,
    "remote_addr6": str,
    "tor": str,
    "request_time": int,
    "create_time": int,
    "response_len": int,
    "response_status": int,
    "response_time": (int, float),
    "stamps": list,
    "regex": list,
    "stamps_hash": int,
    "regex_hash": int,
    "type": str,
    "block_status": str,
    "id": list,
    "object_type": str,
    "anomaly": (int, float),
}

# Missing list fields become empty tuples: immutable, and JSON arrays all the same.
_HIT_DEFAULTS: Mapping[str, Any] = {
    key: () if expected is list else None for key, expected in HIT_FIELD_TYPES.items()
}

VULN_FIELDS = (
    "domain",
    "id",
    "method",
    "parameter",
    "path",
    "title",
    "discovered_by",
    "threat",
    "type",
)

_THREATS = {"high": "High", "medium": "Medium", "low": "Low"}


# Per known field, the exact Python types orjson decodes its JSON type to, and None:
# a set lookup of type(value) is a third of the cost of isinstance checks, and bool is
# refused where a number is expected without a special case.
_HIT_TYPE_SETS: Mapping[str, frozenset[type]] = {
    key: frozenset((*(expected if isinstance(expected, tuple) else (expected,)), type(None)))
    for key, expected in HIT_FIELD_TYPES.items()
}


def hit_type_error(hit: Mapping[str, Any]) -> str | None:
    """Name the first known hit field whose value has the wrong JSON type, if any."""
    allowed = _HIT_TYPE_SETS
    for key, value in hit.items():
        kinds = allowed.get(key)
        if kinds is not None and type(value) not in kinds:
            return key
    return None


# How deep a hit may nest, the hit object being the first level: far beyond what sensors
# send, and shallow enough that a delivered body (array, notification, details, hit)
# stays within the nesting limits of receivers' parsers (Ruby's JSON allows 100 levels,
# serde_json 128) and of orjson's encoder (254).
MAX_HIT_DEPTH = 32


def hit_depth_error(hit: Mapping[str, Any], hit_json: bytes | None) -> str | None:
    """Name the first field of a hit nested deeper than MAX_HIT_DEPTH, if any.

    `hit_json` is the hit's JSON (None when it could not be encoded): nesting never
    exceeds its count of brackets, which clears ordinary hits at C speed.
    """
    if hit_json is not None and hit_json.count(b"[") + hit_json.count(b"{") <= MAX_HIT_DEPTH:
        return None
    for key, value in hit.items():
        if nests_deeper_than(value, MAX_HIT_DEPTH - 1):
            return key
    return None


def nests_deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` nests more than `levels` arrays and objects."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list | tuple):
        children = value
    else:
        return False
    return levels == 0 or any(nests_deeper_than(child, levels - 1) for child in children)


def normalize_hit(raw: Mapping[str, Any], *, now: int, new_id: Callable[[], list[str]]) -> JSON:
    """The hit object as notified: every reported field, plus the required keys."""
    hit: JSON = {**_HIT_DEFAULTS, **raw}
    if hit["domain"] is None and hit.get("host") is not None:
        hit["domain"] = hit["host"]
    if hit["create_time"] is None:
        hit["create_time"] = now
    if not hit["id"]:
        hit["id"] = new_id()
    hit["object_type"] = "hit"
    return hit


def sample_key(hit: Mapping[str, Any]) -> int:
    """A stable 64-bit key shared by identical hits, for the first-5-per-hour sampling.

    Stable across processes (a digest, not Python's randomised hash), so that several
    processes sharing one database can count the same windows.
    """
    get = hit.get
    identity = (
        get("type"),
        get("parameter"),
        get("domain"),
        get("path"),
        get("method"),
        get("response_status"),
        get("remote_addr4") or get("remote_addr6") or "",
    )
    try:
        text = orjson.dumps(identity)
    except TypeError:  # values orjson cannot encode are keyed by their text
        text = repr(identity).encode(errors="surrogatepass")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def hit_notification(hit: Mapping[str, Any], settings: NotifySettings) -> JSON:
    """SPEC 2.1: one hit."""
    return {
        "summary": f"{settings.summary_prefix} New hit detected",
        "details": {
            "client_name": settings.client_name,
            "cloud": settings.cloud,
            "notification_type": "new_hits",
            "hit": dict(hit),
        },
    }


def encode_hit_notification(hit_json: bytes, prefix: bytes) -> bytes:
    """`encode(hit_notification(hit, settings))` from the hit's JSON, without re-encoding it.

    `prefix` is `hit_notification_prefix(settings)`, looked up once per request by the
    caller rather than once per hit (the lookup hashes the settings).
    """
    return prefix + hit_json + b"}}"


@functools.lru_cache(maxsize=256)
def hit_notification_prefix(settings: NotifySettings) -> bytes:
    """A hit notification's JSON up to its hit, for `encode_hit_notification`."""
    marker = b'"hit":null}}'
    empty = orjson.dumps(hit_notification_shell(settings))
    if not empty.endswith(marker):
        raise AssertionError("hit notification layout changed")
    return empty[: -len(b"null}}")]


def hit_notification_shell(settings: NotifySettings) -> JSON:
    notification = hit_notification({}, settings)
    notification["details"]["hit"] = None
    return notification


def normalize_threat(value: Any) -> str | None:
    """`High`, `Medium` or `Low` whatever the case; anything else is unknown."""
    if isinstance(value, str):
        return _THREATS.get(value.strip().lower())
    return None


def risk_of(vuln: Mapping[str, Any]) -> RiskLevel | None:
    """The risk level an integration filters on, or None when the threat is unknown."""
    threat = normalize_threat(vuln.get("threat"))
    return RiskLevel(threat.lower()) if threat else None


def normalize_vuln(raw: Mapping[str, Any]) -> JSON:
    """Exactly the vulnerability fields of SPEC 2.2; unknown values are null."""
    vuln: JSON = {key: raw.get(key) for key in VULN_FIELDS}
    vuln["threat"] = normalize_threat(raw.get("threat"))
    return vuln


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# Every character str.splitlines breaks at: a reported value that holds one would add
# lines of its own to a description ("Threat: Low" under a title), so it becomes a space.
_ONE_LINE = str.maketrans(dict.fromkeys("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "))


def _line(value: Any) -> str:
    """A value as it stands on one line of a description."""
    return _text(value).translate(_ONE_LINE)


def vuln_description(vuln: Mapping[str, Any], link: str, settings: NotifySettings) -> str:
    """The multi-line text of SPEC 2.2; empty values leave the label alone."""
    lines = [
        "Notification type: vuln",
        "",
        "New vulnerability was detected in your system.",
        "",
        f"ID: {_line(vuln.get('id'))}",
        f"Title: {_line(vuln.get('title'))}",
        f"Domain: {_line(vuln.get('domain'))}",
        f"Path: {_line(vuln.get('path'))}",
        f"Method: {_line(vuln.get('method'))}",
        f"Discovered by: {_line(vuln.get('discovered_by'))}",
        f"Parameter: {_line(vuln.get('parameter'))}",
        f"Type: {_line(vuln.get('type'))}",
        f"Threat: {_line(vuln.get('threat'))}",
        "",
        f"More details: {_line(link)}",
        "",
        "",
        f"Client: {_line(settings.client_name)}",
        f"Cloud: {_line(settings.cloud)}",
        "",
    ]
    return "\n".join(lines)


def vuln_notification(
    vuln: Mapping[str, Any],
    settings: NotifySettings,
    *,
    summary: str | None = None,
    link_id: Any = None,
) -> JSON:
    """SPEC 2.2: one vulnerability (already normalised)."""
    object_id = vuln.get("id") if link_id is None else link_id
    # Quoted: an id reported as text ("7/../../logout", "a b") stays one path segment.
    link = f"{settings.console_url.rstrip('/')}/object/{quote(_text(object_id), safe='')}"
    return {
        "summary": summary or f"{settings.summary_prefix} New vulnerability detected",
        "description": vuln_description(vuln, link, settings),
        "details": {
            "client_name": settings.client_name,
            "cloud": settings.cloud,
            "notification_type": "vuln",
            "vuln_link": link,
            "vuln": dict(vuln),
        },
    }


def test_message(settings: NotifySettings) -> JSON:
    """SPEC 2.3: what "Test integration" sends."""
    vuln = normalize_vuln({"title": "Test", "domain": "example.com", "type": "Info"})
    vuln["threat"] = "Medium"
    summary = (
        f"[Test message] [{settings.partner_name}({settings.cloud})] New vulnerability detected"
    )
    return vuln_notification(vuln, settings, summary=summary, link_id=555)


def encode(notification: Mapping[str, Any]) -> bytes:
    """Compact JSON of one notification."""
    return orjson.dumps(notification)


def render_body(notifications: Sequence[bytes], body_format: BodyFormat) -> bytes:
    """Join encoded notifications into one request body."""
    if body_format is BodyFormat.NDJSON:
        return b"".join(item + b"\n" for item in notifications)
    return b"[" + b",".join(notifications) + b"]"


def content_type(body_format: BodyFormat) -> str:
    """The Content-Type of a body in this format."""
    if body_format is BodyFormat.NDJSON:
        return "application/x-ndjson"
    return "application/json"


SYSTEM_HEADLINES: Mapping[str, str] = {
    "integration_created": "Integration was created",
    "integration_changed": "Integration was changed",
    "integration_enabled": "Integration was enabled",
    "integration_disabled": "Integration was disabled",
    "integration_auto_disabled": "Integration was disabled automatically",
    "integration_deleted": "Integration was deleted",
    "user_created": "New user was added to the company account",
    "user_deleted": "User was deleted from the company account",
    "user_role_changed": "User role was changed",
    "application_created": "Application was created",
    "application_changed": "Application was changed",
    "application_deleted": "Application was deleted",
    "trigger_created": "Trigger was created",
    "trigger_changed": "Trigger was changed",
    "trigger_deleted": "Trigger was deleted",
    "scope_changed": "Scope was changed",
}


def system_notification(
    notification_type: str,
    sentence: str,
    settings: NotifySettings,
    *,
    subject: Mapping[str, Any],
    actor: str,
    time_text: str,
    extra: Mapping[str, Any] | None = None,
) -> JSON:
    """SPEC 2.5: what changed, who did it and when, shaped like 2.2."""
    description = "\n".join(
        [
            f"Notification type: {notification_type}",
            "",
            sentence,
            "",
            "",
            f"Client: {settings.client_name}",
            f"Cloud: {settings.cloud}",
            "",
        ]
    )
    details: JSON = {
        "client_name": settings.client_name,
        "cloud": settings.cloud,
        "notification_type": notification_type,
        "object": dict(subject),
        "actor": actor,
        "time": time_text,
    }
    details.update(extra or {})
    headline = SYSTEM_HEADLINES.get(notification_type, notification_type.replace("_", " "))
    return {
        "summary": f"{settings.summary_prefix} {headline}",
        "description": description,
        "details": details,
    }
