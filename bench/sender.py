"""Micro-benchmark: the CPU tocsin's Sender spends per webhook, next to a bare aiohttp loop.

One receiver process (bench/receiver.py, HTTPS with a private trustme CA, on loopback);
in this process, in interleaved rounds, the same bodies are POSTed `--concurrency` at a
time:

- bare: `session.post` on one aiohttp session, reading each answer;
- sender: `Sender.send` with a signing secret and the receiver's CA, as the dispatcher
  calls it.

Each round's figure is this process's CPU time (time.process_time) per request, so other
work on the machine counts less than in wall time (it still moves the figures: compare
the ratio, the median of each round's sender / bare). The ratio is the price of
tocsin's headers, signatures, guard and timeouts on top of aiohttp. The last line times
`ids.webhook_id()`, which the store calls once per delivery.

Run: .venv/bin/python bench/sender.py [--requests 5000] [--rounds 5] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import statistics
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import uvloop

from harness import BenchError, Certificates, http_client, make_hit, receiver_running
from tocsin import ids
from tocsin.delivery import Sender
from tocsin.models import WebhookSettings

PHASE_TIMEOUT = 120.0  # seconds for one phase of one round, whatever the count
WARMUP = 200  # requests before each phase's clock starts: connections made, caches filled

Send = Callable[[bytes], Awaitable[None]]


async def timed(send: Send, body: bytes, requests: int, concurrency: int) -> float:
    """CPU seconds of this process per request, `concurrency` requests at a time."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await send(body)

    async with asyncio.timeout(PHASE_TIMEOUT):
        await asyncio.gather(*(worker(WARMUP // concurrency) for _ in range(concurrency)))
        start = time.process_time()
        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
        spent = time.process_time() - start
    return spent / (requests // concurrency * concurrency)


def bare(session: aiohttp.ClientSession, url: str, certificates: Certificates) -> Send:
    async def send(body: bytes) -> None:
        async with session.post(url, data=body, ssl=certificates.client_tls) as reply:
            await reply.read()
            if reply.status != 200:
                raise BenchError(f"bare POST: HTTP {reply.status}")

    return send


def through_sender(sender: Sender, url: str, certificates: Certificates) -> Send:
    settings = WebhookSettings(
        name="bench",
        url=url,
        ca_certificate=certificates.ca_pem,
        headers={"X-Bench": "sender"},
    )
    secrets = [ids.signing_secret()]
    webhook_id = ids.webhook_id()

    async def send(body: bytes) -> None:
        outcome = await sender.send(settings, secrets=secrets, webhook_id=webhook_id, body=body)
        if not outcome.ok:
            raise BenchError(f"Sender.send: {outcome.error}")

    return send


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} µs"


async def run(options: argparse.Namespace) -> None:
    body = orjson.dumps([{"event": "hit", "details": {"hit": make_hit("sender", 0)}}])
    loopback = ipaddress.ip_network("127.0.0.0/8")
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-sender-") as workdir:
        async with http_client() as control, receiver_running(Path(workdir), control) as receiver:
            await receiver.reset(0, keep=False)
            connector = aiohttp.TCPConnector(limit=0)
            sender = Sender(allowed_networks=[loopback])
            async with aiohttp.ClientSession(connector=connector) as session:
                try:
                    await rounds(
                        options,
                        body,
                        bare(session, receiver.hook_url, receiver.certificates),
                        through_sender(sender, receiver.hook_url, receiver.certificates),
                    )
                finally:
                    await sender.close()


async def rounds(options: argparse.Namespace, body: bytes, wire: Send, tocsin: Send) -> None:
    print(
        f"{options.requests} requests a phase, {options.concurrency} at a time, "
        f"{len(body)}-byte body; CPU time of this process per request"
    )
    print(f"{'round':>5} {'bare':>11} {'sender':>11} {'ratio':>6}")
    bares, senders = [], []
    for number in range(1, options.rounds + 1):
        bares.append(await timed(wire, body, options.requests, options.concurrency))
        senders.append(await timed(tocsin, body, options.requests, options.concurrency))
        ratio = senders[-1] / bares[-1]
        print(f"{number:>5} {micros(bares[-1])} {micros(senders[-1])} {ratio:6.2f}")
    bare_median, sender_median = statistics.median(bares), statistics.median(senders)
    # The ratio of each round's pair: other work on the machine moves both alike.
    ratio = statistics.median(sender / wire for sender, wire in zip(senders, bares, strict=True))
    print(f"{'median':>6}{micros(bare_median)} {micros(sender_median)} {ratio:6.2f}")
    print(f"sender - bare: {micros(sender_median - bare_median)} a request")
    per_id = min(timeit.repeat(ids.webhook_id, number=100_000, repeat=3)) / 100_000
    print(f"ids.webhook_id(): {micros(per_id)} a call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="timed requests a phase")
    parser.add_argument("--rounds", type=int, default=5, help="bare and sender, alternately")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
