"""The operations (tocsin.app) check the caller's role themselves.

The console and trigger actions call them directly, past the API's route dependencies:
a caller whose role may not make a change is refused with Forbidden and nothing
changes; one that may, makes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, Running
from tocsin.app import (
    Context,
    accounts,
    applications,
    deliveries,
    denylist,
    ingestion,
    integrations,
)
from tocsin.errors import Forbidden
from tocsin.models import Principal, Role, WebhookSettings

SETTINGS = WebhookSettings(name="siem", url="https://127.0.0.1:9/hook")

Operation = Callable[[Context, Principal], Awaitable[Any]]

MANAGING: dict[str, Operation] = {
    "create integration": lambda ctx, who: integrations.create_integration(ctx, who, SETTINGS),
    "update integration": lambda ctx, who: integrations.update_integration(ctx, who, 1, SETTINGS),
    "disable integration": lambda ctx, who: integrations.set_enabled(ctx, who, 1, enabled=False),
    "delete integration": lambda ctx, who: integrations.delete_integration(ctx, who, 1),
    "rotate secret": lambda ctx, who: integrations.rotate_secret(ctx, who, 1),
    "create user": lambda ctx, who: accounts.create_user(
        ctx, who, email="eve@example.com", name="Eve", role=Role.ADMINISTRATOR
    ),
    "change role": lambda ctx, who: accounts.set_role(ctx, who, who.user_id, Role.ADMINISTRATOR),
    "delete user": lambda ctx, who: accounts.delete_user(ctx, who, 1),
    "create token": lambda ctx, who: accounts.create_token(ctx, who, user_id=1),
    "revoke token": lambda ctx, who: accounts.revoke_token(ctx, who, 1),
    "create application": lambda ctx, who: applications.create_application(ctx, who, name="x"),
    "remove denylist entry": lambda ctx, who: denylist.remove_denylist(ctx, who, 1),
}
OPERATING: dict[str, Operation] = {
    "test integration": lambda ctx, who: integrations.test_integration(ctx, who, 1),
    "resend": lambda ctx, who: deliveries.resend(ctx, who, 1),
}
INGESTING: dict[str, Operation] = {
    "report hits": lambda ctx, who: ingestion.report_hits(ctx, who, []),
    "deny an address": lambda ctx, who: denylist.add_denylist(
        ctx, who, ip="203.0.113.7", lock_time=60
    ),
}


async def as_role(tocsin: Running, role: Role) -> tuple[Context, Principal]:
    ctx = tocsin.runtime.context
    admin = await accounts.authenticate(ctx, ADMIN_TOKEN)
    return ctx, replace(admin, role=role)


async def seen(tocsin: Running) -> list[Any]:
    paths = ("integrations", "users", "tokens", "applications", "denylist")
    return [(await tocsin.api.get(f"/api/v1/{path}")).json() for path in paths]


@pytest.mark.parametrize("name", [*MANAGING, *OPERATING, *INGESTING])
async def test_a_read_only_caller_is_refused_by_the_operation(tocsin: Running, name: str) -> None:
    await tocsin.create_integration("https://127.0.0.1:9/hook")
    operation = (MANAGING | OPERATING | INGESTING)[name]
    before = await seen(tocsin)
    ctx, reader = await as_role(tocsin, Role.READ_ONLY)
    with pytest.raises(Forbidden, match="the read_only role cannot"):
        await operation(ctx, reader)
    assert await seen(tocsin) == before


@pytest.mark.parametrize("name", list(MANAGING))
async def test_an_analyst_may_not_change_configuration(tocsin: Running, name: str) -> None:
    ctx, analyst = await as_role(tocsin, Role.ANALYST)
    with pytest.raises(Forbidden, match="cannot change configuration"):
        await MANAGING[name](ctx, analyst)


async def test_an_administrator_calling_the_operation_makes_the_change(tocsin: Running) -> None:
    ctx, admin = await as_role(tocsin, Role.ADMINISTRATOR)
    created = await integrations.create_integration(ctx, admin, SETTINGS)
    listed = (await tocsin.api.get("/api/v1/integrations")).json()
    assert [(item["id"], item["name"]) for item in listed] == [(created.id, "siem")]
