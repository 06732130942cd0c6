"""A webhook receiver on its own thread: for `tocsin listen`, the tests and the benchmarks.

It records every request and answers as its `respond` function says, so a test
can script a receiver that fails twice, hangs, or answers slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from aiohttp import web


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """How to answer one request: after `delay` seconds, with this status and body."""

    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


Respond = Callable[[int, Received], Reply]


def always_ok(_: int, __: Received) -> Reply:
    return Reply()


class Receiver:
    """An HTTP(S) server on 127.0.0.1 with a random port, running in a thread."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        respond: Respond = always_ok,
        host: str = "127.0.0.1",
        port: int = 0,
        keep: bool = True,
    ) -> None:
        self._tls = tls
        self.respond = respond
        self._host = host
        self._keep = keep
        self.requests: list[Received] = []
        self.count = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="receiver")
        self._runner: web.AppRunner | None = None
        self.port = port

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self._host}:{self.port}/hook"

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port, ssl_context=self._tls)
        await site.start()
        server = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
        assert isinstance(server, asyncio.Server)  # noqa: S101
        self.port = server.sockets[0].getsockname()[1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=await request.read(),
            at=time.time(),
        )
        with self._changed:
            index = self.count
            self.count += 1
            if self._keep:
                self.requests.append(received)
            self._changed.notify_all()
        reply = self.respond(index, received)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 10.0) -> bool:
        """Block until the predicate holds for this receiver, or the timeout passes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))
        return True

    async def _shutdown(self) -> None:
        """Cancel requests still being answered (a hanging reply), then close the server."""
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def until(self, predicate: Callable[[Receiver], bool], within: float = 10.0) -> bool:
        """`wait_for` for code on an event loop: polls without blocking the loop."""
        deadline = time.monotonic() + within
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
