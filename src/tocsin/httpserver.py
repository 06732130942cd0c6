"""The HTTP server of `tocsin serve`: uvicorn with httptools, each request head bounded.

uvicorn bounds nothing of a request head when it parses with httptools (its
`h11_max_incomplete_event_size` applies to h11 only, a parser with about three times
httptools' cost per request), and httptools itself gathers a header value that arrives
in many reads by concatenation: one 50 MB header took seconds and 130 MB. This protocol
keeps uvicorn's httptools protocol and adds three limits to every request head (the
request line and the headers):

- `max_bytes`: a head growing past it is answered 431 and the connection closed as soon
  as the read that crossed it is parsed, so a connection never holds more than the limit
  plus one read (at most 256 KiB) of head;
- `max_count`: more header lines than that are answered 431 too;
- `timeout`: a connection that has not completed a request head that many seconds after
  it opened, or after the head began, is answered 408 and closed (one timer per server
  looks at the open connections, not one per request). Between requests, uvicorn's
  keep-alive timeout (5 s) closes idle connections, as before.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from tocsin.config import Settings
from tocsin.errors import ConfigError

SWEEP_EVERY = 1.0  # seconds between looks at the connections' heads, at most


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_bytes: int = 64 * 1024
    max_count: int = 100
    timeout: float = 10.0


class HeadTooLargeError(Exception):
    """Raised in a parser callback: httptools stops parsing this connection at once."""


@dataclass(slots=True, eq=False)
class HeadWatch:
    """One server's timer: closes the connections whose head takes too long."""

    timeout: float
    timer: asyncio.TimerHandle | None = field(default=None)

    def watch(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        if self.timer is None:
            delay = min(SWEEP_EVERY, self.timeout / 4)
            self.timer = loop.call_later(delay, self.sweep, loop, connections)

    def sweep(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.timer = None
        now = loop.time()
        for connection in list(connections):
            since = getattr(connection, "head_since", None)
            if since is not None and now - since > self.timeout:
                connection.head_timed_out()
        if connections:
            self.watch(loop, connections)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request head bounded (see the module)."""

    limits: ClassVar[HeadLimits] = HeadLimits()
    head_watch: ClassVar[HeadWatch]

    head_since: float | None  # when the head being read began; None between heads
    head_bytes: int  # bytes received since then (the head, and perhaps a body after it)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.head_since = self.loop.time()
        self.head_bytes = 0
        super().connection_made(transport)
        self.head_watch.watch(self.loop, self.connections)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, counting the head's bytes, and a head too large answered 431."""
        self._unset_keepalive_if_required()
        if self.head_since is not None:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLargeError):
                self.refuse(431, self.too_large())
            else:
                self.invalid()
            return
        except httptools.HttpParserError:
            self.invalid()
            return
        except httptools.HttpParserUpgrade:
            self.upgrade()
            return
        if self.head_since is not None and self.head_bytes > self.limits.max_bytes:
            self.refuse(431, self.too_large())

    def invalid(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def upgrade(self) -> None:
        if self._should_upgrade():
            self.handle_websocket_upgrade()
        else:
            self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_since is None:  # a further request on a kept-alive connection
            self.head_since = self.loop.time()
            self.head_bytes = 0

    def on_headers_complete(self) -> None:
        if len(self.headers) > self.limits.max_count or (
            self.head_bytes > self.limits.max_bytes and self.head_size() > self.limits.max_bytes
        ):
            raise HeadTooLargeError
        self.head_since = None
        super().on_headers_complete()

    def head_size(self) -> int:
        """The head's size as parsed (the read that ended it may carry a body too)."""
        lines = sum(len(name) + len(value) + 4 for name, value in self.headers)
        return len(self.url) + lines + 16

    def too_large(self) -> str:
        limits = self.limits
        return (
            f"the request line and headers exceed {limits.max_bytes} bytes or "
            f"{limits.max_count} header lines (TOCSIN_MAX_HEADER_BYTES, TOCSIN_MAX_HEADER_COUNT)"
        )

    def head_timed_out(self) -> None:
        self.refuse(
            408,
            f"the request line and headers did not arrive within {self.limits.timeout:g} s "
            "(TOCSIN_HEADER_TIMEOUT)",
        )

    def refuse(self, status: int, message: str) -> None:
        """Answer in tocsin's error format, then close: nothing more is read."""
        self.head_since = None
        if self.transport.is_closing():
            return
        code = "headers_too_large" if status == 431 else "header_timeout"  # noqa: PLR2004
        body = orjson.dumps({"error": {"code": code, "message": message, "field": "headers"}})
        head = [STATUS_LINE[status]]
        defaults = self.server_state.default_headers
        head.extend(name + b": " + value + b"\r\n" for name, value in defaults)
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def protocol_class(limits: HeadLimits) -> type[BoundedHttpToolsProtocol]:
    """A protocol class for one server: its limits and its own head timer."""
    return type(
        "TocsinHttpProtocol",
        (BoundedHttpToolsProtocol,),
        {"limits": limits, "head_watch": HeadWatch(limits.timeout)},
    )


def config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn settings of `tocsin serve`."""
    limits = HeadLimits(
        settings.max_header_bytes, settings.max_header_count, settings.header_timeout
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_class(limits),
        log_level="warning",
        access_log=False,
    )


def listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, or one line saying why there is none."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        hint = " (another process has it: choose a port with --port or TOCSIN_PORT)"
        busy = exc.errno == errno.EADDRINUSE
        reason = (os.strerror(exc.errno) if exc.errno else str(exc)) + (hint if busy else "")
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from exc
