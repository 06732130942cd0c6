"""Section `batched` (issue 5, 3b): hits batched end to end, next to the wire, in one run.

- tocsin: hits are POSTed to one `tocsin serve` on SQLite, `per_post` per request, and
  the clock runs from the first POST until the receiver has counted every notification;
  tocsin batches up to `max_batch` notifications per webhook.
- wire: a bare aiohttp loop POSTs the very bodies tocsin delivered, `wire_repeat` times
  over, with as many requests in flight as tocsin allows per integration.

With one integration, notifications per second are hits per second. The ratio tocsin /
wire says how much of what the client library and the receiver can do tocsin keeps.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BenchError,
    Measurement,
    ReceiverControl,
    SectionResult,
    Target,
    Tocsin,
    hit_posts,
    http_client,
    measured,
    median_rate,
    post_each,
    rates_row,
    receiver_running,
    runs_header,
    serving,
)
from options import Options

TARGET_HITS = 50_000  # hits per second, end to end
TARGET_WIRE_RATIO = 0.4  # the first performance issue's target, kept for comparison


@dataclass(frozen=True, slots=True)
class Phases:
    """tocsin and the wire against one receiver; each method is one measured phase."""

    options: Options
    receiver: ReceiverControl
    tocsin: Tocsin

    async def through_tocsin(
        self, tag: str, hits: int, per_post: int
    ) -> tuple[Measurement, list[bytes]]:
        """Hits in, notifications out: the measurement and the bodies tocsin delivered."""
        posts = hit_posts(tag, hits, per_post)
        await self.receiver.reset(expect=hits)
        start = time.monotonic()
        await self.tocsin.post_hits(posts, self.options.ingest_concurrency)
        ingested = time.monotonic()
        stats = await self.receiver.wait(hits)
        if stats["notifications"] != hits:
            raise BenchError(f"{stats['notifications']} notifications for {hits} hits")
        return measured(stats, start, ingested), await self.receiver.bodies()

    async def wire(self, bodies: Sequence[bytes], notifications: int, repeat: int) -> Measurement:
        """The same bodies straight from a client loop, as many in flight as tocsin allows."""
        expect = notifications * repeat
        await self.receiver.reset(expect=expect, keep=False)
        start = time.monotonic()
        await post_each(
            self.tocsin.client,
            self.receiver.hook_url,
            list(bodies) * repeat,
            self.options.max_in_flight,
            ssl=self.receiver.tls,
            headers={"Content-Type": "application/json"},
        )
        return measured(await self.receiver.wait(expect), start)

    async def round(self, tag: str, hits: int) -> tuple[Measurement, Measurement]:
        """tocsin, then the wire with tocsin's bodies."""
        through_tocsin, bodies = await self.through_tocsin(tag, hits, self.options.per_post)
        repeat = self.options.wire_repeat
        return through_tocsin, await self.wire(bodies, through_tocsin.notifications, repeat)


@asynccontextmanager
async def sqlite_phases(
    options: Options, workdir: Path, *, max_batch: int
) -> AsyncIterator[Phases]:
    """Receiver and `tocsin serve` on SQLite with one integration to it; stopped afterwards."""
    async with (
        http_client() as client,
        receiver_running(workdir, client) as receiver,
        serving(workdir, client, options, max_batch=max_batch) as tocsin,
    ):
        await tocsin.create_integration(receiver, "bench receiver")
        yield Phases(options, receiver, tocsin)


async def measure(options: Options) -> tuple[list[Measurement], list[Measurement]]:
    """Warm up, then `runs` rounds of both phases, interleaved so that drift hits both."""
    tocsin: list[Measurement] = []
    wire: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-") as tmp:
        async with sqlite_phases(options, Path(tmp), max_batch=options.max_batch) as phases:
            if options.warmup:
                await phases.round("warmup", options.warmup)
            for run in range(1, options.runs + 1):
                through_tocsin, direct = await phases.round(f"run{run}", options.hits)
                tocsin.append(through_tocsin)
                wire.append(direct)
                print(f"run {run}: tocsin {through_tocsin.rate:,.0f}/s, wire {direct.rate:,.0f}/s")
    return tocsin, wire


def report(options: Options, tocsin: list[Measurement], wire: list[Measurement]) -> SectionResult:
    """Print the section's table; return its rows and targets for the closing table."""
    ratio = median_rate(tocsin) / median_rate(wire)
    accepted = [m.notifications / (m.ingest_seconds or 1.0) for m in tocsin]
    print(
        "\n".join(
            [
                (
                    f"{options.hits:,} hits per run, POSTed {options.per_post} per request, "
                    f"{options.ingest_concurrency} at a time; {len(tocsin)} runs after a "
                    f"{options.warmup:,}-hit warm-up"
                ),
                (
                    f"tocsin: one `tocsin serve` on SQLite, synchronous={options.synchronous}, "
                    f"max_batch={options.max_batch}, max_in_flight={options.max_in_flight}"
                ),
                (
                    f"wire: the bodies tocsin delivered, {options.wire_repeat} times over, "
                    f"{options.max_in_flight} in flight"
                ),
                "",
                runs_header("notifications/s", len(tocsin)),
                rates_row("tocsin, end to end", [m.rate for m in tocsin]),
                rates_row("tocsin, accepted", accepted),
                rates_row("wire (aiohttp)", [m.rate for m in wire]),
                "",
                _shape(tocsin),
                f"ratio = tocsin / wire = {ratio:.3f}",
            ]
        )
    )
    hits = median_rate(tocsin)
    return SectionResult(
        "batched",
        rows=[
            (f"(b) tocsin, hits batched ({options.per_post}/POST), end to end", f"{hits:,.0f}/s"),
            ("(b) tocsin, hits accepted by the API", f"{statistics.median(accepted):,.0f}/s"),
            ("(b) wire, tocsin's batched bodies", f"{median_rate(wire):,.0f}/s"),
        ],
        targets=[
            Target(
                f"(b) hits/s end to end >= {TARGET_HITS:,}", f"{hits:,.0f}", hits >= TARGET_HITS
            ),
            Target(
                f"(first issue) batched tocsin / wire >= {TARGET_WIRE_RATIO}",
                f"{ratio:.3f}",
                ratio >= TARGET_WIRE_RATIO,
            ),
        ],
    )


def _shape(runs: list[Measurement]) -> str:
    requests = sum(m.requests for m in runs)
    notifications = sum(m.notifications for m in runs)
    size = sum(m.body_bytes for m in runs)
    accepted = statistics.median(m.ingest_seconds or 0.0 for m in runs)
    delivered = statistics.median(m.seconds for m in runs)
    return (
        f"tocsin delivered {requests / len(runs):.0f} requests per run, "
        f"{notifications / requests:.0f} notifications and {size / requests / 1024:.0f} KiB each; "
        f"accepted every hit after {accepted:.2f} s, delivered all after {delivered:.2f} s"
    )


async def section(options: Options) -> SectionResult:
    tocsin, wire = await measure(options)
    return report(options, tocsin, wire)
