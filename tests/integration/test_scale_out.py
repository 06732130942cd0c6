"""Scale-out (SPEC 7): real `tocsin serve` and `tocsin dispatch` processes on one PostgreSQL.

Every process is a subprocess with the same settings and TOCSIN_SECRET_KEY, as an
environment file would give them; the receivers run in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests import pg
from tests.conftest import ADMIN_TOKEN, MakeReceiver, hit
from tests.integration.test_postgres_processes import served, started
from tocsin.crypto import Vault
from tocsin.receiver import Received, Receiver, Reply

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)


def environment(url: str, **settings: str) -> dict[str, str]:
    """What every process gets: one database, one secret key, one set of settings."""
    return (
        os.environ
        | {
            "TOCSIN_DATABASE_URL": url,
            "TOCSIN_SECRET_KEY": Vault.generate_key().decode(),
            "TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN,
            "TOCSIN_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TOCSIN_LEASE_MARGIN": "1",
        }
        | settings
    )


def notifications(request: Received) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = orjson.loads(request.body)
    return found


def webhook_id(request: Received) -> str:
    return {name.lower(): value for name, value in request.headers.items()}["webhook-id"]


# a. Three dispatchers and a server share the work; one dispatcher dies -------------------

HITS = 20_000
POST_SIZE = 500
INTEGRATIONS = 10
MAX_BATCH = 250  # notifications per request: 80 requests per integration, 800 in all
MAX_IN_FLIGHT = 2  # per process and integration: up to 80 requests open at the receiver
REPLY_DELAY = 0.2  # keeps requests open, so that the killed dispatcher has some in flight
# The receiver (one thread of this process) shakes hands with every connection: one second
# is too little under load (seen: connect timeouts, then retries minutes later).
# Lease = connection_timeout 3 + request_timeout 5 + margin 1 = 9 s.
TIMEOUTS = {"connection_timeout": 3, "request_timeout": 5}


class Tally:
    """What arrived, by integration (the URL path) and hit path: the webhook-ids it came under.

    Bodies are parsed as they arrive and not kept: 200,000 notifications are too many to keep.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ids: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.requests = 0

    def __call__(self, _index: int, received: Received) -> Reply:
        found = webhook_id(received)
        items = notifications(received)
        with self._lock:
            self.requests += 1
            for item in items:
                self.ids[received.path, item["details"]["hit"]["path"]].append(found)
        return Reply(delay=REPLY_DELAY)

    def complete(self, expected: int) -> bool:
        with self._lock:
            return len(self.ids) >= expected


async def test_three_dispatchers_and_a_server_deliver_everything_when_one_dispatcher_dies(
    server_tls: ssl.SSLContext, ca_pem: str, tmp_path: Path
) -> None:
    """20,000 unique hits x 10 integrations = 200,000 notifications, in requests of 250.

    `serve` and three `dispatch` processes deliver; one dispatcher is killed with SIGKILL
    while it has requests in flight. Every hit reaches every integration; what arrives
    twice (the killed dispatcher's unrecorded deliveries, sent again once their leases
    expire) arrives under the webhook-id it first had.
    """
    expected = HITS * INTEGRATIONS
    tally = Tally()
    receiver = Receiver(tls=server_tls, respond=tally, keep=False).start()
    sent = [f"/item/{n}" for n in range(HITS)]
    try:
        async with pg.database() as url:
            env = environment(
                url, TOCSIN_MAX_BATCH=str(MAX_BATCH), TOCSIN_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT)
            )
            with contextlib.ExitStack() as stack:
                dispatchers = [
                    stack.enter_context(started(["dispatch"], env, tmp_path / f"dispatch{n}.log"))
                    for n in range(3)
                ]
                _serve, api = stack.enter_context(served(env, tmp_path / "serve.log"))
                for n in range(INTEGRATIONS):
                    body = {
                        "name": f"receiver {n}",
                        "url": f"{receiver.url}/{n}",
                        "ca_certificate": ca_pem,
                        "events": ["hit"],
                    }
                    created = api.post("/api/v1/integrations", json=body | TIMEOUTS)
                    assert created.status_code == 201, created.text
                started_at = time.monotonic()
                with ThreadPoolExecutor(1) as reporting:
                    reported = reporting.submit(report_all, api, sent)
                    assert receiver.wait_for(lambda _: tally.requests >= 100, timeout=60)
                    victim = dispatchers[0]
                    victim.send_signal(signal.SIGKILL)
                    assert victim.wait(timeout=10) == -signal.SIGKILL
                    unrecorded = await leased_by(url, victim.pid)
                    assert reported.result(timeout=60) == HITS
                assert len(tally.ids) < expected, "the kill came too late to matter"

                assert receiver.wait_for(lambda _: tally.complete(expected), timeout=60), (
                    f"missing: {expected - len(tally.ids)} of {expected}"
                )
                elapsed = time.monotonic() - started_at
                # What the killed dispatcher had sent is sent again once its leases expire.
                assert await settled(url, within=30), "deliveries still waiting"
                for process in dispatchers[1:]:
                    process.send_signal(signal.SIGTERM)
                for process in dispatchers[1:]:
                    assert process.wait(timeout=20) == 0
    finally:
        receiver.stop()

    assert {integration for integration, _ in tally.ids} == {
        f"/hook/{n}" for n in range(INTEGRATIONS)
    }
    assert all(len(set(ids)) == 1 for ids in tally.ids.values()), "a resend changed its id"
    assert all(len(ids) <= 2 for ids in tally.ids.values()), "one kill, yet sent three times"
    twice = {ids[0] for ids in tally.ids.values() if len(ids) > 1}
    assert twice, "the killed dispatcher had no request open: the test proved nothing"
    assert twice <= unrecorded, "a delivery recorded before the kill was sent again"
    log.info("%d notifications in %.1f s; %d deliveries sent twice", expected, elapsed, len(twice))


def report_all(api: httpx.Client, paths: list[str]) -> int:
    for start in range(0, len(paths), POST_SIZE):
        chunk = [hit(path=path) for path in paths[start : start + POST_SIZE]]
        report = api.post("/api/v1/hits", json=chunk)
        assert report.status_code == 202, report.text
    return len(paths)


async def settled(url: str, *, within: float) -> bool:
    """Wait until nothing is queued or waiting for a (re)send."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            waiting = await conn.fetchval(
                "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM deliveries "
                "WHERE status IN ('pending', 'retrying'))"
            )
            if waiting == 0:
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await conn.close()


async def leased_by(url: str, pid: int) -> set[str]:
    """Deliveries a process leased and had not recorded (lease_owner is host:pid:nonce)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT webhook_id FROM deliveries WHERE status IN ('pending', 'retrying') "
            "AND split_part(lease_owner, ':', 2) = $1",
            str(pid),
        )
    finally:
        await conn.close()
    return {row[0] for row in rows}


# b. Hit sampling across two servers -----------------------------------------------------


async def test_seven_identical_hits_through_two_servers_at_once_notify_five_times(
    make_receiver: MakeReceiver, ca_pem: str, tmp_path: Path
) -> None:
    receiver = make_receiver()
    async with pg.database() as url:
        env = environment(url, TOCSIN_MAX_BATCH="1")
        with (
            served(env, tmp_path / "serve1.log") as (_first, one),
            served(env, tmp_path / "serve2.log") as (_second, two),
        ):
            body = {"name": "shared", "url": receiver.url, "ca_certificate": ca_pem}
            created = one.post("/api/v1/integrations", json=body | {"events": ["hit"]})
            assert created.status_code == 201, created.text
            barrier = threading.Barrier(7)

            def report(api: httpx.Client) -> int:
                barrier.wait(timeout=10)
                return api.post("/api/v1/hits", json=[hit()]).status_code

            with ThreadPoolExecutor(7) as pool:
                codes = list(pool.map(report, [one, two] * 3 + [one]))
            assert codes == [202] * 7

            assert receiver.wait_for(lambda r: r.count >= 5, timeout=15)
            await asyncio.sleep(2)  # long enough for a sixth to arrive, were there one
    assert sum(len(notifications(request)) for request in receiver.requests) == 5


# c. Auto-disable with three processes delivering ----------------------------------------

FAILING_HITS = 40


async def test_an_integration_failing_through_three_processes_is_auto_disabled_once(
    make_receiver: MakeReceiver, ca_pem: str, tmp_path: Path
) -> None:
    failing = make_receiver(lambda _, __: Reply(status=503))
    watcher = make_receiver()
    async with pg.database() as url:
        env = environment(url, TOCSIN_MAX_BATCH="1", TOCSIN_MAX_IN_FLIGHT="8")
        with (
            started(["dispatch"], env, tmp_path / "dispatch1.log"),
            started(["dispatch"], env, tmp_path / "dispatch2.log"),
            served(env, tmp_path / "serve.log") as (_serve, api),
        ):
            doomed = api.post(
                "/api/v1/integrations",
                json={"name": "doomed", "url": failing.url, "ca_certificate": ca_pem}
                | {"events": ["hit"]},
            ).json()
            body = {"name": "watcher", "url": watcher.url, "ca_certificate": ca_pem}
            created = api.post("/api/v1/integrations", json=body | {"events": ["system"]})
            assert created.status_code == 201, created.text

            hits = [hit(path=f"/fail/{n}") for n in range(FAILING_HITS)]
            assert api.post("/api/v1/hits", json=hits).status_code == 202
            assert watcher.wait_for(lambda r: len(disabled_notices(r)) >= 1, timeout=30)
            await asyncio.sleep(3)  # every process has recorded what it had in flight
            state = api.get(f"/api/v1/integrations/{doomed['id']}").json()

    assert state["status"] == "auto_disabled", state
    (notice,) = disabled_notices(watcher)
    assert notice["details"]["object"]["id"] == doomed["id"]


def disabled_notices(receiver: Receiver) -> list[dict[str, Any]]:
    return [
        item
        for request in receiver.requests
        for item in notifications(request)
        if item["details"]["notification_type"] == "integration_auto_disabled"
    ]
