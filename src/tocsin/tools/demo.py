"""`tocsin demo`: tocsin working end to end in one command, on temporary files.

One process: tocsin (API, console, delivery) on a SQLite database in a temporary
directory, and an HTTPS receiver with a private CA of its own on a thread. The demo
creates an integration to the receiver trusting that CA, reports sample events, and
prints each delivery as the receiver sees it. Ctrl-C stops everything and removes the
directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import click
import uvicorn

from tocsin import __version__
from tocsin.config import Settings
from tocsin.crypto import open_vault
from tocsin.receiver import Receiver
from tocsin.store import open_store
from tocsin.tools.examine import verifiers
from tocsin.tools.listen import Listener, Seen, as_json, describe
from tocsin.tools.options import opt, until_signalled
from tocsin.tools.privateca import private_ca

STOP_WITHIN = 4.0  # seconds the shutdown may take, inside the 5 s a person waits at most
RETRIED = "failed on purpose: tocsin will retry it"

# Sample events: several attack types; one kind of hit reported 8 times, of which
# sampling lets the first 5 of the hour notify (SPEC 2.1).
IDENTICAL_HITS = 8
ATTACKS = [
    {"type": "xss", "path": "/comments", "parameter": "POST_JSON_DOC_body", "method": "POST"},
    {"type": "rce", "path": "/api/v1/export", "parameter": "GET_cmd_value", "method": "GET"},
    {"type": "ptrav", "path": "/static/../../etc/passwd", "parameter": "URI_value"},
]
SQLI = {"type": "sqli", "path": "/search", "parameter": "GET_q_value", "method": "GET"}
VULNERABILITY = {
    "id": 4242,
    "title": "SQL injection in /search",
    "threat": "High",
    "type": "sqli",
    "domain": "shop.example.com",
    "path": "/search",
    "method": "GET",
    "parameter": "q",
    "description": "The q parameter is concatenated into an SQL query.",
}
DENYLISTED = {"ip": "203.0.113.66", "lock_time": 3600, "reason": "demo: credential stuffing"}


def hit(**fields: Any) -> dict[str, Any]:
    base = {
        "domain": "shop.example.com",
        "method": "GET",
        "response_status": 403,
        "remote_addr4": "203.0.113.66",
        "remote_country": "NL",
        "block_status": "blocked",
    }
    return base | fields


def sample_hits() -> list[dict[str, Any]]:
    return [hit(**attack) for attack in ATTACKS] + [hit(**SQLI)] * IDENTICAL_HITS


class FailOneDelivery:
    """The demo's receiver policy: the first delivery's first attempt gets 500, once."""

    delay = 0.0

    def __init__(self) -> None:
        self._first: str | None = None
        self._lock = threading.Lock()

    def answer(self, webhook_id: str, attempt: int) -> tuple[int, bool]:
        with self._lock:
            if self._first is None:
                self._first = webhook_id
        if webhook_id == self._first and attempt == 1:
            return 500, True
        return 200, False


@dataclass(frozen=True, slots=True, kw_only=True)
class Demo:
    """What the person is told, and what is torn down after."""

    console: str
    token: str
    workdir: Path


def printer(*, json_lines: bool) -> Any:
    lock = threading.Lock()

    def show(seen: Seen) -> None:
        text = as_json(seen) if json_lines else _delivery_text(seen)
        with lock:
            click.echo(text)

    return show


def _delivery_text(seen: Seen) -> str:
    return describe(seen, on_purpose=RETRIED).replace(" POST /hook ", " delivery ", 1)


class Api:
    """The demo's calls to its own tocsin, as any API client makes them."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self._session = session
        self._base = base
        self._headers = {"Authorization": f"Bearer {token}"}

    async def post(self, path: str, body: Any) -> Any:
        async with self._session.post(
            f"{self._base}/api/v1/{path}", json=body, headers=self._headers
        ) as reply:
            payload = await reply.json(content_type=None)
            if reply.status >= 300:  # noqa: PLR2004
                raise click.ClickException(f"the demo's own POST /{path} failed: {payload}")
            return payload


async def create_integration(api: Api, receiver: Receiver, ca_pem: str) -> dict[str, Any]:
    created: dict[str, Any] = await api.post(
        "integrations",
        {
            "name": "demo receiver",
            "url": receiver.url,
            "ca_certificate": ca_pem,
            "events": ["hit", "vuln"],
        },
    )
    return created


async def create_trigger(api: Api, integration: dict[str, Any]) -> None:
    """THE PLACE FOR THE DEMO'S TRIGGER: a `hits_exceeded` trigger to the integration.

    Triggers (issue 14) are not in the HTTP API yet. When `POST /api/v1/triggers` lands,
    this becomes one call, e.g. `await api.post("triggers", {"name": "hit flood",
    "condition": "hits_exceeded", "threshold": 5, "period": 60, "integrations":
    [integration["id"]]})`, with the fields the triggers API takes.
    """
    del api, integration


async def report_samples(api: Api) -> None:
    await api.post("hits", sample_hits())
    await api.post("vulnerabilities", VULNERABILITY)
    await api.post("denylist", DENYLISTED)
    click.echo(
        f"reported {len(sample_hits())} hits ({IDENTICAL_HITS} of them identical: sampling "
        "lets the first 5 of an hour notify), 1 vulnerability, and denylisted "
        f"{DENYLISTED['ip']}",
        err=True,
    )


async def set_up(api: Api, receiver: Receiver, listener: Listener, ca_pem: str) -> None:
    integration = await create_integration(api, receiver, ca_pem)
    listener.trust(verifiers((integration["signing_secret"],)))
    await create_trigger(api, integration)
    await report_samples(api)


class _Server(uvicorn.Server):
    """uvicorn, leaving SIGINT and SIGTERM to the demo (uvicorn would re-raise them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bound_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    return sock


def _settings(workdir: Path, port: int, token: str) -> Settings:
    return Settings(
        database_url=f"sqlite:///{workdir / 'demo.db'}",
        port=port,
        client_name="Demo",
        admin_token=token,
        allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),),
        sqlite_synchronous="NORMAL",
        poll_interval=0.2,
    )


async def _started(server: uvicorn.Server) -> None:
    """uvicorn says it has started only by a flag: look at it until it is up."""
    while not server.started:  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(0.02)


async def run_demo(workdir: Path, port: int, *, json_lines: bool) -> None:
    from tocsin.api import create_app  # noqa: PLC0415 - the app's imports are heavy
    from tocsin.service import Tocsin  # noqa: PLC0415

    sock = _bound_socket(port)
    port = sock.getsockname()[1]
    token = "tcs_demo_" + secrets.token_urlsafe(24)
    settings = _settings(workdir, port, token)
    vault = open_vault(None, settings.database_url)
    store = open_store(settings.database_url, vault=vault, synchronous="NORMAL")
    runtime = Tocsin(settings, store, vault=vault)
    authority = private_ca()
    listener = Listener(FailOneDelivery(), (), printer(json_lines=json_lines))
    receiver = Receiver(tls=authority.server, respond=listener, keep=False).start()
    server = _Server(uvicorn.Config(create_app(runtime), log_level="warning", access_log=False))
    try:
        await runtime.start()
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await _started(server)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            await set_up(Api(session, base, token), receiver, listener, authority.ca_pem)
        _tell(Demo(console=base + "/", token=token, workdir=workdir))
        await until_signalled()
        server.should_exit = True
        await asyncio.wait_for(serving, STOP_WITHIN)
    finally:
        await asyncio.wait_for(runtime.stop(), STOP_WITHIN)
        receiver.stop()
        sock.close()


def _tell(demo: Demo) -> None:
    for line in (
        f"console: {demo.console} (sign in with the admin token)",
        f"admin token: {demo.token}",
        (
            f"  curl -H 'Authorization: Bearer {demo.token}' "
            f"{demo.console}api/v1/integrations/1/deliveries"
        ),
        f"temporary files in {demo.workdir}: removed on Ctrl-C",
        "Ctrl-C to stop",
    ):
        click.echo(line, err=True)


@click.command()
@opt(
    "--port",
    "TOCSIN_DEMO_PORT",
    default=0,
    type=click.IntRange(0, 65535),
    help="Port of the demo's API and console on 127.0.0.1 (0: a free one).",
)
@click.option(
    "--json/--no-json",
    "json_lines",
    envvar="TOCSIN_DEMO_JSON",
    show_envvar=True,
    default=False,
    help="One JSON object per delivery on standard output (as `tocsin listen --json`).",
)
def demo(port: int, json_lines: bool) -> None:
    """See tocsin deliver, in one command: nothing to set up, nothing left behind."""
    logging.getLogger("tocsin").setLevel(logging.ERROR)  # the deliveries tell the story
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-demo-"))
    click.echo(f"tocsin {__version__} demo: a temporary database, an HTTPS receiver", err=True)
    try:
        asyncio.run(run_demo(workdir, port, json_lines=json_lines))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
