"""Section `postgres` (issue "Scale-out on PostgreSQL", issue 5, 4): 1, 2, 4 dispatchers.

A fresh database; hits are ingested through the API of a process that does not deliver
(`tocsin serve --no-deliver`), so the outbox holds them all; then K `tocsin dispatch`
processes start and the clock runs until the receiver has counted every notification.
K = 1, 2, 4 with the same work; the ratios to K = 1 say how delivery scales. The CPU
each party used during each run, from /proc, says where the time went.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from harness import (
    START_TIMEOUT,
    BenchError,
    Measurement,
    ReceiverControl,
    SectionResult,
    Target,
    Tocsin,
    auth,
    free_port,
    hit_posts,
    http_client,
    measured,
    post_each,
    receiver_running,
    spawned,
    tails_on_failure,
    tocsin_command,
    tocsin_env,
    wait_ready,
)
from options import Options
from tocsin.crypto import Vault

TARGET_SCALING = 1.6  # 2 processes / 1


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
        await post_each(self.client, url, posts, self.options.ingest_concurrency, headers=auth())
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
                names = [f"bench receiver {i + 1}" for i in range(options.pg_integrations)]
                await Tocsin(client, api_url, api.pid).create_integrations(receiver, names)
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
    return scale, str(version).split()[0]  # "15.20 (Debian ...)" -> "15.20"


def report(options: Options, scale: list[ScaleRun], version: str) -> SectionResult:
    """Print the section's tables; return its rows and target for the closing table."""
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
    lines.append(f"this machine has {os.cpu_count()} CPUs")
    print("\n".join(lines))
    result = SectionResult(
        "postgres",
        rows=[
            (f"PostgreSQL {version}, {k} dispatch process{'es' if k > 1 else ''}", f"{rate:,.0f}/s")
            for k, rate in zip(counts, medians, strict=True)
        ],
    )
    if 2 in counts:
        ratio = medians[counts.index(2)] / medians[0]
        calm = steady[counts.index(2)] / steady[0]
        result.targets.append(
            Target(
                f"(scale-out) 2 dispatch processes / 1 >= {TARGET_SCALING}",
                f"{ratio:.2f}, steady {calm:.2f}",
                min(ratio, calm) >= TARGET_SCALING,
            )
        )
    return result


def _steady_rate(m: Measurement) -> float:
    return m.notifications / (m.seconds - (m.first_seconds or 0.0))


async def section(options: Options) -> SectionResult:
    scale, version = await measure_postgres(options)
    return report(options, scale, version)
