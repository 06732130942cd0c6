"""Trigger evaluation over the event stream (SPEC 5). Pure: events and time in, firings out.

The Evaluator holds everything counting needs to survive a restart — the windows of the
threshold triggers, the attacks in progress, the open vulnerabilities — and dumps it to
bytes, which the trigger consumer keeps as its state in the store, committed with the
cursor: after a crash, evaluation resumes exactly where the last commit left it.

Rules (docs/triggers.md):
- a trigger counts the events stored from its `counting_since` on; experimental hits
  count for nothing;
- hits_exceeded counts matching hits; attacks_exceeded counts attacks made of matching
  hits (attacks.py), each when it starts; incidents_exceeded counts those attacks once
  one of their hits is an incident;
- a trigger with denylist_ip keeps a window per source IP, else one window in all;
- event conditions fire once per matching event; the API changes one request reported
  make one api_changes notification per trigger, one line per change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from tocsin.models import EventType
from tocsin.triggers.attacks import Attacks, OpenVulnerabilities, attack_key, is_incident
from tocsin.triggers.definitions import (
    THRESHOLD_CONDITIONS,
    Condition,
    FilterId,
    Trigger,
    Value,
    domain_key,
)
from tocsin.triggers.matching import HitKey, HitPredicate, admits, hit_key, hit_predicate
from tocsin.triggers.window import Window

STATE_VERSION = 1
MAX_WINDOWS = 10_000  # per trigger: source IPs counted apart
MAX_ATTACKS = 10_000  # attacks in progress remembered by a trigger counting all together
MAX_ATTACKS_PER_IP = 1_000  # ... and by each window of a trigger counting per IP
MAX_MATCH_MEMO = 50_000
PRUNE_EVERY = 60.0  # seconds of stream time between sweeps of idle windows


class StreamItem(Protocol):
    """What the evaluator reads of a stored event (models.StreamEvent)."""

    @property
    def group_id(self) -> int: ...
    @property
    def client_id(self) -> int: ...
    @property
    def type(self) -> EventType: ...
    @property
    def at(self) -> float: ...
    @property
    def facts(self) -> Mapping[str, Any]: ...


@dataclass(slots=True, kw_only=True)
class Firing:
    """A trigger fired: what its notification and actions need.

    Threshold triggers: `observed` items in the period, `ip` for a per-IP window.
    Event triggers: `records`, the facts of the event(s) it fired on.
    """

    trigger: Trigger
    at: float
    observed: int = 0
    ip: str | None = None
    records: list[Mapping[str, Any]] = field(default_factory=list)
    group_id: int | None = None


class _Counter:
    """The windows (and attacks in progress) of one threshold trigger."""

    __slots__ = ("fingerprint", "windows")

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        # Insertion order is the order of last activity: the least active is forgotten first.
        self.windows: dict[str, tuple[Window, Attacks]] = {}

    def slot(self, name: str, capacity: int) -> tuple[Window, Attacks]:
        found = self.windows.pop(name, None)
        if found is None:
            found = (Window(), Attacks(capacity))
            if len(self.windows) >= MAX_WINDOWS:
                del self.windows[next(iter(self.windows))]
        self.windows[name] = found
        return found


def fingerprint(trigger: Trigger) -> str:
    """What counting depends on: a change to any of it starts counting afresh."""
    spec = trigger.spec
    threshold = spec.threshold.as_dict() if spec.threshold else None
    parts = [spec.condition.value, [f.as_dict() for f in spec.filters], threshold, spec.per_ip]
    return orjson.dumps([*parts, trigger.counting_since]).decode()


@dataclass(slots=True)
class _Compiled:
    trigger: Trigger
    admits: HitPredicate
    counter: _Counter
    lock: float | None
    capacity: int


@dataclass(slots=True)
class _ClientPlan:
    """One client's enabled triggers, ready to evaluate."""

    threshold: list[_Compiled] = field(default_factory=list)
    events: dict[Condition, list[Trigger]] = field(default_factory=lambda: defaultdict(list))
    memo: dict[HitKey, tuple[_Compiled, ...]] = field(default_factory=dict)

    def matching(self, key: HitKey) -> tuple[_Compiled, ...]:
        """The threshold triggers whose filters admit hits like this one (remembered)."""
        found = self.memo.get(key)
        if found is None:
            if len(self.memo) >= MAX_MATCH_MEMO:
                self.memo.clear()
            found = self.memo[key] = tuple(c for c in self.threshold if c.admits(key))
        return found


class Evaluator:
    """Evaluates a client's triggers over events in stream order; its state is bytes."""

    def __init__(self, state: bytes = b"") -> None:
        self._counters: dict[int, _Counter] = {}
        # The version (updated_at) of every trigger the state has seen defined: a process
        # handed older definitions than those is behind (see `behind`).
        self._versions: dict[int, float] = {}
        self._vulns: dict[int, OpenVulnerabilities] = {}
        self.clock = 0.0  # the latest stored time seen
        self._pruned_at = 0.0
        self.plans: dict[int, _ClientPlan] = {}
        self._plan_key: tuple[Any, ...] | None = None
        if state and state != b"{}":
            self._load(orjson.loads(state))

    # state ----------------------------------------------------------------------------

    def dump(self) -> bytes:
        counters = {
            str(tid): [c.fingerprint, [[n, w.dump(), a.dump()] for n, (w, a) in c.windows.items()]]
            for tid, c in self._counters.items()
        }
        vulns = {str(cid): v.dump() for cid, v in self._vulns.items() if len(v)}
        document: dict[str, Any] = {
            "v": STATE_VERSION,
            "clock": self.clock,
            "pruned_at": self._pruned_at,
        }
        document |= {"counters": counters, "vulns": vulns}
        document["versions"] = {str(tid): at for tid, at in self._versions.items()}
        return orjson.dumps(document)

    def _load(self, document: Mapping[str, Any]) -> None:
        if document.get("v") != STATE_VERSION:
            return  # a state this version cannot read: counting starts afresh
        self.clock = float(document["clock"])
        self._pruned_at = float(document["pruned_at"])
        self._versions = {int(tid): float(at) for tid, at in document["versions"].items()}
        for cid, rows in document["vulns"].items():
            self._vulns[int(cid)] = OpenVulnerabilities.load(rows)
        for tid, (fp, windows) in document["counters"].items():
            counter = _Counter(fp)
            for name, window, attacks in windows:
                capacity = MAX_ATTACKS_PER_IP if name else MAX_ATTACKS
                counter.windows[name] = (Window.load(window), Attacks.load(capacity, attacks))
            self._counters[int(tid)] = counter

    # evaluation -----------------------------------------------------------------------

    def run(
        self, triggers: Sequence[Trigger], events: Sequence[StreamItem], now: float
    ) -> list[Firing]:
        """Evaluate the enabled `triggers` over `events` (in stream order)."""
        self._plan(triggers)
        run = _Run(self)
        for event in events:
            run.event(event)
        run.flush()
        self.clock = run.clock
        self._prune(max(now, self.clock))
        return run.firings

    def behind(self, triggers: Sequence[Trigger]) -> bool:
        """Whether these definitions are older than ones the state was evaluated with:
        another process, reading the definitions later, has moved the state on. Evaluating
        with them would drop the counting of triggers they do not know yet."""
        known = {trigger.id: trigger.updated_at for trigger in triggers}
        return any(
            tid not in known or known[tid] < version for tid, version in self._versions.items()
        )

    def forget(self, trigger_id: int) -> None:
        """A trigger was deleted: its counting goes."""
        self._counters.pop(trigger_id, None)
        self._versions.pop(trigger_id, None)

    def _plan(self, triggers: Sequence[Trigger]) -> None:
        key = tuple((t.id, t.updated_at, t.counting_since, t.spec.enabled) for t in triggers)
        if key == self._plan_key:
            return
        self._plan_key = key
        plans: dict[int, _ClientPlan] = defaultdict(_ClientPlan)
        given = {trigger.id for trigger in triggers}
        # Triggers these definitions do not show keep their counting until the stream says
        # they were deleted (`forget`): the definitions may predate them.
        counters = {tid: c for tid, c in self._counters.items() if tid not in given}
        for trigger in triggers:
            self._versions[trigger.id] = max(
                self._versions.get(trigger.id, 0.0), trigger.updated_at
            )
            if not trigger.spec.enabled:
                continue
            plan = plans[trigger.client_id]
            if trigger.spec.condition in THRESHOLD_CONDITIONS:
                counters[trigger.id] = counter = self._counter(trigger)
                plan.threshold.append(_compile(trigger, counter))
            else:
                plan.events[trigger.spec.condition].append(trigger)
        self.plans = dict(plans)
        self._counters = counters  # disabled triggers' counting goes

    def _counter(self, trigger: Trigger) -> _Counter:
        wanted = fingerprint(trigger)
        found = self._counters.get(trigger.id)
        return found if found is not None and found.fingerprint == wanted else _Counter(wanted)

    def vulnerabilities(self, client_id: int) -> OpenVulnerabilities:
        found = self._vulns.get(client_id)
        if found is None:
            found = self._vulns[client_id] = OpenVulnerabilities()
        return found

    def _prune(self, now: float) -> None:
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        for plan in self.plans.values():
            for compiled in plan.threshold:
                _prune_counter(compiled, now)


def _compile(trigger: Trigger, counter: _Counter) -> _Compiled:
    spec = trigger.spec
    denylist = spec.denylist
    lock = float(denylist.lock_time) if denylist and denylist.lock_time else None
    capacity = MAX_ATTACKS_PER_IP if spec.per_ip else MAX_ATTACKS
    return _Compiled(trigger, hit_predicate(spec.filters), counter, lock, capacity)


def _prune_counter(compiled: _Compiled, now: float) -> None:
    threshold = compiled.trigger.spec.threshold
    if threshold is None:
        return
    windows = compiled.counter.windows
    for name in list(windows):
        window, attacks = windows[name]
        attacks.prune(now)
        if not len(attacks) and window.idle(now, threshold.period, compiled.lock):
            del windows[name]


class _Run:
    """One call's pass over the events: hits stored together are counted together."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.plans = evaluator.plans
        self.vulnerabilities = evaluator.vulnerabilities
        self.forget = evaluator.forget
        self.clock = evaluator.clock
        self.firings: list[Firing] = []
        self._pending: dict[HitKey, int] = {}
        self._pending_at = 0.0
        self._pending_client = 0
        self._api: dict[int, Firing] = {}  # trigger id -> api_changes firing of this group

    def event(self, event: StreamItem) -> None:
        if event.type is EventType.HIT:
            self._hit(event)
        else:
            self.flush()
            self._other(event)
        # Stream time never goes back: a slow ingest may commit an earlier `at` later.
        self.clock = max(self.clock, event.at)

    def _hit(self, event: StreamItem) -> None:
        facts = event.facts
        if facts.get("experimental") is True:
            return  # SPEC 2.1: counted by nothing
        plan = self.plans.get(event.client_id)
        if plan is None or not plan.threshold:
            return
        if event.at != self._pending_at or event.client_id != self._pending_client:
            self.flush()
            self._pending_at, self._pending_client = event.at, event.client_id
        key = hit_key(facts)
        self._pending[key] = self._pending.get(key, 0) + 1

    def flush(self) -> None:
        """Count the hits gathered (all stored at one time, for one client)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        client_id, stored_at = self._pending_client, self._pending_at
        plan = self.plans[client_id]
        vulns = self.vulnerabilities(client_id)
        at = max(self.clock, stored_at)
        for key, hits in pending.items():
            for compiled in plan.matching(key):
                if stored_at >= compiled.trigger.counting_since:
                    self._count(compiled, key, hits, at, vulns)

    def _count(
        self,
        compiled: _Compiled,
        key: HitKey,
        hits: int,
        at: float,
        vulns: OpenVulnerabilities,
    ) -> None:
        spec = compiled.trigger.spec
        threshold = spec.threshold
        if threshold is None:
            return
        name = key.ip if spec.per_ip else ""
        window, attacks = compiled.counter.slot(name, compiled.capacity)
        items = _items(spec.condition, key, hits, at, attacks, vulns)
        if items and window.add(
            at, items, count=threshold.count, period=threshold.period, lock=compiled.lock
        ):
            ip = (name or None) if spec.per_ip else None
            observed = threshold.count + 1
            self.firings.append(Firing(trigger=compiled.trigger, at=at, observed=observed, ip=ip))

    def _other(self, event: StreamItem) -> None:
        if event.type is EventType.VULN:
            self.vulnerabilities(event.client_id).report(event.facts)
            return
        if event.type is EventType.SYSTEM and event.facts.get("kind") == "trigger_deleted":
            deleted = event.facts.get("trigger")
            if isinstance(deleted, Mapping) and isinstance(deleted.get("id"), int):
                self.forget(deleted["id"])
            return
        condition, values = _event_condition(event)
        plan = self.plans.get(event.client_id)
        if condition is None or plan is None:
            return
        for trigger in plan.events.get(condition, ()):
            if event.at >= trigger.counting_since and admits(trigger.spec.filters, values):
                self._fire_on(trigger, event, condition)

    def _fire_on(self, trigger: Trigger, event: StreamItem, condition: Condition) -> None:
        if condition is Condition.API_CHANGES:
            open_firing = self._api.get(trigger.id)
            if open_firing is not None and open_firing.group_id == event.group_id:
                open_firing.records.append(event.facts)
                return
        firing = Firing(
            trigger=trigger, at=event.at, records=[event.facts], group_id=event.group_id
        )
        if condition is Condition.API_CHANGES:
            self._api[trigger.id] = firing
        self.firings.append(firing)


def _items(  # noqa: PLR0917 - the one step of counting, called from one place
    condition: Condition,
    key: HitKey,
    hits: int,
    at: float,
    attacks: Attacks,
    vulns: OpenVulnerabilities,
) -> int:
    """How many items `hits` alike hits add to a window: hits, a new attack, an incident."""
    if condition is Condition.HITS_EXCEEDED:
        return hits
    incident = condition is Condition.INCIDENTS_EXCEEDED and is_incident(key, vulns)
    started, became_incident = attacks.hit(attack_key(key), at, incident=incident)
    if condition is Condition.ATTACKS_EXCEEDED:
        return int(started)
    return int(became_incident)


def user_of(facts: Mapping[str, Any]) -> Mapping[str, Any]:
    """The user a user_created event is about: its `user` (email, name, role)."""
    user = facts.get("user")
    return user if isinstance(user, Mapping) else facts


def _event_condition(
    event: StreamItem,
) -> tuple[Condition | None, Mapping[FilterId, Value | None]]:
    """The condition an event can fire, with its values for filters."""
    facts = event.facts
    application = facts.get("application")
    if not isinstance(application, int) or isinstance(application, bool):
        application = None
    if event.type is EventType.IP_DENYLISTED:
        return Condition.IP_DENYLISTED, {FilterId.APPLICATION: application}
    if event.type is EventType.API_CHANGE:
        domain = facts.get("domain")
        values = {
            FilterId.DOMAIN: domain_key(domain) if isinstance(domain, str) else None,
            FilterId.APPLICATION: application,
        }
        rogue = facts.get("rogue") is True
        return (Condition.ROGUE_API if rogue else Condition.API_CHANGES), values
    if event.type is EventType.SYSTEM and facts.get("kind") == "user_created":
        role = user_of(facts).get("role")
        return Condition.USER_CREATED, {FilterId.USER_ROLE: role if isinstance(role, str) else None}
    return None, {}
