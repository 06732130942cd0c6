"""/applications: the applications hits and triggers refer to, by id."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tocsin import events
from tocsin.api.deps import JsonRoute, Manager, Reader, Service, actor
from tocsin.api.schemas import ApplicationChange, ApplicationIn, ApplicationOut
from tocsin.errors import NotFound
from tocsin.models import Application, Principal
from tocsin.service import Tocsin

router = APIRouter(prefix="/applications", tags=["applications"], route_class=JsonRoute)


async def _get(runtime: Tocsin, caller: Principal, application_id: int) -> Application:
    found = await runtime.store.get_application(caller.client.id, application_id)
    if found is None:
        raise NotFound(f"application {application_id} not found")
    return found


async def _announce(
    runtime: Tocsin,
    caller: Principal,
    kind: str,
    application: Application,
    previous_name: str | None = None,
) -> None:
    event = events.application_event(
        kind,
        application,
        runtime.notify_settings(caller.client),
        actor=actor(caller),
        now=runtime.clock.now(),
        previous_name=previous_name,
    )
    await runtime.ingest(caller.client, [event])


@router.post("", status_code=201, response_model=ApplicationOut)
async def create(body: ApplicationIn, runtime: Service, caller: Manager) -> ApplicationOut:
    application = await runtime.store.create_application(
        caller.client.id, name=body.name, now=runtime.clock.now(), application_id=body.id
    )
    await _announce(runtime, caller, "application_created", application)
    return ApplicationOut.of(application)


@router.get("", response_model=list[ApplicationOut])
async def list_all(runtime: Service, caller: Reader) -> list[ApplicationOut]:
    return [
        ApplicationOut.of(found)
        for found in await runtime.store.list_applications(caller.client.id)
    ]


@router.get("/{application_id}", response_model=ApplicationOut)
async def read(application_id: int, runtime: Service, caller: Reader) -> ApplicationOut:
    return ApplicationOut.of(await _get(runtime, caller, application_id))


async def _rename(
    application_id: int, body: ApplicationChange, runtime: Tocsin, caller: Principal
) -> ApplicationOut:
    before = await _get(runtime, caller, application_id)
    after = await runtime.store.rename_application(
        caller.client.id, application_id, body.name, runtime.clock.now()
    )
    if after is None:
        raise NotFound(f"application {application_id} not found")
    if after.name != before.name:
        await _announce(runtime, caller, "application_changed", after, before.name)
    return ApplicationOut.of(after)


@router.put("/{application_id}", response_model=ApplicationOut)
async def put(
    application_id: int, body: ApplicationChange, runtime: Service, caller: Manager
) -> ApplicationOut:
    return await _rename(application_id, body, runtime, caller)


@router.patch("/{application_id}", response_model=ApplicationOut)
async def patch(
    application_id: int, body: ApplicationChange, runtime: Service, caller: Manager
) -> ApplicationOut:
    return await _rename(application_id, body, runtime, caller)


@router.delete("/{application_id}", status_code=204)
async def delete(application_id: int, runtime: Service, caller: Manager) -> Response:
    deleted = await runtime.store.delete_application(caller.client.id, application_id)
    if deleted is None:
        raise NotFound(f"application {application_id} not found")
    await _announce(runtime, caller, "application_deleted", deleted)
    return Response(status_code=204)
