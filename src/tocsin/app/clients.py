"""Clients (tenants), managed with the deployment-wide operator token (TOCSIN_OPERATOR_TOKEN).

Nothing here reads a client's integrations, events or deliveries: the operator creates
a client with its first administrator, and that administrator takes it from there.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from tocsin import ids
from tocsin.app.context import Context
from tocsin.errors import Forbidden, NotFound, Unauthorized
from tocsin.models import Client, User
from tocsin.store import Bootstrap

FIRST_ADMINISTRATOR = "first administrator"  # the name of a new client's first token


@dataclass(frozen=True, slots=True)
class DeploymentOperator:
    """Proof that the caller gave the operator token: only `admit_operator` makes one."""


async def admit_operator(ctx: Context, token: str | None) -> DeploymentOperator:
    """The deployment's operator, if `token` is TOCSIN_OPERATOR_TOKEN."""
    if token is None:
        raise Unauthorized("send Authorization: Bearer <operator token>")
    configured = ctx.settings.operator_token
    if not configured:
        raise Forbidden(
            "clients are managed with the operator token; none is set (TOCSIN_OPERATOR_TOKEN)"
        )
    if not hmac.compare_digest(token.encode(), configured.encode()):
        raise Forbidden("clients are managed with the deployment's operator token")
    return DeploymentOperator()


@dataclass(frozen=True, slots=True, kw_only=True)
class NewClient:
    """A client just made, its first administrator and that one's token (shown this once)."""

    client: Client
    administrator: User
    secret: str


async def create_client(
    ctx: Context,
    _: DeploymentOperator,
    *,
    name: str,
    cloud: str,
    console_url: str,
    admin_email: str,
    admin_name: str,
) -> NewClient:
    """A client with its first administrator and that administrator's token, all at once."""
    secret = ids.api_token()
    admin = await ctx.store.create_client_with_administrator(
        Bootstrap(
            client_name=name,
            cloud=cloud,
            console_url=console_url,
            admin_email=admin_email,
            admin_name=admin_name,
            token_hash=ctx.vault.token_digest(secret),
            token_name=FIRST_ADMINISTRATOR,
        ),
        ctx.clock.now(),
    )
    client = Client(id=admin.client_id, name=name, cloud=cloud, console_url=console_url)
    return NewClient(client=client, administrator=admin, secret=secret)


async def list_clients(ctx: Context, _: DeploymentOperator) -> list[Client]:
    return await ctx.store.list_clients()


async def get_client(ctx: Context, _: DeploymentOperator, client_id: int) -> Client:
    found = await ctx.store.get_client(client_id)
    if found is None:
        raise NotFound(f"client {client_id} not found")
    return found


async def update_client(
    ctx: Context,
    operator: DeploymentOperator,
    client_id: int,
    *,
    name: str | None = None,
    cloud: str | None = None,
    console_url: str | None = None,
) -> Client:
    """Change what is given; what notifications say of the client follows at once."""
    current = await get_client(ctx, operator, client_id)
    updated = await ctx.store.update_client(
        client_id,
        name=current.name if name is None else name,
        cloud=current.cloud if cloud is None else cloud,
        console_url=current.console_url if console_url is None else console_url,
    )
    ctx.principals.clear()  # a caller's client (its name, cloud, console URL) changed
    if updated is None:
        raise NotFound(f"client {client_id} not found")
    return updated
