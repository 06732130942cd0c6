"""/denylist: IP addresses denied until a time; expired entries drop out of the list."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tocsin.api.deps import Ctx, Denylister, JsonRoute, Manager, Reader
from tocsin.api.schemas import DenylistIn, DenylistOut
from tocsin.app import denylist

router = APIRouter(prefix="/denylist", tags=["denylist"], route_class=JsonRoute)


@router.post("", status_code=201, response_model=DenylistOut)
async def add(body: DenylistIn, ctx: Ctx, caller: Denylister) -> DenylistOut:
    """Deny an address; also stored as an `ip_denylisted` event for triggers."""
    given = body.expire_at
    offset = given.utcoffset() if given is not None else None
    entry = await denylist.add_denylist(
        ctx,
        caller,
        ip=body.ip,
        reason=body.reason,
        application=body.application,
        expire_at=None if body.expire_at is None else body.expire_at.timestamp(),
        lock_time=body.lock_time,
        utc_offset=int(offset.total_seconds()) if offset is not None else 0,
    )
    return DenylistOut.of(entry)


@router.get("", response_model=list[DenylistOut])
async def list_all(ctx: Ctx, caller: Reader) -> list[DenylistOut]:
    return [DenylistOut.of(entry) for entry in await denylist.list_denylist(ctx, caller)]


@router.delete("/{entry_id}", status_code=204)
async def remove(entry_id: int, ctx: Ctx, caller: Manager) -> Response:
    await denylist.remove_denylist(ctx, caller, entry_id)
    return Response(status_code=204)
