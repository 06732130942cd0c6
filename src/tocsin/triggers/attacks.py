"""Attacks and incidents (SPEC 1). Pure.

An attack is the hits of one attack type on one parameter (point) of one target (domain
+ path); a hit joins an attack when it comes within ATTACK_GAP of that attack's last hit,
else it starts a new attack. An incident is an attack that exploited a vulnerability:
one of its hits was reported with `incident: true`, or matched a vulnerability that is
still open by type, domain, path and parameter. An attack counts as one incident however
many of its hits do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tocsin.triggers.definitions import domain_key
from tocsin.triggers.matching import HitKey

ATTACK_GAP = 3600.0

AttackKey = tuple[str, str, str, str]  # attack type, parameter, domain, path
VulnKey = tuple[str, str, str, str]  # type, domain, path, parameter


def attack_key(key: HitKey) -> AttackKey:
    return (key.attack_type, key.parameter, key.domain, key.path)


class Attacks:
    """The attacks in progress: per attack, its last hit and whether it is an incident yet.

    At most `capacity` attacks are remembered; beyond that the one whose last hit is the
    oldest is forgotten (its next hit starts a new attack), so memory stays bounded under
    a flood of distinct targets.
    """

    __slots__ = ("_capacity", "_last")

    def __init__(self, capacity: int, known: Iterable[tuple[AttackKey, float, bool]] = ()) -> None:
        self._capacity = capacity
        # Insertion order is the order of last hits (a hit moves its attack to the end).
        self._last: dict[AttackKey, tuple[float, bool]] = {
            key: (last, incident) for key, last, incident in known
        }

    def hit(self, key: AttackKey, at: float, *, incident: bool = False) -> tuple[bool, bool]:
        """Count a hit: (it starts a new attack, it makes its attack an incident)."""
        before = self._last.pop(key, None)
        started = before is None or at - before[0] > ATTACK_GAP
        was_incident = False if started or before is None else before[1]
        last = at if started or before is None else max(at, before[0])
        self._last[key] = (last, was_incident or incident)
        if len(self._last) > self._capacity:
            del self._last[next(iter(self._last))]
        return started, incident and not was_incident

    def prune(self, now: float) -> None:
        """Forget attacks whose last hit is more than ATTACK_GAP ago (they are over)."""
        over = [key for key, (last, _) in self._last.items() if now - last > ATTACK_GAP]
        for key in over:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)

    def dump(self) -> list[Any]:
        return [[*key, last, incident] for key, (last, incident) in self._last.items()]

    @classmethod
    def load(cls, capacity: int, rows: Iterable[list[Any]]) -> Attacks:
        return cls(capacity, ((tuple(row[:4]), row[4], row[5]) for row in rows))


def vuln_key(facts: Mapping[str, Any]) -> VulnKey:
    return (
        str(facts.get("type") or facts.get("attack_type") or "").strip().lower(),
        domain_key(str(facts.get("domain") or "")),
        str(facts.get("path") or ""),
        str(facts.get("parameter") or ""),
    )


_CLOSED = frozenset({"closed", "fixed", "false_positive", "falsepositive", "resolved"})


class OpenVulnerabilities:
    """The vulnerabilities of one client still open, as hits are matched against them."""

    __slots__ = ("_by_id", "_capacity", "_open")

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._by_id: dict[str, VulnKey] = {}
        self._open: dict[VulnKey, int] = {}

    def report(self, facts: Mapping[str, Any]) -> None:
        """A vulnerability reported (again): open unless its status says it is closed."""
        found = facts.get("id", facts.get("vuln_id"))
        vuln_id = "" if found is None else str(found)
        status = str(facts.get("status") or "open").strip().lower()
        self._close(vuln_id)
        if status not in _CLOSED:
            self._add(vuln_id, vuln_key(facts))

    def _add(self, vuln_id: str, key: VulnKey) -> None:
        self._by_id[vuln_id] = key
        self._open[key] = self._open.get(key, 0) + 1
        if len(self._by_id) > self._capacity:
            self._close(next(iter(self._by_id)))

    def _close(self, vuln_id: str) -> None:
        key = self._by_id.pop(vuln_id, None)
        if key is None:
            return
        left = self._open[key] - 1
        if left:
            self._open[key] = left
        else:
            del self._open[key]

    def exploited_by(self, key: HitKey) -> bool:
        """Whether the hit matches an open vulnerability by type, domain, path and parameter."""
        return (key.attack_type, key.domain, key.path, key.parameter) in self._open

    def __len__(self) -> int:
        return len(self._by_id)

    def dump(self) -> list[Any]:
        return [[vuln_id, *key] for vuln_id, key in self._by_id.items()]

    @classmethod
    def load(cls, rows: Iterable[list[Any]]) -> OpenVulnerabilities:
        known = cls()
        for vuln_id, *key in rows:
            known._add(str(vuln_id), tuple(key))
        return known


def is_incident(key: HitKey, vulnerabilities: OpenVulnerabilities | None) -> bool:
    return key.incident or (vulnerabilities is not None and vulnerabilities.exploited_by(key))
