"""Section `latency` (issue 5, 3c): ingest -> receiver at a fixed rate, p50 and p99.

One `tocsin serve` on SQLite with the shipped batching (`max_batch`), one integration.
Hits are POSTed one per request at `latency_rate` a second for `latency_seconds`, open
loop (bench/harness.py `post_paced`); each carries `bench_sent`, our clock as its
request leaves, and the receiver records its arrival minus that for every notification.
So a latency is the whole path: the API, the durable commit, the dispatcher, the webhook.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import orjson

from harness import (
    Measurement,
    Paced,
    ReceiverControl,
    SectionResult,
    Target,
    Tocsin,
    http_client,
    make_hit,
    measured,
    median_latency,
    post_paced,
    receiver_running,
    serving,
)
from options import Options

TARGET_P50 = 0.010  # seconds
TARGET_P99 = 0.050


async def timed_run(
    tocsin: Tocsin,
    receiver: ReceiverControl,
    tag: str,
    *,
    rate: float,
    seconds: float,
    fanout: int = 1,
) -> tuple[Measurement, Paced]:
    """A paced run; every notification (`fanout` per hit) timed by the receiver."""
    expect = round(rate * seconds) * fanout
    await receiver.reset(expect=expect, keep=False, latency=True)
    paced = await post_paced(tocsin, tag, rate, seconds)
    stats = await receiver.wait(expect)
    return measured(stats, stats["first_at"]), paced


def latency_cells(measurement: Measurement) -> str:
    """p50, p99 and max in milliseconds, for a table row."""
    timed = measurement.latency or {}
    return "".join(f"{timed.get(key, float('nan')) * 1000:>10.1f}" for key in ("p50", "p99", "max"))


def paced_cells(paced: Paced) -> str:
    """The rate sent, the worst lag behind the schedule and the API's p50 and p99 (ms)."""
    return (
        f"{paced.rate:>10,.0f}{paced.worst_lag * 1000:>10.1f}"
        f"{paced.answer(50) * 1000:>10.1f}{paced.answer(99) * 1000:>10.1f}"
    )


LATENCY_HEADER = (
    f"{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
    f"{'sent/s':>10}{'lag ms':>10}{'202 p50':>10}{'202 p99':>10}"
)


async def single_hit_capacity(
    tocsin: Tocsin, receiver: ReceiverControl, tag: str, posts: int, concurrency: int
) -> float:
    """POSTs of one hit each that the API accepts per second, `concurrency` at a time.

    Closed loop: each worker sends its next POST when the last one was answered. The
    notifications are awaited too, so that none arrives during the next timed run.
    """
    bodies = [orjson.dumps([make_hit(tag, index)]) for index in range(posts)]
    await receiver.reset(expect=posts, keep=False)
    start = time.monotonic()
    await tocsin.post_hits(bodies, concurrency)
    accepted = posts / (time.monotonic() - start)
    await receiver.wait(posts)
    return accepted


Timed = list[tuple[Measurement, Paced, float]]  # a paced run, and the API's capacity after it


async def measure(options: Options) -> Timed:
    """A one-second warm-up at the rate, then `runs` timed runs, each with a capacity run."""
    done = []
    posts = round(options.latency_rate * options.latency_seconds / 2)
    rate, seconds = options.latency_rate, options.latency_seconds
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-latency-") as tmp:
        workdir = Path(tmp)
        async with (
            http_client() as client,
            receiver_running(workdir, client) as receiver,
            serving(workdir, client, options, max_batch=options.max_batch) as tocsin,
        ):
            await tocsin.create_integration(receiver, "bench receiver")
            await timed_run(tocsin, receiver, "warmup", rate=rate, seconds=1.0)
            for run in range(1, options.runs + 1):
                timed, paced = await timed_run(
                    tocsin, receiver, f"run{run}", rate=rate, seconds=seconds
                )
                capacity = await single_hit_capacity(
                    tocsin, receiver, f"capacity{run}", posts, options.ingest_concurrency
                )
                done.append((timed, paced, capacity))
                print(
                    f"run {run}: {latency_cells(timed)} ms (p50, p99, max); "
                    f"the API accepts {capacity:,.0f} single-hit POSTs/s"
                )
    return done


def report(options: Options, done: Timed) -> SectionResult:
    """Print the section's table; return its rows and targets for the closing table."""
    runs = [measurement for measurement, _, _ in done]
    p50, p99 = median_latency(runs, "p50"), median_latency(runs, "p99")
    capacity = statistics.median(capacity for _, _, capacity in done)
    lines = [
        (
            f"{options.latency_rate:,.0f} hits/s, one per POST, for {options.latency_seconds:g} s "
            f"per run, {len(runs)} runs after a 1 s warm-up; `tocsin serve` on SQLite, "
            f"synchronous={options.synchronous}, max_batch={options.max_batch}, "
            f"max_in_flight={options.max_in_flight}, one integration"
        ),
        "",
        f"{'ingest -> receiver':<20}{LATENCY_HEADER}",
        *(
            f"{f'run {i}':<20}{latency_cells(m)}{paced_cells(p)}"
            for i, (m, p, _) in enumerate(done, start=1)
        ),
        f"{'median':<20}{p50 * 1000:>10.1f}{p99 * 1000:>10.1f}",
        "",
        (
            "p50, p99, max: POST leaving -> notification at the receiver; sent/s: the rate "
            "achieved; lag: the worst send behind its schedule; 202 p50, p99: POST leaving -> "
            "tocsin's answer (ms)"
        ),
        "",
        (
            f"closed loop, {options.ingest_concurrency} at a time, the API accepts "
            f"{capacity:,.0f} single-hit POSTs/s (median of the runs: "
            + ", ".join(f"{c:,.0f}" for _, _, c in done)
            + ")"
        ),
    ]
    print("\n".join(lines))
    rate = f"{options.latency_rate:,.0f}/s"
    return SectionResult(
        "latency",
        rows=[
            (f"(c) tocsin latency at {rate}, p50 / p99", f"{p50 * 1000:.1f} / {p99 * 1000:.1f} ms"),
            (
                f"(c) single-hit POSTs accepted, {options.ingest_concurrency} at a time",
                f"{capacity:,.0f}/s",
            ),
        ],
        targets=[
            Target(
                f"(c) p50 <= {TARGET_P50 * 1000:g} ms", f"{p50 * 1000:.1f} ms", p50 <= TARGET_P50
            ),
            Target(
                f"(c) p99 <= {TARGET_P99 * 1000:g} ms", f"{p99 * 1000:.1f} ms", p99 <= TARGET_P99
            ),
        ],
    )


async def section(options: Options) -> SectionResult:
    return report(options, await measure(options))
