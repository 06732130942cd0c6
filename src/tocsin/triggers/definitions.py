"""What a trigger is (SPEC 5) and the rules a definition must follow. Pure.

The API's body model (api/schemas.TriggerIn) checks shapes and types; `check` holds the
rules that tie the fields together (which filters, threshold and actions a condition
takes) and raises InvalidTrigger naming the field, for a 422. Whether an integration
belongs to the client is the operations layer's to check: it needs the store.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tocsin.errors import Invalid
from tocsin.models import Role


class InvalidTrigger(Invalid):
    """A trigger definition breaks a rule; `field` says where (`filters[1].id`)."""


class Condition(StrEnum):
    """What a trigger reacts to."""

    HITS_EXCEEDED = "hits_exceeded"
    ATTACKS_EXCEEDED = "attacks_exceeded"
    INCIDENTS_EXCEEDED = "incidents_exceeded"
    IP_DENYLISTED = "ip_denylisted"
    USER_CREATED = "user_created"
    API_CHANGES = "api_changes"
    ROGUE_API = "rogue_api"


class FilterId(StrEnum):
    """What a filter looks at."""

    ATTACK_TYPE = "attack_type"
    APPLICATION = "application"
    IP = "ip"
    DOMAIN = "domain"
    RESPONSE_STATUS = "response_status"
    TARGET = "target"
    USER_ROLE = "user_role"
    URI = "uri"


class Operator(StrEnum):
    EQ = "eq"  # the item's value is one of the values
    NE = "ne"  # the item's value is none of them


class ActionId(StrEnum):
    SEND_NOTIFICATION = "send_notification"
    DENYLIST_IP = "denylist_ip"


THRESHOLD_CONDITIONS = frozenset(
    {Condition.HITS_EXCEEDED, Condition.ATTACKS_EXCEEDED, Condition.INCIDENTS_EXCEEDED}
)
_HIT_FILTERS = frozenset(
    {
        FilterId.ATTACK_TYPE,
        FilterId.APPLICATION,
        FilterId.IP,
        FilterId.DOMAIN,
        FilterId.RESPONSE_STATUS,
        FilterId.TARGET,
        FilterId.URI,
    }
)
# SPEC 5: the filters each condition takes.
FILTERS: Mapping[Condition, frozenset[FilterId]] = {
    Condition.HITS_EXCEEDED: _HIT_FILTERS,
    Condition.ATTACKS_EXCEEDED: _HIT_FILTERS,
    Condition.INCIDENTS_EXCEEDED: _HIT_FILTERS,
    Condition.USER_CREATED: frozenset({FilterId.USER_ROLE}),
    Condition.IP_DENYLISTED: frozenset({FilterId.APPLICATION}),
    Condition.API_CHANGES: frozenset({FilterId.DOMAIN, FilterId.APPLICATION}),
    Condition.ROGUE_API: frozenset({FilterId.DOMAIN, FilterId.APPLICATION}),
}
TARGETS = ("server", "client", "database")
MIN_PERIOD = 1
MAX_PERIOD = 31 * 24 * 3600
MAX_COUNT = 1_000_000
MAX_LOCK_TIME = 10 * 365 * 24 * 3600
MAX_VALUES = 100
MAX_FILTERS = 32

Value = str | int


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    id: FilterId
    operator: Operator
    values: tuple[Value, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id.value, "operator": self.operator.value, "values": list(self.values)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    """More than `count` items within `period` seconds."""

    count: int
    period: int
    operator: str = "gt"

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "period": self.period, "operator": self.operator}


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    id: ActionId
    integration_ids: tuple[int, ...] = ()
    lock_time: int | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.id is ActionId.DENYLIST_IP:
            return {"id": self.id.value, "lock_time": self.lock_time}
        return {"id": self.id.value, "integration_ids": list(self.integration_ids)}


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerSpec:
    """Everything a user sets on a trigger."""

    name: str
    comment: str = ""
    enabled: bool = True
    condition: Condition
    filters: tuple[Filter, ...] = ()
    threshold: Threshold | None = None
    actions: tuple[Action, ...]

    def as_dict(self) -> dict[str, Any]:
        """The definition as JSON values, named as in the API."""
        return {
            "name": self.name,
            "comment": self.comment,
            "enabled": self.enabled,
            "condition": self.condition.value,
            "filters": [item.as_dict() for item in self.filters],
            "threshold": self.threshold.as_dict() if self.threshold else None,
            "actions": [action.as_dict() for action in self.actions],
        }

    @property
    def per_ip(self) -> bool:
        """SPEC 5: a threshold trigger that denylists counts each source IP on its own."""
        return self.denylist is not None

    @property
    def denylist(self) -> Action | None:
        return next((a for a in self.actions if a.id is ActionId.DENYLIST_IP), None)

    @property
    def integration_ids(self) -> tuple[int, ...]:
        """The integrations its notifications go to, each once, in the order named."""
        named = (
            i for a in self.actions if a.id is ActionId.SEND_NOTIFICATION for i in a.integration_ids
        )
        return tuple(dict.fromkeys(named))


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """A saved trigger of one client.

    `counting_since`: when its counting definition (condition, filters, threshold, per-IP)
    was last set or it was last enabled; it counts only events stored from then on.
    """

    id: int
    client_id: int
    spec: TriggerSpec
    created_at: float
    updated_at: float
    counting_since: float


def counting_changed(before: TriggerSpec, after: TriggerSpec) -> bool:
    """Whether a change restarts the trigger's counting (renames and comments do not)."""
    return (
        before.condition is not after.condition
        or before.filters != after.filters
        or before.threshold != after.threshold
        or before.per_ip != after.per_ip
        or (after.enabled and not before.enabled)
    )


def check(spec: TriggerSpec) -> TriggerSpec:
    """The spec if it follows SPEC 5's rules, its filter values in their canonical form."""
    filters = tuple(_check_filter(spec.condition, item, i) for i, item in enumerate(spec.filters))
    _check_threshold(spec.condition, spec.threshold)
    _check_actions(spec)
    return TriggerSpec(
        name=spec.name,
        comment=spec.comment,
        enabled=spec.enabled,
        condition=spec.condition,
        filters=filters,
        threshold=spec.threshold,
        actions=spec.actions,
    )


def _names(items: frozenset[FilterId]) -> str:
    return ", ".join(sorted(item.value for item in items))


def _check_filter(condition: Condition, item: Filter, index: int) -> Filter:
    where = f"filters[{index}]"
    allowed = FILTERS[condition]
    if item.id not in allowed:
        message = f"{condition.value} takes the filters {_names(allowed)}, not {item.id.value}"
        raise InvalidTrigger(message, f"{where}.id")
    if not item.values:
        raise InvalidTrigger("give at least one value", f"{where}.values")
    canonical = tuple(
        _canonical(item.id, value, f"{where}.values[{n}]") for n, value in enumerate(item.values)
    )
    return Filter(id=item.id, operator=item.operator, values=tuple(dict.fromkeys(canonical)))


_IDENTIFIER = re.compile(r"[a-z0-9_-]{1,64}")
_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def _canonical(kind: FilterId, value: Value, field: str) -> Value:
    """A filter value as it is compared (lower-case names, compressed addresses)."""
    checker = _VALUE_CHECKS[kind]
    try:
        return checker(value)
    except ValueError as exc:
        raise InvalidTrigger(str(exc), field) from exc


def _text(value: Value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be {what} (a string)")  # noqa: TRY004 - reported as a 422
    return value.strip()


def _attack_type(value: Value) -> str:
    text = _text(value, "an attack type such as sqli").lower()
    if not _IDENTIFIER.fullmatch(text):
        raise ValueError("must be an attack type such as sqli, xss or rce")
    return text


def _application(value: Value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise ValueError("must be an application id (a positive integer)")
    return value


def _ip(value: Value) -> str:
    text = _text(value, "an IP address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise ValueError("must be one IPv4 or IPv6 address such as 203.0.113.7") from exc
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ValueError("must be an address without a zone (%interface)")
    return address.compressed


def domain_key(value: str) -> str:
    """A domain as compared: lower case, without a trailing dot."""
    return value.strip().lower().rstrip(".")


def _domain(value: Value) -> str:
    text = domain_key(_text(value, "a domain such as shop.example.com"))
    if len(text) > 253 or not _HOST.fullmatch(text):  # noqa: PLR2004 - DNS's limit
        raise ValueError("must be a domain such as shop.example.com")
    return text


def _status(value: Value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:  # noqa: PLR2004
        raise ValueError("must be an HTTP status code from 100 to 599")
    return value


def _target(value: Value) -> str:
    text = _text(value, "server, client or database").lower()
    if text not in TARGETS:
        raise ValueError("must be server, client or database")
    return text


def _role(value: Value) -> str:
    text = _text(value, "a role").lower()
    if text not in {role.value for role in Role}:
        raise ValueError(f"must be a role: {', '.join(role.value for role in Role)}")
    return text


def _uri(value: Value) -> str:
    text = _text(value, "a URI such as shop.example.com/login")
    return uri_key(text)


def uri_key(text: str) -> str:
    """`https://Shop.example.com/login` -> `shop.example.com/login`; `/login` stays.

    A value starting with `/` is a path on any domain; otherwise domain and path.
    """
    if not text or any(ch.isspace() for ch in text) or len(text) > 2048:  # noqa: PLR2004
        raise ValueError("must be a URI such as shop.example.com/login or a path such as /login")
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    if text.startswith("/"):
        return text
    host, slash, path = text.partition("/")
    if not host:
        raise ValueError("must be a URI such as shop.example.com/login or a path such as /login")
    return f"{domain_key(host)}{slash}{path}" if slash else f"{domain_key(host)}/"


_VALUE_CHECKS: Mapping[FilterId, Callable[[Value], Value]] = {
    FilterId.ATTACK_TYPE: _attack_type,
    FilterId.APPLICATION: _application,
    FilterId.IP: _ip,
    FilterId.DOMAIN: _domain,
    FilterId.RESPONSE_STATUS: _status,
    FilterId.TARGET: _target,
    FilterId.USER_ROLE: _role,
    FilterId.URI: _uri,
}


def _check_threshold(condition: Condition, threshold: Threshold | None) -> None:
    if condition in THRESHOLD_CONDITIONS:
        if threshold is None:
            message = f"{condition.value} needs a threshold: {{count, period, operator: gt}}"
            raise InvalidTrigger(message, "threshold")
        if not 1 <= threshold.count <= MAX_COUNT:
            raise InvalidTrigger(f"must be from 1 to {MAX_COUNT}", "threshold.count")
        if not MIN_PERIOD <= threshold.period <= MAX_PERIOD:
            message = f"must be from {MIN_PERIOD} second to 31 days ({MAX_PERIOD} seconds)"
            raise InvalidTrigger(message, "threshold.period")
        if threshold.operator != "gt":
            raise InvalidTrigger("must be gt", "threshold.operator")
    elif threshold is not None:
        message = f"{condition.value} fires on each matching event and takes no threshold"
        raise InvalidTrigger(message, "threshold")


def _check_actions(spec: TriggerSpec) -> None:
    if not spec.actions:
        raise InvalidTrigger("give at least one action (send_notification)", "actions")
    seen: set[ActionId] = set()
    for index, action in enumerate(spec.actions):
        where = f"actions[{index}]"
        if action.id in seen:
            raise InvalidTrigger(f"{action.id.value} is given twice", f"{where}.id")
        seen.add(action.id)
        if action.id is ActionId.SEND_NOTIFICATION:
            _check_notification(action, where)
        else:
            _check_denylist(spec.condition, action, where)


def _check_notification(action: Action, where: str) -> None:
    if not action.integration_ids:
        message = "name at least one integration to send the notification to"
        raise InvalidTrigger(message, f"{where}.integration_ids")
    if action.lock_time is not None:
        raise InvalidTrigger("send_notification takes no lock_time", f"{where}.lock_time")


def _check_denylist(condition: Condition, action: Action, where: str) -> None:
    if condition not in THRESHOLD_CONDITIONS:
        message = (
            f"{condition.value} cannot denylist: denylist_ip applies to "
            "hits_exceeded, attacks_exceeded and incidents_exceeded"
        )
        raise InvalidTrigger(message, f"{where}.id")
    if action.lock_time is None or not 1 <= action.lock_time <= MAX_LOCK_TIME:
        message = f"denylist_ip needs lock_time, from 1 to {MAX_LOCK_TIME} seconds"
        raise InvalidTrigger(message, f"{where}.lock_time")
    if action.integration_ids:
        raise InvalidTrigger("denylist_ip takes no integration_ids", f"{where}.integration_ids")


def stored_definition(spec: TriggerSpec) -> str:
    """The filters, threshold and actions as the store keeps them (JSON text)."""
    shown = spec.as_dict()
    return json.dumps({key: shown[key] for key in ("filters", "threshold", "actions")})


def stored_spec(
    *, name: str, comment: str, enabled: bool, condition: str, definition: str
) -> TriggerSpec:
    """A spec as stored: checked when it was saved, so read back as it is."""
    found = json.loads(definition)
    threshold = found.get("threshold")
    return TriggerSpec(
        name=name,
        comment=comment,
        enabled=bool(enabled),
        condition=Condition(condition),
        filters=tuple(
            Filter(
                id=FilterId(f["id"]), operator=Operator(f["operator"]), values=tuple(f["values"])
            )
            for f in found.get("filters", ())
        ),
        threshold=Threshold(count=threshold["count"], period=threshold["period"])
        if threshold
        else None,
        actions=tuple(
            Action(
                id=ActionId(a["id"]),
                integration_ids=tuple(a.get("integration_ids") or ()),
                lock_time=a.get("lock_time"),
            )
            for a in found.get("actions", ())
        ),
    )
