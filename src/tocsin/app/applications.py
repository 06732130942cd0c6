"""Applications: the ids hits and triggers refer to, with a name people read."""

from __future__ import annotations

from tocsin import events
from tocsin.app.context import Context, Notices, actor
from tocsin.errors import NotFound
from tocsin.models import Application, NewEvent, Principal
from tocsin.roles import Permission, require
from tocsin.store.base import Changed


async def list_applications(ctx: Context, caller: Principal) -> list[Application]:
    require(caller, Permission.READ)
    return await ctx.store.list_applications(caller.client.id)


async def get_application(ctx: Context, caller: Principal, application_id: int) -> Application:
    require(caller, Permission.READ)
    found = await ctx.store.get_application(caller.client.id, application_id)
    if found is None:
        raise NotFound(f"application {application_id} not found")
    return found


async def create_application(
    ctx: Context, caller: Principal, *, name: str, application_id: int | None = None
) -> Application:
    """A new application (the client's highest id + 1 unless given); `application_created`."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()
    notices: Notices[Application] = Notices(
        lambda created: [_event(ctx, caller, "application_created", created, now)]
    )
    created = await ctx.store.create_application(
        caller.client.id, name=name, now=now, application_id=application_id, audit=notices
    )
    ctx.stored(notices.rendered)
    return created


async def rename_application(
    ctx: Context, caller: Principal, application_id: int, name: str
) -> Application:
    """A new name; notifies `application_changed` when it differs from the old one."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()

    def render(changed: Changed[Application]) -> list[NewEvent]:
        before, after = changed.before, changed.after
        if after.name == before.name:
            return []
        return [_event(ctx, caller, "application_changed", after, now, previous_name=before.name)]

    notices = Notices(render)
    after = await ctx.store.rename_application(
        caller.client.id, application_id, name, now, audit=notices
    )
    if after is None:
        raise NotFound(f"application {application_id} not found")
    ctx.stored(notices.rendered)
    return after


async def delete_application(ctx: Context, caller: Principal, application_id: int) -> Application:
    """Delete an application; notifies `application_deleted`."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()
    notices: Notices[Application] = Notices(
        lambda deleted: [_event(ctx, caller, "application_deleted", deleted, now)]
    )
    deleted = await ctx.store.delete_application(
        caller.client.id, application_id, now=now, audit=notices
    )
    if deleted is None:
        raise NotFound(f"application {application_id} not found")
    ctx.stored(notices.rendered)
    return deleted


def _event(
    ctx: Context,
    caller: Principal,
    kind: str,
    application: Application,
    now: float,
    *,
    previous_name: str | None = None,
) -> NewEvent:
    return events.application_event(
        kind,
        application,
        ctx.notify_settings(caller.client),
        actor=actor(caller),
        now=now,
        previous_name=previous_name,
    )
