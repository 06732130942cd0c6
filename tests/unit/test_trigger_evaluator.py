"""Trigger evaluation over stream events, with stream time given (SPEC 1 and 5)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tocsin.api.schemas import TriggerIn
from tocsin.models import EventType
from tocsin.triggers.definitions import Trigger, check
from tocsin.triggers.evaluator import Evaluator, Firing

CLIENT = 1
_groups = itertools.count(1)


@dataclass(frozen=True)
class Event:
    type: EventType
    at: float
    facts: Mapping[str, Any]
    client_id: int = CLIENT
    group_id: int = field(default_factory=lambda: next(_groups))
    index: int = 0


def hit(at: float, application: int | None = 1, **facts: Any) -> Event:
    """A hit's facts as events.py records them."""
    base = {
        "kind": "hit",
        "attack_type": "sqli",
        "domain": "shop.example.com",
        "path": "/login",
        "parameter": "POST_user",
        "point": ["post", "user"],
        "ip": "203.0.113.7",
        "response_status": 200,
        "applications": [] if application is None else [application],
        "target": None,
        "experimental": False,
        "incident": False,
    }
    return Event(EventType.HIT, at, base | facts)


def trigger(
    condition: str = "hits_exceeded",
    *,
    filters: Sequence[Mapping[str, Any]] = (),
    count: int = 10,
    period: int = 60,
    actions: Sequence[Mapping[str, Any]] = ({"id": "send_notification", "integration_ids": [1]},),
    trigger_id: int = 1,
    since: float = 0.0,
) -> Trigger:
    raw: dict[str, Any] = {
        "name": f"trigger {trigger_id}",
        "condition": condition,
        "filters": list(filters),
        "actions": list(actions),
    }
    if condition.endswith("_exceeded"):
        raw["threshold"] = {"count": count, "period": period}
    spec = check(TriggerIn.model_validate(raw).to_spec())
    return Trigger(
        id=trigger_id,
        client_id=CLIENT,
        spec=spec,
        created_at=since,
        updated_at=since,
        counting_since=since,
    )


class Run:
    """An evaluator fed one event at a time (or in batches), its state round-tripped."""

    def __init__(self, *triggers: Trigger) -> None:
        self.triggers = list(triggers)
        self.state = b""
        self.fired: list[Firing] = []

    def feed(self, *events: Event, now: float | None = None) -> list[Firing]:
        evaluator = Evaluator(self.state)
        last = events[-1].at if events else 0.0
        new = evaluator.run(self.triggers, events, now if now is not None else last)
        self.state = evaluator.dump()
        self.fired += new
        return new


SQLI = [{"id": "attack_type", "operator": "eq", "values": ["sqli"]}]


def test_the_sqli_scenario_fires_once_per_crossing() -> None:
    run = Run(trigger(filters=SQLI, count=10, period=60))
    for second in range(30):
        assert not run.feed(hit(1000 + second, attack_type="xss"))
    for n in range(10):
        assert not run.feed(hit(1030 + n)), f"sqli hit {n + 1} fired"
    fired = run.feed(hit(1040))
    assert len(fired) == 1
    assert fired[0].observed == 11
    assert fired[0].ip is None
    # 15 more within the period do not fire again.
    for n in range(15):
        assert not run.feed(hit(1041 + n * 2))
    # The count stays over 10 until 60 s after the 11th most recent sqli hit (t=1049):
    # 1109. After a whole period under it (1169), a new crossing fires again.
    for n in range(10):
        assert not run.feed(hit(1170 + n))
    assert len(run.feed(hit(1180))) == 1
    assert len(run.fired) == 2


def test_not_rearmed_while_the_count_keeps_crossing_back() -> None:
    run = Run(trigger(count=2, period=10))
    run.feed(hit(0), hit(1), hit(2))
    assert len(run.fired) == 1
    # Under the threshold for less than a period, then over again: still the same crossing.
    run.feed(hit(15), hit(16), hit(17))
    assert len(run.fired) == 1
    # Under for a whole period (over until 27; quiet from 27 to 37), then over: fires.
    run.feed(hit(40), hit(41), hit(42))
    assert len(run.fired) == 2


def test_hits_stored_together_cross_once() -> None:
    run = Run(trigger(count=10, period=60))
    fired = run.feed(*[hit(5.0) for _ in range(100)])
    assert len(fired) == 1
    assert fired[0].observed == 11


def test_counting_survives_the_state_round_trip_between_every_event() -> None:
    one_run = Run(trigger(count=10, period=60))
    for n in range(11):
        one_run.feed(hit(100 + n))
    batched = Run(trigger(count=10, period=60))
    batched.feed(*[hit(100 + n) for n in range(11)])
    assert len(one_run.fired) == len(batched.fired) == 1


def test_experimental_hits_are_counted_by_nothing() -> None:
    run = Run(
        trigger(count=1, trigger_id=1),
        trigger("attacks_exceeded", count=1, trigger_id=2),
        trigger("incidents_exceeded", count=1, trigger_id=3),
    )
    run.feed(*[hit(n, experimental=True, incident=True, path=f"/{n}") for n in range(50)])
    assert run.fired == []


def test_attacks_count_attacks_not_hits() -> None:
    run = Run(trigger("attacks_exceeded", count=1, period=3600))
    # 100 hits of one attack (same type, parameter, domain and path) are one attack.
    for n in range(100):
        run.feed(hit(10 + n * 30))
    assert run.fired == []
    # Another path is another attack: the second attack crosses "more than 1".
    assert len(run.feed(hit(3100, path="/search"))) == 1


def test_a_hit_after_an_hour_of_quiet_starts_a_new_attack() -> None:
    run = Run(trigger("attacks_exceeded", count=1, period=86400))
    run.feed(hit(0))
    run.feed(hit(3600))  # within an hour of the last hit: the same attack
    assert run.fired == []
    assert len(run.feed(hit(7201))) == 1  # 3601 s after the last hit: a new attack


def test_attacks_are_told_apart_by_type_parameter_domain_and_path() -> None:
    run = Run(trigger("attacks_exceeded", count=4, period=3600))
    run.feed(hit(1))
    run.feed(hit(2, attack_type="xss"))
    run.feed(hit(3, parameter="GET_q"))
    run.feed(hit(4, domain="admin.example.com"))
    run.feed(hit(5, ip="198.51.100.1", response_status=403))  # same attack, other source
    assert run.fired == []
    assert len(run.feed(hit(6, path="/cart"))) == 1


def test_incidents_count_flagged_hits_and_hits_on_open_vulnerabilities() -> None:
    run = Run(trigger("incidents_exceeded", count=1, period=3600))
    vuln = {"kind": "vuln", "id": 7, "type": "sqli", "domain": "shop.example.com"}
    vuln |= {"path": "/login", "parameter": "POST_user", "threat": "High", "risk": "high"}
    run.feed(Event(EventType.VULN, 1, vuln))
    run.feed(hit(2, path="/search"))  # no vulnerability there, not flagged: no incident
    run.feed(hit(3))  # matches the open vulnerability: incident 1
    run.feed(hit(4))  # the same attack: still incident 1
    assert run.fired == []
    fired = run.feed(hit(5, path="/cart", incident=True))  # flagged: incident 2
    assert len(fired) == 1


def test_a_closed_vulnerability_makes_no_incidents() -> None:
    run = Run(trigger("incidents_exceeded", count=1, period=3600))
    facts = {"kind": "vuln", "id": 7, "type": "sqli", "domain": "shop.example.com"}
    facts |= {"path": "/login", "parameter": "POST_user"}
    run.feed(Event(EventType.VULN, 1, facts | {"status": "open"}))
    run.feed(Event(EventType.VULN, 2, facts | {"status": "closed"}))
    run.feed(hit(3), hit(4, path="/x", parameter="POST_user"), hit(5, path="/y"))
    assert run.fired == []


def _count_with(filters: list[dict[str, Any]], hits: list[Event]) -> int:
    """How many of `hits` a hits_exceeded trigger with these filters counts.

    A trigger with count c fires when more than c hits match, and c is at least 1; with
    every hit fed twice, the smallest c that does not fire is twice the hits that match
    (or 1 when none does).
    """
    doubled = [copy for event in hits for copy in (event, Event(event.type, event.at, event.facts))]
    for threshold in range(1, len(doubled) + 2):
        run = Run(trigger(filters=filters, count=threshold, period=3600))
        run.feed(*doubled)
        if not run.fired:
            return threshold // 2
    raise AssertionError("fired with every threshold")


MIXED = [
    hit(1, attack_type="sqli", domain="shop.example.com", response_status=200, application=1),
    hit(2, attack_type="xss", domain="shop.example.com", response_status=403, application=2),
    hit(3, attack_type="rce", domain="admin.example.com", response_status=500, application=1),
    hit(4, attack_type="sqli", domain="Admin.Example.com", path="/api", response_status=404),
    hit(5, attack_type="ptrav", ip="198.51.100.9", application=3, path="/api"),
]


def test_no_filters_count_everything() -> None:
    assert _count_with([], MIXED) == 5


def test_filter_ne_counts_the_others() -> None:
    assert _count_with([{"id": "attack_type", "operator": "ne", "values": ["sqli"]}], MIXED) == 3


def test_filter_with_several_values_counts_any_of_them() -> None:
    assert _count_with([{"id": "attack_type", "values": ["sqli", "xss"]}], MIXED) == 3
    assert (
        _count_with([{"id": "attack_type", "operator": "ne", "values": ["sqli", "xss"]}], MIXED)
        == 2
    )


def test_filter_domain() -> None:
    assert _count_with([{"id": "domain", "values": ["admin.example.com"]}], MIXED) == 2


def test_filter_response_status() -> None:
    assert _count_with([{"id": "response_status", "values": [200, 404]}], MIXED) == 3


def test_filter_uri() -> None:
    assert _count_with([{"id": "uri", "values": ["admin.example.com/api"]}], MIXED) == 1
    assert _count_with([{"id": "uri", "values": ["/api"]}], MIXED) == 2
    assert _count_with([{"id": "uri", "values": ["https://shop.example.com/login"]}], MIXED) == 2


def test_filter_application() -> None:
    assert _count_with([{"id": "application", "values": [1]}], MIXED) == 3
    assert _count_with([{"id": "application", "operator": "ne", "values": [1]}], MIXED) == 2


def test_filter_ip() -> None:
    assert _count_with([{"id": "ip", "values": ["198.51.100.9"]}], MIXED) == 1
    v6 = [hit(1, ip="2001:DB8:0:0::1"), hit(2, ip="2001:db8::2")]
    assert _count_with([{"id": "ip", "values": ["2001:db8::1"]}], v6) == 1


def test_filter_target() -> None:
    assert _count_with([{"id": "target", "values": ["database"]}], MIXED) == 2
    assert _count_with([{"id": "target", "values": ["client"]}], MIXED) == 1
    assert _count_with([{"id": "target", "values": ["server"]}], MIXED) == 2
    reported = [hit(1, attack_type="sqli", target="client")]  # the sensor's word wins
    assert _count_with([{"id": "target", "values": ["client"]}], reported) == 1


def test_filters_together_must_all_hold() -> None:
    both = [
        {"id": "attack_type", "values": ["sqli"]},
        {"id": "domain", "values": ["shop.example.com"]},
    ]
    assert _count_with(both, MIXED) == 1


DENYLIST = (
    {"id": "send_notification", "integration_ids": [1]},
    {"id": "denylist_ip", "lock_time": 600},
)


def test_denylist_triggers_count_each_ip_on_its_own_and_fire_once_each() -> None:
    run = Run(trigger(count=3, period=60, actions=DENYLIST))
    a, b, c = "203.0.113.1", "203.0.113.2", "203.0.113.3"
    # Together they make 12 hits; each makes 4, 4 and 2: a and b cross, c does not.
    events = [hit(n, ip=ip) for n in range(4) for ip in (a, b)] + [hit(5, ip=c), hit(6, ip=c)]
    run.feed(*events)
    run.feed(*[hit(10 + n, ip=ip) for n in range(10) for ip in (a, b)])  # still over: quiet
    assert sorted(f.ip for f in run.fired if f.ip) == [a, b]
    assert all(f.observed == 4 for f in run.fired)


def test_a_denylisted_ip_still_attacking_when_its_lock_ends_is_denylisted_again() -> None:
    run = Run(trigger(count=3, period=60, actions=DENYLIST))
    run.feed(*[hit(n * 10) for n in range(700)])  # one hit every 10 s, non-stop
    # Fires at t=30 (4th hit) and again each time the 600 s lock has run out.
    assert [f.at for f in run.fired] == [
        30,
        630,
        1230,
        1830,
        2430,
        3030,
        3630,
        4230,
        4830,
        5430,
        6030,
        6630,
    ]


def test_a_trigger_counts_only_events_stored_since_it_was_set() -> None:
    run = Run(trigger(count=2, period=3600, since=100.0))
    run.feed(*[hit(95 + n) for n in range(10)])  # 95..99 are before it: not counted
    run.feed(hit(150))
    assert [f.at for f in run.fired] == [102]


def test_a_new_threshold_starts_counting_afresh() -> None:
    run = Run(trigger(count=10, period=3600))
    run.feed(*[hit(n) for n in range(10)])
    run.triggers = [trigger(count=10, period=3600, since=10.0)]
    run.feed(*[hit(10 + n) for n in range(10)])
    assert run.fired == []


def deleted(at: float, trigger_id: int) -> Event:
    facts = {"kind": "trigger_deleted", "trigger": {"id": trigger_id, "updated_at": at}}
    return Event(EventType.SYSTEM, at, facts)


def test_a_deleted_trigger_is_forgotten() -> None:
    run = Run(trigger(count=10, period=3600))
    run.feed(*[hit(n) for n in range(10)])
    run.triggers = []
    run.feed(deleted(10.5, 1))
    run.triggers = [trigger(count=10, period=3600)]
    run.feed(hit(12))
    assert run.fired == []


def test_definitions_that_do_not_show_a_trigger_yet_keep_its_count() -> None:
    """Another process may hand the state on with older definitions: they must not drop
    the counting of a trigger they do not know (only its deletion does)."""
    run = Run(trigger(count=10, period=3600))
    run.feed(*[hit(n) for n in range(10)])
    run.triggers = []
    run.feed()
    run.triggers = [trigger(count=10, period=3600)]
    assert len(run.feed(hit(12))) == 1


def test_the_state_tells_when_definitions_are_older_than_it() -> None:
    newer = trigger(count=10, period=3600)
    evaluator = Evaluator()
    evaluator.run([newer], [hit(1)], 1)
    assert not evaluator.behind([newer])
    assert evaluator.behind([])
    older = Trigger(
        id=newer.id,
        client_id=CLIENT,
        spec=newer.spec,
        created_at=0,
        updated_at=-1,
        counting_since=0,
    )
    assert evaluator.behind([older])
    again = Evaluator(evaluator.dump())
    assert again.behind([])
    again.run([], [deleted(2, newer.id)], 2)
    assert not again.behind([])


def test_idle_windows_are_swept_from_the_state() -> None:
    run = Run(trigger(count=3, period=60, actions=DENYLIST))
    run.feed(*[hit(1, ip=f"198.51.100.{n}") for n in range(200)])
    full = len(run.state)
    run.feed(now=10_000)
    assert len(run.state) < full / 10


def user_created(at: float, role: str, kind: str = "user_created") -> Event:
    user = {"id": 5, "email": "e@example.com", "name": "E", "role": role}
    facts = {"kind": kind, "actor": "Administrator <admin@localhost>", "user": user}
    return Event(EventType.SYSTEM, at, facts | {"subject": {"type": "user", "id": 5}})


def test_user_created_with_a_role_filter() -> None:
    role = [{"id": "user_role", "values": ["administrator"]}]
    run = Run(trigger("user_created", filters=role))
    assert len(run.feed(user_created(1, "administrator"))) == 1
    assert run.feed(user_created(2, "analyst")) == []
    assert (
        run.feed(Event(EventType.SYSTEM, 3, {"kind": "user_deleted", "role": "administrator"}))
        == []
    )


def test_ip_denylisted_fires_on_each_denylisting_of_its_applications() -> None:
    run = Run(trigger("ip_denylisted", filters=[{"id": "application", "values": [8]}]))
    entry = {"kind": "ip_denylisted", "ip": "1.1.1.1", "reason": "r", "expire_at": "x"}
    assert len(run.feed(Event(EventType.IP_DENYLISTED, 1, entry | {"application": 8}))) == 1
    assert run.feed(Event(EventType.IP_DENYLISTED, 2, entry | {"application": 9})) == []
    assert run.feed(Event(EventType.IP_DENYLISTED, 3, entry | {"application": None})) == []
    assert len(run.feed(Event(EventType.IP_DENYLISTED, 4, entry | {"application": 8}))) == 1


def test_api_changes_of_one_report_make_one_firing_and_rogue_apis_their_own() -> None:
    changes = Run(trigger("api_changes", filters=[{"id": "domain", "values": ["api.example.com"]}]))
    rogue = Run(trigger("rogue_api", trigger_id=2))
    change = {"method": "GET", "path": "/v1/users", "domain": "api.example.com", "change": "new"}
    report = [
        Event(EventType.API_CHANGE, 1, change, group_id=50, index=0),
        Event(EventType.API_CHANGE, 1, change | {"change": "changed"}, group_id=50, index=1),
        Event(
            EventType.API_CHANGE, 1, change | {"domain": "other.example.com"}, group_id=50, index=2
        ),
        Event(
            EventType.API_CHANGE,
            1,
            change | {"kind": "shadow", "rogue": True},
            group_id=50,
            index=3,
        ),
    ]
    fired = changes.feed(*report)
    assert len(fired) == 1
    assert [r["change"] for r in fired[0].records] == ["new", "changed"]
    rogue_fired = rogue.feed(*report)
    assert len(rogue_fired) == 1
    assert rogue_fired[0].records[0]["kind"] == "shadow"


def test_an_unreadable_state_version_starts_afresh() -> None:
    evaluator = Evaluator(b'{"v": 999}')
    assert evaluator.run([trigger(count=1)], [hit(1)], 1) == []
