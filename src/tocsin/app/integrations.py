"""Integrations (webhooks): create, read, change, enable, disable, delete, rotate, test."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar
from urllib.parse import urlsplit

from tocsin import events, formats, ids
from tocsin.app.context import Context, Notices, actor
from tocsin.delivery import guard
from tocsin.errors import NotFound, TargetRefused
from tocsin.models import (
    AttemptOutcome,
    BodyFormat,
    Integration,
    NewEvent,
    Principal,
    WebhookSettings,
)
from tocsin.roles import Permission, require
from tocsin.store.base import Changed

T = TypeVar("T")


async def list_integrations(ctx: Context, caller: Principal) -> list[Integration]:
    require(caller, Permission.READ)
    return await ctx.store.list_integrations(caller.client.id)


async def get_integration(ctx: Context, caller: Principal, integration_id: int) -> Integration:
    require(caller, Permission.READ)
    return await _found(ctx, caller, integration_id)


async def create_integration(
    ctx: Context, caller: Principal, settings: WebhookSettings
) -> Integration:
    """A new integration with a fresh signing secret; notifies `integration_created`."""
    require(caller, Permission.MANAGE)
    await check_target(ctx, settings.url)
    now = ctx.clock.now()
    notices = _notices(ctx, caller, now, _created)
    created = await ctx.store.create_integration(
        caller.client.id, settings, ids.signing_secret(), now, audit=notices
    )
    _changed(ctx, notices, created)
    return created


async def update_integration(
    ctx: Context, caller: Principal, integration_id: int, settings: WebhookSettings
) -> Integration:
    """Replace the settings; notifies `integration_changed`, or enabled/disabled."""
    require(caller, Permission.MANAGE)
    await _found(ctx, caller, integration_id)
    await check_target(ctx, settings.url)
    now = ctx.clock.now()
    notices = _notices(ctx, caller, now, _saved)
    saved = await ctx.store.update_integration(
        caller.client.id, integration_id, settings, now, audit=notices
    )
    if saved is None:
        raise NotFound(f"integration {integration_id} not found")
    _changed(ctx, notices, saved)
    return saved


async def set_enabled(
    ctx: Context, caller: Principal, integration_id: int, *, enabled: bool
) -> Integration:
    """Enable, or disable (cancelling queued work); notifies only when the state changes."""
    require(caller, Permission.MANAGE)
    reason = None if enabled else f"disabled by {actor(caller)}"
    now = ctx.clock.now()
    notices = _notices(ctx, caller, now, _switched)
    after = await ctx.store.set_enabled(
        caller.client.id,
        integration_id,
        enabled=enabled,
        now=now,
        reason=reason,
        audit=notices,
    )
    if after is None:
        raise NotFound(f"integration {integration_id} not found")
    _changed(ctx, notices, after)
    return after


async def delete_integration(ctx: Context, caller: Principal, integration_id: int) -> None:
    """Remove it from view and cancel its queued work; notifies `integration_deleted`."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()
    notices = _notices(ctx, caller, now, _deleted)
    if not await ctx.store.delete_integration(caller.client.id, integration_id, now, audit=notices):
        raise NotFound(f"integration {integration_id} not found")
    if notices.subject is not None:
        _changed(ctx, notices, notices.subject, gone=True)


async def rotate_secret(ctx: Context, caller: Principal, integration_id: int) -> Integration:
    """A new signing secret; for 24 h requests carry signatures under both the new and old one."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()
    notices = _notices(ctx, caller, now, _rotated)
    rotated = await ctx.store.rotate_signing_secret(
        caller.client.id, integration_id, ids.signing_secret(), now, audit=notices
    )
    if rotated is None:
        raise NotFound(f"integration {integration_id} not found")
    _changed(ctx, notices, rotated)
    return rotated


async def test_integration(ctx: Context, caller: Principal, integration_id: int) -> AttemptOutcome:
    """Send the test message to a saved integration once, now, signed with its secrets."""
    require(caller, Permission.OPERATE)
    integration = await _found(ctx, caller, integration_id)
    signing = integration.signing_secrets(ctx.clock.now())
    return await _send_test(ctx, caller, integration.settings, signing)


async def test_settings(
    ctx: Context, caller: Principal, settings: WebhookSettings
) -> AttemptOutcome:
    """Send the test message to an unsaved configuration, signed with a throwaway secret."""
    require(caller, Permission.OPERATE)
    await check_target(ctx, settings.url)
    return await _send_test(ctx, caller, settings, [ids.signing_secret()])


async def check_target(ctx: Context, url: str) -> None:
    """Refuse a target the deployment does not allow (scheme, or where its name resolves)."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not ctx.settings.allow_http:
        raise TargetRefused("url must use https:// (this deployment does not allow http://)")
    host = parts.hostname or ""
    allowed = ctx.settings.allowed_networks
    guard.check_address(host, allowed)
    if guard.literal_address(host) is None:
        await _check_name(host, parts.port or 443, allowed)


# helpers ---------------------------------------------------------------------------


async def _found(ctx: Context, caller: Principal, integration_id: int) -> Integration:
    found = await ctx.store.get_integration(caller.client.id, integration_id)
    if found is None:
        raise NotFound(f"integration {integration_id} not found")
    return found


Kind = tuple[str, Integration] | None  # what a change notifies, about which integration


def _created(created: Integration) -> Kind:
    return "integration_created", created


def _deleted(before: Integration) -> Kind:
    return "integration_deleted", before


def _rotated(rotated: Integration) -> Kind:
    return "integration_changed", rotated


def _saved(changed: Changed[Integration]) -> Kind:
    before, after = changed.before.settings.enabled, changed.after.settings.enabled
    if before == after:
        return "integration_changed", changed.after
    return ("integration_enabled" if after else "integration_disabled"), changed.after


def _switched(changed: Changed[Integration]) -> Kind:
    if changed.before.settings.enabled == changed.after.settings.enabled:
        return None  # enabling an enabled integration changes nothing worth telling
    return _saved(changed)


def _notices(
    ctx: Context, caller: Principal, now: float, kind_of: Callable[[T], Kind]
) -> Notices[T]:
    """The audit of an integration change: the event `kind_of` names, if any."""
    settings = ctx.notify_settings(caller.client)
    who = actor(caller)

    def render(subject: T) -> list[NewEvent]:
        found = kind_of(subject)
        if found is None:
            return []
        kind, integration = found
        return [events.integration_event(kind, integration, settings, actor=who, now=now)]

    return Notices(render)


def _changed(
    ctx: Context, notices: Notices[T], integration: Integration, *, gone: bool = False
) -> None:
    """After a change committed: the dispatcher drops or updates what it holds, and wakes."""
    if notices.rendered:
        ctx.dispatcher.changed(integration, gone=gone)
        ctx.stored(notices.rendered)


async def _send_test(
    ctx: Context, caller: Principal, settings: WebhookSettings, signing: Sequence[str]
) -> AttemptOutcome:
    """The test message, always a JSON array whatever the integration's format."""
    message = formats.encode(formats.test_message(ctx.notify_settings(caller.client)))
    body = formats.render_body([message], BodyFormat.JSON_ARRAY)
    return await ctx.sender.send(
        replace(settings, format=BodyFormat.JSON_ARRAY),
        secrets=signing,
        webhook_id=f"msg_test_{secrets.token_urlsafe(12)}",
        body=body,
    )


async def _check_name(host: str, port: int, allowed: Sequence[guard.Network]) -> None:
    """Refuse a name resolving to a refused address; one that does not resolve yet passes."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), 5)
    except (OSError, TimeoutError, UnicodeError):
        return
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if why := guard.refusal(address, allowed):
            raise TargetRefused(
                f"target refused: {host} resolves to {why}; TOCSIN_ALLOWED_NETWORKS can allow it"
            )
