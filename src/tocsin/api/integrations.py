"""/integrations: create, read, change, enable, disable, delete and test webhooks."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import ValidationError

from tocsin import formats, ids
from tocsin.api.deps import JsonRoute, Manager, Operator, Reader, Service, actor
from tocsin.api.errors import ApiError, field_of
from tocsin.api.schemas import IntegrationIn, IntegrationOut, TestResult, settings_dict
from tocsin.errors import NotFound
from tocsin.models import BodyFormat, Integration, Principal, WebhookSettings
from tocsin.roles import MASKED_ROLES
from tocsin.service import Tocsin

router = APIRouter(prefix="/integrations", tags=["integrations"], route_class=JsonRoute)


async def _get(runtime: Tocsin, caller: Principal, integration_id: int) -> Integration:
    found = await runtime.store.get_integration(caller.client.id, integration_id)
    if found is None:
        raise NotFound(f"integration {integration_id} not found")
    return found


@router.post("", status_code=201, response_model=IntegrationOut)
async def create(body: IntegrationIn, runtime: Service, caller: Manager) -> IntegrationOut:
    await runtime.check_target(body.url)
    integration = await runtime.store.create_integration(
        caller.client.id, body.to_settings(), ids.signing_secret(), runtime.clock.now()
    )
    await runtime.integration_event(
        caller.client, "integration_created", integration, actor(caller)
    )
    return IntegrationOut.of(integration)


@router.get("", response_model=list[IntegrationOut])
async def list_all(runtime: Service, caller: Reader) -> list[IntegrationOut]:
    masked = caller.role in MASKED_ROLES
    return [
        IntegrationOut.of(found, masked=masked)
        for found in await runtime.store.list_integrations(caller.client.id)
    ]


@router.post("/test", response_model=TestResult)
async def test_unsaved(body: IntegrationIn, runtime: Service, caller: Operator) -> TestResult:
    await runtime.check_target(body.url)
    return await _send_test(runtime, caller, body.to_settings(), [ids.signing_secret()])


@router.get("/{integration_id}", response_model=IntegrationOut)
async def read(integration_id: int, runtime: Service, caller: Reader) -> IntegrationOut:
    found = await _get(runtime, caller, integration_id)
    return IntegrationOut.of(found, masked=caller.role in MASKED_ROLES)


@router.put("/{integration_id}", response_model=IntegrationOut)
async def put(
    integration_id: int, body: IntegrationIn, runtime: Service, caller: Manager
) -> IntegrationOut:
    await _get(runtime, caller, integration_id)
    return await _save(runtime, caller, integration_id, body)


@router.patch("/{integration_id}", response_model=IntegrationOut)
async def patch(
    integration_id: int,
    runtime: Service,
    caller: Manager,
    changes: Annotated[dict[str, Any], Body(examples=[{"enabled": False}])],
) -> IntegrationOut:
    current = await _get(runtime, caller, integration_id)
    merged = settings_dict(current.settings) | changes
    try:
        body = IntegrationIn.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_of(first["loc"])
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ApiError(
            422, "invalid", f"{field}: {message.removeprefix('Value error, ')}", field
        ) from exc
    return await _save(runtime, caller, integration_id, body)


async def _save(
    runtime: Tocsin, caller: Principal, integration_id: int, body: IntegrationIn
) -> IntegrationOut:
    await runtime.check_target(body.url)
    before = await _get(runtime, caller, integration_id)
    saved = await runtime.store.update_integration(
        caller.client.id, integration_id, body.to_settings(), runtime.clock.now()
    )
    if saved is None:
        raise NotFound(f"integration {integration_id} not found")
    kind = "integration_changed"
    if before.settings.enabled != saved.settings.enabled:
        kind = "integration_enabled" if saved.settings.enabled else "integration_disabled"
    await runtime.integration_event(caller.client, kind, saved, actor(caller))
    return IntegrationOut.of(saved)


@router.delete("/{integration_id}", status_code=204)
async def delete(integration_id: int, runtime: Service, caller: Manager) -> Response:
    integration = await _get(runtime, caller, integration_id)
    if not await runtime.store.delete_integration(
        caller.client.id, integration_id, runtime.clock.now()
    ):
        raise NotFound(f"integration {integration_id} not found")
    await runtime.integration_event(
        caller.client, "integration_deleted", integration, actor(caller)
    )
    return Response(status_code=204)


@router.post("/{integration_id}/enable", response_model=IntegrationOut)
async def enable(integration_id: int, runtime: Service, caller: Manager) -> IntegrationOut:
    return await _switch(runtime, caller, integration_id, enabled=True)


@router.post("/{integration_id}/disable", response_model=IntegrationOut)
async def disable(integration_id: int, runtime: Service, caller: Manager) -> IntegrationOut:
    return await _switch(runtime, caller, integration_id, enabled=False)


async def _switch(
    runtime: Tocsin, caller: Principal, integration_id: int, *, enabled: bool
) -> IntegrationOut:
    before = await _get(runtime, caller, integration_id)
    reason = None if enabled else f"disabled by {actor(caller)}"
    after = await runtime.store.set_enabled(
        caller.client.id, integration_id, enabled=enabled, now=runtime.clock.now(), reason=reason
    )
    if after is None:
        raise NotFound(f"integration {integration_id} not found")
    if before.settings.enabled != enabled:
        kind = "integration_enabled" if enabled else "integration_disabled"
        await runtime.integration_event(caller.client, kind, after, actor(caller))
    return IntegrationOut.of(after)


@router.post("/{integration_id}/rotate-secret", response_model=IntegrationOut)
async def rotate_secret(integration_id: int, runtime: Service, caller: Manager) -> IntegrationOut:
    """A new signing secret; for 24 h requests carry signatures under both the new and old one."""
    await _get(runtime, caller, integration_id)
    rotated = await runtime.store.rotate_signing_secret(
        caller.client.id, integration_id, ids.signing_secret(), runtime.clock.now()
    )
    if rotated is None:
        raise NotFound(f"integration {integration_id} not found")
    await runtime.integration_event(caller.client, "integration_changed", rotated, actor(caller))
    return IntegrationOut.of(rotated)


@router.post("/{integration_id}/test", response_model=TestResult)
async def test_saved(integration_id: int, runtime: Service, caller: Operator) -> TestResult:
    integration = await _get(runtime, caller, integration_id)
    secrets = integration.signing_secrets(runtime.clock.now())
    return await _send_test(runtime, caller, integration.settings, secrets)


async def _send_test(
    runtime: Tocsin, caller: Principal, settings: WebhookSettings, signing_secrets: list[str]
) -> TestResult:
    """Send the test message once, now, whatever the integration's format: always a JSON array."""
    message = formats.encode(formats.test_message(runtime.notify_settings(caller.client)))
    body = formats.render_body([message], BodyFormat.JSON_ARRAY)
    outcome = await runtime.sender.send(
        replace(settings, format=BodyFormat.JSON_ARRAY),
        secrets=signing_secrets,
        webhook_id=f"msg_test_{secrets.token_urlsafe(12)}",
        body=body,
    )
    return TestResult(
        ok=outcome.ok,
        status_code=outcome.status_code,
        error=outcome.error,
        response_body=outcome.response_body,
        duration_ms=outcome.duration_ms,
    )
