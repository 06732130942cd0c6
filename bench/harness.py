"""What every section of `make bench` shares: processes, the receivers, tocsin's API, results.

Everything here is bounded: a process that does not answer within START_TIMEOUT, a request
that takes longer than REQUEST_TIMEOUT and a run whose notifications do not all arrive
within RUN_TIMEOUT fail the bench (BenchError); every process started is stopped on the
way out, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import trustme

from options import Options

HERE = Path(__file__).resolve().parent
ADMIN_TOKEN = "tcs_bench_admin_token"  # noqa: S105 - a throwaway server on loopback
OPERATOR_TOKEN = "tcs_bench_operator_token"  # noqa: S105 - the same
START_TIMEOUT = 30.0  # for a process to answer, and for `tocsin migrate`
REQUEST_TIMEOUT = 60.0  # for any one request
RUN_TIMEOUT = 90.0  # for every notification of one run to arrive


class BenchError(Exception):
    """The benchmark could not measure: a process failed, or notifications went missing."""


FAILURES = (
    BenchError,
    aiohttp.ClientError,
    OSError,
    subprocess.SubprocessError,
    asyncpg.PostgresError,
)


# results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One run of one phase, as the receiver counted it."""

    notifications: int
    requests: int
    body_bytes: int
    seconds: float
    ingest_seconds: float | None = None
    first_seconds: float | None = None  # to the first notification, when it matters
    latency: Mapping[str, float] | None = None  # p50, p99, max (s) when the run timed hits

    @property
    def rate(self) -> float:
        return self.notifications / self.seconds


def measured(stats: dict[str, Any], start: float, ingested: float | None = None) -> Measurement:
    """A Measurement from the receiver's stats; `start` and `ingested` are our monotonic times."""
    # reached_at is the receiver's time.monotonic(): CLOCK_MONOTONIC is one clock for every
    # process of the machine, so it compares with ours.
    return Measurement(
        notifications=stats["notifications"],
        requests=stats["requests"],
        body_bytes=stats["bytes"],
        seconds=stats["reached_at"] - start,
        ingest_seconds=None if ingested is None else ingested - start,
        first_seconds=stats["first_at"] - start,
        latency=stats.get("latency"),
    )


def median_of(runs: Sequence[Measurement], figure: Callable[[Measurement], float]) -> float:
    return statistics.median(figure(run) for run in runs)


def median_rate(runs: Sequence[Measurement]) -> float:
    return median_of(runs, lambda m: m.rate)


def median_latency(runs: Sequence[Measurement], key: str) -> float:
    """The median over runs of one latency percentile, in seconds."""
    return median_of(runs, lambda m: (m.latency or {}).get(key, float("nan")))


def rates_row(name: str, rates: Sequence[float], width: int = 24) -> str:
    """`name`, each run's rate, then their median: one line of a section's table."""
    cells = "".join(f"{rate:>10,.0f}" for rate in rates)
    return f"{name:<{width}}{cells}{statistics.median(rates):>10,.0f}"


def runs_header(title: str, runs: int, width: int = 24) -> str:
    return (
        f"{title:<{width}}"
        + "".join(f"{f'run {i}':>10}" for i in range(1, runs + 1))
        + (f"{'median':>10}")
    )


@dataclass(frozen=True, slots=True)
class Target:
    """One of the issue's targets: what it asks, the figure measured, and whether it holds."""

    name: str
    figure: str
    met: bool

    def line(self) -> str:
        return f"{'PASS' if self.met else 'FAIL'}  {self.name}: {self.figure}"


@dataclass(slots=True)
class SectionResult:
    """A section's contribution to the closing table: (measure, figure) rows and targets."""

    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


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


@contextlib.contextmanager
def tails_on_failure(*logs: Path) -> Iterator[None]:
    """Print the end of each log when the bench fails inside."""
    try:
        yield
    except FAILURES:
        for log in logs:
            print_tail(log)
        raise


def print_tail(log: Path, lines: int = 20) -> None:
    if log.exists():
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- the end of {log.name} ---", *tail, sep="\n", file=sys.stderr)


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


def rss_bytes(pid: int) -> tuple[int, int]:
    """The process's resident set now (VmRSS) and at its peak so far (VmHWM), in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            found[key] = int(value.split()[0]) * 1024  # the kernel writes kB
    return found["VmRSS"], found["VmHWM"]


# tocsin ----------------------------------------------------------------------------


def tocsin_env(
    database_url: str, *, max_batch: int, max_in_flight: int, **more: str
) -> dict[str, str]:
    """The environment of every tocsin process: ours without TOCSIN_*, then the bench's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOCSIN_")}
    return env | {
        "TOCSIN_DATABASE_URL": database_url,
        "TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN,
        "TOCSIN_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "TOCSIN_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TOCSIN_MAX_BATCH": str(max_batch),
        "TOCSIN_MAX_IN_FLIGHT": str(max_in_flight),
        **more,
    }


def tocsin_command(*arguments: str) -> list[str]:
    return [str(Path(sys.executable).with_name("tocsin")), *arguments]


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True, slots=True)
class Tocsin:
    """A running `tocsin serve`: its API and its process id, as one client's administrator."""

    client: aiohttp.ClientSession
    url: str
    pid: int
    token: str = ADMIN_TOKEN  # the first client's, unless `as_new_client` made another

    async def post_hits(self, posts: Sequence[bytes], concurrency: int) -> None:
        url = f"{self.url}/api/v1/hits"
        await post_each(self.client, url, posts, concurrency, headers=auth(self.token))

    async def as_new_client(self, name: str) -> Tocsin:
        """A new client (tenant), made with the operator token: its administrator's API."""
        body = {"name": name, "admin_email": f"admin@{name}.example", "admin_name": "Admin"}
        url = f"{self.url}/api/v1/clients"
        async with self.client.post(url, json=body, headers=auth(OPERATOR_TOKEN)) as reply:
            if reply.status != 201:
                raise BenchError(f"creating a client: {reply.status} {await reply.text()}")
            created: dict[str, Any] = await reply.json()
        return replace(self, token=created["token"])

    async def create_integration(
        self, receiver: ReceiverControl, name: str, **settings: Any
    ) -> int:
        """An integration sending `hit` events to `receiver`, trusting its private CA: its id."""
        body = {
            "name": name,
            "url": receiver.hook_url,
            "ca_certificate": receiver.ca_pem,
            "events": ["hit"],
            **settings,
        }
        url = f"{self.url}/api/v1/integrations"
        async with self.client.post(url, json=body, headers=auth(self.token)) as reply:
            if reply.status != 201:
                raise BenchError(f"creating an integration: {reply.status} {await reply.text()}")
            created: dict[str, Any] = await reply.json()
        return int(created["id"])

    async def create_integrations(
        self, receiver: ReceiverControl, names: Sequence[str], concurrency: int = 4, **settings: Any
    ) -> list[int]:
        """Many integrations alike, `concurrency` requests at a time: their ids, in order."""
        ids: dict[str, int] = {}
        pending = iter(names)

        async def worker() -> None:
            for name in pending:
                ids[name] = await self.create_integration(receiver, name, **settings)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return [ids[name] for name in names]

    async def switch(self, integration_ids: Sequence[int], *, enabled: bool) -> None:
        """Enable or disable integrations (disabling cancels their queued deliveries)."""
        verb = "enable" if enabled else "disable"
        for integration_id in integration_ids:
            url = f"{self.url}/api/v1/integrations/{integration_id}/{verb}"
            async with self.client.post(url, headers=auth(self.token)) as reply:
                if reply.status != 200:
                    raise BenchError(f"{verb} {integration_id}: HTTP {reply.status}")

    async def statuses(self) -> dict[int, str]:
        """Every integration's status (active, failing, disabled, auto_disabled) by id."""
        url = f"{self.url}/api/v1/integrations"
        async with self.client.get(url, headers=auth(self.token)) as reply:
            found: list[dict[str, Any]] = await reply.json()
        return {item["id"]: item["status"] for item in found}

    async def gauge(self, name: str) -> float:
        """One unlabelled gauge of /metrics, e.g. tocsin_queued_notifications."""
        async with self.client.get(f"{self.url}/metrics") as reply:
            text = await reply.text()
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise BenchError(f"/metrics has no {name}")


@contextlib.asynccontextmanager
async def serving(
    workdir: Path,
    client: aiohttp.ClientSession,
    options: Options,
    *,
    max_batch: int,
    name: str = "tocsin",
) -> AsyncIterator[Tocsin]:
    """`tocsin serve` on a new SQLite file in `workdir`, answering; stopped on the way out.

    `max_in_flight` and the SQLite `synchronous` setting come from the bench's options.
    """
    port = free_port()
    database = f"sqlite:///{workdir / f'{name}.db'}"
    env = tocsin_env(
        database,
        max_batch=max_batch,
        max_in_flight=options.max_in_flight,
        TOCSIN_PORT=str(port),
        TOCSIN_SQLITE_SYNCHRONOUS=options.synchronous,
    )
    log = workdir / f"{name}.log"
    with spawned(name, tocsin_command("serve"), env, log) as process, tails_on_failure(log):
        tocsin = Tocsin(client, f"http://127.0.0.1:{port}", process.pid)
        await wait_ready(client, f"{tocsin.url}/readyz", process)
        yield tocsin


# TLS and the receivers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Certificates:
    """A private CA and the receivers' certificate, written to a work directory."""

    ca_pem: str
    ca_file: Path
    chain_file: Path
    key_file: Path
    client_tls: ssl.SSLContext  # trusts the CA

    @classmethod
    def write(cls, workdir: Path) -> Certificates:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        key_file = workdir / "receiver-key.pem"
        chain_file = workdir / "receiver-chain.pem"
        ca_file = workdir / "ca.pem"
        leaf.private_key_pem.write_to_path(str(key_file))
        chain_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        ca.cert_pem.write_to_path(str(ca_file))
        ca_pem = ca.cert_pem.bytes().decode()
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(cadata=ca_pem)
        return cls(ca_pem, ca_file, chain_file, key_file, client)


@dataclass(frozen=True, slots=True)
class ReceiverControl:
    """A receiver process (bench/receiver.py) and its control endpoints."""

    session: aiohttp.ClientSession
    base: str
    certificates: Certificates
    pid: int

    @property
    def tls(self) -> ssl.SSLContext:
        return self.certificates.client_tls

    @property
    def ca_pem(self) -> str:
        return self.certificates.ca_pem

    @property
    def hook_url(self) -> str:
        return f"{self.base}/hook"

    @property
    def ready_url(self) -> str:
        return f"{self.base}/_bench/wait?timeout=0"

    async def reset(self, expect: int, *, keep: bool = True, latency: bool = False) -> None:
        """Zero the counts; `keep` the bodies for `bodies()`; time hits' `bench_sent`."""
        query = f"expect={expect}&keep={int(keep)}&latency={int(latency)}"
        async with self.session.post(f"{self.base}/_bench/reset?{query}", ssl=self.tls) as reply:
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


@contextlib.asynccontextmanager
async def receiver_running(
    workdir: Path,
    client: aiohttp.ClientSession,
    certificates: Certificates | None = None,
    *,
    silent: bool = False,
) -> AsyncIterator[ReceiverControl]:
    """A receiver process, answering (or `silent`: never answering webhooks); stopped after."""
    certificates = certificates or Certificates.write(workdir)
    port = free_port()
    command = [
        sys.executable,
        str(HERE / "receiver.py"),
        f"--port={port}",
        f"--cert={certificates.chain_file}",
        f"--key={certificates.key_file}",
        *(["--silent"] if silent else []),
    ]
    name = "silent-receiver" if silent else "receiver"
    log = workdir / f"{name}.log"
    with spawned(name, command, dict(os.environ), log) as process, tails_on_failure(log):
        control = ReceiverControl(client, f"https://127.0.0.1:{port}", certificates, process.pid)
        await wait_ready(client, control.ready_url, process, tls=certificates.client_tls)
        yield control


# sending ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def http_client() -> AsyncIterator[aiohttp.ClientSession]:
    """The bench's one client session, for tocsin's API and the receiver's controls."""
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so no request
    # races the server closing its side.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2)
    limit = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=limit) as client:
        yield client


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
            await post_one(session, url, body, **request)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def post_one(session: aiohttp.ClientSession, url: str, body: bytes, **request: Any) -> None:
    """POST a JSON body (declared as JSON: tocsin answers 415 otherwise)."""
    request["headers"] = {"Content-Type": "application/json"} | request.get("headers", {})
    async with session.post(url, data=body, **request) as reply:
        await reply.read()
        if not 200 <= reply.status < 300:
            raise BenchError(f"POST {url}: HTTP {reply.status}")


def make_hit(tag: str, index: int, **extra: Any) -> dict[str, Any]:
    """One hit; its path is its own, so hit sampling lets every one through."""
    return {
        "type": "sqli",
        "domain": "shop.example.com",
        "path": f"/bench/{tag}/{index}",
        "parameter": "GET_q_value",
        "method": "GET",
        "response_status": 200,
        "remote_addr4": "8.8.8.8",
        **extra,
    }


def hit_posts(tag: str, hits: int, per_post: int) -> list[bytes]:
    """Request bodies of `per_post` hits each; every hit differs, so none is sampled away."""
    made = [make_hit(tag, index) for index in range(hits)]
    return [orjson.dumps(made[i : i + per_post]) for i in range(0, hits, per_post)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Paced:
    """What a paced run sent: how many, over how long, how late, and how fast tocsin answered."""

    sent: int
    seconds: float
    worst_lag: float  # seconds the latest send left after its scheduled time
    answers: Sequence[float]  # seconds from each request leaving to its 202

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    def answer(self, quantile: int) -> float:
        """A percentile (1-99) of the time tocsin took to answer 202, in seconds."""
        return statistics.quantiles(self.answers, n=100, method="inclusive")[quantile - 1]


async def post_paced(tocsin: Tocsin, tag: str, rate: float, seconds: float) -> Paced:
    """POST one hit per request at `rate` a second for `seconds`, open loop.

    Each hit carries `bench_sent`, our time.monotonic() as its request leaves, which the
    receiver subtracts from its arrival. Requests do not wait for each other's answers,
    so a slow answer delays no later send; the sends that fall behind their schedule (a
    busy event loop) go at once, and the worst lag is reported.
    """
    url = f"{tocsin.url}/api/v1/hits"
    total = round(rate * seconds)
    answers: list[float] = []

    async def send(body: bytes, sent: float) -> None:
        await post_one(tocsin.client, url, body, headers=auth(tocsin.token))
        answers.append(time.monotonic() - sent)

    tasks: list[asyncio.Task[None]] = []
    worst_lag = 0.0
    start = time.monotonic()
    for index in range(total):
        due = start + index / rate
        if (ahead := due - time.monotonic()) > 0:
            await asyncio.sleep(ahead)
        now = time.monotonic()
        worst_lag = max(worst_lag, now - due)
        body = orjson.dumps([make_hit(tag, index, bench_sent=now)])
        tasks.append(asyncio.create_task(send(body, now)))
    last = time.monotonic()
    await asyncio.gather(*tasks)
    return Paced(sent=total, seconds=last - start + 1 / rate, worst_lag=worst_lag, answers=answers)
