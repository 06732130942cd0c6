"""Reported input -> events ready to store (each with its rendered notification).

Validation errors name the offending field as `[index].field`, for the API to report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tocsin import formats
from tocsin.errors import TocsinError
from tocsin.models import EventType, Integration, NewEvent


class InvalidEvent(TocsinError):  # noqa: N818 - reads as what the API reports
    """A reported event is malformed; `field` says where."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def hit_events(
    hits: Any,
    settings: formats.NotifySettings,
    *,
    now: float,
    new_id: Callable[[], list[str]],
) -> list[NewEvent]:
    """POST /hits: a JSON array of hit objects."""
    if not isinstance(hits, list):
        raise InvalidEvent("the body must be a JSON array of hit objects", "body")
    return [_hit_event(hit, index, settings, now, new_id) for index, hit in enumerate(hits)]


def _hit_event(
    raw: Any,
    index: int,
    settings: formats.NotifySettings,
    now: float,
    new_id: Callable[[], list[str]],
) -> NewEvent:
    if not isinstance(raw, dict):
        raise InvalidEvent("each hit must be a JSON object", f"[{index}]")
    if bad := formats.hit_type_error(raw):
        expected = formats.HIT_FIELD_TYPES[bad]
        raise InvalidEvent(f"{bad} must be of JSON type {_type_name(expected)}", f"[{index}].{bad}")
    if raw.get("host") is not None and not isinstance(raw["host"], str):
        # `host` becomes `domain` when the sensor sends no domain, so it is text too.
        raise InvalidEvent("host must be of JSON type string", f"[{index}].host")
    experimental = raw.get("experimental", False)
    if not isinstance(experimental, bool):
        raise InvalidEvent("experimental must be true or false", f"[{index}].experimental")
    hit = formats.normalize_hit(raw, now=int(now), new_id=new_id)
    return NewEvent(
        type=EventType.HIT,
        notification=formats.encode_hit_notification(_hit_json(hit, index), settings),
        sample_key=formats.sample_key(hit),
        notify=not experimental,
    )


def _hit_json(hit: dict[str, Any], index: int) -> bytes:
    """The hit's JSON; a hit nested too deeply for receivers is refused naming the field."""
    try:
        encoded: bytes | None = orjson.dumps(hit)
    except orjson.JSONEncodeError:  # nested past what orjson encodes
        encoded = None
    if deep := formats.hit_depth_error(hit, encoded):
        limit = formats.MAX_HIT_DEPTH
        message = f"{deep} nests too deeply: a hit has at most {limit} levels of arrays and objects"
        raise InvalidEvent(message, f"[{index}].{deep}")
    if encoded is None:  # hit_depth_error names a field first; kept for the type checker
        raise InvalidEvent("the hit cannot be encoded as JSON", f"[{index}]")
    return encoded


_VULN_STRINGS = ("domain", "method", "parameter", "path", "title", "discovered_by", "type")


def vuln_events(
    body: Any, settings: formats.NotifySettings, *, new_id: Callable[[], int]
) -> list[NewEvent]:
    """POST /vulnerabilities: one object or an array of them.

    Errors in an array name `[index].field`; in a single object, just `field`.
    """
    if isinstance(body, dict):
        return [_vuln_event(body, "", settings, new_id)]
    if not isinstance(body, list):
        raise InvalidEvent("the body must be a vulnerability object or an array of them", "body")
    return [_vuln_event(raw, f"[{index}]", settings, new_id) for index, raw in enumerate(body)]


def _vuln_event(
    raw: Any, where: str, settings: formats.NotifySettings, new_id: Callable[[], int]
) -> NewEvent:
    if not isinstance(raw, dict):
        raise InvalidEvent("each vulnerability must be a JSON object", where)
    prefix = f"{where}." if where else ""
    for key in _VULN_STRINGS:
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise InvalidEvent(f"{key} must be a string", f"{prefix}{key}")
    vuln_id = raw.get("id")
    if vuln_id is not None and (isinstance(vuln_id, bool) or not isinstance(vuln_id, int | str)):
        raise InvalidEvent("id must be an integer or a string", f"{prefix}id")
    threat = raw.get("threat")
    if threat is not None and formats.normalize_threat(threat) is None:
        raise InvalidEvent("threat must be High, Medium or Low", f"{prefix}threat")
    vuln = formats.normalize_vuln(raw)
    if vuln["id"] is None:
        vuln["id"] = new_id()
    return NewEvent(
        type=EventType.VULN,
        notification=formats.encode(formats.vuln_notification(vuln, settings)),
        risk=formats.risk_of(vuln),
    )


def integration_event(
    notification_type: str,
    integration: Integration,
    settings: formats.NotifySettings,
    *,
    actor: str,
    now: float,
    extra: Mapping[str, Any] | None = None,
) -> NewEvent:
    """A system event about an integration; disabling or deleting one does not notify itself."""
    verb = notification_type.removeprefix("integration_").replace("_", " ")
    when = iso_time(now)
    name = integration.settings.name
    sentence = f'Integration "{name}" (id {integration.id}) was {verb} by {actor} at {when}.'
    if extra and "reason" in extra:
        sentence += f" Reason: {extra['reason']}."
    subject = {"type": "integration", "id": integration.id, "name": name}
    notification = formats.system_notification(
        notification_type,
        sentence,
        settings,
        subject=subject,
        actor=actor,
        time_text=when,
        extra=extra,
    )
    quiet = notification_type in (
        "integration_disabled",
        "integration_auto_disabled",
        "integration_deleted",
    )
    return NewEvent(
        type=EventType.SYSTEM,
        notification=formats.encode(notification),
        skip_integration=integration.id if quiet else None,
    )


def iso_time(now: float) -> str:
    return dt.datetime.fromtimestamp(now, tz=dt.UTC).isoformat(timespec="seconds")


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", list: "array"}
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(names.get(kind, kind.__name__) for kind in kinds)
