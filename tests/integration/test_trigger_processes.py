"""Triggers across restarts and processes (SPEC 5), with real `tocsin` subprocesses.

- `kill -9` of `tocsin serve` after 10 matching hits were counted: the 11th, sent to the
  restarted process, fires the trigger (the count survived), once.
- `tocsin serve` and two `tocsin dispatch` on one PostgreSQL database, hits flooding
  across the threshold in many requests: the trigger fires exactly once, 20 times over.

"Counted" is observed, not waited for: after the hits, an IP is denylisted, and an
`ip_denylisted` trigger notifies about it; evaluation reads the stream in order, so when
that notification arrives every hit before it has been evaluated and committed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests import pg
from tests.conftest import ADMIN_TOKEN, MakeReceiver, hit
from tests.integration.test_crash import TOCSIN, free_port, serve, wait_ready, webhook_id
from tocsin.crypto import Vault
from tocsin.receiver import Receiver

THRESHOLD = 10


def notifications(receiver: Receiver, kind: str) -> list[dict[str, Any]]:
    """The notifications of a kind received, a delivery sent again (delivery is at least
    once: the same webhook-id) counted once."""
    bodies = {webhook_id(request): request.body for request in list(receiver.requests)}
    return [
        item
        for body in bodies.values()
        for item in orjson.loads(body)
        if item["details"]["notification_type"] == kind
    ]


def set_up(api: httpx.Client, receiver: Receiver, ca_pem: str) -> tuple[int, int]:
    """An integration that takes no events of its own, and the marker trigger: the
    integration's id and the trigger's."""
    body = {"name": "soc", "url": receiver.url, "ca_certificate": ca_pem, "events": ["scope"]}
    created = api.post("/api/v1/integrations", json=body)
    assert created.status_code == 201, created.text
    hook: int = created.json()["id"]
    marker = api.post(
        "/api/v1/triggers",
        json={
            "name": "marker",
            "condition": "ip_denylisted",
            "actions": [{"id": "send_notification", "integration_ids": [hook]}],
        },
    )
    assert marker.status_code == 201, marker.text
    return hook, marker.json()["id"]


def sqli_trigger(api: httpx.Client, hook: int, name: str) -> int:
    created = api.post(
        "/api/v1/triggers",
        json={
            "name": name,
            "condition": "hits_exceeded",
            "filters": [{"id": "attack_type", "operator": "eq", "values": ["sqli"]}],
            "threshold": {"count": THRESHOLD, "period": 3600},
            "actions": [{"id": "send_notification", "integration_ids": [hook]}],
        },
    )
    assert created.status_code == 201, created.text
    trigger_id: int = created.json()["id"]
    return trigger_id


def evaluated(api: httpx.Client, receiver: Receiver, marker: int) -> None:
    """Return once every event stored so far has been evaluated (see the module doc)."""
    before = len(notifications(receiver, "ip_blocked"))
    ip = f"192.0.2.{marker % 250 + 1}"
    response = api.post("/api/v1/denylist", json={"ip": ip, "lock_time": 1, "reason": "mark"})
    assert response.status_code == 201, response.text
    arrived = receiver.wait_for(lambda r: len(notifications(r, "ip_blocked")) > before, timeout=30)
    assert arrived, "the marker's notification did not arrive: evaluation is not running"


@pytest.mark.slow
def test_kill_9_between_the_10th_and_11th_hit_the_11th_fires(
    make_receiver: MakeReceiver, ca_pem: str, tmp_path: Path
) -> None:
    receiver = make_receiver()
    database = tmp_path / "tocsin.db"
    with serve(database, tmp_path / "first.log") as (first, api):
        hook, _ = set_up(api, receiver, ca_pem)
        sqli_trigger(api, hook, "sqli")
        for n in range(THRESHOLD):
            assert api.post("/api/v1/hits", json=[hit(path=f"/{n}")]).status_code == 202
        evaluated(api, receiver, 1)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    assert notifications(receiver, "hits_exceeded") == []
    with serve(database, tmp_path / "second.log") as (_, api):
        assert api.post("/api/v1/hits", json=[hit(path="/11th")]).status_code == 202
        evaluated(api, receiver, 2)
        fired = notifications(receiver, "hits_exceeded")
    assert len(fired) == 1
    assert fired[0]["details"]["observed"] == THRESHOLD + 1
    assert fired[0]["details"]["trigger_name"] == "sqli"


ROUNDS = 20
FLOOD = 60  # sqli hits per round, in requests of 1 to 3, several in flight at once


@contextlib.contextmanager
def started(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            [TOCSIN, *command], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def flood(api: httpx.Client, round_number: int) -> None:
    sizes = [1 + n % 3 for n in range(FLOOD)]
    batches, start = [], 0
    while start < FLOOD:
        size = sizes[len(batches)]
        batches.append(
            [hit(path=f"/r{round_number}/{n}") for n in range(start, min(FLOOD, start + size))]
        )
        start += size
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(
            pool.map(lambda body: api.post("/api/v1/hits", json=body).status_code, batches)
        )
    assert set(statuses) == {202}


@pytest.mark.slow
async def test_serve_and_two_dispatch_on_postgres_fire_exactly_once(
    make_receiver: MakeReceiver, ca_pem: str, tmp_path: Path
) -> None:
    receiver = make_receiver()
    async with pg.database() as url:
        port = free_port()
        env = os.environ | {
            "TOCSIN_DATABASE_URL": url,
            "TOCSIN_SECRET_KEY": Vault.generate_key().decode(),
            "TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN,
            "TOCSIN_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TOCSIN_PORT": str(port),
        }
        with (
            started(["serve"], env, tmp_path / "serve.log") as serving,
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            ) as api,
        ):
            wait_ready(serving, api, tmp_path / "serve.log")
            with (
                started(["dispatch"], env, tmp_path / "dispatch1.log"),
                started(["dispatch"], env, tmp_path / "dispatch2.log"),
            ):
                hook, marker = set_up(api, receiver, ca_pem)
                fired_per_round = []
                for round_number in range(ROUNDS):
                    trigger_id = sqli_trigger(api, hook, f"round {round_number}")
                    flood(api, round_number)
                    evaluated(api, receiver, marker + round_number)
                    fired = [
                        n
                        for n in notifications(receiver, "hits_exceeded")
                        if n["details"]["trigger_name"] == f"round {round_number}"
                    ]
                    fired_per_round.append(len(fired))
                    assert api.delete(f"/api/v1/triggers/{trigger_id}").status_code == 204
    assert fired_per_round == [1] * ROUNDS
