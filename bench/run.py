"""`make bench`: notifications per second end to end through tocsin, next to a bare client loop.

Two measurements against the same HTTPS receiver (bench/receiver.py, its own process,
certificate from a private trustme CA), in the same run:

- tocsin: hits are POSTed to one `tocsin serve` process on SQLite, 100 per request, and the
  clock runs from the first POST until the receiver has counted every notification;
- wire: a bare aiohttp loop POSTs the very bodies tocsin delivered, with as many requests in
  flight as tocsin allows per integration, until the receiver has counted them all.

The ratio tocsin / wire says how much of what the client library and the receiver can do
tocsin keeps, after its API, its SQLite outbox and its bookkeeping.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import trustme
import uvloop

HERE = Path(__file__).resolve().parent
ADMIN_TOKEN = "tcs_bench_admin_token"  # noqa: S105 - a throwaway server on loopback
START_TIMEOUT = 30.0  # for the receiver and tocsin to answer
REQUEST_TIMEOUT = 60.0  # for any one request
RUN_TIMEOUT = 90.0  # for every notification of one run to arrive


class BenchError(Exception):
    """The benchmark could not measure: a process failed, or notifications went missing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    hits: int
    runs: int
    warmup: int
    per_post: int
    wire_repeat: int
    ingest_concurrency: int
    max_in_flight: int
    max_batch: int
    synchronous: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One run of one phase, as the receiver counted it."""

    notifications: int
    requests: int
    body_bytes: int
    seconds: float
    ingest_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.notifications / self.seconds


# processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def spawned(
    name: str, command: Sequence[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process whose output goes to `log`; terminated (then killed) on the way out."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                print(f"{name} ignored SIGTERM; killing it", file=sys.stderr)
                process.kill()
                process.wait(10)


def receiver_command(port: int, workdir: Path) -> list[str]:
    return [
        sys.executable,
        str(HERE / "receiver.py"),
        "--port",
        str(port),
        "--cert",
        str(workdir / "receiver-chain.pem"),
        "--key",
        str(workdir / "receiver-key.pem"),
    ]


def tocsin_env(port: int, workdir: Path, options: Options) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOCSIN_")}
    return env | {
        "TOCSIN_DATABASE_URL": f"sqlite:///{workdir / 'tocsin.db'}",
        "TOCSIN_PORT": str(port),
        "TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN,
        "TOCSIN_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TOCSIN_MAX_BATCH": str(options.max_batch),
        "TOCSIN_MAX_IN_FLIGHT": str(options.max_in_flight),
        "TOCSIN_SQLITE_SYNCHRONOUS": options.synchronous,
    }


async def wait_ready(
    session: aiohttp.ClientSession,
    url: str,
    process: subprocess.Popen[bytes],
    *,
    tls: ssl.SSLContext | bool = True,
) -> None:
    """Poll `url` until it answers 200; fail early if the process dies."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{url}: the process exited with status {process.returncode}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(url, ssl=tls, timeout=aiohttp.ClientTimeout(total=2)) as reply:
                if reply.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise BenchError(f"{url} was not ready within {START_TIMEOUT:g} s")


# TLS -------------------------------------------------------------------------------


def write_certificates(workdir: Path) -> tuple[str, ssl.SSLContext]:
    """A private CA and the receiver's certificate: the CA PEM and a client context trusting it."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(str(workdir / "receiver-key.pem"))
    with (workdir / "receiver-chain.pem").open("wb") as chain:
        for blob in leaf.cert_chain_pems:
            chain.write(blob.bytes())
    ca_pem = ca.cert_pem.bytes().decode()
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=ca_pem)
    return ca_pem, client


# the receiver's control endpoints --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceiverControl:
    session: aiohttp.ClientSession
    base: str
    tls: ssl.SSLContext

    @property
    def hook_url(self) -> str:
        return f"{self.base}/hook"

    @property
    def ready_url(self) -> str:
        return f"{self.base}/_bench/wait?timeout=0"

    async def reset(self, expect: int) -> None:
        url = f"{self.base}/_bench/reset?expect={expect}"
        async with self.session.post(url, ssl=self.tls) as reply:
            reply.raise_for_status()

    async def wait(self, expect: int) -> dict[str, Any]:
        """The receiver's counts once `expect` notifications arrived; BenchError otherwise."""
        url = f"{self.base}/_bench/wait?timeout={RUN_TIMEOUT}"
        limit = aiohttp.ClientTimeout(total=RUN_TIMEOUT + 10)
        async with self.session.get(url, ssl=self.tls, timeout=limit) as reply:
            stats: dict[str, Any] = await reply.json()
        if stats["reached_at"] is None:
            raise BenchError(
                f"only {stats['notifications']} of {expect} notifications arrived "
                f"within {RUN_TIMEOUT:g} s"
            )
        return stats

    async def bodies(self) -> list[bytes]:
        async with self.session.get(f"{self.base}/_bench/bodies", ssl=self.tls) as reply:
            framed = await reply.read()
        kept = []
        offset = 0
        while offset < len(framed):
            size = int.from_bytes(framed[offset : offset + 4], "big")
            kept.append(framed[offset + 4 : offset + 4 + size])
            offset += 4 + size
        return kept


# the two phases --------------------------------------------------------------------


async def post_each(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    **request: Any,
) -> None:
    """POST every body once, `concurrency` requests at a time; any non-2xx answer fails."""
    pending = iter(bodies)

    async def worker() -> None:
        for body in pending:  # one iterator shared by the workers: each body goes once
            async with session.post(url, data=body, **request) as reply:
                await reply.read()
                if not 200 <= reply.status < 300:
                    raise BenchError(f"POST {url}: HTTP {reply.status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def hit_posts(tag: str, hits: int, per_post: int) -> list[bytes]:
    """Request bodies of `per_post` hits each; every hit differs, so none is sampled away."""
    made = [
        {
            "type": "sqli",
            "domain": "shop.example.com",
            "path": f"/bench/{tag}/{index}",
            "parameter": "GET_q_value",
            "method": "GET",
            "response_status": 200,
            "remote_addr4": "8.8.8.8",
        }
        for index in range(hits)
    ]
    return [orjson.dumps(made[i : i + per_post]) for i in range(0, hits, per_post)]


def measured(stats: dict[str, Any], start: float, ingested: float | None = None) -> Measurement:
    # reached_at is the receiver's time.monotonic(): CLOCK_MONOTONIC is one clock for every
    # process of the machine, so it compares with ours.
    return Measurement(
        notifications=stats["notifications"],
        requests=stats["requests"],
        body_bytes=stats["bytes"],
        seconds=stats["reached_at"] - start,
        ingest_seconds=None if ingested is None else ingested - start,
    )


@dataclass(frozen=True, slots=True)
class Bench:
    options: Options
    receiver: ReceiverControl
    tocsin_url: str
    client: aiohttp.ClientSession

    async def create_integration(self, ca_pem: str) -> None:
        body = {
            "name": "bench receiver",
            "url": self.receiver.hook_url,
            "ca_certificate": ca_pem,
            "events": ["hit"],
        }
        url = f"{self.tocsin_url}/api/v1/integrations"
        async with self.client.post(url, json=body, headers=_auth()) as reply:
            if reply.status != 201:
                raise BenchError(f"creating the integration: {reply.status} {await reply.text()}")

    async def tocsin_run(self, tag: str, hits: int) -> tuple[Measurement, list[bytes]]:
        """Hits in, notifications out: the measurement and the bodies tocsin delivered."""
        posts = hit_posts(tag, hits, self.options.per_post)
        await self.receiver.reset(expect=hits)
        start = time.monotonic()
        url = f"{self.tocsin_url}/api/v1/hits"
        concurrency = self.options.ingest_concurrency
        await post_each(self.client, url, posts, concurrency, headers=_auth())
        ingested = time.monotonic()
        stats = await self.receiver.wait(hits)
        return measured(stats, start, ingested), await self.receiver.bodies()

    async def wire_run(self, bodies: Sequence[bytes], notifications: int) -> Measurement:
        """The same bodies straight from a client loop, as many in flight as tocsin allows.

        They go `wire_repeat` times over, so that this much faster phase lasts long enough
        to measure on a busy machine.
        """
        repeat = self.options.wire_repeat
        expect = notifications * repeat
        await self.receiver.reset(expect=expect)
        start = time.monotonic()
        await post_each(
            self.client,
            self.receiver.hook_url,
            list(bodies) * repeat,
            self.options.max_in_flight,
            ssl=self.receiver.tls,
            headers={"Content-Type": "application/json"},
        )
        stats = await self.receiver.wait(expect)
        return measured(stats, start)

    async def round(self, tag: str, hits: int) -> tuple[Measurement, Measurement]:
        through_tocsin, bodies = await self.tocsin_run(tag, hits)
        if through_tocsin.notifications != hits:
            raise BenchError(f"{through_tocsin.notifications} notifications for {hits} hits")
        return through_tocsin, await self.wire_run(bodies, through_tocsin.notifications)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# running it all --------------------------------------------------------------------

FAILURES = (BenchError, aiohttp.ClientError, OSError)


@contextlib.contextmanager
def processes(
    options: Options, workdir: Path, receiver_port: int, tocsin_port: int
) -> Iterator[Any]:
    """The receiver and `tocsin serve`, both stopped on the way out, whatever happens."""
    receiver = receiver_command(receiver_port, workdir)
    tocsin = [str(Path(sys.executable).with_name("tocsin")), "serve"]
    tocsin_vars = tocsin_env(tocsin_port, workdir, options)
    with (
        spawned(
            "receiver", receiver, dict(os.environ), workdir / "receiver.log"
        ) as receiver_process,
        spawned("tocsin", tocsin, tocsin_vars, workdir / "tocsin.log") as tocsin_process,
    ):
        yield receiver_process, tocsin_process


@contextlib.asynccontextmanager
async def running_bench(options: Options, workdir: Path) -> AsyncIterator[Bench]:
    """Receiver and tocsin started, the integration created; everything stopped afterwards."""
    ca_pem, client_tls = write_certificates(workdir)
    receiver_port, tocsin_port = free_port(), free_port()
    with processes(options, workdir, receiver_port, tocsin_port) as (receiver_process, tocsin):
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so no request
        # races the server closing its side.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2)
        limit = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=limit) as client:
            control = ReceiverControl(client, f"https://127.0.0.1:{receiver_port}", client_tls)
            bench = Bench(options, control, f"http://127.0.0.1:{tocsin_port}", client)
            try:
                await wait_ready(client, control.ready_url, receiver_process, tls=client_tls)
                await wait_ready(client, f"{bench.tocsin_url}/readyz", tocsin)
                await bench.create_integration(ca_pem)
                yield bench
            except FAILURES:
                _print_tail(workdir / "tocsin.log")
                _print_tail(workdir / "receiver.log")
                raise


def _print_tail(log: Path, lines: int = 20) -> None:
    if log.exists():
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- the end of {log.name} ---", *tail, sep="\n", file=sys.stderr)


async def measure(options: Options) -> tuple[list[Measurement], list[Measurement]]:
    """Warm up, then `runs` rounds of both phases, interleaved so that drift hits both."""
    tocsin: list[Measurement] = []
    wire: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-") as tmp:
        async with running_bench(options, Path(tmp)) as bench:
            if options.warmup:
                await bench.round("warmup", options.warmup)
            for run in range(1, options.runs + 1):
                through_tocsin, direct = await bench.round(f"run{run}", options.hits)
                tocsin.append(through_tocsin)
                wire.append(direct)
                print(f"run {run}: tocsin {through_tocsin.rate:,.0f}/s, wire {direct.rate:,.0f}/s")
    return tocsin, wire


# the report ------------------------------------------------------------------------


def report(options: Options, tocsin: list[Measurement], wire: list[Measurement]) -> str:
    ratio = _median(tocsin) / _median(wire)
    verdict = "met" if ratio >= 0.4 else "not met"
    return "\n".join(
        [
            *_setup(options, len(tocsin)),
            "",
            f"{'notifications/s':<18}"
            + "".join(f"{f'run {run}':>10}" for run in range(1, len(tocsin) + 1))
            + f"{'median':>10}",
            _row("tocsin", [m.rate for m in tocsin]),
            _row("wire (aiohttp)", [m.rate for m in wire]),
            "",
            _shape(tocsin),
            _latency(tocsin),
            "",
            f"ratio = tocsin / wire = {ratio:.3f} (target >= 0.4: {verdict})",
        ]
    )


def _setup(options: Options, runs: int) -> list[str]:
    posting = (
        f"{options.hits} hits per run, POSTed {options.per_post} per request, "
        f"{options.ingest_concurrency} at a time; {runs} runs after a {options.warmup}-hit warm-up"
    )
    tocsin = (
        f"tocsin: one `tocsin serve` on SQLite, synchronous={options.synchronous}, "
        f"max_batch={options.max_batch}, max_in_flight={options.max_in_flight}"
    )
    wire = (
        f"wire: the bodies tocsin delivered, {options.wire_repeat} times over, "
        f"{options.max_in_flight} in flight"
    )
    return [posting, tocsin, wire]


def _row(name: str, rates: list[float]) -> str:
    cells = "".join(f"{rate:>10,.0f}" for rate in rates)
    return f"{name:<18}{cells}{statistics.median(rates):>10,.0f}"


def _shape(runs: list[Measurement]) -> str:
    requests = sum(m.requests for m in runs)
    notifications = sum(m.notifications for m in runs)
    size = sum(m.body_bytes for m in runs)
    return (
        f"tocsin delivered {requests / len(runs):.0f} requests per run, "
        f"{notifications / requests:.0f} notifications and {size / requests / 1024:.0f} KiB each"
    )


def _latency(runs: list[Measurement]) -> str:
    accepted = statistics.median(m.ingest_seconds or 0.0 for m in runs)
    delivered = statistics.median(m.seconds for m in runs)
    return (
        f"tocsin accepted every hit after {accepted:.2f} s, delivered all after {delivered:.2f} s"
    )


def _median(runs: list[Measurement]) -> float:
    return statistics.median(m.rate for m in runs)


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--hits", type=int, default=20_000, help="hits per measured run (default 20000)")
    add("--runs", type=int, default=3, help="measured runs of each phase (default 3)")
    add("--warmup", type=int, default=2_000, help="hits of the unmeasured first round")
    add("--per-post", type=int, default=100, help="hits per POST /api/v1/hits")
    add("--wire-repeat", type=int, default=5, help="times the wire phase sends the bodies")
    add("--ingest-concurrency", type=int, default=4, help="POSTs to tocsin at a time")
    add("--max-in-flight", type=int, default=4, help="TOCSIN_MAX_IN_FLIGHT, and the wire's")
    add("--max-batch", type=int, default=500, help="TOCSIN_MAX_BATCH")
    add("--synchronous", default="FULL", help="TOCSIN_SQLITE_SYNCHRONOUS (default FULL)")
    args = parser.parse_args(argv)
    return Options(**vars(args))


def main() -> int:
    options = parse_options()
    try:
        tocsin, wire = uvloop.run(measure(options))
    except FAILURES as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted; the receiver and tocsin were stopped", file=sys.stderr)
        return 130
    print(report(options, tocsin, wire))
    return 0


if __name__ == "__main__":
    sys.exit(main())
