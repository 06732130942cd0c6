"""`make bench`: tocsin side by side with its limits and its peer, on one machine, in one run.

Every section runs on loopback against bench/receiver.py (its own process, HTTPS with a
private trustme CA), starts what it needs and stops it on the way out:

- single: one notification per webhook: tocsin with batching off, a bare aiohttp loop
  sending tocsin's bodies (the wire limit), and Prometheus Alertmanager (the peer);
- batched: hits batched end to end, next to the wire;
- sampler: what hit sampling costs per hit once a flood of distinct hits fills it;
- latency: ingest -> receiver at a fixed rate, one hit per POST: p50 and p99;
- isolation: healthy integrations beside integrations whose receiver never answers;
- memory: RSS of `tocsin serve` holding a large queue for many integrations;
- postgres: 1, 2, 4 `tocsin dispatch` processes on PostgreSQL.

`--only a,b` runs some sections, `--quick` shrinks every count for a smoke run. The bench
prints each section's details, then one table of the figures and the issue's targets
with PASS or FAIL. It exits 0 when it measured (whatever the targets say), 1 when a
process failed or notifications went missing.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

import batched
import isolation
import latency
import memory
import postgres
import sampler
import single
import triggers
from harness import FAILURES, SectionResult
from options import Options, parse_options

Section = Callable[[Options], Awaitable[SectionResult]]
SECTIONS: dict[str, tuple[str, Section]] = {
    "single": ("one notification per webhook: tocsin, the wire, Alertmanager", single.section),
    "batched": ("hits batched, end to end, next to the wire", batched.section),
    "triggers": ("hits batched with 100 threshold triggers and without", triggers.section),
    "sampler": ("hit sampling in a flood of distinct hits", sampler.section),
    "latency": ("ingest -> receiver latency at a fixed rate", latency.section),
    "isolation": ("healthy integrations beside silent ones", isolation.section),
    "memory": ("RSS with a large queue and many integrations", memory.section),
    "postgres": ("1, 2, 4 `tocsin dispatch` processes on PostgreSQL", postgres.section),
}


def machine() -> str:
    """CPUs, their model, memory, Python and SQLite: the line the figures belong to."""
    info = Path("/proc/cpuinfo").read_text()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    total_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} CPUs ({model}), {total_kib / 1024 / 1024:.1f} GiB RAM, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def load() -> str:
    """The machine's load averages: other work on the same cores skews every figure."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def summary(results: list[SectionResult], seconds: float, load_before: str) -> str:
    """The one table: every figure, then every target with PASS or FAIL."""
    rows = [row for result in results for row in result.rows]
    targets = [target for result in results for target in result.targets]
    width = max((len(name) for name, _ in rows), default=10) + 2
    lines = [
        f"== summary: {time.strftime('%Y-%m-%d %H:%M')}, {machine()} ==",
        "",
        f"{'measure':<{width}}figure (median of the runs)",
        *(f"{name:<{width}}{figure}" for name, figure in rows),
        "",
        "targets:",
        *(target.line() for target in targets),
        "",
        (
            f"bench took {seconds:.0f} s; load average (1, 5, 15 min) {load_before} at the start, "
            f"{load()} at the end"
        ),
    ]
    return "\n".join(lines)


def main() -> int:
    options = parse_options(__doc__.splitlines()[0])
    load_before = load()
    print(f"{machine()}; load average {load_before}")
    started = time.monotonic()
    results: list[SectionResult] = []
    try:
        for name in options.sections:
            title, run = SECTIONS[name]
            print(f"\n== {name}: {title} ==", flush=True)
            section_started = time.monotonic()
            results.append(uvloop.run(run(options)))
            print(f"({name} took {time.monotonic() - section_started:.0f} s)", flush=True)
    except FAILURES as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    print()
    print(summary(results, time.monotonic() - started, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
