"""The bench's options: one record for every section, its defaults, and `--quick`'s."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

SECTIONS = (
    "single",
    "batched",
    "triggers",
    "sampler",
    "latency",
    "isolation",
    "memory",
    "postgres",
)
ALIASES = {"sqlite": "batched"}  # the name `--only` knew the batched section by


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """Every figure the bench can vary; the defaults are `make bench`'s."""

    sections: tuple[str, ...] = SECTIONS
    quick: bool = False
    # shared by the SQLite sections
    runs: int = 3
    per_post: int = 100
    ingest_concurrency: int = 4
    max_in_flight: int = 4
    synchronous: str = "FULL"
    # single: one notification per request; tocsin, the wire and Alertmanager
    single_hits: int = 10_000
    single_warmup: int = 1_000
    # batched: hits batched up to max_batch per request
    hits: int = 20_000
    warmup: int = 2_000
    wire_repeat: int = 5
    max_batch: int = 500
    # sampler: hit sampling in a flood of distinct hits (in-process, pure CPU)
    sampler_capacity: int = 200_000  # the Sampler's own default
    sampler_flood: int = 3
    # latency: one hit per POST at a fixed rate
    latency_rate: float = 1_000.0
    latency_seconds: float = 5.0
    # isolation: healthy integrations beside silent ones
    iso_healthy: int = 20
    iso_silent: int = 20
    iso_hits: int = 500
    iso_rate: float = 25.0
    iso_seconds: float = 5.0
    iso_request_timeout: int = 15
    # memory: a large queue and many integrations
    mem_integrations: int = 10_000
    mem_clients: int = 100
    mem_silent: tuple[int, ...] = (20, 1_000)  # one fresh process for each
    mem_pending: int = 1_000_000
    mem_per_post: int = 500
    # postgres: dispatch processes
    pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    pg_hits: int = 8_000
    pg_integrations: int = 8
    pg_max_batch: int = 50
    pg_processes: tuple[int, ...] = (1, 2, 4)
    pg_runs: int = 2


QUICK: dict[str, Any] = {
    "runs": 1,
    "single_hits": 1_000,
    "single_warmup": 200,
    "hits": 2_000,
    "warmup": 200,
    "wire_repeat": 2,
    "sampler_capacity": 20_000,
    "latency_seconds": 1.0,
    "iso_hits": 100,
    "iso_seconds": 1.0,
    "mem_integrations": 200,
    "mem_clients": 4,
    "mem_silent": (20, 100),
    "mem_pending": 20_000,
    "pg_hits": 1_000,
    "pg_processes": (1, 2),
    "pg_runs": 1,
}


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(k) for k in text.split(","))


def _sections(text: str) -> tuple[str, ...]:
    chosen = tuple(ALIASES.get(name, name) for name in text.split(","))
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown section {unknown[0]!r}; {', '.join(SECTIONS)}")
    return chosen


HELP: dict[str, tuple[Callable[[str], Any], str]] = {
    "runs": (int, "SQLite sections: measured runs of each phase"),
    "per_post": (int, "hits per POST /api/v1/hits (single, batched)"),
    "ingest_concurrency": (int, "POSTs to tocsin (and Alertmanager) at a time"),
    "max_in_flight": (int, "TOCSIN_MAX_IN_FLIGHT, and the wire's requests at a time"),
    "synchronous": (str, "TOCSIN_SQLITE_SYNCHRONOUS"),
    "single_hits": (int, "single: hits (and alerts) per measured run"),
    "single_warmup": (int, "single: hits (and alerts) of the unmeasured first round"),
    "hits": (int, "batched: hits per measured run"),
    "warmup": (int, "batched: hits of the unmeasured first round"),
    "wire_repeat": (int, "batched: times the wire phase sends tocsin's bodies"),
    "max_batch": (int, "batched, latency, memory: TOCSIN_MAX_BATCH"),
    "sampler_capacity": (int, "sampler: windows the Sampler keeps (its default)"),
    "sampler_flood": (int, "sampler: distinct hits past capacity, x capacity"),
    "latency_rate": (float, "latency: hits per second, one per POST"),
    "latency_seconds": (float, "latency: seconds of each paced run"),
    "iso_healthy": (int, "isolation: integrations on the answering receiver"),
    "iso_silent": (int, "isolation: integrations on a receiver that never answers"),
    "iso_hits": (int, "isolation: hits per throughput run (x healthy integrations)"),
    "iso_rate": (float, "isolation: hits per second of the latency runs"),
    "iso_seconds": (float, "isolation: seconds of each latency run"),
    "iso_request_timeout": (int, "isolation: request_timeout of the silent integrations"),
    "mem_integrations": (int, "memory: integrations in all"),
    "mem_clients": (int, "memory: clients (tenants) the integrations are spread over"),
    "mem_silent": (
        _numbers,
        (
            "memory: of them, those holding the queue (receiver never answers); comma-separated, "
            "one run each"
        ),
    ),
    "mem_pending": (int, "memory: notifications to queue"),
    "mem_per_post": (int, "memory: hits per POST while queueing"),
    "pg_admin_url": (str, "postgres: where to create (and drop) the bench's database"),
    "pg_hits": (int, "postgres: hits per run"),
    "pg_integrations": (int, "postgres: integrations, each to the receiver"),
    "pg_max_batch": (int, "postgres: TOCSIN_MAX_BATCH"),
    "pg_processes": (_numbers, "postgres: dispatch process counts, comma-separated, first = 1x"),
    "pg_runs": (int, "postgres: runs of each count"),
}


def parse_options(description: str, argv: Sequence[str] | None = None) -> Options:
    """Options from the command line: each unset one from `--quick`'s values, then defaults."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--only",
        type=_sections,
        help=f"comma-separated sections to run (default: all): {', '.join(SECTIONS)}",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, one run: a smoke test")
    defaults = Options()
    for item in fields(Options):
        if item.name in HELP:
            kind, text = HELP[item.name]
            flag = "--" + item.name.replace("_", "-")
            shown = getattr(defaults, item.name)
            parser.add_argument(flag, type=kind, help=f"{text} (default {shown})")
    args = vars(parser.parse_args(argv))
    only, quick = args.pop("only"), args.pop("quick")
    chosen = replace(defaults, quick=quick, **(QUICK if quick else {}))
    given = {key: value for key, value in args.items() if value is not None}
    return replace(chosen, sections=only or SECTIONS, **given)
