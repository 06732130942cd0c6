"""Triggers (SPEC 5): create, read, change, enable, disable and delete them.

Administrators change triggers, every role that reads sees them. A definition is
checked whole (triggers/definitions.check, and here the integrations it names belong to
the client) before it is saved; each change is a system event (`trigger_created`,
`trigger_changed`, `trigger_deleted`) stored in the change's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from tocsin import events
from tocsin.app.context import Context, Notices, actor
from tocsin.errors import NotFound
from tocsin.models import NewEvent, Principal
from tocsin.roles import Permission, require
from tocsin.store.base import Changed
from tocsin.triggers.definitions import (
    ActionId,
    InvalidTrigger,
    Trigger,
    TriggerSpec,
    check,
)


async def list_triggers(ctx: Context, caller: Principal) -> list[Trigger]:
    require(caller, Permission.READ)
    return await ctx.store.list_triggers(caller.client.id)


async def get_trigger(ctx: Context, caller: Principal, trigger_id: int) -> Trigger:
    require(caller, Permission.READ)
    return await _found(ctx, caller, trigger_id)


async def create_trigger(ctx: Context, caller: Principal, spec: TriggerSpec) -> Trigger:
    """Save a new trigger; it counts events stored from now on. `trigger_created`."""
    require(caller, Permission.MANAGE)
    checked = await _checked(ctx, caller, spec)
    now = ctx.clock.now()
    notices: Notices[Trigger] = Notices(_render(ctx, caller, now, _created))
    created = await ctx.store.create_trigger(caller.client.id, checked, now, audit=notices)
    ctx.stored(notices.rendered)
    return created


async def update_trigger(
    ctx: Context, caller: Principal, trigger_id: int, spec: TriggerSpec
) -> Trigger:
    """Replace a trigger's definition. `trigger_changed`.

    Changing what it counts (condition, filters, threshold, per-IP counting), or enabling
    it, starts its counting afresh; a new name, comment or integrations keep the count.
    """
    require(caller, Permission.MANAGE)
    await _found(ctx, caller, trigger_id)
    return await _save(ctx, caller, trigger_id, await _checked(ctx, caller, spec))


async def set_enabled(
    ctx: Context, caller: Principal, trigger_id: int, *, enabled: bool
) -> Trigger:
    """Enable or disable a trigger; notifies only when that changes something."""
    require(caller, Permission.MANAGE)
    current = await _found(ctx, caller, trigger_id)
    if current.spec.enabled == enabled:
        return current
    return await _save(ctx, caller, trigger_id, replace(current.spec, enabled=enabled))


async def delete_trigger(ctx: Context, caller: Principal, trigger_id: int) -> None:
    """Delete a trigger: it counts and fires no more. `trigger_deleted`."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()
    notices: Notices[Trigger] = Notices(_render(ctx, caller, now, _deleted))
    if await ctx.store.delete_trigger(caller.client.id, trigger_id, now, audit=notices) is None:
        raise NotFound(f"trigger {trigger_id} not found")
    ctx.stored(notices.rendered)


async def _save(ctx: Context, caller: Principal, trigger_id: int, spec: TriggerSpec) -> Trigger:
    now = ctx.clock.now()
    notices: Notices[Changed[Trigger]] = Notices(_render(ctx, caller, now, _changed))
    saved = await ctx.store.update_trigger(caller.client.id, trigger_id, spec, now, audit=notices)
    if saved is None:
        raise NotFound(f"trigger {trigger_id} not found")
    ctx.stored(notices.rendered)
    return saved


async def _found(ctx: Context, caller: Principal, trigger_id: int) -> Trigger:
    found = await ctx.store.get_trigger(caller.client.id, trigger_id)
    if found is None:
        raise NotFound(f"trigger {trigger_id} not found")
    return found


async def _checked(ctx: Context, caller: Principal, spec: TriggerSpec) -> TriggerSpec:
    """The spec checked against SPEC 5's rules, naming only the client's integrations."""
    checked = check(spec)
    known = {found.id for found in await ctx.store.list_integrations(caller.client.id)}
    for index, action in enumerate(checked.actions):
        if action.id is not ActionId.SEND_NOTIFICATION:
            continue
        for position, integration_id in enumerate(action.integration_ids):
            if integration_id not in known:
                raise InvalidTrigger(
                    f"no integration {integration_id} in this client",
                    f"actions[{index}].integration_ids[{position}]",
                )
    return checked


T = TypeVar("T")

# What a change notifies: (notification type, the trigger, a verb for the sentence).
Kind = tuple[str, Trigger, str | None]


def _created(created: Trigger) -> Kind:
    return "trigger_created", created, None


def _deleted(before: Trigger) -> Kind:
    return "trigger_deleted", before, None


def _changed(changed: Changed[Trigger]) -> Kind:
    before, after = changed.before.spec.enabled, changed.after.spec.enabled
    verb = None if before == after else ("enabled" if after else "disabled")
    return "trigger_changed", changed.after, verb


def _render(
    ctx: Context, caller: Principal, now: float, kind_of: Callable[[T], Kind]
) -> Callable[[T], list[NewEvent]]:
    settings = ctx.notify_settings(caller.client)
    who = actor(caller)

    def render(subject: T) -> list[NewEvent]:
        kind, trigger, verb = kind_of(subject)
        return [events.trigger_event(kind, trigger, settings, actor=who, now=now, verb=verb)]

    return render
