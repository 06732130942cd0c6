"""What a hit or event is, as filters see it, and whether a trigger's filters admit it. Pure.

A hit becomes a HitKey: the few facts triggers look at, normalised once (attack types and
domains in lower case, IPv6 compressed). Hits with equal keys are alike for every filter
and for attack grouping, so the evaluator decides matches once per key, not per hit.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from tocsin.triggers.definitions import TARGETS, Filter, FilterId, Operator, Value, domain_key

# Which part of an application an attack type aims at (the `target` filter). Types not
# listed aim at the server: the injections that run code or read files there.
_DATABASE = frozenset({"sqli", "nosqli"})
_CLIENT = frozenset({"xss", "redir", "crlf", "csrf"})


def target_of(attack_type: str) -> str:
    """`server`, `client` or `database`."""
    if attack_type in _DATABASE:
        return "database"
    if attack_type in _CLIENT:
        return "client"
    return "server"


class HitKey(NamedTuple):
    """A hit as triggers see it."""

    attack_type: str
    domain: str
    path: str
    parameter: str  # the parameter, or the point when none was reported
    ip: str
    response_status: int | None
    application: int | None
    incident: bool  # reported with `incident: true`
    target: str  # server, client or database: as reported, else by attack type


def hit_key(facts: Mapping[str, Any]) -> HitKey:
    """The key of a hit's stream facts."""
    get = facts.get
    parameter = get("parameter") or _point_text(get("point"))
    attack_type = _lower(get("attack_type"))
    target = _lower(get("target"))
    return HitKey(
        attack_type=attack_type,
        domain=domain_key(_str(get("domain"))),
        path=_str(get("path")),
        parameter=_str(parameter),
        ip=_address(_str(get("ip"))),
        response_status=_int(get("response_status")),
        application=_application(facts),
        incident=get("incident") is True,
        target=target if target in TARGETS else target_of(attack_type),
    )


def _application(facts: Mapping[str, Any]) -> int | None:
    """The hit's application: the first it names (`applications`, else `application`)."""
    found = facts.get("applications")
    if isinstance(found, list | tuple) and found:
        return _int(found[0])
    return _int(facts.get("application"))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _lower(value: Any) -> str:
    return _str(value).strip().lower()


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _point_text(point: Any) -> str:
    if isinstance(point, list | tuple):
        return ".".join(_str(part) for part in point)
    return _str(point)


@functools.lru_cache(maxsize=4096)
def _compressed(text: str) -> str:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return text.strip()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def _address(text: str) -> str:
    """An address as filters compare it; plain IPv4 (the common case) is taken as it is."""
    if ":" in text or " " in text:
        return _compressed(text)
    return text


HitPredicate = Callable[[HitKey], bool]


def _uri_of(key: HitKey) -> str:
    return f"{key.domain}{key.path}"


_HIT_VALUES: Mapping[FilterId, Callable[[HitKey], Value | None]] = {
    FilterId.ATTACK_TYPE: lambda key: key.attack_type,
    FilterId.APPLICATION: lambda key: key.application,
    FilterId.IP: lambda key: key.ip,
    FilterId.DOMAIN: lambda key: key.domain,
    FilterId.RESPONSE_STATUS: lambda key: key.response_status,
    FilterId.TARGET: lambda key: key.target,
}


def _uri_admits(values: frozenset[Value], key: HitKey) -> bool:
    """A value starting with `/` is a path on any domain; otherwise domain + path."""
    return key.path in values or _uri_of(key) in values


def _hit_check(item: Filter) -> HitPredicate:
    values = frozenset(item.values)
    negate = item.operator is Operator.NE
    if item.id is FilterId.URI:
        return lambda key: _uri_admits(values, key) != negate
    get = _HIT_VALUES[item.id]
    return lambda key: (get(key) in values) != negate


def hit_predicate(filters: Sequence[Filter]) -> HitPredicate:
    """Whether a hit passes every filter (filters are ANDed; a filter's values are ORed)."""
    checks = tuple(_hit_check(item) for item in filters)
    return lambda key: all(check(key) for check in checks)


def admits(filters: Sequence[Filter], values: Mapping[FilterId, Value | None]) -> bool:
    """Whether an event with these filter values passes every filter.

    An event without a value for a filter (a denylisting for no application) passes
    `ne` filters and fails `eq` ones.
    """
    return all(
        (values.get(item.id) in item.values) != (item.operator is Operator.NE) for item in filters
    )
