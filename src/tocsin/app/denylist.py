"""The denylist: IP addresses denied until a time; expired entries drop out of the list."""

from __future__ import annotations

from tocsin import events
from tocsin.app.context import Context, Notices, actor
from tocsin.app.ingestion import admit
from tocsin.errors import Invalid, NotFound
from tocsin.models import DenylistEntry, EventType, NewEvent, Principal
from tocsin.roles import Permission, require
from tocsin.triggers import notify


async def list_denylist(ctx: Context, caller: Principal) -> list[DenylistEntry]:
    """The entries not yet expired."""
    require(caller, Permission.READ)
    return await ctx.store.list_denylist(caller.client.id, ctx.clock.now())


async def add_denylist(
    ctx: Context,
    caller: Principal,
    *,
    ip: str,
    reason: str = "",
    application: int | None = None,
    expire_at: float | None = None,
    lock_time: float | None = None,
    utc_offset: int = 0,
) -> DenylistEntry:
    """Deny `ip` until `expire_at` (a time) or for `lock_time` seconds from now.

    A sensor (ingest) or an administrator (manage) may; counted against the token's
    ingestion rate, and stored with an `ip_denylisted` event for triggers; that event
    states the expiry at `utc_offset` (seconds east of UTC), as the caller wrote it.
    """
    require(caller, Permission.INGEST, Permission.MANAGE)
    now = ctx.clock.now()
    until = _until(now, expire_at, lock_time)
    if application is not None and (
        await ctx.store.get_application(caller.client.id, application) is None
    ):
        raise Invalid(f"no application {application} in this client", "application")
    admit(ctx, caller, 1)
    notices: Notices[DenylistEntry] = Notices(lambda entry: _denylisted(entry, utc_offset))
    entry = await ctx.store.add_denylist(
        caller.client.id,
        ip=ip,
        reason=reason,
        application=application,
        expire_at=until,
        created_by=actor(caller),
        now=now,
        audit=notices,
    )
    ctx.stored(notices.rendered)
    return entry


async def remove_denylist(ctx: Context, caller: Principal, entry_id: int) -> DenylistEntry:
    require(caller, Permission.MANAGE)
    removed = await ctx.store.remove_denylist(caller.client.id, entry_id, ctx.clock.now())
    if removed is None:
        raise NotFound(f"denylist entry {entry_id} not found")
    return removed


def _until(now: float, expire_at: float | None, lock_time: float | None) -> float:
    """When an entry given `expire_at` or `lock_time` (exactly one) expires."""
    if lock_time is not None:
        if expire_at is not None:
            raise Invalid("give expire_at or lock_time, not both", "lock_time")
        return now + lock_time
    if expire_at is None:
        raise Invalid("give expire_at (a time) or lock_time (seconds from now)", "expire_at")
    if expire_at <= now:
        raise Invalid("must be in the future", "expire_at")
    return expire_at


def _denylisted(entry: DenylistEntry, utc_offset: int) -> list[NewEvent]:
    record = {"ip": entry.ip, "reason": entry.reason, "application": entry.application}
    expire_at = notify.expire_text(entry.expire_at, utc_offset)
    record |= {"expire_at": expire_at, "by": entry.created_by}
    return [events.record_event(EventType.IP_DENYLISTED, record)]
