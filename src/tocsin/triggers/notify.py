"""Trigger notifications (SPEC 2.4), shaped like the vulnerability notification. Pure.

The golden vector shared/vectors/ip_blocked.json tests `ip_blocked`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from tocsin.formats import JSON, NotifySettings
from tocsin.models import Role
from tocsin.triggers.definitions import Condition, Filter, FilterId, Operator, TriggerSpec

NOTIFICATION_TYPES: Mapping[Condition, str] = {
    Condition.HITS_EXCEEDED: "hits_exceeded",
    Condition.ATTACKS_EXCEEDED: "attacks_exceeded",
    Condition.INCIDENTS_EXCEEDED: "incidents_exceeded",
    Condition.IP_DENYLISTED: "ip_blocked",
    Condition.USER_CREATED: "create_user",
    Condition.API_CHANGES: "api_structure_changed",
    Condition.ROGUE_API: "rogue_api_detected",
}
HEADLINES: Mapping[Condition, str] = {
    Condition.HITS_EXCEEDED: "The number of detected hits exceeded the threshold",
    Condition.ATTACKS_EXCEEDED: "The number of detected attacks exceeded the threshold",
    Condition.INCIDENTS_EXCEEDED: "The number of incidents exceeded the threshold",
    Condition.IP_DENYLISTED: "New IP address was denylisted",
    Condition.USER_CREATED: "New user was added to the company account",
    Condition.API_CHANGES: "Changes in API were discovered",
    Condition.ROGUE_API: "New rogue API was detected",
}
_COUNTED = {
    Condition.HITS_EXCEEDED: "detected hits",
    Condition.ATTACKS_EXCEEDED: "detected attacks",
    Condition.INCIDENTS_EXCEEDED: "incidents",
}
_FILTER_LABELS = {
    FilterId.ATTACK_TYPE: "Attack type",
    FilterId.APPLICATION: "Application",
    FilterId.IP: "IP address",
    FilterId.DOMAIN: "Domain",
    FilterId.RESPONSE_STATUS: "Response status",
    FilterId.TARGET: "Target",
    FilterId.USER_ROLE: "User role",
    FilterId.URI: "URI",
}
_ROGUE_KINDS = {
    "shadow": "a shadow API (in use but not in the API specification)",
    "orphan": "an orphan API (in the API specification but not in use)",
    "zombie": "a zombie API (deprecated but still in use)",
}
_CHANGE_WORDS = {"new": "New endpoint", "changed": "Changed endpoint", "unused": "Unused endpoint"}
_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60))


def period_text(seconds: int) -> str:
    """Seconds as people write a period: `1 minute`, `2 hours`, `1 day`, `90 seconds`."""
    for unit, size in _UNITS:
        if seconds % size == 0:
            return _plural(seconds // size, unit)
    return _plural(seconds, "second")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def expire_text(expire_at: float, utc_offset: int = 0) -> str:
    """`2021-06-10 02:27:15 +0300`: the time at the offset the denylisting was given in."""
    zone = dt.timezone(dt.timedelta(seconds=utc_offset))
    return dt.datetime.fromtimestamp(expire_at, tz=zone).strftime("%Y-%m-%d %H:%M:%S %z")


# Every character str.splitlines breaks at: a reported value holding one must not add
# lines of its own to a description (the same rule as formats' descriptions).
_ONE_LINE = str.maketrans(dict.fromkeys("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "))


def _line(value: Any) -> str:
    return ("" if value is None else str(value)).translate(_ONE_LINE)


def clause(item: Filter, application_names: Mapping[int, str]) -> str:
    """One filter as a line: `Attack type is sqli or xss.`, `Domain is not example.com.`"""
    shown = [_value_text(item.id, value, application_names) for value in item.values]
    verb = "is" if item.operator is Operator.EQ else "is not"
    return _line(f"{_FILTER_LABELS[item.id]} {verb} {' or '.join(shown)}.")


def _value_text(kind: FilterId, value: str | int, application_names: Mapping[int, str]) -> str:
    if kind is FilterId.APPLICATION and isinstance(value, int) and value in application_names:
        return f"{application_names[value]} (id {value})"
    return str(value)


def notification(
    spec: TriggerSpec,
    sentences: Sequence[str],
    fields: Mapping[str, Any],
    settings: NotifySettings,
    application_names: Mapping[int, str] | None = None,
) -> JSON:
    """SPEC 2.4: summary, the description's lines, and details with `trigger_name`."""
    kind = NOTIFICATION_TYPES[spec.condition]
    names = application_names or {}
    lines = [f"Notification type: {kind}", "", *(_line(s) for s in sentences), ""]
    lines.append(f'This notification was triggered by the "{_line(spec.name)}" trigger.')
    if spec.filters:
        lines += ["", "Additional trigger's clauses:", *(clause(f, names) for f in spec.filters)]
    lines += ["", "", f"Client: {_line(settings.client_name)}", f"Cloud: {_line(settings.cloud)}"]
    details: JSON = {
        "client_name": settings.client_name,
        "cloud": settings.cloud,
        "notification_type": kind,
        "trigger_name": spec.name,
        **fields,
    }
    return {
        "summary": f"{settings.summary_prefix} Trigger: {HEADLINES[spec.condition]}",
        "description": "\n".join([*lines, ""]),
        "details": details,
    }


def threshold_notification(
    spec: TriggerSpec,
    *,
    observed: int,
    ip: str | None,
    settings: NotifySettings,
    application_names: Mapping[int, str] | None = None,
) -> JSON:
    """hits_exceeded, attacks_exceeded, incidents_exceeded; `ip` for a per-IP trigger."""
    threshold = spec.threshold
    if threshold is None:
        raise ValueError(f"{spec.condition.value} trigger without a threshold")
    period = period_text(threshold.period)
    counted = _COUNTED[spec.condition]
    sentences = [f"The number of {counted} exceeded {threshold.count} in {period}."]
    fields: JSON = {"threshold": threshold.count, "period": period, "observed": observed}
    if ip is not None:
        sentences.append(f"They came from the IP address {ip}.")
        fields["ip"] = ip
    return notification(spec, sentences, fields, settings, application_names)


def ip_blocked_notification(
    spec: TriggerSpec,
    *,
    ip: str,
    reason: str,
    expire_at: str,
    application: str | None,
    settings: NotifySettings,
) -> JSON:
    """ip_denylisted -> `ip_blocked`; `application` is the application's name, if any."""
    sentence = f"IP address {ip} was denylisted until {expire_at}"
    sentence += f" for the reason {reason}." if reason else "."
    fields = {"application": application, "reason": reason, "expire_at": expire_at, "ip": ip}
    return notification(spec, [sentence], fields, settings)


def create_user_notification(
    spec: TriggerSpec, *, user: Mapping[str, Any], actor: str, settings: NotifySettings
) -> JSON:
    """user_created -> `create_user`."""
    role = _role_title(str(user.get("role") or ""))
    who = f"{user.get('name') or ''} <{user.get('email') or ''}>"
    sentence = f"A new user {who} with the role {role} was added to the company account by {actor}."
    return notification(spec, [sentence], {"user": dict(user)}, settings)


def _role_title(role: str) -> str:
    """`api_developer` -> `API developer`, as events.role_title reads a Role."""
    known = {item.value for item in Role}
    text = role if role in known else role or "unknown"
    return text.replace("_", " ").capitalize().replace("Api ", "API ")


def _endpoint(api: Mapping[str, Any]) -> str:
    return f"{api.get('method') or ''} {api.get('domain') or ''}{api.get('path') or ''}".strip()


def api_changes_notification(
    spec: TriggerSpec, *, changes: Sequence[Mapping[str, Any]], settings: NotifySettings
) -> JSON:
    """api_changes -> `api_structure_changed`: one line per change."""
    lines = [
        f"{_CHANGE_WORDS.get(str(change.get('change')), 'Changed endpoint')}: {_endpoint(change)}"
        for change in changes
    ]
    return notification(spec, lines, {"changes": [dict(c) for c in changes]}, settings)


def rogue_api_notification(
    spec: TriggerSpec, *, api: Mapping[str, Any], settings: NotifySettings
) -> JSON:
    """rogue_api -> `rogue_api_detected`."""
    kind = _ROGUE_KINDS.get(str(api.get("kind")), "a rogue API")
    sentence = f"{_endpoint(api)} was detected as {kind}."
    return notification(spec, [sentence], {"api": dict(api)}, settings)
