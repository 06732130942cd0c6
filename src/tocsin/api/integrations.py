"""/integrations: create, read, change, enable, disable, delete and test webhooks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import ValidationError

from tocsin.api.deps import Ctx, JsonRoute, Manager, Operator, Reader
from tocsin.api.errors import invalid
from tocsin.api.schemas import IntegrationIn, IntegrationOut, TestResult, settings_dict
from tocsin.app import integrations
from tocsin.models import AttemptOutcome
from tocsin.roles import MASKED_ROLES

router = APIRouter(prefix="/integrations", tags=["integrations"], route_class=JsonRoute)


@router.post("", status_code=201, response_model=IntegrationOut)
async def create(body: IntegrationIn, ctx: Ctx, caller: Manager) -> IntegrationOut:
    created = await integrations.create_integration(ctx, caller, body.to_settings())
    return IntegrationOut.of(created)


@router.get("", response_model=list[IntegrationOut])
async def list_all(ctx: Ctx, caller: Reader) -> list[IntegrationOut]:
    masked = caller.role in MASKED_ROLES
    return [
        IntegrationOut.of(found, masked=masked)
        for found in await integrations.list_integrations(ctx, caller)
    ]


@router.post("/test", response_model=TestResult)
async def test_unsaved(body: IntegrationIn, ctx: Ctx, caller: Operator) -> TestResult:
    return _result(await integrations.test_settings(ctx, caller, body.to_settings()))


@router.get("/{integration_id}", response_model=IntegrationOut)
async def read(integration_id: int, ctx: Ctx, caller: Reader) -> IntegrationOut:
    found = await integrations.get_integration(ctx, caller, integration_id)
    return IntegrationOut.of(found, masked=caller.role in MASKED_ROLES)


@router.put("/{integration_id}", response_model=IntegrationOut)
async def put(
    integration_id: int, body: IntegrationIn, ctx: Ctx, caller: Manager
) -> IntegrationOut:
    saved = await integrations.update_integration(ctx, caller, integration_id, body.to_settings())
    return IntegrationOut.of(saved)


@router.patch("/{integration_id}", response_model=IntegrationOut)
async def patch(
    integration_id: int,
    ctx: Ctx,
    caller: Manager,
    changes: Annotated[dict[str, Any], Body(examples=[{"enabled": False}])],
) -> IntegrationOut:
    current = await integrations.get_integration(ctx, caller, integration_id)
    merged = settings_dict(current.settings) | changes
    try:
        body = IntegrationIn.model_validate(merged)
    except ValidationError as exc:
        raise invalid(exc.errors()) from exc
    saved = await integrations.update_integration(ctx, caller, integration_id, body.to_settings())
    return IntegrationOut.of(saved)


@router.delete("/{integration_id}", status_code=204)
async def delete(integration_id: int, ctx: Ctx, caller: Manager) -> Response:
    await integrations.delete_integration(ctx, caller, integration_id)
    return Response(status_code=204)


@router.post("/{integration_id}/enable", response_model=IntegrationOut)
async def enable(integration_id: int, ctx: Ctx, caller: Manager) -> IntegrationOut:
    switched = await integrations.set_enabled(ctx, caller, integration_id, enabled=True)
    return IntegrationOut.of(switched)


@router.post("/{integration_id}/disable", response_model=IntegrationOut)
async def disable(integration_id: int, ctx: Ctx, caller: Manager) -> IntegrationOut:
    switched = await integrations.set_enabled(ctx, caller, integration_id, enabled=False)
    return IntegrationOut.of(switched)


@router.post("/{integration_id}/rotate-secret", response_model=IntegrationOut)
async def rotate_secret(integration_id: int, ctx: Ctx, caller: Manager) -> IntegrationOut:
    """A new signing secret; for 24 h requests carry signatures under both the new and old one."""
    return IntegrationOut.of(await integrations.rotate_secret(ctx, caller, integration_id))


@router.post("/{integration_id}/test", response_model=TestResult)
async def test_saved(integration_id: int, ctx: Ctx, caller: Operator) -> TestResult:
    return _result(await integrations.test_integration(ctx, caller, integration_id))


def _result(outcome: AttemptOutcome) -> TestResult:
    return TestResult(
        ok=outcome.ok,
        status_code=outcome.status_code,
        error=outcome.error,
        response_body=outcome.response_body,
        duration_ms=outcome.duration_ms,
    )
