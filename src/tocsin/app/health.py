"""What /metrics and /readyz report about this process and its database."""

from __future__ import annotations

from tocsin.app.context import Context
from tocsin.errors import StoreError


async def metrics(ctx: Context) -> bytes:
    """Prometheus text: this process's counters, the deployment's queue and integrations."""
    return ctx.metrics.render(await ctx.store.stats())


async def problems(ctx: Context) -> list[str]:
    """Why this process is not ready: the database does not answer, delivery is not running."""
    found = []
    try:
        await ctx.store.ping()
    except StoreError as exc:
        found.append(f"database: {exc}")
    if ctx.settings.deliver and not ctx.dispatcher.running:
        found.append("delivery workers are not running")
    return found
