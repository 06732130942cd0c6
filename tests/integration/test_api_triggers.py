"""/api/v1/triggers on SQLite and PostgreSQL: definitions saved and shown as given, 422s
naming the field, and each change a system event (SPEC 2.5, 5)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from tests.conftest import Running, StartTocsin
from tests.integration.test_roles import OPERATOR_TOKEN, bearer, other_client
from tocsin.receiver import Receiver

SQLI = {
    "name": "SQL injections on the shop",
    "comment": "runbook 12",
    "condition": "hits_exceeded",
    "filters": [{"id": "attack_type", "operator": "eq", "values": ["sqli"]}],
    "threshold": {"count": 10, "period": 60, "operator": "gt"},
}


async def integration(tocsin: Running, receiver: Receiver, ca_pem: str, **fields: Any) -> int:
    created = await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, **fields)
    integration_id: int = created["id"]
    return integration_id


def sqli(integration_id: int, **changes: Any) -> dict[str, Any]:
    actions = [{"id": "send_notification", "integration_ids": [integration_id]}]
    return SQLI | {"actions": actions} | changes


async def test_a_trigger_reads_back_as_it_was_given(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    hook = await integration(tocsin, receiver, ca_pem)
    response = await tocsin.api.post("/api/v1/triggers", json=sqli(hook))
    assert response.status_code == 201, response.text
    created = response.json()
    expected = sqli(hook) | {"enabled": True, "id": created["id"]}
    assert {key: created[key] for key in expected} == expected
    listed = (await tocsin.api.get("/api/v1/triggers")).json()
    assert [item["id"] for item in listed] == [created["id"]]
    one = (await tocsin.api.get(f"/api/v1/triggers/{created['id']}")).json()
    assert one == created


async def test_put_patch_enable_disable_delete(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    hook = await integration(tocsin, receiver, ca_pem)
    trigger_id = (await tocsin.api.post("/api/v1/triggers", json=sqli(hook))).json()["id"]
    where = f"/api/v1/triggers/{trigger_id}"
    put = await tocsin.api.put(
        where, json=sqli(hook, name="renamed", threshold=None, condition="user_created", filters=[])
    )
    assert put.status_code == 200, put.text
    assert (put.json()["condition"], put.json()["threshold"]) == ("user_created", None)
    patched = await tocsin.api.patch(where, json={"comment": "why"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["comment"] == "why"
    assert patched.json()["name"] == "renamed"
    assert (await tocsin.api.post(f"{where}/disable")).json()["enabled"] is False
    assert (await tocsin.api.get(where)).json()["enabled"] is False
    assert (await tocsin.api.post(f"{where}/enable")).json()["enabled"] is True
    assert (await tocsin.api.delete(where)).status_code == 204
    assert (await tocsin.api.get(where)).status_code == 404
    assert (await tocsin.api.delete(where)).status_code == 404
    assert (await tocsin.api.post(f"{where}/enable")).status_code == 404


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"condition": "hits_exceded"}, "condition"),
        ({"filters": [{"id": "user_role", "values": ["analyst"]}]}, "filters[0].id"),
        ({"threshold": None}, "threshold"),
        ({"threshold": {"count": 0, "period": 60}}, "threshold.count"),
        ({"threshold": {"count": 1, "period": 40 * 86400}}, "threshold.period"),
        ({"actions": [{"id": "denylist_ip"}]}, "actions[0].lock_time"),
        (
            {"actions": [{"id": "send_notification", "integration_ids": [987654]}]},
            "actions[0].integration_ids[0]",
        ),
        ({"name": 5}, "name"),
    ],
)
async def test_a_bad_trigger_is_a_422_naming_the_field(
    tocsin: Running, receiver: Receiver, ca_pem: str, changes: dict[str, Any], field: str
) -> None:
    hook = await integration(tocsin, receiver, ca_pem)
    response = await tocsin.api.post("/api/v1/triggers", json=sqli(hook) | changes)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert (await tocsin.api.get("/api/v1/triggers")).json() == []
    trigger_id = (await tocsin.api.post("/api/v1/triggers", json=sqli(hook))).json()["id"]
    patched = await tocsin.api.patch(f"/api/v1/triggers/{trigger_id}", json=changes)
    assert patched.status_code == 422, patched.text
    assert patched.json()["error"]["field"] == field


async def test_another_clients_integration_cannot_be_named(
    start_tocsin: StartTocsin, receiver: Receiver
) -> None:
    """A trigger's integration ids are the client's own: another client's is unknown."""
    tocsin = await start_tocsin(operator_token=OPERATOR_TOKEN)
    other = await other_client(tocsin)
    theirs = await tocsin.api.post(
        "/api/v1/integrations",
        json={"name": "theirs", "url": receiver.url, "events": ["hit"]},
        headers=bearer(other["token"]),
    )
    assert theirs.status_code == 201, theirs.text
    response = await tocsin.api.post("/api/v1/triggers", json=sqli(theirs.json()["id"]))
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "actions[0].integration_ids[0]"


async def notifications(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = [item for request in receiver.requests for item in orjson.loads(request.body)]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    pytest.fail(f"{count} notifications expected, got {len(found)}")


async def test_trigger_changes_are_system_events(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    hook = await integration(tocsin, receiver, ca_pem, events=["system"])
    trigger_id = (await tocsin.api.post("/api/v1/triggers", json=sqli(hook))).json()["id"]
    await tocsin.api.patch(f"/api/v1/triggers/{trigger_id}", json={"comment": "x"})
    await tocsin.api.post(f"/api/v1/triggers/{trigger_id}/disable")
    await tocsin.api.post(f"/api/v1/triggers/{trigger_id}/disable")  # no change: no event
    await tocsin.api.delete(f"/api/v1/triggers/{trigger_id}")
    found = await notifications(receiver, 5)  # integration_created + the four below
    about = [n for n in found if n["details"]["notification_type"].startswith("trigger_")]
    assert [n["details"]["notification_type"] for n in about] == [
        "trigger_created",
        "trigger_changed",
        "trigger_changed",
        "trigger_deleted",
    ]
    assert about[0]["summary"] == "[Wallarm] Trigger was created"
    assert about[0]["details"]["object"] == {
        "type": "trigger",
        "id": trigger_id,
        "name": SQLI["name"],
    }
    sentence = f'Trigger "{SQLI["name"]}" (id {trigger_id}) was disabled by '
    assert sentence in about[2]["description"]
