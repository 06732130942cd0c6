"""`make bench`: notifications per second through tocsin, on SQLite and on PostgreSQL.

Two sections, each against an HTTPS receiver (bench/receiver.py, its own process,
certificate from a private trustme CA); `--only sqlite|postgres` runs one of them.

Section 1, SQLite: end to end through tocsin, next to a bare client loop, in the same run:

- tocsin: hits are POSTed to one `tocsin serve` process on SQLite, 100 per request, and the
  clock runs from the first POST until the receiver has counted every notification;
- wire: a bare aiohttp loop POSTs the very bodies tocsin delivered, with as many requests in
  flight as tocsin allows per integration, until the receiver has counted them all.

The ratio tocsin / wire says how much of what the client library and the receiver can do
tocsin keeps, after its API, its SQLite outbox and its bookkeeping.

Section 2, PostgreSQL scale-out: a fresh database; hits are ingested through the API
of a process that does not deliver (`tocsin serve --no-deliver`), so the outbox holds them all; then
K `tocsin dispatch` processes start and the clock runs until the receiver has counted every
notification. K = 1, 2, 4 with the same work; the ratios to K = 1 say how delivery scales.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import trustme
import uvloop

from tocsin.crypto import Vault

HERE = Path(__file__).resolve().parent
ADMIN_TOKEN = "tcs_bench_admin_token"  # noqa: S105 - a throwaway server on loopback
START_TIMEOUT = 30.0  # for the receiver and tocsin to answer, and for `tocsin migrate`
REQUEST_TIMEOUT = 60.0  # for any one request
RUN_TIMEOUT = 90.0  # for every notification of one run to arrive
SECTIONS = ("sqlite", "postgres")
PG_DEFAULTS: dict[str, Any] = {
    "pg_admin_url": "postgresql://postgres@127.0.0.1:5432/postgres",
    "pg_hits": 8_000,
    "pg_integrations": 8,
    "pg_max_batch": 50,
    "pg_processes": (1, 2, 4),
    "pg_runs": 2,
}


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
    only: str | None = None
    pg_admin_url: str = PG_DEFAULTS["pg_admin_url"]
    pg_hits: int = PG_DEFAULTS["pg_hits"]
    pg_integrations: int = PG_DEFAULTS["pg_integrations"]
    pg_max_batch: int = PG_DEFAULTS["pg_max_batch"]
    pg_processes: tuple[int, ...] = PG_DEFAULTS["pg_processes"]
    pg_runs: int = PG_DEFAULTS["pg_runs"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One run of one phase, as the receiver counted it."""

    notifications: int
    requests: int
    body_bytes: int
    seconds: float
    ingest_seconds: float | None = None
    first_seconds: float | None = None  # to the first notification, when it matters

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


def tocsin_env(
    database_url: str, *, max_batch: int, max_in_flight: int, **more: str
) -> dict[str, str]:
    """The environment of every tocsin process: ours without TOCSIN_*, then the bench's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOCSIN_")}
    return env | {
        "TOCSIN_DATABASE_URL": database_url,
        "TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN,
        "TOCSIN_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TOCSIN_MAX_BATCH": str(max_batch),
        "TOCSIN_MAX_IN_FLIGHT": str(max_in_flight),
        **more,
    }


def tocsin_command(*arguments: str) -> list[str]:
    return [str(Path(sys.executable).with_name("tocsin")), *arguments]


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
    ca_pem: str  # the private CA, for integrations to trust
    pid: int  # of the receiver process

    @property
    def hook_url(self) -> str:
        return f"{self.base}/hook"

    @property
    def ready_url(self) -> str:
        return f"{self.base}/_bench/wait?timeout=0"

    async def reset(self, expect: int, *, keep: bool = True) -> None:
        """Zero the counts; with `keep` the receiver also keeps the bodies for `bodies()`."""
        url = f"{self.base}/_bench/reset?expect={expect}&keep={int(keep)}"
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
        first_seconds=stats["first_at"] - start,
    )


async def create_integration(
    client: aiohttp.ClientSession, tocsin_url: str, receiver: ReceiverControl, name: str
) -> None:
    """An integration sending `hit` events to the receiver, trusting its private CA."""
    body = {
        "name": name,
        "url": receiver.hook_url,
        "ca_certificate": receiver.ca_pem,
        "events": ["hit"],
    }
    url = f"{tocsin_url}/api/v1/integrations"
    async with client.post(url, json=body, headers=_auth()) as reply:
        if reply.status != 201:
            raise BenchError(f"creating the integration: {reply.status} {await reply.text()}")


@dataclass(frozen=True, slots=True)
class Bench:
    options: Options
    receiver: ReceiverControl
    tocsin_url: str
    client: aiohttp.ClientSession

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

FAILURES = (
    BenchError,
    aiohttp.ClientError,
    OSError,
    subprocess.SubprocessError,
    asyncpg.PostgresError,
)


@contextlib.asynccontextmanager
async def http_client() -> AsyncIterator[aiohttp.ClientSession]:
    """The bench's one client session, for tocsin's API and the receiver's controls."""
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so no request
    # races the server closing its side.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2)
    limit = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=limit) as client:
        yield client


@contextlib.asynccontextmanager
async def receiver_running(
    workdir: Path, client: aiohttp.ClientSession
) -> AsyncIterator[ReceiverControl]:
    """The receiver process with a fresh certificate, answering; stopped on the way out."""
    ca_pem, client_tls = write_certificates(workdir)
    port = free_port()
    command = receiver_command(port, workdir)
    log = workdir / "receiver.log"
    with spawned("receiver", command, dict(os.environ), log) as process, tails_on_failure(log):
        control = ReceiverControl(
            client, f"https://127.0.0.1:{port}", client_tls, ca_pem, process.pid
        )
        await wait_ready(client, control.ready_url, process, tls=client_tls)
        yield control


@contextlib.contextmanager
def tails_on_failure(*logs: Path) -> Iterator[None]:
    """Print the end of each log when the bench fails inside."""
    try:
        yield
    except FAILURES:
        for log in logs:
            _print_tail(log)
        raise


@contextlib.asynccontextmanager
async def running_bench(options: Options, workdir: Path) -> AsyncIterator[Bench]:
    """Receiver and `tocsin serve` on SQLite, the integration created; all stopped afterwards."""
    port = free_port()
    env = tocsin_env(
        f"sqlite:///{workdir / 'tocsin.db'}",
        max_batch=options.max_batch,
        max_in_flight=options.max_in_flight,
        TOCSIN_PORT=str(port),
        TOCSIN_SQLITE_SYNCHRONOUS=options.synchronous,
    )
    log = workdir / "tocsin.log"
    async with http_client() as client, receiver_running(workdir, client) as receiver:
        with spawned("tocsin", tocsin_command("serve"), env, log) as tocsin, tails_on_failure(log):
            bench = Bench(options, receiver, f"http://127.0.0.1:{port}", client)
            await wait_ready(client, f"{bench.tocsin_url}/readyz", tocsin)
            await create_integration(client, bench.tocsin_url, receiver, "bench receiver")
            yield bench


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


# section 2: PostgreSQL scale-out ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleRun:
    """One run with `processes` dispatchers, and the CPU time each party used meanwhile."""

    processes: int
    measurement: Measurement
    cpu: dict[str, float]  # seconds: dispatch (all K), receiver, postgres, machine (all cores)


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """A new database `tocsin_bench_<random>` beside `admin_url`'s, dropped afterwards."""
    name = f"tocsin_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url, timeout=START_TIMEOUT)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> dict[int, float]:
    """CPU time of every process named postgres on this machine (server and backends)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "postgres":
                    found[int(proc.name)] = cpu_seconds(int(proc.name))
    return found


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU time used between two readings by the processes alive at the second."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine, all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ScaleBench:
    options: Options
    receiver: ReceiverControl
    client: aiohttp.ClientSession
    api_url: str
    database: asyncpg.Connection
    env: dict[str, str]
    workdir: Path

    @property
    def notifications(self) -> int:
        return self.options.pg_hits * self.options.pg_integrations

    async def fill(self, tag: str) -> None:
        """Ingest the run's hits through the API of a process that does not deliver."""
        posts = hit_posts(tag, self.options.pg_hits, self.options.per_post)
        url = f"{self.api_url}/api/v1/hits"
        await post_each(self.client, url, posts, self.options.ingest_concurrency, headers=_auth())
        queued = await self.database.fetchval("SELECT coalesce(sum(count), 0) FROM outbox")
        if queued != self.notifications:
            raise BenchError(f"{queued} notifications queued, {self.notifications} expected")

    async def run(self, tag: str, processes: int) -> ScaleRun:
        """Fill the outbox, start `processes` dispatchers, wait for every notification."""
        await self.fill(tag)
        await self.receiver.reset(expect=self.notifications, keep=False)
        logs = [self.workdir / f"dispatch-{tag}-{index}.log" for index in range(processes)]
        with contextlib.ExitStack() as stack, tails_on_failure(*logs):
            before = self._cpu()
            start = time.monotonic()
            dispatchers = [
                stack.enter_context(spawned(log.stem, tocsin_command("dispatch"), self.env, log))
                for log in logs
            ]
            stats = await self.receiver.wait(self.notifications)
            after = self._cpu({process.pid for process in dispatchers})
        await self._check_all_delivered()
        cpu = {key: cpu_used(before[key], after[key]) for key in after}
        cpu["others"] = cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine")
        return ScaleRun(processes=processes, measurement=measured(stats, start), cpu=cpu)

    def _cpu(self, dispatchers: Iterable[int] = ()) -> dict[str, dict[int, float]]:
        """CPU seconds so far, by party and process; the machine's as one entry."""
        return {
            "dispatch": {pid: cpu_seconds(pid) for pid in dispatchers},
            "receiver": {self.receiver.pid: cpu_seconds(self.receiver.pid)},
            "postgres": postgres_cpu_seconds(),
            "bench": {os.getpid(): cpu_seconds(os.getpid())},
            "machine": {0: machine_cpu_seconds()},
        }

    async def _check_all_delivered(self) -> None:
        """After the dispatchers stopped: nothing queued, every delivery recorded delivered."""
        left = await self.database.fetchrow(
            "SELECT (SELECT count(*) FROM outbox) AS queued,"
            " (SELECT count(*) FROM deliveries WHERE status <> 'delivered') AS undelivered"
        )
        if left is None or left["queued"] or left["undelivered"]:
            raise BenchError(
                f"after the run: {left and left['queued']} outbox rows, "
                f"{left and left['undelivered']} deliveries not recorded as delivered"
            )


async def migrated(env: dict[str, str]) -> None:
    """`tocsin migrate` on the bench's database, within START_TIMEOUT."""
    process = await asyncio.create_subprocess_exec(
        *tocsin_command("migrate"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(START_TIMEOUT):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise BenchError(f"tocsin migrate: {output.decode(errors='replace')}")


@contextlib.asynccontextmanager
async def running_scale_bench(options: Options, workdir: Path) -> AsyncIterator[ScaleBench]:
    """A fresh database, migrated; the receiver; an API that does not deliver; integrations."""
    port = free_port()
    async with (
        fresh_database(options.pg_admin_url) as database_url,
        http_client() as client,
        receiver_running(workdir, client) as receiver,
    ):
        env = tocsin_env(
            database_url,
            max_batch=options.pg_max_batch,
            max_in_flight=options.max_in_flight,
            TOCSIN_SECRET_KEY=Vault.generate_key().decode(),
        )
        await migrated(env)
        log = workdir / "api.log"
        api_command = tocsin_command("serve")
        api_env = env | {"TOCSIN_PORT": str(port), "TOCSIN_DELIVER": "false"}
        database = await asyncpg.connect(database_url, timeout=START_TIMEOUT)
        try:
            with spawned("api", api_command, api_env, log) as api, tails_on_failure(log):
                api_url = f"http://127.0.0.1:{port}"
                await wait_ready(client, f"{api_url}/readyz", api)
                for index in range(options.pg_integrations):
                    name = f"bench receiver {index + 1}"
                    await create_integration(client, api_url, receiver, name)
                yield ScaleBench(options, receiver, client, api_url, database, env, workdir)
        finally:
            await database.close()


async def measure_postgres(options: Options) -> tuple[list[ScaleRun], str]:
    """A warm-up, then `pg_runs` rounds of K = 1, 2, 4 dispatchers; and the server version."""
    scale: list[ScaleRun] = []
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-pg-") as tmp:
        async with running_scale_bench(options, Path(tmp)) as bench:
            version = await bench.database.fetchval("SHOW server_version")
            await bench.run("pg-warmup", max(options.pg_processes))
            for run in range(1, options.pg_runs + 1):
                for processes in options.pg_processes:
                    done = await bench.run(f"pg-run{run}-k{processes}", processes)
                    scale.append(done)
                    print(
                        f"run {run}, {processes} dispatch processes: "
                        f"{done.measurement.rate:,.0f} notifications/s"
                    )
    return scale, str(version)


def report_postgres(options: Options, scale: list[ScaleRun], version: str) -> str:
    counts = list(dict.fromkeys(run.processes for run in scale))
    runs = [[run for run in scale if run.processes == k] for k in counts]
    medians = [statistics.median(r.measurement.rate for r in group) for group in runs]
    steady = [statistics.median(_steady_rate(r.measurement) for r in group) for group in runs]
    notifications = options.pg_hits * options.pg_integrations
    lines = [
        (
            f"PostgreSQL {version}: {options.pg_hits} hits per run to {options.pg_integrations} "
            f"integrations = {notifications} notifications, queued before the dispatchers start;"
        ),
        (
            f"dispatch: max_batch={options.pg_max_batch}, max_in_flight={options.max_in_flight} "
            f"per integration and process; {options.pg_runs} runs of each K, interleaved, after a "
            "warm-up run"
        ),
        "",
        f"{'dispatch processes':<20}"
        + "".join(f"{f'run {i}':>10}" for i in range(1, options.pg_runs + 1))
        + f"{'median':>10}{'ratio':>8}{'steady':>10}{'ratio':>8}",
    ]
    for k, group, rate, calm in zip(counts, runs, medians, steady, strict=True):
        cells = "".join(f"{r.measurement.rate:>10,.0f}" for r in group)
        lines.append(
            f"{k:<20}{cells}{rate:>10,.0f}{rate / medians[0]:>8.2f}"
            f"{calm:>10,.0f}{calm / steady[0]:>8.2f}"
        )
    lines += [
        "",
        (
            "notifications/s from starting the dispatchers to the last notification; "
            "steady: from the first notification to the last"
        ),
        "",
        (
            f"{'CPU s per run':<20}{'dispatch':>10}{'receiver':>10}{'postgres':>10}"
            f"{'bench':>8}{'others':>8}{'machine':>10}{'wall s':>8}{'cores busy':>12}"
        ),
    ]
    for k, group in zip(counts, runs, strict=True):
        cpu = {key: statistics.median(r.cpu[key] for r in group) for key in group[0].cpu}
        wall = statistics.median(r.measurement.seconds for r in group)
        lines.append(
            f"{k:<20}{cpu['dispatch']:>10.1f}{cpu['receiver']:>10.1f}{cpu['postgres']:>10.1f}"
            f"{cpu['bench']:>8.1f}{cpu['others']:>8.1f}{cpu['machine']:>10.1f}"
            f"{wall:>8.1f}{cpu['machine'] / wall:>12.2f}"
        )
    if 2 in counts:
        ratio = medians[counts.index(2)] / medians[0]
        calm = steady[counts.index(2)] / steady[0]
        verdict = "met" if min(ratio, calm) >= 1.6 else "not met"
        lines += [
            "",
            (
                f"scaling = 2 processes / 1 = {ratio:.2f}, steady {calm:.2f} "
                f"(target >= 1.6: {verdict})"
            ),
        ]
    lines.append(f"this machine has {os.cpu_count()} CPUs")
    return "\n".join(lines)


def _steady_rate(m: Measurement) -> float:
    return m.notifications / (m.seconds - (m.first_seconds or 0.0))


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--only", choices=SECTIONS, help="run one section only (default: both)")
    add("--hits", type=int, default=20_000, help="SQLite: hits per measured run (default 20000)")
    add("--runs", type=int, default=3, help="SQLite: measured runs of each phase (default 3)")
    add("--warmup", type=int, default=2_000, help="SQLite: hits of the unmeasured first round")
    add("--per-post", type=int, default=100, help="hits per POST /api/v1/hits")
    add("--wire-repeat", type=int, default=5, help="SQLite: times the wire phase sends the bodies")
    add("--ingest-concurrency", type=int, default=4, help="POSTs to tocsin at a time")
    add("--max-in-flight", type=int, default=4, help="TOCSIN_MAX_IN_FLIGHT, and the wire's")
    add("--max-batch", type=int, default=500, help="SQLite: TOCSIN_MAX_BATCH")
    add("--synchronous", default="FULL", help="TOCSIN_SQLITE_SYNCHRONOUS (default FULL)")
    add(
        "--pg-admin-url",
        default=PG_DEFAULTS["pg_admin_url"],
        help="PostgreSQL: where to create (and drop) the bench's database",
    )
    add("--pg-hits", type=int, default=PG_DEFAULTS["pg_hits"], help="PostgreSQL: hits per run")
    add(
        "--pg-integrations",
        type=int,
        default=PG_DEFAULTS["pg_integrations"],
        help="PostgreSQL: integrations, each to the receiver",
    )
    add(
        "--pg-max-batch",
        type=int,
        default=PG_DEFAULTS["pg_max_batch"],
        help="PostgreSQL: TOCSIN_MAX_BATCH",
    )
    add(
        "--pg-processes",
        type=lambda text: tuple(int(k) for k in text.split(",")),
        default=PG_DEFAULTS["pg_processes"],
        help="PostgreSQL: dispatch process counts, comma-separated, the first the baseline",
    )
    add(
        "--pg-runs", type=int, default=PG_DEFAULTS["pg_runs"], help="PostgreSQL: runs of each count"
    )
    args = parser.parse_args(argv)
    return Options(**vars(args))


def main() -> int:
    options = parse_options()
    sections = [options.only] if options.only else list(SECTIONS)
    reports = []
    try:
        if "sqlite" in sections:
            print("== SQLite: one `tocsin serve`, end to end, next to a bare client ==")
            tocsin, wire = uvloop.run(measure(options))
            reports.append(report(options, tocsin, wire))
            print(reports[-1])
        if "postgres" in sections:
            print("\n== PostgreSQL: 1, 2, 4 `tocsin dispatch` processes ==")
            scale, version = uvloop.run(measure_postgres(options))
            reports.append(report_postgres(options, scale, version))
            print(reports[-1])
    except FAILURES as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted; the receiver and tocsin were stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
