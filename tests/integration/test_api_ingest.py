"""Ingestion as a sensor meets it: bad bodies named by field, counts, and what gets delivered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import MakeReceiver, Running, StartTocsin, hit
from tocsin.receiver import Receiver

JSON_HEADERS = {"Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, field: str) -> None:
    """The one error shape of the API, naming the offending field."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"], body
    assert set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["field"] == field, body
    assert body["error"]["message"]


def notifications(receiver: Receiver) -> list[dict[str, Any]]:
    """Every notification the receiver got, in arrival order."""
    found: list[dict[str, Any]] = []
    for request in list(receiver.requests):
        found.extend(orjson.loads(request.body))
    return found


def hits_received(receiver: Receiver) -> list[dict[str, Any]]:
    return [item["details"]["hit"] for item in notifications(receiver)]


async def settle(tocsin: Running, integration: dict[str, Any]) -> list[dict[str, Any]]:
    """Wait until every delivery in the integration's log is delivered; return the log.

    Call it once a later report has arrived: the outbox is claimed oldest first, so by
    then everything reported earlier is in the log.
    """
    where = f"/api/v1/integrations/{integration['id']}/deliveries"
    deadline = time.monotonic() + 10
    while True:
        items: list[dict[str, Any]] = (await tocsin.api.get(where)).json()["items"]
        if all(item["status"] == "delivered" for item in items):
            return items
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.05)


def vuln_titles(receiver: Receiver) -> set[str]:
    return {item["details"]["vuln"]["title"] for item in notifications(receiver)}


def vuln(title: Any, threat: Any, **fields: Any) -> dict[str, Any]:
    base = {
        "id": None,
        "title": title,
        "domain": "shop.example.com",
        "path": "/login",
        "method": "POST",
        "parameter": "POST_password",
        "type": "sqli",
        "discovered_by": "scanner",
        "threat": threat,
    }
    return base | fields


# --------------------------------------------------------------------------- bad bodies

BAD_HITS = [
    pytest.param(b"not json", 400, "body", id="not-json"),
    pytest.param(b"", 400, "body", id="empty"),
    pytest.param(b"[{]", 400, "body", id="broken-json"),
    pytest.param(b"NaN", 400, "body", id="nan"),
    pytest.param(orjson.dumps(hit()), 422, "body", id="object-not-array"),
    pytest.param(b'"hits"', 422, "body", id="string"),
    pytest.param(b"null", 422, "body", id="null"),
    pytest.param(b"[1]", 422, "[0]", id="element-number"),
    pytest.param(orjson.dumps([hit(), "hit"]), 422, "[1]", id="element-string"),
    pytest.param(orjson.dumps([hit(), [hit()]]), 422, "[1]", id="element-array"),
    pytest.param(
        orjson.dumps([hit(), hit(), hit(request_time="x")]),
        422,
        "[2].request_time",
        id="request-time-string",
    ),
    pytest.param(orjson.dumps([hit(request_time=1.5)]), 422, "[0].request_time", id="time-float"),
    pytest.param(orjson.dumps([hit(payloads="x")]), 422, "[0].payloads", id="payloads-string"),
    pytest.param(orjson.dumps([hit(point={"a": 1})]), 422, "[0].point", id="point-object"),
    pytest.param(
        orjson.dumps([hit(experimental="yes")]), 422, "[0].experimental", id="experimental-str"
    ),
    pytest.param(
        orjson.dumps([hit(experimental=1)]), 422, "[0].experimental", id="experimental-number"
    ),
    pytest.param(
        orjson.dumps([hit(response_status="200")]), 422, "[0].response_status", id="status-str"
    ),
    pytest.param(orjson.dumps([hit(remote_port=True)]), 422, "[0].remote_port", id="port-bool"),
    pytest.param(orjson.dumps([hit(domain=5)]), 422, "[0].domain", id="domain-number"),
    pytest.param(orjson.dumps([hit(type=["sqli"])]), 422, "[0].type", id="type-array"),
    pytest.param(orjson.dumps([hit(probability="high")]), 422, "[0].probability", id="prob-str"),
    pytest.param(orjson.dumps([hit(id="abc")]), 422, "[0].id", id="id-string"),
    pytest.param(
        orjson.dumps([{"host": {"name": "x"}, "type": "xss"}]), 422, "[0].host", id="host-object"
    ),
]


@pytest.mark.parametrize(("content", "status", "field"), BAD_HITS)
async def test_bad_hits_are_refused_naming_the_field(
    tocsin: Running, content: bytes, status: int, field: str
) -> None:
    response = await tocsin.api.post("/api/v1/hits", content=content, headers=JSON_HEADERS)
    assert_error(response, status, field)


BAD_VULNS = [
    pytest.param(b"{not json", 400, "body", id="not-json"),
    pytest.param(b"", 400, "body", id="empty"),
    pytest.param(b'"vuln"', 422, "body", id="string"),
    pytest.param(b"7", 422, "body", id="number"),
    pytest.param(b"null", 422, "body", id="null"),
    pytest.param(b"[1]", 422, "[0]", id="element-number"),
    pytest.param(orjson.dumps(vuln("x", "Critical")), 422, "threat", id="threat-critical"),
    pytest.param(orjson.dumps(vuln("x", 3)), 422, "threat", id="threat-number"),
    pytest.param(
        orjson.dumps([vuln("a", "High"), vuln("b", "Critical")]),
        422,
        "[1].threat",
        id="threat-critical-in-array",
    ),
    pytest.param(orjson.dumps(vuln(5, "High")), 422, "title", id="title-number"),
    pytest.param(orjson.dumps([vuln(["t"], "High")]), 422, "[0].title", id="title-array-in-array"),
    pytest.param(orjson.dumps(vuln("x", "Low", domain=1)), 422, "domain", id="domain-number"),
    pytest.param(orjson.dumps(vuln("x", "Low", id=1.5)), 422, "id", id="id-float"),
    pytest.param(orjson.dumps(vuln("x", "Low", id=True)), 422, "id", id="id-bool"),
    pytest.param(orjson.dumps(vuln("x", "Low", method={})), 422, "method", id="method-object"),
]


@pytest.mark.parametrize(("content", "status", "field"), BAD_VULNS)
async def test_bad_vulnerabilities_are_refused_naming_the_field(
    tocsin: Running, content: bytes, status: int, field: str
) -> None:
    response = await tocsin.api.post(
        "/api/v1/vulnerabilities", content=content, headers=JSON_HEADERS
    )
    assert_error(response, status, field)


async def test_a_body_over_the_limit_is_refused(start_tocsin: StartTocsin) -> None:
    tocsin = await start_tocsin(max_body_bytes=4096)
    big = [hit(path=f"/p{i}") for i in range(100)]
    response = await tocsin.api.post("/api/v1/hits", json=big)
    assert_error(response, 413, "body")


async def test_a_refused_batch_stores_nothing(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    await tocsin.create_integration(receiver.url, ca_certificate=ca_pem)
    refused = [hit(path="/refused-0"), hit(path="/refused-1", request_time="yesterday")]
    response = await tocsin.api.post("/api/v1/hits", json=refused)
    assert_error(response, 422, "[1].request_time")
    await tocsin.report_hits([hit(path="/after")])
    assert await receiver.until(lambda r: r.count >= 1)
    assert [found["path"] for found in hits_received(receiver)] == ["/after"]


# --------------------------------------------------------------------------- accepted counts


@pytest.mark.parametrize(
    ("path", "body", "count"),
    [
        pytest.param("/api/v1/hits", [hit(path=f"/p{i}") for i in range(3)], 3, id="hits"),
        pytest.param("/api/v1/hits", [], 0, id="no-hits"),
        pytest.param("/api/v1/hits", [hit(experimental=True)], 1, id="experimental-hit"),
        pytest.param("/api/v1/vulnerabilities", vuln("x", "High"), 1, id="one-vuln-object"),
        pytest.param(
            "/api/v1/vulnerabilities", [vuln("a", "High"), vuln("b", None)], 2, id="vuln-array"
        ),
        pytest.param("/api/v1/vulnerabilities", [], 0, id="no-vulns"),
    ],
)
async def test_ingestion_answers_202_with_the_count(
    tocsin: Running, path: str, body: Any, count: int
) -> None:
    response = await tocsin.api.post(path, json=body)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": count}


# --------------------------------------------------------------------------- what is delivered


async def test_experimental_hits_are_accepted_but_never_delivered(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    integration = await tocsin.create_integration(receiver.url, ca_certificate=ca_pem)
    await tocsin.report_hits([hit(path="/custom-regex", experimental=True)])
    await tocsin.report_hits(
        [hit(path="/mixed-experimental", experimental=True), hit(path="/mixed-real")]
    )
    await tocsin.report_hits([hit(path="/real", experimental=False)])
    assert await receiver.until(lambda r: "/real" in [h["path"] for h in hits_received(r)])
    log = await settle(tocsin, integration)
    paths = sorted(found["path"] for found in hits_received(receiver))
    assert paths == ["/mixed-real", "/real"]
    assert sum(item["notifications"] for item in log) == 2


async def test_of_identical_hits_only_the_first_five_notify(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    integration = await tocsin.create_integration(receiver.url, ca_certificate=ca_pem)
    same = hit(path="/login", parameter="POST_user", remote_addr4="8.8.8.8")
    await tocsin.report_hits([same] * 4)
    await tocsin.report_hits([same] * 3)
    # The same attack from another source IP is not identical: it notifies.
    await tocsin.report_hits([same | {"remote_addr4": "1.1.1.1"}])
    assert await receiver.until(
        lambda r: "1.1.1.1" in [h["remote_addr4"] for h in hits_received(r)]
    )
    log = await settle(tocsin, integration)
    sources = sorted(found["remote_addr4"] for found in hits_received(receiver))
    assert sources == ["1.1.1.1"] + ["8.8.8.8"] * 5
    assert sum(item["notifications"] for item in log) == 6


async def test_vulnerabilities_go_to_integrations_wanting_their_risk(
    tocsin: Running, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    wanted = {
        ("high",): {"sqli-high"},
        ("low",): {"info-low"},
        ("high", "medium"): {"sqli-high", "xss-medium"},
        ("high", "medium", "low"): {"sqli-high", "xss-medium", "info-low"},
    }
    receivers: dict[tuple[str, ...], Receiver] = {}
    integrations: dict[tuple[str, ...], dict[str, Any]] = {}
    for levels in wanted:
        receivers[levels] = make_receiver()
        integrations[levels] = await tocsin.create_integration(
            receivers[levels].url,
            ca_certificate=ca_pem,
            events=["vuln"],
            vuln_risk_levels=list(levels),
        )
    body = [vuln("sqli-high", "High"), vuln("xss-medium", "Medium"), vuln("info-low", "Low")]
    response = await tocsin.api.post("/api/v1/vulnerabilities", json=body)
    assert response.status_code == 202, response.text
    for levels, titles in wanted.items():
        receiver = receivers[levels]
        assert await receiver.until(lambda r, titles=titles: vuln_titles(r) >= titles), levels
        # Whatever one integration is sent of one report travels together, so by now
        # anything it should not have had would be here too.
        assert vuln_titles(receiver) == titles, levels
        assert len(notifications(receiver)) == len(titles)
        log = await settle(tocsin, integrations[levels])
        assert sum(item["notifications"] for item in log) == len(titles)


async def test_vulnerability_notification_carries_the_reported_fields(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, events=["vuln"])
    response = await tocsin.api.post(
        "/api/v1/vulnerabilities", json=vuln("SQL injection", "High", id=4242)
    )
    assert response.json() == {"accepted": 1}
    assert await receiver.until(lambda r: r.count >= 1)
    (notification,) = notifications(receiver)
    assert notification["summary"] == "[Wallarm] New vulnerability detected"
    assert notification["details"]["vuln_link"] == "https://my.wallarm.com/object/4242"
    assert notification["details"]["vuln"] == {
        "domain": "shop.example.com",
        "id": 4242,
        "method": "POST",
        "parameter": "POST_password",
        "path": "/login",
        "title": "SQL injection",
        "discovered_by": "scanner",
        "threat": "High",
        "type": "sqli",
    }


async def test_a_hit_with_host_and_no_domain_gets_the_host_as_domain(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    await tocsin.create_integration(receiver.url, ca_certificate=ca_pem)
    from_host = {key: value for key, value in hit(path="/host").items() if key != "domain"}
    from_host["host"] = "api.example.com"
    both = hit(path="/both", host="cdn.example.com", domain="www.example.com")
    await tocsin.report_hits([from_host, both])
    assert await receiver.until(lambda r: len(hits_received(r)) >= 2)
    delivered = {found["path"]: found for found in hits_received(receiver)}
    assert delivered["/host"]["domain"] == "api.example.com"
    assert delivered["/host"]["host"] == "api.example.com"
    assert delivered["/both"]["domain"] == "www.example.com"
    assert delivered["/both"]["host"] == "cdn.example.com"
