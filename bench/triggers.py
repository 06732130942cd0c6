"""Section `triggers` (issue 14): batched hit ingestion with 100 enabled threshold
triggers against none, in one run of one `tocsin serve`.

The process, the database and the integration are the same for both phases; between
rounds the 100 triggers are enabled or disabled through the API, so the rounds
interleave (none, with, none, with, ...) and drift hits both. The triggers mix
conditions (hits, attacks, incidents), filters (attack type eq / ne, domain, response
status, URI, IP, application, target) and per-IP counting (denylist_ip); their
notifications go to a disabled integration, so the receiver counts hits only.

Evaluation runs beside ingestion and may trail it under a flood: after each round with
triggers, an IP is denylisted and an `ip_denylisted` trigger notifies the receiver; the
time from the last hit accepted to that notification is how far evaluation trailed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from batched import Phases, sqlite_phases
from harness import BenchError, Measurement, SectionResult, Target, auth, rates_row, runs_header
from options import Options

TARGET_RATIO = 0.8
TRIGGERS = 100
MARKER_APPLICATION = 99

_FILTERS: list[list[dict[str, Any]]] = [
    [{"id": "attack_type", "operator": "eq", "values": ["sqli"]}],
    [{"id": "attack_type", "operator": "ne", "values": ["xss", "rce"]}],
    [{"id": "domain", "operator": "eq", "values": ["shop.example.com"]}],
    [{"id": "response_status", "operator": "eq", "values": [200, 500]}],
    [{"id": "uri", "operator": "eq", "values": ["shop.example.com/login", "/api"]}],
    [{"id": "ip", "operator": "ne", "values": ["203.0.113.7"]}],
    [{"id": "application", "operator": "eq", "values": [1, 2]}],
    [{"id": "target", "operator": "eq", "values": ["database"]}],
    [
        {"id": "attack_type", "operator": "eq", "values": ["sqli", "xss"]},
        {"id": "domain", "operator": "ne", "values": ["admin.example.com"]},
    ],
    [],
]
_CONDITIONS = ("hits_exceeded", "hits_exceeded", "attacks_exceeded", "incidents_exceeded")


def trigger_body(n: int, quiet: int) -> dict[str, Any]:
    """The n-th of the 100: notifications to the `quiet` (disabled) integration."""
    actions: list[dict[str, Any]] = [{"id": "send_notification", "integration_ids": [quiet]}]
    if n % 10 == 9:
        actions.append({"id": "denylist_ip", "lock_time": 60})
    return {
        "name": f"bench trigger {n}",
        "condition": _CONDITIONS[n % len(_CONDITIONS)],
        "filters": _FILTERS[n % len(_FILTERS)],
        "threshold": {"count": 10 + 97 * n, "period": 60 * (1 + n % 60)},
        "actions": actions,
    }


async def _post(phases: Phases, path: str, body: Any = None, expect: int = 201) -> Any:
    tocsin = phases.tocsin
    url = f"{tocsin.url}/api/v1{path}"
    async with tocsin.client.post(url, json=body, headers=auth(tocsin.token)) as reply:
        if reply.status != expect:
            raise BenchError(f"POST {path}: {reply.status} {await reply.text()}")
        return await reply.json()


async def set_up(phases: Phases) -> tuple[list[int], int]:
    """The 100 triggers (disabled) and the catch-up marker trigger: their ids."""
    receiver = phases.receiver
    quiet = await phases.tocsin.create_integration(receiver, "quiet", enabled=False)
    marked = await phases.tocsin.create_integration(receiver, "marker", events=["scope"])
    made = [
        (await _post(phases, "/triggers", trigger_body(n, quiet) | {"enabled": False}))["id"]
        for n in range(TRIGGERS)
    ]
    # Only the bench's own denylistings (application 99) notify: not the triggers' ones.
    await _post(phases, "/applications", {"id": MARKER_APPLICATION, "name": "bench marker"})
    marker = {
        "name": "caught up",
        "condition": "ip_denylisted",
        "filters": [{"id": "application", "operator": "eq", "values": [MARKER_APPLICATION]}],
        "actions": [{"id": "send_notification", "integration_ids": [marked]}],
    }
    await _post(phases, "/triggers", marker)
    return made, marked


async def switch(phases: Phases, trigger_ids: list[int], *, enabled: bool) -> None:
    verb = "enable" if enabled else "disable"
    for trigger_id in trigger_ids:
        await _post(phases, f"/triggers/{trigger_id}/{verb}", expect=200)


async def caught_up(phases: Phases, ingested_at: float, round_number: int) -> float:
    """Seconds from the last hit accepted until evaluation has read everything before."""
    await phases.receiver.reset(expect=1)
    body = {"ip": f"192.0.2.{round_number + 1}", "lock_time": 1, "reason": "bench"}
    body["application"] = MARKER_APPLICATION
    await _post(phases, "/denylist", body)
    await phases.receiver.wait(1)
    return time.monotonic() - ingested_at


async def measure(options: Options) -> tuple[list[Measurement], list[Measurement], list[float]]:
    none: list[Measurement] = []
    with_triggers: list[Measurement] = []
    trailing: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-") as tmp:
        async with sqlite_phases(options, Path(tmp), max_batch=options.max_batch) as phases:
            trigger_ids, _ = await set_up(phases)
            if options.warmup:
                await phases.through_tocsin("warmup", options.warmup, options.per_post)
            for run in range(1, options.runs + 1):
                await switch(phases, trigger_ids, enabled=False)
                plain, _ = await phases.through_tocsin(f"none{run}", options.hits, options.per_post)
                none.append(plain)
                await switch(phases, trigger_ids, enabled=True)
                start = time.monotonic()
                evaluated, _ = await phases.through_tocsin(
                    f"with{run}", options.hits, options.per_post
                )
                with_triggers.append(evaluated)
                trailing.append(
                    await caught_up(phases, start + (evaluated.ingest_seconds or 0.0), run)
                )
                print(
                    f"run {run}: no triggers {plain.rate:,.0f}/s, {TRIGGERS} triggers "
                    f"{evaluated.rate:,.0f}/s, evaluation caught up {trailing[-1]:.2f} s "
                    "after the last hit was accepted"
                )
    return none, with_triggers, trailing


def report(
    options: Options,
    none: list[Measurement],
    with_triggers: list[Measurement],
    trailing: list[float],
) -> SectionResult:
    plain = statistics.median(m.rate for m in none)
    evaluated = statistics.median(m.rate for m in with_triggers)
    ratio = evaluated / plain
    print(
        "\n".join(
            [
                (
                    f"{options.hits:,} hits per run, {options.per_post} per POST, "
                    f"{options.ingest_concurrency} at a time, one `tocsin serve` on SQLite; "
                    f"{TRIGGERS} threshold triggers enabled or all disabled, alternating"
                ),
                "",
                runs_header("hits/s end to end", len(none)),
                rates_row("no triggers", [m.rate for m in none]),
                rates_row(f"{TRIGGERS} triggers", [m.rate for m in with_triggers]),
                rates_row("evaluation trailing (s)", trailing),
                "",
                f"ratio = with / without = {ratio:.3f}",
            ]
        )
    )
    return SectionResult(
        "triggers",
        rows=[
            ("(triggers) hits/s batched, no triggers", f"{plain:,.0f}/s"),
            (f"(triggers) hits/s batched, {TRIGGERS} triggers", f"{evaluated:,.0f}/s"),
            ("(triggers) evaluation trailing ingestion", f"{statistics.median(trailing):.2f} s"),
        ],
        targets=[
            Target(
                f"(triggers) with {TRIGGERS} triggers / without >= {TARGET_RATIO}",
                f"{ratio:.3f}",
                ratio >= TARGET_RATIO,
            )
        ],
    )


async def section(options: Options) -> SectionResult:
    none, with_triggers, trailing = await measure(options)
    return report(options, none, with_triggers, trailing)
