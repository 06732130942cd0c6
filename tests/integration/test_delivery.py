"""Delivery end to end: a real tocsin on SQLite sending to real HTTPS receivers on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from tests.conftest import MakeReceiver, Running, StartTocsin, hit
from tests.golden import vector
from tocsin.receiver import Received, Receiver, Reply


def notifications(request: Received) -> list[dict[str, Any]]:
    if request.headers.get("Content-Type") == "application/x-ndjson":
        return [orjson.loads(line) for line in request.body.splitlines()]
    items: list[dict[str, Any]] = orjson.loads(request.body)
    return items


def all_notifications(receiver: Receiver) -> list[dict[str, Any]]:
    return [item for request in receiver.requests for item in notifications(request)]


async def deliveries(tocsin: Running, integration_id: int) -> list[dict[str, Any]]:
    response = await tocsin.api.get(f"/api/v1/integrations/{integration_id}/deliveries")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def settled(tocsin: Running, integration_id: int, within: float = 5) -> dict[str, Any]:
    """The integration's only delivery once its last attempt is recorded (the receiver sees
    a request before tocsin writes down the answer)."""
    deadline = time.monotonic() + within
    while True:
        [delivery] = await deliveries(tocsin, integration_id)
        if delivery["status"] in ("delivered", "failed") or time.monotonic() > deadline:
            return delivery
        await asyncio.sleep(0.05)


async def first_error(tocsin: Running, integration_id: int, within: float = 5) -> str | None:
    """The error of the integration's first recorded attempt, waited for."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        log = await deliveries(tocsin, integration_id)
        if log and log[-1]["attempts"]:
            error: str | None = log[-1]["attempts"][0]["error"]
            return error
        await asyncio.sleep(0.05)
    return None


async def test_hits_arrive_in_the_spec_format_with_custom_headers_and_method(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    golden = vector("hit.json")
    await tocsin.create_integration(
        receiver.url,
        ca_certificate=ca_pem,
        method="PUT",
        headers={"Authorization": "Bearer receiver-secret", "X-Team": "blue"},
        events=["hit"],
    )
    sent = [golden["input"] | {"path": f"/news/{n}"} for n in range(3)]
    await tocsin.report_hits(sent)
    assert await receiver.until(lambda r: len(all_notifications(r)) >= 3)

    request = receiver.requests[0]
    assert request.method == "PUT"
    assert request.headers["Authorization"] == "Bearer receiver-secret"
    assert request.headers["X-Team"] == "blue"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("tocsin/")
    assert request.headers["webhook-id"].startswith("msg_")
    assert request.headers["webhook-signature"].startswith("v1,")
    expected = [
        golden["expected"] | {"details": golden["expected"]["details"] | {"hit": h}} for h in sent
    ]
    assert all_notifications(receiver) == expected


async def test_ndjson_format(tocsin: Running, receiver: Receiver, ca_pem: str) -> None:
    await tocsin.create_integration(
        receiver.url, ca_certificate=ca_pem, format="ndjson", events=["hit"]
    )
    await tocsin.report_hits([hit(path=f"/n{n}") for n in range(3)])
    assert await receiver.until(lambda r: len(all_notifications(r)) >= 3)
    request = receiver.requests[0]
    assert request.headers["Content-Type"] == "application/x-ndjson"
    assert request.body.endswith(b"\n")
    paths = [item["details"]["hit"]["path"] for item in all_notifications(receiver)]
    assert paths == ["/n0", "/n1", "/n2"]


async def test_a_user_content_type_overrides_ours(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    await tocsin.create_integration(
        receiver.url, ca_certificate=ca_pem, headers={"content-type": "text/plain"}, events=["hit"]
    )
    await tocsin.report_hits([hit()])
    assert await receiver.until(lambda r: r.count >= 1)
    assert receiver.requests[0].headers["Content-Type"] == "text/plain"


async def test_private_ca_without_certificate_fails_tls_and_verify_off_delivers(
    tocsin: Running, make_receiver: MakeReceiver
) -> None:
    strict = make_receiver()
    relaxed = make_receiver()
    refused = await tocsin.create_integration(strict.url, events=["hit"])
    await tocsin.create_integration(relaxed.url, verify_tls=False, events=["hit"])
    await tocsin.report_hits([hit()])

    assert await relaxed.until(lambda r: r.count >= 1)
    error = await first_error(tocsin, refused["id"])
    assert strict.count == 0
    assert error is not None
    assert "TLS verification failed" in error
    assert "certificate" in error


async def test_two_failures_then_success_follows_the_schedule(
    tocsin: Running, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    receiver = make_receiver(lambda index, _: Reply(status=500) if index < 2 else Reply())
    integration = await tocsin.create_integration(
        receiver.url, ca_certificate=ca_pem, events=["hit"]
    )
    await tocsin.report_hits([hit()])
    assert await receiver.until(lambda r: r.count >= 3, within=15)

    times = [request.at for request in receiver.requests]
    assert len({request.headers["webhook-id"] for request in receiver.requests}) == 1
    # SPEC 4: 1 s after the first failure, 3 s after the second.
    assert times[1] - times[0] >= 0.9
    assert times[2] - times[1] >= 2.9
    assert times[2] - times[0] < 8
    delivery = await settled(tocsin, integration["id"])
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert delivery["attempts"][0]["error"] == "receiver answered HTTP 500 Internal Server Error"


async def test_a_receiver_that_never_answers_is_retried_and_does_not_hold_up_others(
    tocsin: Running, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    silent = make_receiver(lambda _, __: Reply(delay=30))
    healthy = make_receiver()
    stuck = await tocsin.create_integration(
        silent.url, ca_certificate=ca_pem, events=["hit"], request_timeout=1, name="silent"
    )
    await tocsin.create_integration(
        healthy.url, ca_certificate=ca_pem, events=["hit"], name="healthy"
    )

    for n in range(20):
        await tocsin.report_hits([hit(path=f"/h{n}")])
    assert await healthy.until(lambda r: len(all_notifications(r)) >= 20, within=10)
    assert await silent.until(lambda r: r.count >= 5, within=10)  # first attempts, then retries

    log = await deliveries(tocsin, stuck["id"])
    attempts = [attempt for delivery in log for attempt in delivery["attempts"]]
    assert attempts
    assert all("read timeout" in attempt["error"] for attempt in attempts)
    assert {delivery["status"] for delivery in log} <= {"pending", "retrying"}


async def test_response_bodies_are_truncated_in_the_log(
    tocsin: Running, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    receiver = make_receiver(lambda _, __: Reply(body=b"x" * 10_000))
    integration = await tocsin.create_integration(
        receiver.url, ca_certificate=ca_pem, events=["hit"]
    )
    await tocsin.report_hits([hit()])
    assert await receiver.until(lambda r: r.count >= 1)
    for _ in range(100):
        log = await deliveries(tocsin, integration["id"])
        if log and log[0]["status"] == "delivered":
            break
        await receiver.until(lambda _: False, within=0.05)
    assert log[0]["status"] == "delivered"
    assert log[0]["attempts"][0]["response_body"] == "x" * 4096


async def test_auto_disable_after_the_failure_rule_notifies_others_and_stops_sending(
    start_tocsin: StartTocsin, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    tocsin = await start_tocsin(max_batch=1)
    failing = make_receiver(lambda _, __: Reply(status=503))
    watcher = make_receiver()
    doomed = await tocsin.create_integration(
        failing.url, ca_certificate=ca_pem, events=["hit"], name="doomed"
    )
    await tocsin.create_integration(
        watcher.url, ca_certificate=ca_pem, events=["system"], name="watcher"
    )

    await tocsin.report_hits([hit(path=f"/a{n}") for n in range(10)])

    def disabled_notice(receiver: Receiver) -> bool:
        types = [n["details"]["notification_type"] for n in all_notifications(receiver)]
        return "integration_auto_disabled" in types

    assert await watcher.until(disabled_notice, within=15)
    state = (await tocsin.api.get(f"/api/v1/integrations/{doomed['id']}")).json()
    assert state["status"] == "auto_disabled"
    assert state["enabled"] is False
    assert "60%" in state["status_reason"] or "100%" in state["status_reason"]
    notice = next(
        n
        for n in all_notifications(watcher)
        if n["details"]["notification_type"] == "integration_auto_disabled"
    )
    assert notice["details"]["object"] == {
        "type": "integration",
        "id": doomed["id"],
        "name": "doomed",
    }
    assert notice["details"]["actor"] == "system"
    assert notice["details"]["window_seconds"] == 43200
    assert "failed" in notice["description"]

    seen = failing.count
    await tocsin.report_hits([hit(path="/after")])
    await failing.until(lambda r: r.count > seen, within=2)
    assert failing.count == seen
    assert not any(
        n["details"]["notification_type"] == "integration_auto_disabled"
        for n in all_notifications(failing)
    )


async def test_a_receiver_gets_one_request_until_it_answers_then_up_to_max_in_flight(
    start_tocsin: StartTocsin, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    answer = 0.3  # seconds each answer takes
    tocsin = await start_tocsin(max_batch=1, max_in_flight=4)
    receiver = make_receiver(lambda _, __: Reply(delay=answer))
    await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, events=["hit"])
    await tocsin.report_hits([hit(path=f"/q{n}") for n in range(12)])
    assert await receiver.until(lambda r: r.count >= 12)

    arrivals = sorted(request.at for request in receiver.requests)
    assert arrivals[1] - arrivals[0] >= answer  # the first went alone, a probe
    at_once = [sum(1 for a in arrivals if t - answer < a <= t) for t in arrivals]
    assert max(at_once) == 4  # then as many as max_in_flight, never more


async def test_a_quick_integration_claimed_ahead_sends_nothing_new_once_disabled(
    start_tocsin: StartTocsin, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    # Quick answers make the dispatcher claim deliveries ahead (delivery/worker.py);
    # disabling must drop those too, not only cancel what waits in the database.
    tocsin = await start_tocsin(max_batch=1, max_in_flight=1)
    receiver = make_receiver(lambda _, __: Reply(delay=0.05))
    integration = await tocsin.create_integration(
        receiver.url, ca_certificate=ca_pem, events=["hit"]
    )
    await tocsin.report_hits([hit(path=f"/q{n}") for n in range(200)])
    assert await receiver.until(lambda r: r.count >= 10)

    response = await tocsin.api.post(f"/api/v1/integrations/{integration['id']}/disable")
    assert response.json()["status"] == "disabled"
    arrived = receiver.count
    await receiver.until(lambda r: r.count > arrived + 1, within=2)
    assert receiver.count <= arrived + 1  # at most the request already in flight
    log = await deliveries(tocsin, integration["id"])
    assert sum(d["status"] == "cancelled" for d in log) >= len(log) - 2  # newest page


async def test_disable_cancels_queued_deliveries_which_can_be_resent_after_enabling(
    start_tocsin: StartTocsin, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    tocsin = await start_tocsin(max_batch=1, max_in_flight=1)
    receiver = make_receiver(lambda _, __: Reply(delay=0.5))
    integration = await tocsin.create_integration(
        receiver.url, ca_certificate=ca_pem, events=["hit"]
    )
    await tocsin.report_hits([hit(path=f"/q{n}") for n in range(5)])
    assert await receiver.until(lambda r: r.count >= 1)

    response = await tocsin.api.post(f"/api/v1/integrations/{integration['id']}/disable")
    assert response.json()["status"] == "disabled"
    log = await deliveries(tocsin, integration["id"])
    cancelled = [d for d in log if d["status"] == "cancelled"]
    assert len(cancelled) >= 3
    arrived = receiver.count
    await receiver.until(lambda r: r.count > arrived + 1, within=2)
    assert receiver.count <= arrived + 1  # at most the request already in flight

    refused = await tocsin.api.post(f"/api/v1/deliveries/{cancelled[0]['id']}/resend")
    assert refused.status_code == 409
    await tocsin.api.post(f"/api/v1/integrations/{integration['id']}/enable")
    resent = await tocsin.api.post(f"/api/v1/deliveries/{cancelled[0]['id']}/resend")
    assert resent.status_code == 200
    assert resent.json()["status"] == "pending"
    webhook_id = cancelled[0]["webhook_id"]
    assert await receiver.until(
        lambda r: any(q.headers["webhook-id"] == webhook_id for q in r.requests), within=5
    )
