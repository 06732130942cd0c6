"""Section `isolation` (issue 5, 3d): healthy integrations beside ones that never answer.

One `tocsin serve` on SQLite with the settings of section `single` (batching off,
`max_batch=1`), `iso_healthy` integrations on the answering receiver and `iso_silent`
on a receiver that completes TLS, reads each request and never answers (their
`request_timeout` governs; a timed-out delivery is retried as usual). Every integration
receives every hit.

Each run measures the healthy integrations twice, alone (the silent ones disabled) and
beside the silent ones (enabled), in turn, so drift in the machine's load hits both:

- throughput: `iso_hits` hits POSTed `per_post` per request; notifications per second
  counted at the healthy receiver;
- latency: hits paced at `iso_rate` a second, one per POST, each timed to every healthy
  receiver (as in section `latency`).

Disabling cancels the silent integrations' queued deliveries and enabling clears their
failure record, so auto-disable never ends the silence during a run; their status at
the end of each phase is reported.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BenchError,
    Measurement,
    Paced,
    ReceiverControl,
    SectionResult,
    Target,
    Tocsin,
    hit_posts,
    http_client,
    measured,
    median_latency,
    median_rate,
    rates_row,
    receiver_running,
    runs_header,
    serving,
)
from latency import LATENCY_HEADER, latency_cells, paced_cells, timed_run
from options import Options

TARGET_KEPT = 0.9  # healthy throughput beside silent ones / alone
TARGET_P99 = 2.0  # healthy p99 beside silent ones / alone, at most
MODES = ("alone", "beside")  # the healthy integrations alone, or beside the silent ones


@dataclass(frozen=True, slots=True)
class Phase:
    """One mode of one run: throughput, latency, and the silent integrations' states."""

    moved: Measurement
    timed: Measurement
    paced: Paced
    states: str


def _ms(measurement: Measurement, key: str) -> str:
    return f"{(measurement.latency or {}).get(key, float('nan')) * 1000:.1f}"


@dataclass(frozen=True, slots=True)
class Isolation:
    options: Options
    tocsin: Tocsin
    receiver: ReceiverControl
    healthy: list[int]
    silent: list[int]

    async def throughput(self, tag: str, hits: int) -> Measurement:
        """Hits in batches; the clock stops when every healthy integration has them all."""
        expect = hits * len(self.healthy)
        await self.receiver.reset(expect=expect, keep=False)
        start = time.monotonic()
        await self.tocsin.post_hits(
            hit_posts(tag, hits, self.options.per_post), self.options.ingest_concurrency
        )
        stats = await self.receiver.wait(expect)
        if stats["notifications"] != expect:
            raise BenchError(f"{stats['notifications']} healthy notifications, {expect} expected")
        return measured(stats, start)

    async def phase(self, tag: str, mode: str) -> Phase:
        """Throughput, then latency, with the silent integrations on or off; their states."""
        beside = mode == "beside"
        if beside:
            await self.tocsin.switch(self.silent, enabled=True)
        options = self.options
        moved = await self.throughput(f"{tag}-{mode}-batch", options.iso_hits)
        timed, paced = await timed_run(
            self.tocsin,
            self.receiver,
            f"{tag}-{mode}-paced",
            rate=options.iso_rate,
            seconds=options.iso_seconds,
            fanout=len(self.healthy),
        )
        states = ""
        if beside:
            statuses = await self.tocsin.statuses()
            states = ", ".join(
                f"{n} {s}" for s, n in Counter(statuses[i] for i in self.silent).items()
            )
            await self.tocsin.switch(self.silent, enabled=False)
        print(
            f"{tag}, {mode}: {moved.rate:,.0f} healthy notifications/s, latency p50 "
            f"{_ms(timed, 'p50')}, p99 {_ms(timed, 'p99')} ms"
            + (f"; silent integrations: {states}" if states else "")
        )
        return Phase(moved, timed, paced, states)


@asynccontextmanager
async def isolation_running(options: Options, workdir: Path) -> AsyncIterator[Isolation]:
    """Both receivers, tocsin, the integrations (the silent ones disabled); stopped after."""
    async with (
        http_client() as client,
        receiver_running(workdir, client) as receiver,
        receiver_running(workdir, client, receiver.certificates, silent=True) as silent,
        serving(workdir, client, options, max_batch=1) as tocsin,
    ):
        healthy_names = [f"healthy {i + 1}" for i in range(options.iso_healthy)]
        silent_names = [f"silent {i + 1}" for i in range(options.iso_silent)]
        healthy_ids = await tocsin.create_integrations(receiver, healthy_names)
        silent_ids = await tocsin.create_integrations(
            silent, silent_names, request_timeout=options.iso_request_timeout, enabled=False
        )
        yield Isolation(options, tocsin, receiver, healthy_ids, silent_ids)


Runs = dict[str, list[Phase]]


async def measure(options: Options) -> Runs:
    """A warm-up, then `runs` rounds of both modes."""
    runs: Runs = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-isolation-") as tmp:
        async with isolation_running(options, Path(tmp)) as bench:
            await bench.throughput("warmup", max(options.iso_hits // 5, 1))
            for run in range(1, options.runs + 1):
                for mode in MODES:
                    runs[mode].append(await bench.phase(f"run{run}", mode))
    return runs


def report(options: Options, runs: Runs) -> SectionResult:
    """Print the section's tables; return its rows and targets for the closing table."""
    rate = {mode: median_rate([phase.moved for phase in runs[mode]]) for mode in MODES}
    p99 = {mode: median_latency([phase.timed for phase in runs[mode]], "p99") for mode in MODES}
    kept = rate["beside"] / rate["alone"]
    grown = p99["beside"] / p99["alone"]
    notifications_per_s = options.iso_rate * options.iso_healthy
    lines = [
        (
            f"{options.iso_healthy} healthy integrations, {options.iso_silent} silent ones "
            f"(request_timeout {options.iso_request_timeout} s); `tocsin serve` on SQLite, "
            f"max_batch=1, max_in_flight={options.max_in_flight}; every integration gets every hit"
        ),
        (
            f"throughput: {options.iso_hits:,} hits per run, {options.per_post} per POST; latency: "
            f"{options.iso_rate:g} hits/s ({notifications_per_s:,.0f} healthy notifications/s) "
            f"for {options.iso_seconds:g} s"
        ),
        "",
        runs_header("healthy notifications/s", options.runs, width=26),
        *(rates_row(mode, [phase.moved.rate for phase in runs[mode]], width=26) for mode in MODES),
        "",
        f"{'healthy latency':<26}{LATENCY_HEADER}",
        *(
            f"{f'run {i}, {mode}':<26}{latency_cells(phase.timed)}{paced_cells(phase.paced)}"
            for mode in MODES
            for i, phase in enumerate(runs[mode], start=1)
        ),
        "",
        f"kept throughput = {kept:.2f}, p99 beside / alone = {grown:.2f}",
    ]
    print("\n".join(lines))
    return SectionResult(
        "isolation",
        rows=[
            (
                f"(d) {options.iso_healthy} healthy integrations alone, 1 per webhook",
                f"{rate['alone']:,.0f}/s, p99 {p99['alone'] * 1000:.1f} ms",
            ),
            (
                f"(d) the same beside {options.iso_silent} silent integrations",
                f"{rate['beside']:,.0f}/s, p99 {p99['beside'] * 1000:.1f} ms",
            ),
        ],
        targets=[
            Target(
                f"(d) healthy throughput kept >= {TARGET_KEPT:.0%}",
                f"{kept:.0%}",
                kept >= TARGET_KEPT,
            ),
            Target(
                f"(d) healthy p99 grows at most {TARGET_P99:g}x",
                f"{grown:.2f}x",
                grown <= TARGET_P99,
            ),
        ],
    )


async def section(options: Options) -> SectionResult:
    return report(options, await measure(options))
