"""Shared fixtures: a private CA, HTTPS receivers on loopback, a running tocsin on each store.

`start_tocsin` (and `tocsin`, built on it) is parametrised over the stores: `sqlite` (a
file in the test's tmp_path) and `postgres` (a fresh database cloned from the migrated
template, see tests/pg.py; skipped when no server answers and TOCSIN_TEST_POSTGRES_URL
is unset). A test that holds for one store only overrides the parameter:
`@pytest.mark.parametrize("store_kind", ["sqlite"])`, with a comment saying why.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import trustme
from standardwebhooks import Webhook, WebhookVerificationError

from tests import pg
from tocsin.api import create_app
from tocsin.clock import Clock
from tocsin.config import Settings
from tocsin.crypto import Vault
from tocsin.receiver import Received, Receiver, Respond, always_ok
from tocsin.service import Tocsin
from tocsin.store.postgres import PostgresStore
from tocsin.store.sqlite import SqliteStore

ADMIN_TOKEN = "tcs_test_admin_token"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


MakeReceiver = Callable[..., Receiver]


@pytest.fixture
def signing_secrets() -> list[str]:
    """Every signing secret the API showed during the test (filled by `start_tocsin`)."""
    return []


@pytest.fixture
def make_receiver(server_tls: ssl.SSLContext, signing_secrets: list[str]) -> Iterator[MakeReceiver]:
    """Start HTTPS receivers (their certificate from the private CA); all stop after the test.

    After the test, every request they received from an in-process tocsin must verify with
    the `standardwebhooks` package under one of the integration secrets the API showed
    (test messages of unsaved configurations are signed with a throwaway secret).
    """
    started: list[Receiver] = []

    def make(respond: Respond = always_ok, *, tls: bool = True) -> Receiver:
        receiver = Receiver(tls=server_tls if tls else None, respond=respond).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()
    if signing_secrets:
        for receiver in started:
            for request in receiver.requests:
                assert_signed(request, signing_secrets)


def assert_signed(request: Received, secrets: list[str]) -> None:
    if request.headers.get("webhook-id", "").startswith("msg_test_"):
        return
    for secret in secrets:
        with contextlib.suppress(WebhookVerificationError):
            Webhook(secret).verify(request.body, request.headers, json_parse=False)
            return
    pytest.fail(f"a delivered request does not verify: {request.headers.get('webhook-id')}")


@pytest.fixture
def receiver(make_receiver: MakeReceiver) -> Receiver:
    return make_receiver()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'tocsin.db'}",
        "client_name": "TestCompany",
        "cloud": "EU",
        "console_url": "https://my.wallarm.com",
        "partner_name": "Test partner",
        "allowed_networks": LOOPBACK,
        "admin_token": ADMIN_TOKEN,
        "poll_interval": 0.2,
        "lease_margin": 2.0,
        "sqlite_synchronous": "NORMAL",
    }
    base.update(overrides)
    return Settings(**base)


class Running:
    """A started tocsin and an API client authenticated as its administrator."""

    def __init__(
        self, runtime: Tocsin, api: httpx.AsyncClient, *, kind: str, database: str
    ) -> None:
        self.runtime = runtime
        self.api = api
        self.kind = kind  # "sqlite" or "postgres"
        self.database = database  # the SQLite file, or the PostgreSQL URL

    async def dump(self) -> bytes:
        """Everything the store holds, as bytes: the SQLite files, or every PostgreSQL row."""
        if self.kind == "sqlite":
            return b"".join(
                path.read_bytes() for path in Path(self.database).parent.glob("tocsin.db*")
            )
        conn = await asyncpg.connect(self.database)
        try:
            tables = await conn.fetch(
                "SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public'"
            )
            rows = [
                row[0]
                for table in tables
                for row in await conn.fetch(f"SELECT t::text FROM {table['name']} t")
            ]
        finally:
            await conn.close()
        return "\n".join(rows).encode()

    async def create_integration(self, url: str, **fields: Any) -> dict[str, Any]:
        body = {"name": "receiver", "url": url, "events": ["hit", "vuln"]} | fields
        response = await self.api.post("/api/v1/integrations", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def report_hits(self, hits: list[dict[str, Any]]) -> None:
        response = await self.api.post("/api/v1/hits", json=hits)
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": len(hits)}


StartTocsin = Callable[..., Awaitable[Running]]


class ShiftedClock:
    """The real clock, moved forward by hand (`start_tocsin(clock=...)`): expiry without
    sleeping. Keep shifts under Standard Webhooks' 5-minute timestamp tolerance where a
    receiver verifies deliveries."""

    def __init__(self) -> None:
        self.shift = 0.0

    def now(self) -> float:
        return time.time() + self.shift

    def advance(self, seconds: float) -> None:
        self.shift += seconds


STORE_KINDS = ("sqlite", "postgres")


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def start_tocsin(
    tmp_path: Path, signing_secrets: list[str], store_kind: str
) -> AsyncIterator[StartTocsin]:
    """Start a tocsin on a fresh database of `store_kind`; stopped (and dropped) after the test.

    Every start in one test uses the same database, as a restarted process would.
    `start(clock=...)` gives the service a clock of the test's (a ShiftedClock); keyword
    arguments override the settings (`make_settings`).
    """
    running: list[tuple[Tocsin, httpx.AsyncClient]] = []
    databases = contextlib.AsyncExitStack()
    postgres_url: list[str] = []
    if store_kind == "postgres":
        await pg.require()

    async def note_secrets(response: httpx.Response) -> None:
        if "json" not in response.headers.get("content-type", ""):
            return
        await response.aread()
        body = response.json()
        items = body if isinstance(body, list) else [body]
        signing_secrets.extend(
            item["signing_secret"]
            for item in items
            if isinstance(item, dict) and isinstance(item.get("signing_secret"), str)
        )

    async def start(*, clock: Clock | None = None, **overrides: Any) -> Running:
        vault = Vault(keys)
        store: SqliteStore | PostgresStore
        if store_kind == "postgres":
            if not postgres_url:
                postgres_url.append(await databases.enter_async_context(pg.database()))
            database = postgres_url[0]
            settings = make_settings(tmp_path, database_url=database, **overrides)
            store = PostgresStore(database, vault=vault, max_batch=settings.max_batch)
        else:
            database = str(tmp_path / "tocsin.db")
            settings = make_settings(tmp_path, **overrides)
            store = SqliteStore(
                Path(database), vault=vault, synchronous="NORMAL", max_batch=settings.max_batch
            )
        runtime = Tocsin(settings, store, vault=vault, clock=clock)
        await runtime.start()
        transport = httpx.ASGITransport(app=create_app(runtime))
        api = httpx.AsyncClient(
            transport=transport,
            base_url="http://tocsin.test",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            event_hooks={"response": [note_secrets]},
        )
        running.append((runtime, api))
        return Running(runtime, api, kind=store_kind, database=database)

    keys = [Vault.generate_key()]  # one key per test: a restart reads what was written
    async with databases:
        yield start
        for runtime, api in running:
            await api.aclose()
            await runtime.stop()


@pytest.fixture
async def tocsin(start_tocsin: StartTocsin) -> Running:
    return await start_tocsin()


def hit(**fields: Any) -> dict[str, Any]:
    """A hit as a sensor reports it, varied by keyword."""
    base: dict[str, Any] = {
        "type": "sqli",
        "domain": "shop.example.com",
        "path": "/search",
        "parameter": "GET_q_value",
        "method": "GET",
        "response_status": 200,
        "remote_addr4": "8.8.8.8",
    }
    return base | fields
