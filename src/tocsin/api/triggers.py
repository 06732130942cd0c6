"""/triggers: create, read, change, enable, disable and delete triggers (SPEC 5)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import ValidationError

from tocsin.api.deps import Ctx, JsonRoute, Manager, Reader
from tocsin.api.errors import invalid
from tocsin.api.schemas import TriggerIn, TriggerOut
from tocsin.app import triggers

router = APIRouter(prefix="/triggers", tags=["triggers"], route_class=JsonRoute)

_EXAMPLE = {"enabled": False}


@router.post("", status_code=201, response_model=TriggerOut)
async def create(body: TriggerIn, ctx: Ctx, caller: Manager) -> TriggerOut:
    return TriggerOut.of(await triggers.create_trigger(ctx, caller, body.to_spec()))


@router.get("", response_model=list[TriggerOut])
async def list_all(ctx: Ctx, caller: Reader) -> list[TriggerOut]:
    return [TriggerOut.of(found) for found in await triggers.list_triggers(ctx, caller)]


@router.get("/{trigger_id}", response_model=TriggerOut)
async def read(trigger_id: int, ctx: Ctx, caller: Reader) -> TriggerOut:
    return TriggerOut.of(await triggers.get_trigger(ctx, caller, trigger_id))


@router.put("/{trigger_id}", response_model=TriggerOut)
async def put(trigger_id: int, body: TriggerIn, ctx: Ctx, caller: Manager) -> TriggerOut:
    return TriggerOut.of(await triggers.update_trigger(ctx, caller, trigger_id, body.to_spec()))


@router.patch("/{trigger_id}", response_model=TriggerOut)
async def patch(
    trigger_id: int,
    ctx: Ctx,
    caller: Manager,
    changes: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])],
) -> TriggerOut:
    """Change some fields; those left out stay as they are."""
    current = await triggers.get_trigger(ctx, caller, trigger_id)
    try:
        body = TriggerIn.model_validate(current.spec.as_dict() | changes)
    except ValidationError as exc:
        raise invalid(exc.errors()) from exc
    return TriggerOut.of(await triggers.update_trigger(ctx, caller, trigger_id, body.to_spec()))


@router.delete("/{trigger_id}", status_code=204)
async def delete(trigger_id: int, ctx: Ctx, caller: Manager) -> Response:
    await triggers.delete_trigger(ctx, caller, trigger_id)
    return Response(status_code=204)


@router.post("/{trigger_id}/enable", response_model=TriggerOut)
async def enable(trigger_id: int, ctx: Ctx, caller: Manager) -> TriggerOut:
    return TriggerOut.of(await triggers.set_enabled(ctx, caller, trigger_id, enabled=True))


@router.post("/{trigger_id}/disable", response_model=TriggerOut)
async def disable(trigger_id: int, ctx: Ctx, caller: Manager) -> TriggerOut:
    return TriggerOut.of(await triggers.set_enabled(ctx, caller, trigger_id, enabled=False))
