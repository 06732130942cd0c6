"""Reported input -> events ready to store (each with its rendered notification).

Validation errors name the offending field as `[index].field`, for the API to report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from tocsin import formats
from tocsin.errors import TocsinError
from tocsin.models import Application, EventType, Integration, NewEvent, Role, User
from tocsin.triggers.definitions import Trigger


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
    # What every hit of the request shares is worked out once: the loop below runs tens
    # of thousands of times a second under a sensor's flood.
    prefix, second = formats.hit_notification_prefix(settings), int(now)
    return [_hit_event(hit, index, prefix, second, new_id) for index, hit in enumerate(hits)]


def _hit_event(
    raw: Any,
    index: int,
    prefix: bytes,
    now: int,
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
    hit = formats.normalize_hit(raw, now=now, new_id=new_id)
    return NewEvent(
        type=EventType.HIT,
        notification=formats.encode_hit_notification(_hit_json(hit, index), prefix),
        sample_key=formats.sample_key(hit),
        notify=not experimental,
        facts=_hit_facts(hit, experimental=experimental),
    )


def _hit_facts(hit: Mapping[str, Any], *, experimental: bool) -> bytes:
    """What triggers count a hit by (SPEC 1, 5): its attack, target, source and flags."""
    get = hit.get
    return _facts(
        {
            "kind": "hit",
            "hit_id": get("id"),
            "attack_type": get("type"),
            "domain": get("domain"),
            "path": get("path"),
            "parameter": get("parameter"),
            "point": get("point"),
            "method": get("method"),
            "ip": get("remote_addr4") or get("remote_addr6"),
            "response_status": get("response_status"),
            "applications": _applications(hit),
            "target": get("target"),
            "experimental": experimental,
            "incident": get("incident") is True,
        }
    )


def _applications(hit: Mapping[str, Any]) -> list[Any]:
    """The application ids a hit names (`applications`, or a single `application`)."""
    found = hit.get("applications")
    if isinstance(found, list):
        return found
    one = hit.get("application")
    return [] if one is None else [one]


def _facts(facts: Mapping[str, Any]) -> bytes:
    """Compact JSON of an event's facts; a value JSON cannot hold exactly becomes its text."""
    try:
        return orjson.dumps(facts)
    except (orjson.JSONEncodeError, TypeError):
        return orjson.dumps({key: _plain(value) for key, value in facts.items()})


def _plain(value: Any) -> Any:
    try:
        orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return repr(value)
    return value


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
    risk = formats.risk_of(vuln)
    return NewEvent(
        type=EventType.VULN,
        notification=formats.encode(formats.vuln_notification(vuln, settings)),
        risk=risk,
        facts=_facts({"kind": "vuln", "risk": risk, "status": _status(raw), **vuln}),
    )


def _status(raw: Mapping[str, Any]) -> str:
    """A vulnerability's status as reported (`open` unless said otherwise): a closed one
    makes no incidents (triggers/attacks.py)."""
    status = raw.get("status")
    return status.strip().lower() if isinstance(status, str) and status.strip() else "open"


def system_event(
    notification_type: str,
    subject: Mapping[str, Any],
    sentence: str,
    settings: formats.NotifySettings,
    *,
    actor: str,
    now: float,
    extra: Mapping[str, Any] | None = None,
    event_type: EventType = EventType.SYSTEM,
    skip_integration: int | None = None,
) -> NewEvent:
    """A system or scope event (SPEC 2.5): `sentence` says what; who and when are appended."""
    when = iso_time(now)
    notification = formats.system_notification(
        notification_type,
        f"{sentence} by {actor} at {when}.",
        settings,
        subject=subject,
        actor=actor,
        time_text=when,
        extra=extra,
    )
    facts = {"kind": notification_type, "actor": actor, "subject": subject, **(extra or {})}
    return NewEvent(
        type=event_type,
        notification=formats.encode(notification),
        skip_integration=skip_integration,
        facts=_facts(facts),
    )


# After these, nothing more is sent to the integration: it is not told of them either.
STOPS_SENDING = frozenset(
    {"integration_disabled", "integration_auto_disabled", "integration_deleted"}
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
    name = integration.settings.name
    sentence = f'Integration "{name}" (id {integration.id}) was {verb}'
    if extra and "reason" in extra:
        sentence = f"{sentence} (reason: {extra['reason']})"
    quiet = notification_type in STOPS_SENDING
    return system_event(
        notification_type,
        {"type": "integration", "id": integration.id, "name": name},
        sentence,
        settings,
        actor=actor,
        now=now,
        extra=extra,
        skip_integration=integration.id if quiet else None,
    )


def auto_disabled_event(
    integration: Integration,
    settings: formats.NotifySettings,
    *,
    requests: int,
    failures: int,
    window_seconds: float,
    now: float,
) -> NewEvent:
    """integration_auto_disabled, by "system": the failure rate and window that caused it."""
    extra: dict[str, object] = {
        "failure_rate": round(failures / requests, 3),
        "requests": requests,
        "failures": failures,
        "window_seconds": window_seconds,
        "reason": integration.disabled_reason,
    }
    return integration_event(
        "integration_auto_disabled", integration, settings, actor="system", now=now, extra=extra
    )


def user_event(
    notification_type: str,
    user: User,
    settings: formats.NotifySettings,
    *,
    actor: str,
    now: float,
    previous_role: Role | None = None,
) -> NewEvent:
    """user_created, user_deleted or user_role_changed."""
    who = f"{user.name} <{user.email}>"
    role = role_title(user.role)
    extra: dict[str, Any] = {"user": {"id": user.id, "email": user.email, "name": user.name}}
    extra["user"]["role"] = user.role.value
    if notification_type == "user_created":
        sentence = f"A new user {who} with the role {role} was added to the company account"
    elif notification_type == "user_deleted":
        sentence = f"The user {who} with the role {role} was deleted from the company account"
    else:
        old = role_title(previous_role) if previous_role else "none"
        sentence = f"The role of the user {who} was changed from {old} to {role}"
        extra["previous_role"] = previous_role.value if previous_role else None
    subject = {"type": "user", "id": user.id, "name": user.name, "email": user.email}
    return system_event(
        notification_type, subject, sentence, settings, actor=actor, now=now, extra=extra
    )


def application_event(
    notification_type: str,
    application: Application,
    settings: formats.NotifySettings,
    *,
    actor: str,
    now: float,
    previous_name: str | None = None,
) -> NewEvent:
    """application_created, application_changed or application_deleted."""
    verb = notification_type.removeprefix("application_")
    sentence = f'Application "{application.name}" (id {application.id}) was {verb}'
    extra: dict[str, Any] = {}
    if previous_name is not None and previous_name != application.name:
        sentence = f'{sentence} (renamed from "{previous_name}")'
        extra["previous_name"] = previous_name
    subject = {"type": "application", "id": application.id, "name": application.name}
    return system_event(
        notification_type, subject, sentence, settings, actor=actor, now=now, extra=extra
    )


def trigger_event(
    notification_type: str,
    trigger: Trigger,
    settings: formats.NotifySettings,
    *,
    actor: str,
    now: float,
    verb: str | None = None,
) -> NewEvent:
    """trigger_created, trigger_changed (`verb`: enabled, disabled) or trigger_deleted.

    The details name the trigger as saved (`updated_at`): trigger evaluation reads it to
    tell whether the definitions it holds already include the change.
    """
    spec = trigger.spec
    done = verb or notification_type.removeprefix("trigger_")
    sentence = f'Trigger "{spec.name}" (id {trigger.id}) was {done}'
    shown = {"id": trigger.id, "name": spec.name, "condition": spec.condition.value}
    shown |= {"enabled": spec.enabled, "updated_at": trigger.updated_at}
    subject = {"type": "trigger", "id": trigger.id, "name": spec.name}
    return system_event(
        notification_type,
        subject,
        sentence,
        settings,
        actor=actor,
        now=now,
        extra={"trigger": shown},
    )


SCOPE_KINDS = ("hosts", "services", "domains")
SCOPE_CHANGES = ("added", "removed", "changed")


def scope_event(
    changes: Mapping[str, Mapping[str, Sequence[str]]],
    settings: formats.NotifySettings,
    *,
    actor: str,
    now: float,
) -> NewEvent:
    """scope_changed (event type `scope`): one line per kind and change that has entries."""
    lines = [
        f"{kind.capitalize()} {change}: {', '.join(items)}"
        for kind in SCOPE_KINDS
        for change in SCOPE_CHANGES
        if (items := changes.get(kind, {}).get(change))
    ]
    total = sum(len(items) for delta in changes.values() for items in delta.values())
    sentence = "The scope changed: " + "; ".join(lines)
    details = {
        kind: {change: list(changes.get(kind, {}).get(change, ())) for change in SCOPE_CHANGES}
        for kind in SCOPE_KINDS
    }
    subject = {"type": "scope", "changes": total}
    return system_event(
        "scope_changed",
        subject,
        sentence,
        settings,
        actor=actor,
        now=now,
        extra={"scope": details},
        event_type=EventType.SCOPE,
    )


def record_event(event_type: EventType, record: Mapping[str, Any]) -> NewEvent:
    """An event kept for triggers (SPEC 5: ip_denylisted, api_changes); it notifies nobody."""
    return NewEvent(
        type=event_type,
        notification=orjson.dumps(record),
        notify=False,
        facts=_facts({"kind": event_type.value, **record}),
    )


def role_title(role: Role) -> str:
    """`api_developer` -> `API developer`, as people read roles in a sentence."""
    return role.value.replace("_", " ").capitalize().replace("Api ", "API ")


def iso_time(now: float) -> str:
    return dt.datetime.fromtimestamp(now, tz=dt.UTC).isoformat(timespec="seconds")


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", list: "array"}
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(names.get(kind, kind.__name__) for kind in kinds)
