"""/clients: tenants, managed with the deployment-wide operator token (TOCSIN_OPERATOR_TOKEN).

A client's own tokens never reach this router, and nothing here reads a client's
integrations, events or deliveries: the operator creates a client with its first
administrator, and that administrator takes it from there.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from tocsin import ids
from tocsin.api.deps import JsonRoute, Service, check_ids, operator
from tocsin.api.schemas import ClientChange, ClientCreated, ClientIn, ClientOut, UserOut
from tocsin.errors import NotFound
from tocsin.models import Client, Role


async def _operator_ids(request: Request, _: Annotated[None, Depends(operator)]) -> None:
    check_ids(request)


router = APIRouter(
    prefix="/clients",
    tags=["clients"],
    route_class=JsonRoute,
    dependencies=[Depends(_operator_ids)],
)


async def _get(runtime: Service, client_id: int) -> Client:
    found = await runtime.store.get_client(client_id)
    if found is None:
        raise NotFound(f"client {client_id} not found")
    return found


@router.post("", status_code=201, response_model=ClientCreated)
async def create(body: ClientIn, runtime: Service) -> ClientCreated:
    """A client with its first administrator, whose token is shown this once."""
    now = runtime.clock.now()
    client = await runtime.store.create_client(body.name, body.cloud, body.console_url, now)
    admin = await runtime.store.create_user(
        client.id, email=body.admin_email, name=body.admin_name, role=Role.ADMINISTRATOR, now=now
    )
    secret = ids.api_token()
    await runtime.store.create_token(
        client.id,
        admin.id,
        name="first administrator",
        token_hash=runtime.vault.token_digest(secret),
        expires_at=None,
        now=now,
    )
    return ClientCreated(
        administrator=UserOut.of(admin), token=secret, **ClientOut.of(client).model_dump()
    )


@router.get("", response_model=list[ClientOut])
async def list_all(runtime: Service) -> list[ClientOut]:
    return [ClientOut.of(client) for client in await runtime.store.list_clients()]


@router.get("/{client_id}", response_model=ClientOut)
async def read(client_id: int, runtime: Service) -> ClientOut:
    return ClientOut.of(await _get(runtime, client_id))


@router.patch("/{client_id}", response_model=ClientOut)
async def change(client_id: int, body: ClientChange, runtime: Service) -> ClientOut:
    current = await _get(runtime, client_id)
    updated = await runtime.store.update_client(
        client_id,
        name=body.name if body.name is not None else current.name,
        cloud=body.cloud if body.cloud is not None else current.cloud,
        console_url=body.console_url if body.console_url is not None else current.console_url,
    )
    runtime.principals.clear()  # a caller's client (its name, cloud, console URL) changed
    if updated is None:
        raise NotFound(f"client {client_id} not found")
    return ClientOut.of(updated)
