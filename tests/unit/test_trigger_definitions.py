"""Trigger definitions: what SPEC 5 allows, and every bad field named for its 422."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tocsin.api.errors import field_of
from tocsin.api.schemas import TriggerIn
from tocsin.triggers.definitions import (
    ActionId,
    Condition,
    FilterId,
    InvalidTrigger,
    TriggerSpec,
    check,
    counting_changed,
    stored_definition,
    stored_spec,
)

NOTIFY = {"id": "send_notification", "integration_ids": [1]}


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "SQL injections on the shop",
        "condition": "hits_exceeded",
        "filters": [{"id": "attack_type", "operator": "eq", "values": ["sqli"]}],
        "threshold": {"count": 10, "period": 60, "operator": "gt"},
        "actions": [NOTIFY],
    }
    return base | changes


def spec_of(raw: dict[str, Any]) -> TriggerSpec:
    return check(TriggerIn.model_validate(raw).to_spec())


def bad_field(raw: dict[str, Any]) -> str | None:
    """The field a 422 would name for this body."""
    try:
        spec_of(raw)
    except ValidationError as exc:
        return field_of(("body", *exc.errors()[0]["loc"]))
    except InvalidTrigger as exc:
        return exc.field
    raise AssertionError("the body was accepted")


def test_a_good_definition_reads_back_as_given() -> None:
    spec = spec_of(body())
    assert spec.condition is Condition.HITS_EXCEEDED
    assert spec.threshold is not None
    assert (spec.threshold.count, spec.threshold.period) == (10, 60)
    assert spec.as_dict()["filters"] == [
        {"id": "attack_type", "operator": "eq", "values": ["sqli"]}
    ]
    assert spec.integration_ids == (1,)
    assert not spec.per_ip


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (body(condition="hits_exceded"), "condition"),
        (body(filters=[{"id": "user_role", "values": ["analyst"]}]), "filters[0].id"),
        (body(filters=[{"id": "colour", "values": ["red"]}]), "filters[0].id"),
        (body(filters=[{"id": "attack_type", "values": []}]), "filters[0].values"),
        (
            body(filters=[{"id": "attack_type", "operator": "lt", "values": ["x"]}]),
            "filters[0].operator",
        ),
        (body(filters=[{"id": "ip", "values": ["10.0.0.0/8"]}]), "filters[0].values[0]"),
        (body(filters=[{"id": "ip", "values": ["1.2.3.4", "nope"]}]), "filters[0].values[1]"),
        (body(filters=[{"id": "response_status", "values": [700]}]), "filters[0].values[0]"),
        (body(filters=[{"id": "response_status", "values": [True]}]), "filters[0].values[0]"),
        (body(filters=[{"id": "application", "values": ["shop"]}]), "filters[0].values[0]"),
        (body(filters=[{"id": "target", "values": ["network"]}]), "filters[0].values[0]"),
        (body(filters=[{"id": "domain", "values": ["not a domain"]}]), "filters[0].values[0]"),
        (body(filters=[{"id": "uri", "values": ["a b"]}]), "filters[0].values[0]"),
        (body(threshold=None), "threshold"),
        (body(threshold={"count": 0, "period": 60}), "threshold.count"),
        (body(threshold={"count": 10, "period": 0}), "threshold.period"),
        (body(threshold={"count": 10, "period": 31 * 86400 + 1}), "threshold.period"),
        (body(threshold={"count": 10, "period": 60, "operator": "lt"}), "threshold.operator"),
        (body(threshold={"count": "10", "period": 60}), "threshold.count"),
        (body(actions=[]), "actions"),
        (body(actions=[{"id": "send_email", "integration_ids": [1]}]), "actions[0].id"),
        (body(actions=[{"id": "send_notification"}]), "actions[0].integration_ids"),
        (
            body(actions=[{"id": "send_notification", "integration_ids": []}]),
            "actions[0].integration_ids",
        ),
        (body(actions=[NOTIFY, NOTIFY]), "actions[1].id"),
        (body(actions=[{"id": "denylist_ip"}]), "actions[0].lock_time"),
        (body(actions=[{"id": "denylist_ip", "lock_time": 0}]), "actions[0].lock_time"),
        (body(name=""), "name"),
        (body(colour="red"), "colour"),
        (
            body(
                condition="user_created",
                threshold=None,
                filters=[],
                actions=[{"id": "denylist_ip", "lock_time": 60}],
            ),
            "actions[0].id",
        ),
        (body(condition="user_created", filters=[]), "threshold"),
        (
            body(
                condition="ip_denylisted",
                threshold=None,
                filters=[{"id": "attack_type", "values": ["sqli"]}],
            ),
            "filters[0].id",
        ),
        (
            body(
                condition="user_created",
                threshold=None,
                filters=[{"id": "user_role", "values": ["boss"]}],
            ),
            "filters[0].values[0]",
        ),
    ],
)
def test_each_bad_field_is_named(raw: dict[str, Any], field: str) -> None:
    assert bad_field(raw) == field


@pytest.mark.parametrize(
    ("condition", "allowed"),
    [
        (
            "hits_exceeded",
            {"attack_type", "application", "ip", "domain", "response_status", "target", "uri"},
        ),
        (
            "attacks_exceeded",
            {"attack_type", "application", "ip", "domain", "response_status", "target", "uri"},
        ),
        (
            "incidents_exceeded",
            {"attack_type", "application", "ip", "domain", "response_status", "target", "uri"},
        ),
        ("user_created", {"user_role"}),
        ("ip_denylisted", {"application"}),
        ("api_changes", {"domain", "application"}),
        ("rogue_api", {"domain", "application"}),
    ],
)
def test_the_filters_each_condition_takes(condition: str, allowed: set[str]) -> None:
    values = {
        "attack_type": ["sqli"],
        "application": [1],
        "ip": ["203.0.113.7"],
        "domain": ["shop.example.com"],
        "response_status": [200],
        "target": ["database"],
        "user_role": ["administrator"],
        "uri": ["shop.example.com/login"],
    }
    threshold = {"count": 1, "period": 60} if condition.endswith("_exceeded") else None
    for filter_id in FilterId:
        raw = body(
            condition=condition,
            threshold=threshold,
            filters=[{"id": filter_id.value, "values": values[filter_id.value]}],
        )
        accepted = bad_field_or_none(raw) is None
        assert accepted == (filter_id.value in allowed), filter_id


def bad_field_or_none(raw: dict[str, Any]) -> str | None:
    try:
        spec_of(raw)
    except (ValidationError, InvalidTrigger):
        return "refused"
    return None


def test_filter_values_are_kept_in_the_form_they_are_compared() -> None:
    spec = spec_of(
        body(
            filters=[
                {"id": "attack_type", "values": ["SQLi", "sqli", "XSS"]},
                {"id": "ip", "values": ["2001:DB8:0::1", "::ffff:192.0.2.9"]},
                {"id": "domain", "values": ["Shop.Example.com."]},
                {"id": "uri", "values": ["https://Shop.example.com/Login", "/api"]},
            ]
        )
    )
    assert [f.values for f in spec.filters] == [
        ("sqli", "xss"),
        ("2001:db8::1", "192.0.2.9"),
        ("shop.example.com",),
        ("shop.example.com/Login", "/api"),
    ]


def test_denylist_ip_makes_a_trigger_count_per_ip() -> None:
    spec = spec_of(body(actions=[NOTIFY, {"id": "denylist_ip", "lock_time": 3600}]))
    assert spec.per_ip
    assert spec.denylist is not None
    assert spec.denylist.id is ActionId.DENYLIST_IP
    assert spec.denylist.lock_time == 3600
    assert spec.as_dict()["actions"][1] == {"id": "denylist_ip", "lock_time": 3600}


def test_event_conditions_take_no_threshold_and_may_have_no_filters() -> None:
    spec = spec_of(body(condition="ip_denylisted", threshold=None, filters=[]))
    assert spec.threshold is None


def test_renaming_keeps_counting_but_a_new_threshold_restarts_it() -> None:
    before = spec_of(body())
    assert not counting_changed(before, spec_of(body(name="renamed", comment="why")))
    assert counting_changed(before, spec_of(body(threshold={"count": 5, "period": 60})))
    assert counting_changed(before, spec_of(body(filters=[])))
    assert counting_changed(
        before, spec_of(body(actions=[NOTIFY, {"id": "denylist_ip", "lock_time": 60}]))
    )


def test_a_definition_reads_back_from_the_store_as_saved() -> None:
    spec = spec_of(
        body(
            comment="why",
            filters=[{"id": "response_status", "operator": "ne", "values": [404, 200]}],
            actions=[NOTIFY, {"id": "denylist_ip", "lock_time": 60}],
        )
    )
    again = stored_spec(
        name=spec.name,
        comment=spec.comment,
        enabled=spec.enabled,
        condition=spec.condition.value,
        definition=stored_definition(spec),
    )
    assert again == spec
