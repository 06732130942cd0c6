"""`tocsin serve` and `tocsin dispatch` as real processes sharing one PostgreSQL database.

The serve process takes the hits and starts delivering them; it is killed with
SIGKILL mid-delivery, and the dispatch process delivers everything: what serve had
queued, and (after their leases expire) the deliveries serve had in flight.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests import pg
from tests.conftest import ADMIN_TOKEN, MakeReceiver, hit
from tests.integration.test_crash import TOCSIN, free_port, wait_ready
from tocsin.crypto import Vault
from tocsin.receiver import Received, Reply

HITS = 300
# Lease = connection_timeout 1 + request_timeout 2 + margin 1 = 4 s.
INTEGRATION = {"events": ["hit"], "connection_timeout": 1, "request_timeout": 2}


@pytest.mark.slow
async def test_dispatch_delivers_everything_after_serve_is_killed(
    make_receiver: MakeReceiver, ca_pem: str, tmp_path: Path
) -> None:
    receiver = make_receiver(lambda _index, _received: Reply(delay=0.05))
    sent = {f"/item/{n}" for n in range(HITS)}
    async with pg.database() as url:
        env = os.environ | {
            "TOCSIN_DATABASE_URL": url,
            "TOCSIN_SECRET_KEY": Vault.generate_key().decode(),
            "TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN,
            "TOCSIN_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TOCSIN_MAX_BATCH": "1",
            "TOCSIN_MAX_IN_FLIGHT": "8",
            "TOCSIN_LEASE_MARGIN": "1",
        }
        with (
            started(["dispatch"], env, tmp_path / "dispatch.log") as dispatch,
            served(env, tmp_path / "serve.log") as (serve, api),
        ):
            body = {"name": "shared", "url": receiver.url, "ca_certificate": ca_pem}
            assert api.post("/api/v1/integrations", json=body | INTEGRATION).status_code == 201
            report = api.post("/api/v1/hits", json=[hit(path=path) for path in sent])
            assert report.status_code == 202, report.text
            assert receiver.wait_for(lambda r: r.count >= 20, timeout=30)
            serve.send_signal(signal.SIGKILL)
            assert serve.wait(timeout=10) == -signal.SIGKILL
            assert len(paths(receiver.requests)) < HITS, "the kill came too late to matter"

            assert receiver.wait_for(lambda r: paths(r.requests) >= sent, timeout=60), (
                f"missing: {len(sent - paths(receiver.requests))} of {HITS}"
            )
            dispatch.send_signal(signal.SIGTERM)
            assert dispatch.wait(timeout=20) == 0, (tmp_path / "dispatch.log").read_text()


def paths(requests: list[Received]) -> set[str]:
    return {
        item["details"]["hit"]["path"]
        for request in requests
        for item in orjson.loads(request.body)
    }


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            [TOCSIN, *args], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def served(
    env: dict[str, str], log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    port = free_port()
    with (
        started(["serve"], env | {"TOCSIN_PORT": str(port)}, log) as process,
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        ) as api,
    ):
        wait_ready(process, api, log)
        yield process, api
