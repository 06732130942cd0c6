"""The benchmark's webhook receiver, in a process of its own so it never shares a core's GIL.

It answers every webhook at once with 200, counts notifications and keeps the bodies, so
the bench can replay exactly what tocsin delivered. A body counts as:

- a JSON array (tocsin's `json_array` format): one notification per element;
- a JSON object with an `alerts` array (Alertmanager's webhook, version 4): one per alert;
- anything else: one.

With `latency=1` at reset, every tocsin hit notification whose hit carries `bench_sent`
(the bench's time.monotonic() when it POSTed the hit; CLOCK_MONOTONIC is one clock for the
whole machine) records its arrival minus that, and the stats give their percentiles.

Control endpoints, outside the webhook path:

    POST /_bench/reset?expect=N   zero the counters, drop the bodies, wait for N notifications
                                  (&keep=0: count only, keep no bodies; &latency=1: see above)
    GET  /_bench/wait?timeout=S   answer once N notifications arrived (or after S seconds)
    GET  /_bench/bodies           the kept bodies, each as a 4-byte length and its bytes

With --silent it is a receiver that never answers: it completes the TLS handshake, reads
each request and holds it without a reply, so the sender's request timeout governs.

Run: python bench/receiver.py --port P --cert chain.pem --key key.pem [--silent]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvloop
from aiohttp import web

SILENT_HOLD = 3600.0  # seconds a silent receiver holds a request; longer than any bench run


@dataclass(slots=True)
class Tally:
    """What arrived since the last reset."""

    expect: int = 0
    keep: bool = True
    latency: bool = False
    requests: int = 0
    notifications: int = 0
    body_bytes: int = 0
    first_at: float | None = None
    reached_at: float | None = None
    bodies: list[bytes] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, body: bytes) -> None:
        now = time.monotonic()  # system-wide on Linux: the bench compares it with its own
        if self.first_at is None:
            self.first_at = now
        self.requests += 1
        parsed = _parse(body)
        self.notifications += count_notifications(parsed)
        self.body_bytes += len(body)
        if self.keep:
            self.bodies.append(body)
        if self.latency:
            self.latencies.extend(now - sent for sent in sent_times(parsed))
        if self.reached_at is None and self.expect and self.notifications >= self.expect:
            self.reached_at = now
            self.reached.set()

    def stats(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "notifications": self.notifications,
            "bytes": self.body_bytes,
            "first_at": self.first_at,
            "reached_at": self.reached_at,
            "latency": percentiles(self.latencies),
        }


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def count_notifications(parsed: Any) -> int:
    """tocsin's array: its length; Alertmanager's object: its alerts; anything else: one."""
    if isinstance(parsed, list):
        return len(parsed)
    if isinstance(parsed, dict) and isinstance(parsed.get("alerts"), list):
        return len(parsed["alerts"])
    return 1


def sent_times(parsed: Any) -> list[float]:
    """The `bench_sent` of every hit notification in a tocsin body that has one."""
    if not isinstance(parsed, list):
        return []
    found = []
    for notification in parsed:
        with contextlib.suppress(AttributeError, TypeError):
            sent = notification["details"]["hit"].get("bench_sent")
            if isinstance(sent, float):
                found.append(sent)
    return found


def percentiles(latencies: list[float]) -> dict[str, float] | None:
    """p50, p99 and the maximum, in seconds; None when nothing was timed."""
    if len(latencies) < 2:
        return None
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"count": len(latencies), "p50": cuts[49], "p99": cuts[98], "max": max(latencies)}


TALLY = web.AppKey("tally", Tally)


async def hook(request: web.Request) -> web.Response:
    request.app[TALLY].add(await request.read())
    return web.Response(text="ok")


async def silent_hook(request: web.Request) -> web.Response:
    await request.read()
    await asyncio.sleep(SILENT_HOLD)
    return web.Response(text="too late")


async def reset(request: web.Request) -> web.Response:
    query = request.query
    request.app[TALLY] = Tally(
        expect=int(query.get("expect", "0")),
        keep=query.get("keep", "1") != "0",
        latency=query.get("latency", "0") == "1",
    )
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


def make_app(*, silent: bool = False) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[TALLY] = Tally()
    app.router.add_post("/_bench/reset", reset)
    app.router.add_get("/_bench/wait", wait)
    app.router.add_get("/_bench/bodies", bodies)
    app.router.add_route("*", "/hook", silent_hook if silent else hook)
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
    parser.add_argument("--silent", action="store_true", help="never answer a webhook")
    args = parser.parse_args()
    uvloop.install()
    web.run_app(
        make_app(silent=args.silent),
        host="127.0.0.1",
        port=args.port,
        ssl_context=tls_context(args.cert, args.key),
        access_log=None,
        print=None,
        shutdown_timeout=1.0,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
