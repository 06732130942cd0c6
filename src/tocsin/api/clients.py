"""/clients: tenants, managed with the deployment-wide operator token (TOCSIN_OPERATOR_TOKEN).

A client's own tokens never reach this router, and nothing here reads a client's
integrations, events or deliveries: the operator creates a client with its first
administrator, and that administrator takes it from there.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from tocsin.api.deps import Ctx, JsonRoute, bearer, check_ids
from tocsin.api.schemas import ClientChange, ClientCreated, ClientIn, ClientOut, UserOut
from tocsin.app import clients
from tocsin.app.clients import DeploymentOperator


async def _operator(
    request: Request,
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> DeploymentOperator:
    token = None if credentials is None else credentials.credentials
    operator = await clients.admit_operator(ctx, token)
    check_ids(request)
    return operator


Operator = Annotated[DeploymentOperator, Depends(_operator)]

router = APIRouter(prefix="/clients", tags=["clients"], route_class=JsonRoute)


@router.post("", status_code=201, response_model=ClientCreated)
async def create(body: ClientIn, ctx: Ctx, operator: Operator) -> ClientCreated:
    """A client with its first administrator, whose token is shown this once."""
    made = await clients.create_client(
        ctx,
        operator,
        name=body.name,
        cloud=body.cloud,
        console_url=body.console_url,
        admin_email=body.admin_email,
        admin_name=body.admin_name,
    )
    return ClientCreated(
        administrator=UserOut.of(made.administrator),
        token=made.secret,
        **ClientOut.of(made.client).model_dump(),
    )


@router.get("", response_model=list[ClientOut])
async def list_all(ctx: Ctx, operator: Operator) -> list[ClientOut]:
    return [ClientOut.of(client) for client in await clients.list_clients(ctx, operator)]


@router.get("/{client_id}", response_model=ClientOut)
async def read(client_id: int, ctx: Ctx, operator: Operator) -> ClientOut:
    return ClientOut.of(await clients.get_client(ctx, operator, client_id))


@router.patch("/{client_id}", response_model=ClientOut)
async def change(client_id: int, body: ClientChange, ctx: Ctx, operator: Operator) -> ClientOut:
    updated = await clients.update_client(
        ctx,
        operator,
        client_id,
        name=body.name,
        cloud=body.cloud,
        console_url=body.console_url,
    )
    return ClientOut.of(updated)
