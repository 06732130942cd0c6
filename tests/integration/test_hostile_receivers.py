"""Hostile receivers (Hardening): each is handled within the integration's timeouts.

Every receiver here is a raw asyncio server on 127.0.0.1 in its own thread, so it
controls the bytes on the wire: it resets the connection, trickles its answer, sends
a 1 GiB body, sends invalid UTF-8, never answers, or redirects to the cloud-metadata
address. Each attempt must end within the timeouts, read at most 4 KiB of the
answer, and leave an error a person can act on in the delivery log and the
process log. The last test runs a real `tocsin serve` against the worst two and
checks that its memory stays bounded.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from tests.conftest import LOOPBACK, Running, StartTocsin, hit
from tests.integration.test_crash import serve
from tocsin.delivery.sender import Sender, describe_error
from tocsin.models import WebhookSettings
from tocsin.retry import AUTO_DISABLE_MIN_REQUESTS

TIMEOUTS = {"connection_timeout": 1, "request_timeout": 1}
# Upper bounds with generous slack: they prove a timeout held, they do not measure speed.
SLACK = 0.75
GIB = 1 << 30
RESPONSE_CAP = 4096
TRICKLE_INTERVAL = 0.5
SECRET = "whsec_" + "A" * 44  # 32 zero-ish bytes, base64
METADATA = "http://169.254.169.254/latest/meta-data/"
RSS_LIMIT_MB = 300


@dataclass
class Connection:
    """What one hostile receiver saw of one connection."""

    opened_at: float
    request: bytes = b""
    sent: int = 0
    closed_at: float | None = None

    @property
    def lasted(self) -> float:
        assert self.closed_at is not None, "the connection is still open"
        return self.closed_at - self.opened_at


Behave = Callable[[Connection, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Hostile:
    """A raw TCP (or TLS) server on loopback, in a thread with its own event loop.

    Its own loop keeps a receiver that floods from starving the tocsin under test,
    and lets the synchronous subprocess test run it too.
    """

    behave: Behave
    tls: ssl.SSLContext | None = None
    path: str = "/hook"
    connections: list[Connection] = field(default_factory=list, init=False)
    port: int = field(default=0, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _stop: asyncio.Event | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.path}"

    def __enter__(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(timeout=5), "the hostile receiver did not start"
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
            assert not self._thread.is_alive(), "the hostile receiver did not stop"

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._serve(ready))  # cancels the connections still open at the stop

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(opened_at=time.monotonic())
        self.connections.append(connection)
        try:
            await self.behave(connection, reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # tocsin hung up: that is what most of these tests wait for
        finally:
            connection.closed_at = time.monotonic()
            writer.close()

    def wait_for(self, condition: Callable[[Hostile], bool], within: float) -> bool:
        deadline = time.monotonic() + within
        while not condition(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    async def until(self, condition: Callable[[Hostile], bool], within: float) -> bool:
        deadline = time.monotonic() + within
        while not condition(self):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


def closed(receiver: Hostile) -> list[Connection]:
    return [c for c in receiver.connections if c.closed_at is not None]


def closed_at_least(count: int) -> Callable[[Hostile], bool]:
    return lambda receiver: len(closed(receiver)) >= count


# -- behaviours ---------------------------------------------------------------------------


async def read_request(connection: Connection, reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    connection.request = head + body


async def hung_up(reader: asyncio.StreamReader, within: float) -> bool:
    """Wait up to `within` seconds; True as soon as the client closes its side."""
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except TimeoutError:
        return False


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel answers with a TCP RST, not a FIN."""
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.transport.abort()


def resets(*, after_request: bool) -> Behave:
    async def behave(c: Connection, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if after_request:
            await read_request(c, reader)
        reset(w)

    return behave


def answers(head: bytes, body: bytes = b"") -> Behave:
    """A complete HTTP/1.1 answer: `head` is the status line and any extra headers."""

    async def behave(c: Connection, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(c, reader)
        length = f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        w.write(head + b"\r\n" + length + body)
        await w.drain()

    return behave


TRICKLED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n\r\n"
    b"finally, here is my body"
)


async def trickles(c: Connection, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """A valid 200, one byte every 0.5 s: some 40 s in all, unless tocsin gives up."""
    await read_request(c, reader)
    for byte in TRICKLED:
        w.write(bytes([byte]))
        await w.drain()
        c.sent += 1
        if await hung_up(reader, TRICKLE_INTERVAL):
            return


def floods(status: bytes = b"200 OK") -> Behave:
    """Announce a 1 GiB body and send zeros as fast as tocsin takes them."""
    chunk = bytes(64 * 1024)

    async def behave(c: Connection, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(c, reader)
        w.write(b"HTTP/1.1 " + status + f"\r\nContent-Length: {GIB}\r\n\r\n".encode())
        while c.sent < GIB:
            w.write(chunk)
            await w.drain()  # raises once tocsin has dropped the connection
            c.sent += len(chunk)

    return behave


async def stays_silent(
    c: Connection, reader: asyncio.StreamReader, _: asyncio.StreamWriter
) -> None:
    """Read the request, answer nothing, never close: only notice when tocsin hangs up."""
    await read_request(c, reader)
    await reader.read()


# -- helpers --------------------------------------------------------------------------------


async def first_attempt(
    tocsin: Running, integration_id: int, within: float = 10
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The integration's first delivery and its first recorded attempt, waited for."""
    deadline = time.monotonic() + within
    while True:
        response = await tocsin.api.get(f"/api/v1/integrations/{integration_id}/deliveries")
        assert response.status_code == 200, response.text
        for delivery in response.json()["items"]:
            for attempt in delivery["attempts"]:
                if attempt["number"] == 1:
                    return delivery, attempt
        assert time.monotonic() < deadline, f"no attempt recorded within {within} s"
        await asyncio.sleep(0.1)


async def attempt_against(
    start_tocsin: StartTocsin, receiver: Hostile, **fields: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Report one hit to a tocsin whose one integration points at the receiver."""
    tocsin = await start_tocsin(allow_http=True)
    settings = {"events": ["hit"]} | TIMEOUTS | fields
    integration = await tocsin.create_integration(receiver.url, **settings)
    await tocsin.report_hits([hit()])
    return await first_attempt(tocsin, integration["id"])


def assert_logged(caplog: pytest.LogCaptureFixture, delivery_id: int, error: str) -> None:
    """The process log names the delivery and says the same words as the delivery log."""
    line = f"delivery {delivery_id}: {error}"
    assert line in caplog.messages, caplog.messages


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="tocsin.delivery"):
        yield caplog


# -- the receivers --------------------------------------------------------------------------


@pytest.mark.parametrize("after_request", [False, True], ids=["on-accept", "after-request"])
async def test_a_receiver_that_resets_the_connection(
    start_tocsin: StartTocsin, logged: pytest.LogCaptureFixture, after_request: bool
) -> None:
    with Hostile(resets(after_request=after_request)) as receiver:
        delivery, attempt = await attempt_against(start_tocsin, receiver)

    assert attempt["status_code"] is None
    # Reset before or after the request went out: either way the words say what happened.
    assert re.search(r"reset by peer|closed the connection", attempt["error"]), attempt["error"]
    assert "127.0.0.1" in attempt["error"]
    assert attempt["duration_ms"] < 1000 * TIMEOUTS["connection_timeout"]  # no waiting at all
    assert delivery["status"] == "retrying"
    assert_logged(logged, delivery["id"], attempt["error"])


def test_a_reset_that_beats_the_connect_is_named() -> None:
    # The on-accept reset above sometimes lands here: asyncio then reports the RST as
    # "Connect call failed ('127.0.0.1', port)", which says nothing about why.
    key = ConnectionKey(
        host="127.0.0.1",
        port=8443,
        is_ssl=True,
        ssl=True,
        proxy=None,
        proxy_auth=None,
        proxy_headers_hash=None,
    )
    raced = OSError(errno.ECONNRESET, "Connect call failed ('127.0.0.1', 8443)")
    settings = WebhookSettings(name="receiver", url="https://127.0.0.1:8443/hook")
    assert describe_error(aiohttp.ClientConnectorError(key, raced), settings) == (
        "could not connect to 127.0.0.1:8443: Connection reset by peer"
    )


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_receiver_that_trickles_its_answer_times_out(
    start_tocsin: StartTocsin,
    logged: pytest.LogCaptureFixture,
    server_tls: ssl.SSLContext,
    ca_pem: str,
    tls: bool,
) -> None:
    with Hostile(trickles, tls=server_tls if tls else None) as receiver:
        delivery, attempt = await attempt_against(
            start_tocsin, receiver, **({"ca_certificate": ca_pem} if tls else {})
        )
        assert await receiver.until(closed_at_least(1), within=5)

    limit = TIMEOUTS["request_timeout"]
    assert attempt["error"] == (
        f"read timeout: 127.0.0.1 sent no complete response within {limit} s"
    )
    # Each byte came well inside the read timeout, yet the answer as a whole did not:
    # request_timeout bounds the wait for the response, not the wait for each byte.
    assert attempt["duration_ms"] < 1000 * (limit + SLACK)
    [connection] = receiver.connections
    assert connection.lasted < limit + SLACK + TRICKLE_INTERVAL
    assert 0 < connection.sent < len(TRICKLED)
    assert delivery["status"] == "retrying"
    assert_logged(logged, delivery["id"], attempt["error"])


async def test_a_receiver_that_sends_1_gib_is_read_no_further_than_4_kib(
    start_tocsin: StartTocsin, logged: pytest.LogCaptureFixture, store_kind: str
) -> None:
    with Hostile(floods()) as receiver:
        delivery, attempt = await attempt_against(start_tocsin, receiver)
        assert await receiver.until(closed_at_least(1), within=5)

    assert attempt["status_code"] == 200
    assert attempt["error"] is None
    assert delivery["status"] == "delivered"
    body = attempt["response_body"]
    assert 0 < len(body) <= RESPONSE_CAP
    # PostgreSQL text cannot hold NUL: that store keeps U+FFFD in its place.
    assert set(body) == ({"\ufffd"} if store_kind == "postgres" else {"\x00"})
    assert attempt["duration_ms"] < 1000 * TIMEOUTS["request_timeout"]
    # Tocsin dropped the connection instead of draining it: what the receiver got
    # out before its writes failed is what the socket buffers hold, not 1 GiB.
    [connection] = receiver.connections
    assert connection.sent < 64 * 1024 * 1024, f"{connection.sent / 2**20:.0f} MiB were read"
    assert connection.lasted < TIMEOUTS["request_timeout"] + SLACK
    assert not logged.messages


INVALID_UTF8 = b"caf\xc3 \xff\xfe broken \xed\xa0\x80 surrogate \xc0\xaf overlong"


async def test_a_500_with_an_invalid_utf8_body_is_recorded_with_replacement_characters(
    start_tocsin: StartTocsin, logged: pytest.LogCaptureFixture
) -> None:
    with Hostile(answers(b"HTTP/1.1 500 Internal Server Error", INVALID_UTF8)) as receiver:
        delivery, attempt = await attempt_against(start_tocsin, receiver)

    assert attempt["status_code"] == 500
    assert attempt["error"] == "receiver answered HTTP 500 Internal Server Error"
    body = attempt["response_body"]
    assert body == INVALID_UTF8.decode("utf-8", errors="replace")
    assert body.startswith("caf\ufffd \ufffd\ufffd broken ")
    assert delivery["status"] == "retrying"
    assert_logged(logged, delivery["id"], attempt["error"])


async def test_invalid_utf8_in_the_status_line_is_recorded_not_fatal(
    start_tocsin: StartTocsin, logged: pytest.LogCaptureFixture
) -> None:
    # aiohttp hands the reason phrase over with lone surrogates for the bad bytes; stored
    # as such, they failed the attempt's write and stopped all recording of attempts.
    with Hostile(answers(b"HTTP/1.1 503 Serv\xffce Unava\xc3ilable", b"down")) as receiver:
        delivery, attempt = await attempt_against(start_tocsin, receiver)

    assert attempt["status_code"] == 503
    assert attempt["error"] == "receiver answered HTTP 503 Serv\ufffdce Unava\ufffdilable"
    assert attempt["response_body"] == "down"
    assert delivery["status"] == "retrying"
    assert_logged(logged, delivery["id"], attempt["error"])


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_receiver_that_never_answers_nor_closes_times_out(
    start_tocsin: StartTocsin,
    logged: pytest.LogCaptureFixture,
    server_tls: ssl.SSLContext,
    ca_pem: str,
    tls: bool,
) -> None:
    with Hostile(stays_silent, tls=server_tls if tls else None) as receiver:
        delivery, attempt = await attempt_against(
            start_tocsin, receiver, **({"ca_certificate": ca_pem} if tls else {})
        )
        assert await receiver.until(closed_at_least(1), within=5)

    limit = TIMEOUTS["request_timeout"]
    assert attempt["error"] == (
        f"read timeout: 127.0.0.1 sent no complete response within {limit} s"
    )
    assert limit * 1000 <= attempt["duration_ms"] < 1000 * (limit + SLACK)
    # Tocsin hung up rather than leave the socket open for the receiver to hold.
    assert receiver.connections[0].lasted < limit + SLACK
    assert delivery["status"] == "retrying"
    assert_logged(logged, delivery["id"], attempt["error"])


async def test_a_request_body_is_let_go_once_written_while_the_receiver_stays_silent(
    server_tls: ssl.SSLContext, ca_pem: str
) -> None:
    body = os.urandom(1 << 20)  # an object of its own: only this test holds it
    held = sys.getrefcount(body)
    sender = Sender(allowed_networks=LOOPBACK)
    with Hostile(stays_silent, tls=server_tls) as receiver:
        settings = WebhookSettings(
            name="silent", url=receiver.url, ca_certificate=ca_pem, **TIMEOUTS
        )
        sending = asyncio.create_task(
            sender.send(settings, secrets=[SECRET], webhook_id="msg_silent", body=body)
        )
        read = await receiver.until(
            lambda r: bool(r.connections) and len(r.connections[0].request) > len(body),
            within=5,
        )
        assert read, "the receiver did not read the whole request"
        # The request waits for an answer; nothing of tocsin's holds the body any more.
        assert not sending.done()
        assert sys.getrefcount(body) == held
        outcome = await sending
    await sender.close()
    assert outcome.error == "read timeout: 127.0.0.1 sent no complete response within 1 s"
    assert outcome.request_size == len(body)


async def test_a_redirect_to_the_metadata_address_is_not_followed(
    start_tocsin: StartTocsin, logged: pytest.LogCaptureFixture
) -> None:
    with Hostile(answers(b"HTTP/1.1 302 Found\r\nLocation: " + METADATA.encode())) as receiver:
        delivery, attempt = await attempt_against(start_tocsin, receiver)
        requests = len(receiver.connections)

    assert attempt["status_code"] == 302
    assert attempt["error"] == f"receiver answered HTTP 302 (redirect to {METADATA!r} not followed)"
    assert requests == 1
    assert receiver.connections[0].request.startswith(b"POST /hook ")
    assert delivery["status"] == "retrying"
    assert_logged(logged, delivery["id"], attempt["error"])


async def test_a_redirect_to_an_allowed_internal_address_is_not_followed_either(
    start_tocsin: StartTocsin, logged: pytest.LogCaptureFixture
) -> None:
    # 127.0.0.0/8 is allowed in these tests, so only "never follow" keeps the trap empty.
    with Hostile(answers(b"HTTP/1.1 204 No Content")) as trap:
        moved = answers(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: " + trap.url.encode())
        with Hostile(moved) as receiver:
            delivery, attempt = await attempt_against(start_tocsin, receiver)
            # An attempt is recorded once its request is over: a followed redirect, too.
            contacted = len(trap.connections)

    assert attempt["status_code"] == 307
    assert f"redirect to {trap.url!r} not followed" in attempt["error"]
    assert contacted == 0
    assert delivery["status"] == "retrying"
    assert_logged(logged, delivery["id"], attempt["error"])


# -- memory of a real `tocsin serve` ------------------------------------------------------


HITS = 20  # a round; serve() sets TOCSIN_MAX_BATCH=1, so one request per hit
ROUNDS = 3
READ_TIMEOUT = "read timeout: 127.0.0.1 sent no complete response within 1 s"


@pytest.mark.slow
def test_serve_stays_under_300_mb_against_a_flood_and_a_trickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOCSIN_ALLOW_HTTP", "1")
    log = tmp_path / "serve.log"
    with (
        Hostile(floods()) as flood,
        Hostile(trickles) as trickle,
        serve(tmp_path / "tocsin.db", log) as (process, api),
    ):
        flood_id = create_integration(api, "flood", flood)
        trickle_id = create_integration(api, "trickle", trickle)
        for done in range(HITS, HITS * (ROUNDS + 1), HITS):
            report = api.post("/api/v1/hits", json=[hit(path=f"/p{done}/{n}") for n in range(HITS)])
            assert report.status_code == 202, report.text
            assert flood.wait_for(closed_at_least(done), within=10), log.read_text()
        # The trickle never answers, so it gets one request at a time; after the tenth
        # failure in a row (SPEC 4) it is auto-disabled. Later rounds go to the flood alone.
        disabled = AUTO_DISABLE_MIN_REQUESTS
        assert trickle.wait_for(lambda _: log.read_text().count(READ_TIMEOUT) >= disabled, 30)
        assert max(concurrent(trickle.connections)) == 1
        status = Path(f"/proc/{process.pid}/status").read_text()
        flooded = deliveries(api, flood_id)
        trickled = deliveries(api, trickle_id)

    peak, now = kib(status, "VmHWM") / 1024, kib(status, "VmRSS") / 1024
    assert peak < RSS_LIMIT_MB, f"peak RSS {peak:.0f} MB (now {now:.0f} MB)"
    assert len(flood.connections) == HITS * ROUNDS
    assert max(c.sent for c in flood.connections) < 64 * 2**20  # each dropped early
    assert [d["status"] for d in flooded] == ["delivered"] * HITS * ROUNDS
    assert all(len(d["attempts"][0]["response_body"]) <= RESPONSE_CAP for d in flooded)
    trickle_errors = {a["error"] for d in trickled for a in d["attempts"]}
    assert trickle_errors == {READ_TIMEOUT}
    assert "delivered" not in {d["status"] for d in trickled}
    text = log.read_text()
    assert re.search(rf"WARNING tocsin.delivery: delivery \d+: {re.escape(READ_TIMEOUT)}", text)
    assert "Traceback" not in text


def concurrent(connections: list[Connection]) -> list[int]:
    """How many connections were open as each one opened."""
    return [
        sum(1 for o in connections if o.opened_at <= c.opened_at < (o.closed_at or float("inf")))
        for c in connections
    ]


def kib(status: str, field_name: str) -> int:
    """A `Vm...: N kB` line of /proc/<pid>/status."""
    match = re.search(rf"^{field_name}:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def create_integration(api: httpx.Client, name: str, receiver: Hostile) -> int:
    body = {"name": name, "url": receiver.url, "events": ["hit"]} | TIMEOUTS
    created = api.post("/api/v1/integrations", json=body)
    assert created.status_code == 201, created.text
    integration_id: int = created.json()["id"]
    return integration_id


def deliveries(api: httpx.Client, integration_id: int) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/integrations/{integration_id}/deliveries", params={"limit": 200})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items
