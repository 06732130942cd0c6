"""Section `single` (issue 5, 1, 2 and 3a): one notification per webhook, three ways, one run.

Against the same HTTPS receiver, in interleaved rounds:

- tocsin: `tocsin serve` on SQLite with batching off (`max_batch=1`), one integration;
  `single_hits` distinct hits POSTed `per_post` per request; the clock runs from the
  first POST until the receiver has counted every notification;
- wire: a bare aiohttp loop POSTs the very bodies tocsin delivered (one notification
  each), as many in flight as tocsin allows per integration (`max_in_flight`);
- Alertmanager: the same number of alerts POSTed to /api/v2/alerts in batches of 100,
  each alert its own group, one webhook per alert to the same receiver.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from alertmanager import ALERTS_PER_POST, Alertmanager, alert_posts, alertmanager_running
from batched import Phases, sqlite_phases
from harness import (
    Measurement,
    ReceiverControl,
    SectionResult,
    Target,
    measured,
    median_rate,
    rates_row,
    runs_header,
)
from options import Options

TARGET_WIRE = 0.6  # tocsin / wire
TARGET_PEER = 1.5  # tocsin / Alertmanager

Runs = dict[str, list[Measurement]]


async def through_alertmanager(
    manager: Alertmanager, receiver: ReceiverControl, tag: str, alerts: int, concurrency: int
) -> Measurement:
    """Alerts in, webhooks out: from the first POST until the receiver counted them all."""
    posts = alert_posts(tag, alerts)
    await receiver.reset(expect=alerts, keep=False)
    start = time.monotonic()
    await manager.post_alerts(posts, concurrency)
    ingested = time.monotonic()
    return measured(await receiver.wait(alerts), start, ingested)


async def one_round(
    phases: Phases, manager: Alertmanager, tag: str, count: int
) -> dict[str, Measurement]:
    """tocsin, the wire with tocsin's bodies, then Alertmanager: the same count each."""
    options = phases.options
    tocsin, bodies = await phases.through_tocsin(tag, count, options.per_post)
    wire = await phases.wire(bodies, tocsin.notifications, repeat=1)
    peer = await through_alertmanager(
        manager, phases.receiver, tag, count, options.ingest_concurrency
    )
    return {"tocsin": tocsin, "wire": wire, "alertmanager": peer}


async def measure(options: Options) -> tuple[Runs, str]:
    """A warm-up round, then `runs` rounds; and Alertmanager's version."""
    runs: Runs = {"tocsin": [], "wire": [], "alertmanager": []}
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-single-") as tmp:
        workdir = Path(tmp)
        async with (
            sqlite_phases(options, workdir, max_batch=1) as phases,
            alertmanager_running(workdir, phases.tocsin.client, phases.receiver) as manager,
        ):
            if options.single_warmup:
                await one_round(phases, manager, "warmup", options.single_warmup)
            for run in range(1, options.runs + 1):
                done = await one_round(phases, manager, f"run{run}", options.single_hits)
                for name, measurement in done.items():
                    runs[name].append(measurement)
                print(f"run {run}: " + ", ".join(f"{k} {m.rate:,.0f}/s" for k, m in done.items()))
    return runs, manager.version


def report(options: Options, runs: Runs, version: str) -> SectionResult:
    """Print the section's table; return its rows and targets for the closing table."""
    rate = {name: median_rate(measurements) for name, measurements in runs.items()}
    to_wire = rate["tocsin"] / rate["wire"]
    to_peer = rate["tocsin"] / rate["alertmanager"]
    count = len(runs["tocsin"])
    print(
        "\n".join(
            [
                (
                    f"{options.single_hits:,} notifications per run, one per webhook; {count} runs "
                    f"after a {options.single_warmup:,}-notification warm-up; HTTPS receiver"
                ),
                (
                    f"tocsin: `tocsin serve` on SQLite, synchronous={options.synchronous}, "
                    f"max_batch=1, max_in_flight={options.max_in_flight}; hits POSTed "
                    f"{options.per_post} per request, {options.ingest_concurrency} at a time"
                ),
                f"wire: tocsin's bodies from an aiohttp loop, {options.max_in_flight} in flight",
                (
                    f"Alertmanager {version}: alerts POSTed {ALERTS_PER_POST} per request, "
                    f"{options.ingest_concurrency} at a time; group_by ['...'], group_wait 0s"
                ),
                "",
                runs_header("notifications/s", count),
                rates_row("tocsin (max_batch 1)", [m.rate for m in runs["tocsin"]]),
                rates_row("wire (aiohttp)", [m.rate for m in runs["wire"]]),
                rates_row(f"Alertmanager {version}", [m.rate for m in runs["alertmanager"]]),
                "",
                _sizes(runs),
                f"tocsin / wire = {to_wire:.2f}, tocsin / Alertmanager = {to_peer:.2f}",
            ]
        )
    )
    return SectionResult(
        "single",
        rows=[
            ("wire limit: aiohttp loop, tocsin's 1-notification bodies", _per_s(rate["wire"])),
            (f"peer: Alertmanager {version}, 1 alert per webhook", _per_s(rate["alertmanager"])),
            ("(a) tocsin, 1 notification per webhook, end to end", _per_s(rate["tocsin"])),
        ],
        targets=[
            Target(f"(a) tocsin / wire >= {TARGET_WIRE}", f"{to_wire:.2f}", to_wire >= TARGET_WIRE),
            Target(
                f"(a) tocsin / Alertmanager >= {TARGET_PEER}",
                f"{to_peer:.2f}",
                to_peer >= TARGET_PEER,
            ),
        ],
    )


def _per_s(rate: float) -> str:
    return f"{rate:,.0f}/s"


def _sizes(runs: Runs) -> str:
    def size(name: str) -> float:
        return sum(m.body_bytes for m in runs[name]) / sum(m.requests for m in runs[name])

    return (
        f"bytes per webhook: tocsin {size('tocsin'):,.0f}, Alertmanager {size('alertmanager'):,.0f}"
    )


async def section(options: Options) -> SectionResult:
    runs, version = await measure(options)
    return report(options, runs, version)
