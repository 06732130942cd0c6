"""Triggers evaluated by a running tocsin (SQLite and PostgreSQL): what reaches the
integrations they name, through the outbox like any notification (SPEC 2.4, 5)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import Running, ShiftedClock, StartTocsin, hit
from tests.golden import vector
from tocsin.receiver import Receiver

NOTIFY_KEYS = ("summary", "details")


def received(receiver: Receiver, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        item
        for request in list(receiver.requests)
        for item in orjson.loads(request.body)
        if kind is None or item["details"]["notification_type"] == kind
    ]


async def soc(tocsin: Running, receiver: Receiver, ca_pem: str, **fields: Any) -> int:
    """An integration subscribed to nothing the tests report: it gets trigger notifications."""
    body = {"events": ["scope"], "ca_certificate": ca_pem} | fields
    created = await tocsin.create_integration(receiver.url, **body)
    hook: int = created["id"]
    return hook


async def trigger(tocsin: Running, hook: int | None, **definition: Any) -> dict[str, Any]:
    actions = definition.pop("actions", [])
    if hook is not None:
        actions = [{"id": "send_notification", "integration_ids": [hook]}, *actions]
    body = {"name": "t", "actions": actions} | definition
    response = await tocsin.api.post("/api/v1/triggers", json=body)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


async def mark(tocsin: Running, receiver: Receiver, hook: int, n: int) -> None:
    """Wait until every event stored so far is evaluated: an ip_denylisted trigger on an
    application of its own notifies about a denylisting stored after them."""
    if n == 1:
        await tocsin.api.post("/api/v1/applications", json={"id": 999, "name": "marker"})
        await trigger(
            tocsin,
            hook,
            name="marker",
            condition="ip_denylisted",
            filters=[{"id": "application", "values": [999]}],
        )
    body = {"ip": f"192.0.2.{n}", "lock_time": 600, "application": 999, "reason": "mark"}
    assert (await tocsin.api.post("/api/v1/denylist", json=body)).status_code == 201
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        marks = [m for m in received(receiver, "ip_blocked") if m["details"]["reason"] == "mark"]
        if len(marks) >= n:
            return
        await asyncio.sleep(0.02)
    pytest.fail("the marker did not arrive: evaluation is not running")


async def post_hits(tocsin: Running, hits: list[dict[str, Any]]) -> None:
    for item in hits:  # one request each: stored one after another, as a sensor sends them
        await tocsin.report_hits([item])


async def test_hits_exceeded_sqli(tocsin: Running, receiver: Receiver, ca_pem: str) -> None:
    hook = await soc(tocsin, receiver, ca_pem)
    await trigger(
        tocsin,
        hook,
        name="SQLi on the shop",
        condition="hits_exceeded",
        filters=[{"id": "attack_type", "operator": "eq", "values": ["sqli"]}],
        threshold={"count": 10, "period": 60},
    )
    await post_hits(tocsin, [hit(type="xss", path=f"/x{n}") for n in range(30)])
    await post_hits(tocsin, [hit(path=f"/s{n}") for n in range(10)])
    await mark(tocsin, receiver, hook, 1)
    assert received(receiver, "hits_exceeded") == []
    await post_hits(tocsin, [hit(path="/11th")])
    await post_hits(tocsin, [hit(path=f"/more{n}") for n in range(15)])
    await mark(tocsin, receiver, hook, 2)
    [fired] = received(receiver, "hits_exceeded")
    assert (
        fired["summary"] == "[Wallarm] Trigger: The number of detected hits exceeded the threshold"
    )
    assert fired["details"] == {
        "client_name": "TestCompany",
        "cloud": "EU",
        "notification_type": "hits_exceeded",
        "trigger_name": "SQLi on the shop",
        "threshold": 10,
        "period": "1 minute",
        "observed": 11,
    }
    lines = fired["description"].splitlines()
    assert "The number of detected hits exceeded 10 in 1 minute." in lines
    assert 'This notification was triggered by the "SQLi on the shop" trigger.' in lines
    assert "Attack type is sqli." in lines


async def test_attacks_and_incidents(tocsin: Running, receiver: Receiver, ca_pem: str) -> None:
    hook = await soc(tocsin, receiver, ca_pem)
    await trigger(
        tocsin,
        hook,
        name="attacks",
        condition="attacks_exceeded",
        threshold={"count": 1, "period": 3600},
    )
    await trigger(
        tocsin,
        hook,
        name="incidents",
        condition="incidents_exceeded",
        threshold={"count": 1, "period": 3600},
    )
    vuln = {
        "type": "sqli",
        "domain": "shop.example.com",
        "path": "/login",
        "parameter": "POST_user",
    }
    response = await tocsin.api.post(
        "/api/v1/vulnerabilities", json=vuln | {"title": "SQLi", "threat": "High"}
    )
    assert response.status_code == 202, response.text
    # 100 hits of one attack: one attack, and one incident (it matches the vulnerability).
    await tocsin.report_hits([hit(path="/login", parameter="POST_user") for _ in range(100)])
    await mark(tocsin, receiver, hook, 1)
    assert received(receiver, "attacks_exceeded") == []
    assert received(receiver, "incidents_exceeded") == []
    # Another attack, flagged as an incident: the second attack and the second incident.
    await tocsin.report_hits([hit(path="/cart", incident=True)])
    await mark(tocsin, receiver, hook, 2)
    assert [n["details"]["observed"] for n in received(receiver, "attacks_exceeded")] == [2]
    assert [n["details"]["observed"] for n in received(receiver, "incidents_exceeded")] == [2]


@pytest.fixture
def past_receiver(server_tls: Any) -> Iterator[Receiver]:
    """A receiver that does not check webhook timestamps: the vector's time is 2021."""
    receiver = Receiver(tls=server_tls).start()
    yield receiver
    receiver.stop()


async def test_ip_blocked_vector(
    start_tocsin: StartTocsin, past_receiver: Receiver, ca_pem: str
) -> None:
    data = vector("ip_blocked.json")
    clock = ShiftedClock()
    clock.advance(1623000000 - time.time())  # 2021-06-06, before the vector's expire_at
    tocsin = await start_tocsin(
        clock=clock,
        client_name=data["settings"]["client_name"],
        cloud=data["settings"]["cloud"],
        partner_name=data["settings"]["partner_name"],
    )
    hook = await soc(tocsin, past_receiver, ca_pem)
    given = data["trigger"]
    await trigger(
        tocsin, hook, name=given["name"], condition=given["condition"], filters=given["filters"]
    )
    entry = data["input"]
    created = await tocsin.api.post(
        "/api/v1/applications", json={"id": 8, "name": entry["application"]}
    )
    assert created.status_code == 201, created.text
    body = {
        "ip": entry["ip"],
        "reason": entry["reason"],
        "expire_at": entry["expire_at"],
        "application": 8,
    }
    response = await tocsin.api.post("/api/v1/denylist", json=body)
    assert response.status_code == 201, response.text
    deadline = time.monotonic() + 20
    while not received(past_receiver, "ip_blocked") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    [notification] = received(past_receiver, "ip_blocked")
    assert {key: notification[key] for key in NOTIFY_KEYS} == data["expected"]
    lines = notification["description"].splitlines()
    for line in data["expected_description_contains"]:
        assert line in lines


async def test_user_created_with_a_role_filter(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    hook = await soc(tocsin, receiver, ca_pem)
    await trigger(
        tocsin,
        hook,
        name="new administrators",
        condition="user_created",
        filters=[{"id": "user_role", "operator": "eq", "values": ["administrator"]}],
    )
    for email, role in (("ana@example.com", "analyst"), ("ada@example.com", "administrator")):
        made = await tocsin.api.post(
            "/api/v1/users", json={"email": email, "name": email[:3], "role": role}
        )
        assert made.status_code == 201, made.text
    await mark(tocsin, receiver, hook, 1)
    [fired] = received(receiver, "create_user")
    assert fired["summary"] == "[Wallarm] Trigger: New user was added to the company account"
    assert fired["details"]["user"]["email"] == "ada@example.com"
    assert (
        "A new user ada <ada@example.com> with the role Administrator was added to the "
        "company account by Administrator <admin@localhost>."
    ) in fired["description"].splitlines()


async def test_denylist_ip_denylists_each_crossing_ip_once(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    hook = await soc(tocsin, receiver, ca_pem)
    made = await trigger(
        tocsin,
        hook,
        name="noisy sources",
        condition="hits_exceeded",
        threshold={"count": 3, "period": 3600},
        actions=[{"id": "denylist_ip", "lock_time": 1800}],
    )
    noisy = ["203.0.113.1", "203.0.113.2"]
    hits = [hit(remote_addr4=ip, path=f"/{n}") for n in range(10) for ip in noisy]
    hits += [hit(remote_addr4="203.0.113.3", path=f"/q{n}") for n in range(3)]  # under: 3
    await post_hits(tocsin, hits)
    await mark(tocsin, receiver, hook, 1)
    entries = (await tocsin.api.get("/api/v1/denylist")).json()
    by_trigger = [e for e in entries if e["trigger_id"] == made["id"]]
    assert sorted(e["ip"] for e in by_trigger) == noisy
    for entry in by_trigger:
        assert entry["expire_at"] - entry["created_at"] == pytest.approx(1800)
        assert entry["created_by"] == f'trigger "noisy sources" (id {made["id"]})'
    fired = received(receiver, "hits_exceeded")
    assert sorted(n["details"]["ip"] for n in fired) == noisy


async def test_api_changes_and_rogue_apis(tocsin: Running, receiver: Receiver, ca_pem: str) -> None:
    hook = await soc(tocsin, receiver, ca_pem)
    await trigger(
        tocsin,
        hook,
        name="api",
        condition="api_changes",
        filters=[{"id": "domain", "values": ["api.example.com"]}],
    )
    await trigger(tocsin, hook, name="rogue", condition="rogue_api")
    report = {
        "changes": [
            {"change": "new", "method": "GET", "path": "/v1/users", "domain": "api.example.com"},
            {"change": "unused", "method": "POST", "path": "/v1/old", "domain": "api.example.com"},
            {"change": "new", "method": "GET", "path": "/v1/x", "domain": "other.example.com"},
        ],
        "rogue_apis": [
            {"kind": "shadow", "method": "GET", "path": "/internal", "domain": "api.example.com"}
        ],
    }
    assert (await tocsin.api.post("/api/v1/api-changes", json=report)).status_code == 202
    await mark(tocsin, receiver, hook, 1)
    [changes] = received(receiver, "api_structure_changed")
    lines = changes["description"].splitlines()
    assert "New endpoint: GET api.example.com/v1/users" in lines
    assert "Unused endpoint: POST api.example.com/v1/old" in lines
    assert len(changes["details"]["changes"]) == 2
    [rogue] = received(receiver, "rogue_api_detected")
    assert rogue["details"]["api"]["kind"] == "shadow"


async def test_a_disabled_integration_gets_nothing(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    hook = await soc(tocsin, receiver, ca_pem)
    off = await soc(tocsin, receiver, ca_pem, name="off")
    await trigger(
        tocsin,
        off,
        name="to nobody",
        condition="hits_exceeded",
        threshold={"count": 1, "period": 60},
    )
    assert (await tocsin.api.post(f"/api/v1/integrations/{off}/disable")).status_code == 200
    await post_hits(tocsin, [hit(path="/a"), hit(path="/b")])
    await mark(tocsin, receiver, hook, 1)
    assert received(receiver, "hits_exceeded") == []
