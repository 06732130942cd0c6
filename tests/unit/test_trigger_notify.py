"""Trigger notifications (SPEC 2.4) and the golden vector ip_blocked.json."""

from __future__ import annotations

from typing import Any

import pytest

from tests.golden import vector
from tocsin.api.schemas import TriggerIn
from tocsin.formats import NotifySettings
from tocsin.triggers import notify
from tocsin.triggers.definitions import TriggerSpec, check

SETTINGS = NotifySettings(client_name="TestCompany", cloud="EU", console_url="", partner_name="P")


def spec(**raw: Any) -> TriggerSpec:
    base = {"name": "T", "actions": [{"id": "send_notification", "integration_ids": [1]}]}
    return check(TriggerIn.model_validate(base | raw).to_spec())


def test_ip_blocked_vector() -> None:
    data = vector("ip_blocked.json")
    given = data["trigger"] | {"actions": [{"id": "send_notification", "integration_ids": [1]}]}
    entry = data["input"]
    notification = notify.ip_blocked_notification(
        spec(**given),
        ip=entry["ip"],
        reason=entry["reason"],
        expire_at=entry["expire_at"],
        application=entry["application"],
        settings=NotifySettings(**data["settings"]),
    )
    assert notification["summary"] == data["expected"]["summary"]
    assert notification["details"] == data["expected"]["details"]
    lines = notification["description"].splitlines()
    for line in data["expected_description_contains"]:
        assert line in lines


def test_expire_at_reads_at_the_offset_it_was_given_in() -> None:
    # 2021-06-09 23:27:15 UTC, given as +03:00.
    assert notify.expire_text(1623281235, 3 * 3600) == "2021-06-10 02:27:15 +0300"
    assert notify.expire_text(1623281235) == "2021-06-09 23:27:15 +0000"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1 second"),
        (90, "90 seconds"),
        (60, "1 minute"),
        (120, "2 minutes"),
        (3600, "1 hour"),
        (5400, "90 minutes"),
        (86400, "1 day"),
        (31 * 86400, "31 days"),
        (7200, "2 hours"),
    ],
)
def test_periods_read_as_people_write_them(seconds: int, text: str) -> None:
    assert notify.period_text(seconds) == text


def test_hits_exceeded_notification() -> None:
    trigger = spec(
        name="SQLi on the shop",
        condition="hits_exceeded",
        threshold={"count": 10, "period": 60},
        filters=[
            {"id": "attack_type", "values": ["sqli"]},
            {"id": "domain", "operator": "ne", "values": ["a.example.com", "b.example.com"]},
            {"id": "application", "values": [8, 9]},
        ],
    )
    notification = notify.threshold_notification(
        trigger, observed=11, ip=None, settings=SETTINGS, application_names={8: "Shop"}
    )
    assert (
        notification["summary"]
        == "[Wallarm] Trigger: The number of detected hits exceeded the threshold"
    )
    assert notification["details"] == {
        "client_name": "TestCompany",
        "cloud": "EU",
        "notification_type": "hits_exceeded",
        "trigger_name": "SQLi on the shop",
        "threshold": 10,
        "period": "1 minute",
        "observed": 11,
    }
    assert notification["description"] == (
        "Notification type: hits_exceeded\n"
        "\n"
        "The number of detected hits exceeded 10 in 1 minute.\n"
        "\n"
        'This notification was triggered by the "SQLi on the shop" trigger.\n'
        "\n"
        "Additional trigger's clauses:\n"
        "Attack type is sqli.\n"
        "Domain is not a.example.com or b.example.com.\n"
        "Application is Shop (id 8) or 9.\n"
        "\n"
        "\n"
        "Client: TestCompany\n"
        "Cloud: EU\n"
    )


@pytest.mark.parametrize(
    ("condition", "kind", "headline", "sentence"),
    [
        (
            "attacks_exceeded",
            "attacks_exceeded",
            "The number of detected attacks exceeded the threshold",
            "The number of detected attacks exceeded 3 in 1 hour.",
        ),
        (
            "incidents_exceeded",
            "incidents_exceeded",
            "The number of incidents exceeded the threshold",
            "The number of incidents exceeded 3 in 1 hour.",
        ),
    ],
)
def test_attacks_and_incidents_notifications(
    condition: str, kind: str, headline: str, sentence: str
) -> None:
    trigger = spec(condition=condition, threshold={"count": 3, "period": 3600})
    notification = notify.threshold_notification(
        trigger, observed=4, ip="203.0.113.7", settings=SETTINGS
    )
    assert notification["summary"] == f"[Wallarm] Trigger: {headline}"
    assert notification["details"]["notification_type"] == kind
    assert notification["details"]["ip"] == "203.0.113.7"
    lines = notification["description"].splitlines()
    assert sentence in lines
    assert "They came from the IP address 203.0.113.7." in lines
    assert "Additional trigger's clauses:" not in lines


def test_create_user_notification() -> None:
    trigger = spec(
        name="New admins",
        condition="user_created",
        filters=[{"id": "user_role", "values": ["administrator"]}],
    )
    user = {"email": "alice@example.com", "name": "Alice", "role": "administrator"}
    notification = notify.create_user_notification(
        trigger, user=user, actor="Administrator <admin@localhost>", settings=SETTINGS
    )
    assert notification["summary"] == "[Wallarm] Trigger: New user was added to the company account"
    assert notification["details"]["notification_type"] == "create_user"
    assert notification["details"]["user"] == user
    assert (
        "A new user Alice <alice@example.com> with the role Administrator was added to the "
        "company account by Administrator <admin@localhost>."
    ) in notification["description"].splitlines()
    assert "User role is administrator." in notification["description"].splitlines()


def test_api_changes_notification_has_a_line_per_change() -> None:
    trigger = spec(condition="api_changes")
    changes = [
        {"method": "GET", "domain": "api.example.com", "path": "/v1/users", "change": "new"},
        {"method": "POST", "domain": "api.example.com", "path": "/v1/orders", "change": "unused"},
    ]
    notification = notify.api_changes_notification(trigger, changes=changes, settings=SETTINGS)
    assert notification["summary"] == "[Wallarm] Trigger: Changes in API were discovered"
    assert notification["details"]["notification_type"] == "api_structure_changed"
    assert notification["details"]["changes"] == changes
    lines = notification["description"].splitlines()
    assert "New endpoint: GET api.example.com/v1/users" in lines
    assert "Unused endpoint: POST api.example.com/v1/orders" in lines


def test_rogue_api_notification() -> None:
    trigger = spec(condition="rogue_api")
    api = {"method": "GET", "domain": "api.example.com", "path": "/internal", "kind": "shadow"}
    notification = notify.rogue_api_notification(trigger, api=api, settings=SETTINGS)
    assert notification["summary"] == "[Wallarm] Trigger: New rogue API was detected"
    assert notification["details"]["notification_type"] == "rogue_api_detected"
    assert notification["details"]["api"] == api
    assert (
        "GET api.example.com/internal was detected as a shadow API "
        "(in use but not in the API specification)." in notification["description"].splitlines()
    )


def test_reported_text_cannot_add_lines_to_a_description() -> None:
    trigger = spec(condition="ip_denylisted")
    notification = notify.ip_blocked_notification(
        trigger,
        ip="1.1.1.1",
        reason="bad\nClient: Someone else",
        expire_at="x",
        application=None,
        settings=SETTINGS,
    )
    assert notification["description"].splitlines().count("Client: TestCompany") == 1
    assert not any(
        line.startswith("Client: Someone") for line in notification["description"].splitlines()
    )
    assert (
        notification["details"]["reason"] == "bad\nClient: Someone else"
    )  # the data stays as given
