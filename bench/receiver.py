"""The benchmark's webhook receiver, in a process of its own so it never shares a core's GIL.

It answers every webhook at once with 200, counts notifications (the elements of
a JSON array body) and keeps the bodies, so the bench can replay exactly what
tocsin delivered. Control endpoints, outside the webhook path:

    POST /_bench/reset?expect=N   zero the counters, drop the bodies, wait for N notifications
                                  (&keep=0: count only, keep no bodies)
    GET  /_bench/wait?timeout=S   answer once N notifications arrived (or after S seconds)
    GET  /_bench/bodies           the kept bodies, each as a 4-byte length and its bytes

Run: python bench/receiver.py --port P --cert chain.pem --key key.pem
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field

import orjson
import uvloop
from aiohttp import web


@dataclass(slots=True)
class Tally:
    """What arrived since the last reset."""

    expect: int = 0
    keep: bool = True
    requests: int = 0
    notifications: int = 0
    body_bytes: int = 0
    first_at: float | None = None
    reached_at: float | None = None
    bodies: list[bytes] = field(default_factory=list)
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, body: bytes) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.requests += 1
        self.notifications += count_notifications(body)
        self.body_bytes += len(body)
        if self.keep:
            self.bodies.append(body)
        if self.reached_at is None and self.expect and self.notifications >= self.expect:
            self.reached_at = time.monotonic()  # system-wide on Linux: the bench compares it
            self.reached.set()

    def stats(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "notifications": self.notifications,
            "bytes": self.body_bytes,
            "first_at": self.first_at,
            "reached_at": self.reached_at,
        }


def count_notifications(body: bytes) -> int:
    """A JSON array is that many notifications; any other body counts as one."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 1
    return len(parsed) if isinstance(parsed, list) else 1


TALLY = web.AppKey("tally", Tally)


async def hook(request: web.Request) -> web.Response:
    request.app[TALLY].add(await request.read())
    return web.Response(text="ok")


async def reset(request: web.Request) -> web.Response:
    expect = int(request.query.get("expect", "0"))
    request.app[TALLY] = Tally(expect=expect, keep=request.query.get("keep", "1") != "0")
    return web.json_response({"reset": True})


async def wait(request: web.Request) -> web.Response:
    tally = request.app[TALLY]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.reached.wait(), float(request.query.get("timeout", "60")))
    return web.json_response(tally.stats())


async def bodies(request: web.Request) -> web.Response:
    kept = request.app[TALLY].bodies
    framed = b"".join(len(body).to_bytes(4, "big") + body for body in kept)
    return web.Response(body=framed, content_type="application/octet-stream")


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[TALLY] = Tally()
    app.router.add_post("/_bench/reset", reset)
    app.router.add_get("/_bench/wait", wait)
    app.router.add_get("/_bench/bodies", bodies)
    app.router.add_route("*", "/hook", hook)
    return app


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="PEM: the certificate and its chain")
    parser.add_argument("--key", required=True, help="PEM: the private key")
    args = parser.parse_args()
    uvloop.install()
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=args.port,
        ssl_context=tls_context(args.cert, args.key),
        access_log=None,
        print=None,
        shutdown_timeout=1.0,
    )


if __name__ == "__main__":
    main()
