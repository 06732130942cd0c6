"""/denylist: IP addresses denied until a time; expired entries drop out of the list."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tocsin import events
from tocsin.api.deps import Denylister, JsonRoute, Manager, Reader, Service, actor, admit_events
from tocsin.api.errors import ApiError
from tocsin.api.schemas import DenylistIn, DenylistOut
from tocsin.errors import NotFound
from tocsin.models import EventType

router = APIRouter(prefix="/denylist", tags=["denylist"], route_class=JsonRoute)


@router.post("", status_code=201, response_model=DenylistOut)
async def add(body: DenylistIn, runtime: Service, caller: Denylister) -> DenylistOut:
    """Deny an address; also stored as an `ip_denylisted` event for triggers."""
    now = runtime.clock.now()
    if body.lock_time is not None:
        if body.expire_at is not None:
            message = "lock_time: give expire_at or lock_time, not both"
            raise ApiError(422, "invalid", message, "lock_time")
        expire_at = now + body.lock_time
    elif body.expire_at is not None:
        expire_at = body.expire_at.timestamp()
        if expire_at <= now:
            raise ApiError(422, "invalid", "expire_at: must be in the future", "expire_at")
    else:
        message = "expire_at: give expire_at (a time) or lock_time (seconds from now)"
        raise ApiError(422, "invalid", message, "expire_at")
    application = body.application
    if application is not None and (
        await runtime.store.get_application(caller.client.id, application) is None
    ):
        message = f"application: no application {application} in this client"
        raise ApiError(422, "invalid", message, "application")
    admit_events(runtime, caller, 1)
    entry = await runtime.store.add_denylist(
        caller.client.id,
        ip=body.ip,
        reason=body.reason,
        application=application,
        expire_at=expire_at,
        created_by=actor(caller),
        now=now,
    )
    shown = DenylistOut.of(entry)
    record = {"ip": entry.ip, "reason": entry.reason, "application": entry.application}
    record |= {"expire_at": events.iso_time(entry.expire_at), "by": entry.created_by}
    await runtime.ingest(caller.client, [events.record_event(EventType.IP_DENYLISTED, record)])
    return shown


@router.get("", response_model=list[DenylistOut])
async def list_all(runtime: Service, caller: Reader) -> list[DenylistOut]:
    entries = await runtime.store.list_denylist(caller.client.id, runtime.clock.now())
    return [DenylistOut.of(entry) for entry in entries]


@router.delete("/{entry_id}", status_code=204)
async def remove(entry_id: int, runtime: Service, caller: Manager) -> Response:
    if await runtime.store.remove_denylist(caller.client.id, entry_id, runtime.clock.now()) is None:
        raise NotFound(f"denylist entry {entry_id} not found")
    return Response(status_code=204)
