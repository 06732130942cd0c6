"""`tocsin report` against a real `tocsin serve`: every event once, stops where it must.

The report runs as a subprocess, the way an operator runs it; the server is a real
`tocsin serve` subprocess delivering to an HTTPS receiver on loopback, which checks what
the report put in: each hit of the file arrives in exactly one delivery.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, MakeReceiver, hit
from tests.processes import TOCSIN, free_port, serving
from tocsin.receiver import Received, Receiver, Reply

pytestmark = pytest.mark.slow


def write_hits(path: Path, count: int, *, bad: dict[int, str] | None = None) -> None:
    """`count` distinct hits, one per line (line n is hit n-1); `bad` replaces lines."""
    lines = [
        orjson.dumps(hit(path=f"/item/{n}", id=["hits_file", str(n)])).decode()
        for n in range(count)
    ]
    for number, text in (bad or {}).items():
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def report(url: str, *args: str, token: str = ADMIN_TOKEN, stdin: bytes | None = None) -> Any:
    return subprocess.run(
        [TOCSIN, "report", *args, "--url", url, "--token", token],
        capture_output=True,
        input=stdin,
        timeout=300,
        check=False,
    )


def summary(result: Any) -> dict[str, Any]:
    assert result.stdout, result.stderr.decode()
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


class HitIds:
    """The hit ids a receiver got, once per delivery (retries keep their webhook-id)."""

    def __init__(self) -> None:
        self.per_delivery: dict[str, list[str]] = {}

    def __call__(self, receiver: Receiver) -> int:
        self.per_delivery = {r.headers["webhook-id"]: _ids(r) for r in list(receiver.requests)}
        return sum(len(ids) for ids in self.per_delivery.values())

    def all(self) -> list[str]:
        return [hit_id for ids in self.per_delivery.values() for hit_id in ids]


def _ids(request: Received) -> list[str]:
    return [item["details"]["hit"]["id"][1] for item in orjson.loads(request.body)]


@pytest.fixture
def served(
    tmp_path: Path, make_receiver: MakeReceiver, ca_pem: str, signing_secrets: list[str]
) -> Iterator[tuple[str, Receiver]]:
    """A `tocsin serve` with a hits integration to a fresh HTTPS receiver."""
    with serving(tmp_path / "tocsin.db") as (_, url):
        receiver = make_receiver()
        created = httpx.post(
            f"{url}/api/v1/integrations",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"name": "r", "url": receiver.url, "events": ["hit"], "ca_certificate": ca_pem},
        )
        assert created.status_code == 201, created.text
        signing_secrets.append(created.json()["signing_secret"])  # every request verified
        yield url, receiver


def test_20000_hits_are_each_delivered_exactly_once(
    served: tuple[str, Receiver], tmp_path: Path
) -> None:
    url, receiver = served
    write_hits(tmp_path / "hits.ndjson", 20_000)

    result = report(url, "hits", str(tmp_path / "hits.ndjson"), "--json")

    assert result.returncode == 0, result.stderr.decode()
    assert summary(result)["accepted"] == 20_000
    assert summary(result)["stopped"] is None
    assert result.stderr == b"", "a progress bar off a terminal"
    arrived = HitIds()
    assert receiver.wait_for(lambda r: arrived(r) >= 20_000, timeout=120), arrived(receiver)
    assert sorted(arrived.all(), key=int) == [str(n) for n in range(20_000)]


def test_a_refused_line_stops_the_report_there_with_the_servers_reason(
    served: tuple[str, Receiver], tmp_path: Path
) -> None:
    url, receiver = served
    bad = orjson.dumps(hit(path="/bad", request_time="yesterday")).decode()
    write_hits(tmp_path / "hits.ndjson", 30, bad={21: bad})

    result = report(url, "hits", str(tmp_path / "hits.ndjson"), "--batch-size", "7", "--json")

    assert result.returncode == 1
    stopped = summary(result)["stopped"]
    assert summary(result)["accepted"] == 20  # every line before it, none after
    assert stopped["where"] == "line 21"
    assert stopped["field"] == "request_time"
    assert result.stderr.decode() == (
        "tocsin report: line 21: the server refused it: request_time must be of JSON type "
        "integer (field request_time)\n"
    )
    arrived = HitIds()
    assert receiver.wait_for(lambda r: arrived(r) >= 20)
    assert sorted(arrived.all(), key=int) == [str(n) for n in range(20)]


def test_a_line_that_is_not_json_stops_it_before_sending_that_line(
    served: tuple[str, Receiver], tmp_path: Path
) -> None:
    url, receiver = served
    write_hits(tmp_path / "hits.ndjson", 10, bad={5: '{"type": "sqli",'})

    result = report(url, "hits", str(tmp_path / "hits.ndjson"))

    assert result.returncode == 1
    assert result.stdout.decode().startswith("accepted 4 hits from ")
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("tocsin report: line 5: not JSON (")
    arrived = HitIds()
    assert receiver.wait_for(lambda r: arrived(r) >= 4)
    assert sorted(arrived.all(), key=int) == ["0", "1", "2", "3"]


def test_a_json_array_from_standard_input_is_reported_too(served: tuple[str, Receiver]) -> None:
    url, receiver = served
    hits = [hit(path=f"/item/{n}", id=["hits_file", str(n)]) for n in range(3)]

    result = report(
        url, "hits", "-", "--json", stdin=orjson.dumps(hits, option=orjson.OPT_INDENT_2)
    )

    assert result.returncode == 0, result.stderr.decode()
    assert summary(result)["accepted"] == 3
    assert summary(result)["source"] == "standard input"
    arrived = HitIds()
    assert receiver.wait_for(lambda r: arrived(r) >= 3)


def test_429_is_waited_out_and_nothing_is_lost_or_doubled(
    tmp_path: Path, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    receiver = make_receiver()
    write_hits(tmp_path / "hits.ndjson", 3000)
    # 1,000 hits a request put the token 1,000 events in debt at 4,000/s: the next
    # request comes too soon and gets 429 with Retry-After.
    with serving(tmp_path / "tocsin.db", TOCSIN_INGEST_RATE="4000", TOCSIN_INGEST_BURST="1") as (
        _,
        url,
    ):
        created = httpx.post(
            f"{url}/api/v1/integrations",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"name": "r", "url": receiver.url, "events": ["hit"], "ca_certificate": ca_pem},
        )
        assert created.status_code == 201
        result = report(url, "hits", str(tmp_path / "hits.ndjson"), "--json")
        assert result.returncode == 0, result.stderr.decode()
        assert summary(result)["accepted"] == 3000
        assert summary(result)["retries"] >= 1
        arrived = HitIds()
        assert receiver.wait_for(lambda r: arrived(r) >= 3000, timeout=60)
    assert sorted(arrived.all(), key=int) == [str(n) for n in range(3000)]


def scripted(answers: list[int]) -> Receiver:
    """A stand-in server answering these statuses in turn (then 202), recording requests."""

    def respond(index: int, received: Received) -> Reply:
        status = answers[index] if index < len(answers) else 202
        if status == 202:
            return Reply(
                status=202, body=orjson.dumps({"accepted": len(orjson.loads(received.body))})
            )
        error = {"error": {"code": "unavailable", "message": "the database cannot be reached"}}
        return Reply(status=status, body=orjson.dumps(error), headers={"Retry-After": "0"})

    return Receiver(respond=respond).start()


def test_5xx_is_retried_and_every_request_declares_json(tmp_path: Path) -> None:
    write_hits(tmp_path / "hits.ndjson", 5)
    server = scripted([503, 502])
    try:
        result = report(
            server.url.removesuffix("/hook"), "hits", str(tmp_path / "hits.ndjson"), "--json"
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr.decode()
    assert summary(result)["retries"] == 2
    assert summary(result)["accepted"] == 5
    assert [r.path for r in server.requests] == ["/api/v1/hits"] * 3
    assert {r.headers["Content-Type"] for r in server.requests} == {"application/json"}
    assert {r.body for r in server.requests} == {server.requests[0].body}


def test_it_gives_up_after_its_retries_in_one_line(tmp_path: Path) -> None:
    write_hits(tmp_path / "hits.ndjson", 3)
    server = scripted([503] * 10)
    try:
        result = report(
            server.url.removesuffix("/hook"),
            "hits",
            str(tmp_path / "hits.ndjson"),
            "--retries",
            "2",
        )
    finally:
        server.stop()
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "tocsin report: gave up on line 1-3 after 2 retries (the database cannot be reached); "
        "0 accepted before them\n"
    )


def one_line(result: Any) -> str:
    text = result.stderr.decode()
    assert "Traceback" not in text
    (line,) = text.splitlines()
    return line


def test_unreachable_server_wrong_url_and_bad_token_are_one_line_each(
    tmp_path: Path,
) -> None:
    write_hits(tmp_path / "hits.ndjson", 2)
    file = str(tmp_path / "hits.ndjson")
    refused = report(f"http://127.0.0.1:{free_port()}", "hits", file)
    assert refused.returncode == 1
    assert "(connection refused): is `tocsin serve` running there? (--url/TOCSIN_URL)" in (
        one_line(refused)
    )
    with serving(tmp_path / "tocsin.db") as (_, url):
        wrong_path = report(f"{url}/tocsin", "hits", file)
        bad_token = report(url, "hits", file, token="tcs_not_a_token")
    assert wrong_path.returncode == 1
    assert one_line(wrong_path) == (
        f"tocsin report: no tocsin API at {url}/tocsin/api/v1/hits (HTTP 404): "
        "check --url/TOCSIN_URL"
    )
    assert bad_token.returncode == 1
    assert one_line(bad_token).endswith(
        "refused the token (the token is unknown, expired or revoked): set --token/TOCSIN_TOKEN"
    )
    not_a_url = report("127.0.0.1:8080", "hits", file)
    assert not_a_url.returncode == 2
    assert one_line(not_a_url) == (
        "tocsin: --url/TOCSIN_URL: '127.0.0.1:8080' is not an http:// or https:// URL"
    )


def test_bad_flags_are_one_line(tmp_path: Path) -> None:
    file = tmp_path / "x.ndjson"
    file.write_text("{}\n")
    for argv, expected in (
        (["report", "hitz", str(file)], "Invalid value for 'KIND': 'hitz' is not one of 'hits'"),
        (["report", "hits", str(file), "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["report", "hits", str(tmp_path / "missing")], "cannot read"),
        (["listen", "--status", "99"], "Invalid value for '--status'"),
    ):
        result = subprocess.run(
            [TOCSIN, *argv],
            capture_output=True,
            timeout=60,
            check=False,
            env={"TOCSIN_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 2, argv
        assert "Traceback" not in result.stderr.decode()
        assert expected in result.stderr.decode(), (argv, result.stderr)
