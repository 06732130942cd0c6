"""/applications: the applications hits and triggers refer to, by id."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tocsin.api.deps import Ctx, JsonRoute, Manager, Reader
from tocsin.api.schemas import ApplicationChange, ApplicationIn, ApplicationOut
from tocsin.app import applications

router = APIRouter(prefix="/applications", tags=["applications"], route_class=JsonRoute)


@router.post("", status_code=201, response_model=ApplicationOut)
async def create(body: ApplicationIn, ctx: Ctx, caller: Manager) -> ApplicationOut:
    created = await applications.create_application(
        ctx, caller, name=body.name, application_id=body.id
    )
    return ApplicationOut.of(created)


@router.get("", response_model=list[ApplicationOut])
async def list_all(ctx: Ctx, caller: Reader) -> list[ApplicationOut]:
    return [ApplicationOut.of(found) for found in await applications.list_applications(ctx, caller)]


@router.get("/{application_id}", response_model=ApplicationOut)
async def read(application_id: int, ctx: Ctx, caller: Reader) -> ApplicationOut:
    return ApplicationOut.of(await applications.get_application(ctx, caller, application_id))


@router.put("/{application_id}", response_model=ApplicationOut)
async def put(
    application_id: int, body: ApplicationChange, ctx: Ctx, caller: Manager
) -> ApplicationOut:
    renamed = await applications.rename_application(ctx, caller, application_id, body.name)
    return ApplicationOut.of(renamed)


@router.patch("/{application_id}", response_model=ApplicationOut)
async def patch(
    application_id: int, body: ApplicationChange, ctx: Ctx, caller: Manager
) -> ApplicationOut:
    renamed = await applications.rename_application(ctx, caller, application_id, body.name)
    return ApplicationOut.of(renamed)


@router.delete("/{application_id}", status_code=204)
async def delete(application_id: int, ctx: Ctx, caller: Manager) -> Response:
    await applications.delete_application(ctx, caller, application_id)
    return Response(status_code=204)
