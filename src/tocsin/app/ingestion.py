"""Ingestion: sensors report hits, vulnerabilities, scope and API changes.

Each operation counts the events against the token's ingestion rate (RateLimited past
it), stores them with their outbox rows in one transaction and wakes the dispatcher.
The hit and vulnerability operations are the sensors' hot path: keep them lean.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from tocsin import events, ids
from tocsin.app.context import Context, actor
from tocsin.errors import RateLimited
from tocsin.models import EventType, NewEvent, Principal
from tocsin.roles import Permission, require


async def report_hits(ctx: Context, caller: Principal, body: Any) -> int:
    """POST /hits: an array of hits; returns how many were accepted."""
    require(caller, Permission.INGEST)
    client = caller.client
    new = events.hit_events(
        body, ctx.notify_settings(client), now=ctx.clock.now(), new_id=ids.hit_ids(client.id)
    )
    return await _accept(ctx, caller, new)


async def report_vulnerabilities(ctx: Context, caller: Principal, body: Any) -> int:
    """POST /vulnerabilities: one vulnerability or an array of them."""
    require(caller, Permission.INGEST)
    new = events.vuln_events(
        body, ctx.notify_settings(caller.client), new_id=lambda: secrets.randbelow(2**53)
    )
    return await _accept(ctx, caller, new)


async def report_scope_change(
    ctx: Context, caller: Principal, changes: Mapping[str, Mapping[str, Sequence[str]]]
) -> int:
    """One `scope_changed` notification to integrations subscribed to `scope`."""
    require(caller, Permission.INGEST)
    admit(ctx, caller, 1)
    event = events.scope_event(
        changes, ctx.notify_settings(caller.client), actor=actor(caller), now=ctx.clock.now()
    )
    return await ingest(ctx, caller, [event])


async def report_api_changes(
    ctx: Context, caller: Principal, items: Sequence[Mapping[str, Any]]
) -> int:
    """One `api_change` event per item (kept for triggers; it notifies nobody)."""
    require(caller, Permission.INGEST)
    admit(ctx, caller, len(items))
    new = [events.record_event(EventType.API_CHANGE, item) for item in items]
    return await ingest(ctx, caller, new)


def admit(ctx: Context, caller: Principal, count: int) -> None:
    """Count events against the caller's token: RateLimited past its rate."""
    wait = ctx.ingest_limiter.take(caller.token_id, count, ctx.clock.now())
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        limit = ctx.settings.ingest_rate
        raise RateLimited(
            f"this token may report {limit:g} events per second; retry in {seconds} s", seconds
        )


async def ingest(ctx: Context, caller: Principal, new: Sequence[NewEvent]) -> int:
    """Store events of the caller's client with their outbox rows, then wake the dispatcher."""
    accepted = await ctx.store.ingest(caller.client.id, new, ctx.clock.now())
    ctx.metrics.accepted(new)
    ctx.dispatcher.wake()
    return accepted


async def _accept(ctx: Context, caller: Principal, new: Sequence[NewEvent]) -> int:
    admit(ctx, caller, len(new))
    return await ingest(ctx, caller, new)
