"""Section `memory` (issue 5, 3e): RSS of `tocsin serve` with a large queue, many integrations.

For each count S in `mem_silent`, a fresh `tocsin serve` on SQLite with the shipped
settings, `mem_clients` clients (tenants) and `mem_integrations` integrations among them:

- S of them, in the first client, receive hits and point at a receiver that never
  answers, with the longest `request_timeout` (300 s), so nothing they hold fails, is
  retried or auto-disabled while the section runs: what is queued for them stays queued;
- the others are enabled, spread evenly over the clients (the first one included), point
  at the answering receiver and are subscribed to vulnerabilities only: configuration
  the process carries, but no deliveries of this section.

Then `mem_pending / S` distinct hits are POSTed, `mem_per_post` per request, which queues
`mem_pending` notifications (checked with /metrics `tocsin_queued_notifications`:
notifications accepted and not delivered). A receiver that has not answered gets one
request at a time, so the dispatcher sends each silent integration one request of up to
`max_batch` notifications and keeps its connection open until the request times out;
the body is let go once written, and the rest waits in the database. So S decides how
many requests are open: 20, or 1,000 (with 500,000 of the 1,000,000 notifications sent
and waiting for an answer). RSS (VmRSS, and the peak VmHWM) comes from
/proc/<pid>/status.

The integrations are spread over clients because every change to an integration is a
system event that tocsin ingests, and each ingest reads (and decrypts) every enabled
integration of the client: creating N integrations in one client costs O(N^2) (6,863
took 10 minutes here, slowing down), where 100 clients of 100 take about a minute.
`--mem-clients 1` measures the single-client case.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BenchError,
    ReceiverControl,
    SectionResult,
    Target,
    Tocsin,
    hit_posts,
    http_client,
    receiver_running,
    rss_bytes,
    serving,
)
from options import Options

SILENT_TIMEOUT = 300  # seconds: the longest request_timeout an integration may have
SETTLE = 5.0  # seconds after queueing for the dispatcher to claim what it may
MB = 1_000_000  # the issue counts in MB
TARGET_RSS = 250 * MB


@dataclass(frozen=True, slots=True, kw_only=True)
class Footprint:
    """RSS at each step with S silent integrations, and how long the steps took."""

    silent: int
    started: int
    with_integrations: int
    queued_rss: int
    peak: int
    queued: int
    integrations_seconds: float
    queue_seconds: float

    @property
    def worst(self) -> int:
        return max(self.queued_rss, self.peak)


async def add_integrations(
    options: Options, tocsin: Tocsin, receiver: ReceiverControl, silent: ReceiverControl, count: int
) -> None:
    """The idle integrations spread over `mem_clients` clients, then `count` silent ones."""
    tenants = [tocsin] + [
        await tocsin.as_new_client(f"tenant{number}")
        for number in range(2, options.mem_clients + 1)
    ]
    idle = [f"idle {i + 1}" for i in range(options.mem_integrations - count)]
    for index, tenant in enumerate(tenants):
        await tenant.create_integrations(receiver, idle[index :: len(tenants)], events=["vuln"])
    names = [f"silent {i + 1}" for i in range(count)]
    await tocsin.create_integrations(silent, names, request_timeout=SILENT_TIMEOUT)


async def measure(options: Options, count: int) -> Footprint:
    """Start, add the integrations, queue the notifications; RSS after each step."""
    hits = options.mem_pending // count
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-memory-") as tmp:
        workdir = Path(tmp)
        async with (
            http_client() as client,
            receiver_running(workdir, client) as receiver,
            receiver_running(workdir, client, receiver.certificates, silent=True) as silent,
            serving(workdir, client, options, max_batch=options.max_batch) as tocsin,
        ):
            started = rss_bytes(tocsin.pid)[0]
            clock = time.monotonic()
            await add_integrations(options, tocsin, receiver, silent, count)
            with_integrations = rss_bytes(tocsin.pid)[0]
            integrations_seconds = time.monotonic() - clock
            clock = time.monotonic()
            posts = hit_posts(f"memory{count}", hits, options.mem_per_post)
            await tocsin.post_hits(posts, options.ingest_concurrency)
            queue_seconds = time.monotonic() - clock
            await asyncio.sleep(SETTLE)
            queued = round(await tocsin.gauge("tocsin_queued_notifications"))
            queued_rss, peak = rss_bytes(tocsin.pid)
    if queued < hits * count:
        raise BenchError(f"{queued} notifications queued, {hits * count} expected")
    return Footprint(
        silent=count,
        started=started,
        with_integrations=with_integrations,
        queued_rss=queued_rss,
        peak=peak,
        queued=queued,
        integrations_seconds=integrations_seconds,
        queue_seconds=queue_seconds,
    )


def describe(options: Options, footprint: Footprint) -> str:
    """One variant's figures, step by step."""
    hits = options.mem_pending // footprint.silent
    claimable = footprint.silent * options.max_batch  # one request each: they never answer
    lines = [
        (
            f"{options.mem_integrations:,} integrations in {options.mem_clients} clients, "
            f"{footprint.silent:,} of them silent: {hits:,} hits to each, "
            f"{footprint.queued:,} notifications queued, at most "
            f"{min(claimable, footprint.queued):,} of them sent and waiting for an answer"
        ),
        _rss_line("RSS after start", footprint.started),
        _rss_line(
            "RSS with the integrations",
            footprint.with_integrations,
            f"created in {footprint.integrations_seconds:.0f} s",
        ),
        _rss_line(
            f"RSS with the queue, {SETTLE:g} s on",
            footprint.queued_rss,
            f"queued in {footprint.queue_seconds:.1f} s",
        ),
        _rss_line("peak RSS (VmHWM)", footprint.peak),
    ]
    return "\n".join(lines)


def _rss_line(label: str, rss: int, note: str = "") -> str:
    return f"  {label:<30}{rss / MB:>6.0f} MB" + (f"   ({note})" if note else "")


def result(options: Options, footprints: list[Footprint]) -> SectionResult:
    """The rows and targets for the closing table: one of each per variant."""
    found = SectionResult("memory")
    for footprint in footprints:
        built = footprint.integrations_seconds + footprint.queue_seconds
        found.rows.append(
            (
                (
                    f"(e) RSS, {footprint.queued:,} queued for {footprint.silent:,} silent "
                    f"of {options.mem_integrations:,} integrations"
                ),
                (
                    f"{footprint.queued_rss / MB:.0f} MB (peak {footprint.peak / MB:.0f}; "
                    f"built in {built:.0f} s)"
                ),
            )
        )
        found.targets.append(
            Target(
                f"(e) peak RSS <= {TARGET_RSS // MB} MB, {footprint.silent:,} silent",
                f"{footprint.worst / MB:.0f} MB",
                footprint.worst <= TARGET_RSS,
            )
        )
    return found


async def section(options: Options) -> SectionResult:
    print(
        f"`tocsin serve` on SQLite, max_batch={options.max_batch}, "
        f"max_in_flight={options.max_in_flight}; silent integrations: request_timeout "
        f"{SILENT_TIMEOUT} s; the others idle (vulnerabilities only)"
    )
    footprints = []
    for count in options.mem_silent:
        footprints.append(await measure(options, count))
        print(describe(options, footprints[-1]), flush=True)
    return result(options, footprints)
