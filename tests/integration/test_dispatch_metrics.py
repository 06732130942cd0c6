"""`tocsin dispatch --metrics-port`: a worker process's own /metrics, as Prometheus reads it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import pg
from tests.conftest import ADMIN_TOKEN, MakeReceiver, hit
from tests.integration.test_crash import free_port
from tests.integration.test_postgres_processes import served, started
from tocsin.crypto import Vault

HITS = 30


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str, deadline: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    while True:
        try:
            return samples(httpx.get(url, timeout=5).text)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.slow
async def test_dispatch_serves_its_own_delivery_counters(
    make_receiver: MakeReceiver, ca_pem: str, tmp_path: Path
) -> None:
    receiver = make_receiver()
    async with pg.database() as url:
        env = os.environ | {
            "TOCSIN_DATABASE_URL": url,
            "TOCSIN_SECRET_KEY": Vault.generate_key().decode(),
            "TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN,
            "TOCSIN_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TOCSIN_MAX_BATCH": "1",
        }
        metrics_port = free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        with (
            started(
                ["dispatch", "--metrics-port", str(metrics_port)], env, tmp_path / "dispatch.log"
            ),
            # The API process does not deliver: every attempt is the dispatcher's.
            served(env | {"TOCSIN_DELIVER": "0"}, tmp_path / "serve.log") as (_, api),
        ):
            body = {"name": "siem", "url": receiver.url, "ca_certificate": ca_pem}
            assert api.post("/api/v1/integrations", json=body | {"events": ["hit"]}).is_success
            paths = [f"/m/{n}" for n in range(HITS)]
            assert api.post("/api/v1/hits", json=[hit(path=p) for p in paths]).status_code == 202
            assert receiver.wait_for(lambda r: r.count >= HITS, timeout=30)

            deadline = time.monotonic() + 30
            while True:
                found = scrape(metrics_url, deadline)
                delivered = found.get(
                    ("tocsin_delivery_attempts_total", (("outcome", "delivered"),)), 0
                )
                if delivered >= HITS or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert delivered == HITS
            assert found[("tocsin_attempt_duration_seconds_count", ())] == HITS
            assert found[("tocsin_queued_notifications", ())] == 0
            assert found[("tocsin_integrations", (("status", "active"),))] == 1
            # The serve process accepted the hits and sent nothing.
            served_metrics = samples(api.get("/metrics").text)
            assert served_metrics[("tocsin_events_accepted_total", (("type", "hit"),))] == HITS
            assert ("tocsin_delivery_attempts_total", (("outcome", "delivered"),)) not in (
                served_metrics
            )
