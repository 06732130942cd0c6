"""Prometheus Alertmanager as the bench's peer: one process with its own config and storage.

Configured so that every alert is a group of its own (`group_by: ['...']`, all labels)
and is notified at once (`group_wait: 0s`): one webhook per alert, to the bench's
receiver over HTTPS, trusting the private CA through `http_config.tls_config.ca_file`.
No cluster (`--cluster.listen-address=` empty), web API on a free loopback port.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from harness import (
    BenchError,
    ReceiverControl,
    free_port,
    post_each,
    spawned,
    tails_on_failure,
    wait_ready,
)

BINARY = "prometheus-alertmanager"  # Debian's name; `make bench` installs the package
ALERTS_PER_POST = 100


def config(receiver: ReceiverControl) -> dict[str, object]:
    """One route, one webhook receiver; JSON is YAML, so it is written as JSON."""
    return {
        "route": {
            "receiver": "bench",
            "group_by": ["..."],
            "group_wait": "0s",
            "group_interval": "1h",  # no second notification for a group during the bench
            "repeat_interval": "24h",
        },
        "receivers": [
            {
                "name": "bench",
                "webhook_configs": [
                    {
                        "url": receiver.hook_url,
                        "send_resolved": False,
                        "http_config": {
                            "tls_config": {"ca_file": str(receiver.certificates.ca_file)}
                        },
                    }
                ],
            }
        ],
    }


def alert_posts(tag: str, alerts: int) -> list[bytes]:
    """Bodies for POST /api/v2/alerts, ALERTS_PER_POST each; every alert has its own labels."""
    made = [
        {
            "labels": {
                "alertname": "BenchSqlInjection",
                "domain": "shop.example.com",
                "path": f"/bench/{tag}/{index}",
                "severity": "high",
            },
            "annotations": {"summary": "sqli on shop.example.com from 8.8.8.8"},
        }
        for index in range(alerts)
    ]
    return [orjson.dumps(made[i : i + ALERTS_PER_POST]) for i in range(0, alerts, ALERTS_PER_POST)]


def version(binary: str) -> str:
    """`alertmanager, version 0.25.0 (...)` -> `0.25.0`."""
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
    )
    words = (output.stdout + output.stderr).split()
    return words[words.index("version") + 1] if "version" in words else "?"


@dataclass(frozen=True, slots=True)
class Alertmanager:
    client: aiohttp.ClientSession
    url: str
    version: str

    async def post_alerts(self, posts: Sequence[bytes], concurrency: int) -> None:
        headers = {"Content-Type": "application/json"}
        await post_each(
            self.client, f"{self.url}/api/v2/alerts", posts, concurrency, headers=headers
        )


@asynccontextmanager
async def alertmanager_running(
    workdir: Path, client: aiohttp.ClientSession, receiver: ReceiverControl
) -> AsyncIterator[Alertmanager]:
    """Alertmanager with a fresh config and storage in `workdir`, ready; stopped afterwards."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise BenchError(f"{BINARY} not found: `make bench` installs prometheus-alertmanager")
    config_file = workdir / "alertmanager.yml"
    config_file.write_bytes(orjson.dumps(config(receiver), option=orjson.OPT_INDENT_2))
    storage = workdir / "alertmanager-data"
    storage.mkdir()
    port = free_port()
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    log = workdir / "alertmanager.log"
    with spawned("alertmanager", command, {}, log) as process, tails_on_failure(log):
        manager = Alertmanager(client, f"http://127.0.0.1:{port}", version(binary))
        await wait_ready(client, f"{manager.url}/-/ready", process)
        yield manager
