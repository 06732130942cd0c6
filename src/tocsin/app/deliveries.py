"""The delivery log of an integration, and re-sending."""

from __future__ import annotations

from tocsin.app.context import Context
from tocsin.errors import NotFound
from tocsin.models import Delivery, Principal
from tocsin.roles import Permission, require


async def list_deliveries(
    ctx: Context, caller: Principal, integration_id: int, *, limit: int, before: int | None
) -> list[Delivery]:
    """The integration's deliveries, newest first, older than `before` (a delivery id)."""
    require(caller, Permission.READ)
    if await ctx.store.get_integration(caller.client.id, integration_id) is None:
        raise NotFound(f"integration {integration_id} not found")
    return await ctx.store.list_deliveries(
        caller.client.id, integration_id, limit=limit, before=before
    )


async def get_delivery(ctx: Context, caller: Principal, delivery_id: int) -> Delivery:
    require(caller, Permission.READ)
    found = await ctx.store.get_delivery(caller.client.id, delivery_id)
    if found is None:
        raise NotFound(f"delivery {delivery_id} not found")
    return found


async def resend(ctx: Context, caller: Principal, delivery_id: int) -> Delivery:
    """Queue a failed or cancelled delivery again (Conflict otherwise), and wake delivery."""
    require(caller, Permission.OPERATE)
    delivery = await ctx.store.resend(caller.client.id, delivery_id, ctx.clock.now())
    ctx.dispatcher.wake()
    return delivery
