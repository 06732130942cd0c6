"""The request head is bounded in the HTTP server of a real `tocsin serve` (issue 17).

A request line and headers past TOCSIN_MAX_HEADER_BYTES or TOCSIN_MAX_HEADER_COUNT are
answered 431 (or the connection is closed while the client still sends) before the
rest is read; a head not complete within TOCSIN_HEADER_TIMEOUT is answered 408 and
closed; the process's memory stays flat; other clients are served all along.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.served import Served, serve

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
HEADER_TIMEOUT = 1  # second, the smallest a test can wait for without a timing
GIVE_UP = 30.0  # seconds: a bound for the old, unbounded behaviour, not a timing
HIT = b'[{"type": "sqli", "domain": "shop.example.com", "path": "/search"}]'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory: Path = tmp_path_factory.mktemp("limits")
    env = {"TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN, "TOCSIN_HEADER_TIMEOUT": str(HEADER_TIMEOUT)}
    with serve(directory, env) as process:
        yield process


def request(path: str = "/healthz", *, headers: bytes = b"", body: bytes = b"") -> bytes:
    method = b"POST" if body else b"GET"
    head = method + b" " + path.encode() + b" HTTP/1.1\r\nHost: tocsin\r\n" + headers
    if body:
        head += b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
        head += b"Content-Type: application/json\r\n"
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def one_header(size: int) -> bytes:
    return b"X-Big: " + b"a" * size + b"\r\n"


def lines(count: int) -> bytes:
    return b"X-Line: b\r\n" * count


def exchange(served: Served, data: bytes) -> int | None:
    """Send a request; the status answered, or None if the server closed the connection."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=GIVE_UP) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        try:
            reply = sock.recv(65536)
        except ConnectionResetError:
            return None
    return int(reply.split(b" ", 2)[1]) if reply else None


def healthy(served: Served) -> bool:
    return httpx.get(f"{served.url}/healthz", timeout=GIVE_UP).status_code == 200


OVERSIZE = {
    "1 MB header, GET /healthz": request(headers=one_header(MIB)),
    "50 MB header, GET /healthz": request(headers=one_header(50 * MIB)),
    "200,000 header lines, GET /healthz": request(headers=lines(200_000)),
    "101 header lines, GET /healthz": request(headers=lines(100)),
    "1 MB header, POST /api/v1/hits": request("/api/v1/hits", headers=one_header(MIB), body=HIT),
    "50 MB header, POST /api/v1/hits": request(
        "/api/v1/hits", headers=one_header(50 * MIB), body=HIT
    ),
    "1 MB request line": request("/healthz?q=" + "a" * MIB),
}


@pytest.mark.parametrize("data", OVERSIZE.values(), ids=OVERSIZE.keys())
def test_an_oversize_head_is_refused(served: Served, data: bytes) -> None:
    assert exchange(served, data) in (431, None)
    assert healthy(served)


def test_a_head_within_the_limits_is_served(served: Served) -> None:
    assert exchange(served, request(headers=one_header(60 * 1024))) == 200
    assert exchange(served, request(headers=lines(98))) == 200  # + Host: 99 lines
    status = exchange(served, request("/api/v1/hits", headers=one_header(60 * 1024), body=HIT))
    assert status == 202


def test_oversize_heads_leave_memory_flat(tmp_path: Path) -> None:
    """A process of its own: what the other tests sent must not have grown it already."""
    with serve(tmp_path, {"TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN}) as served:
        exchange(served, request(headers=one_header(MIB)))  # the refusal's code paths, warm
        exchange(served, request("/api/v1/hits", body=HIT))
        before = served.rss_kib()
        for _ in range(3):
            exchange(served, request(headers=one_header(50 * MIB)))
            exchange(served, request(headers=lines(200_000)))
            exchange(served, request("/api/v1/hits", headers=one_header(50 * MIB), body=HIT))
        grown = served.rss_kib() - before
    print(f"RSS {before} KiB, then {grown:+} KiB after 3 x (50 MB, 200,000 lines, 50 MB)")  # noqa: T201
    assert grown < 4 * 1024


def test_trickled_heads_time_out_while_others_are_served(served: Served) -> None:
    silent = socket.create_connection(("127.0.0.1", served.port))  # sends nothing at all
    trickling = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(20)]
    for sock in trickling:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tocsin\r\n")
    waiting = [silent, *trickling]
    answers: list[bytes] = []
    deadline = time.monotonic() + GIVE_UP
    try:
        while waiting and time.monotonic() < deadline:
            assert healthy(served)  # another client is served meanwhile
            for sock in trickling:
                with contextlib.suppress(OSError):
                    sock.send(b"X-Slow: a\r\n")
            readable, _, _ = select.select(waiting, [], [], 0.2)
            for sock in readable:
                answers.append(closing_words(sock))
                waiting.remove(sock)
        assert not waiting, f"{len(waiting)} of 21 slow connections still open after {GIVE_UP} s"
        assert all(answer in (b"", b"HTTP/1.1 408") for answer in answers), answers
    finally:
        for sock in [silent, *trickling]:
            sock.close()


def closing_words(sock: socket.socket) -> bytes:
    """What a connection the server ends says first: a status line's start, or nothing."""
    try:
        return sock.recv(65536)[:12]
    except ConnectionResetError:
        return b""
