"""Integrations: the Webhook card, the list, the add/edit form, tests and switches.

Every change goes through tocsin.app.integrations, which checks the role again; the
pages only leave out what the role may not do.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request, Response

from tocsin.app import integrations as ops
from tocsin.errors import Invalid, TargetRefused
from tocsin.models import AttemptOutcome, Integration
from tocsin.roles import MASK, Permission
from tocsin.web import forms
from tocsin.web.base import (
    ConsoleRoute,
    Signed,
    Visitor,
    context_of,
    masked_url,
    page,
    posted,
    redirect,
)

router = APIRouter(prefix="/integrations", route_class=ConsoleRoute, include_in_schema=False)
NOTICES = {
    "enabled": "The integration is enabled.",
    "disabled": "The integration is disabled; its queued notifications were cancelled.",
    "deleted": "The integration was deleted.",
    "saved": "Changes saved.",
}


@dataclass(frozen=True, slots=True)
class Shown:
    """An integration as a page shows it to the visitor (masked for read_only)."""

    id: int
    settings: object
    status: str
    reason: str | None
    last_error: str | None
    url: str
    events: list[str]
    signing_secret_shown: str

    @classmethod
    def of(cls, integration: Integration, visitor: Visitor) -> Shown:
        settings = integration.settings
        return cls(
            id=integration.id,
            settings=settings,
            status=integration.status.value,
            reason=integration.disabled_reason,
            last_error=integration.last_error,
            url=masked_url(settings.url) if visitor.masked else settings.url,
            events=[event.value for event in settings.events],
            signing_secret_shown=MASK if visitor.masked else "hidden (rotate to get a new one)",
        )


def _form_page(
    request: Request,
    visitor: Visitor,
    form: forms.IntegrationForm,
    *,
    integration: Integration | None = None,
    status: int = 200,
    secret: str | None = None,
) -> Response:
    advanced = any(
        name in form.errors
        for name in ("method", "headers", "ca_certificate", "request_timeout", "format")
    ) or any(name in form.errors for name in ("connection_timeout", "verify_tls"))
    return page(
        request,
        "integration_form.html",
        visitor=visitor,
        status=status,
        form=form,
        integration=None if integration is None else Shown.of(integration, visitor),
        advanced_open=advanced or bool(form.values["headers"] or form.values["ca_certificate"]),
        events=forms.EVENTS,
        risk_levels=forms.RISK_LEVELS,
        formats=forms.FORMATS,
        secret=secret,
    )


@router.get("")
async def list_page(request: Request, visitor: Signed) -> Response:
    found = await ops.list_integrations(context_of(request), visitor.principal)
    return page(
        request,
        "integrations.html",
        visitor=visitor,
        integrations=[Shown.of(item, visitor) for item in found],
        notice=NOTICES.get(request.query_params.get("done", "")),
    )


@router.get("/new")
async def new_page(request: Request, visitor: Signed) -> Response:
    visitor.require(Permission.MANAGE)
    return _form_page(request, visitor, forms.blank())


@router.post("/new")
async def create(request: Request, visitor: Signed) -> Response:
    typed = forms.read_integration(await posted(request, visitor))
    settings = forms.check(typed)
    if settings is None:
        return _form_page(request, visitor, typed, status=422)
    try:
        created = await ops.create_integration(context_of(request), visitor.principal, settings)
    except (TargetRefused, Invalid) as exc:
        typed.errors[_field(exc)] = str(exc)
        return _form_page(request, visitor, typed, status=422)
    return _form_page(
        request,
        visitor,
        forms.of_settings(created.settings),
        integration=created,
        status=201,
        secret=created.signing_secret,
    )


@router.get("/{integration_id:int}")
async def edit_page(request: Request, integration_id: int, visitor: Signed) -> Response:
    found = await ops.get_integration(context_of(request), visitor.principal, integration_id)
    if not visitor.can(Permission.MANAGE):
        return page(
            request,
            "integration_view.html",
            visitor=visitor,
            integration=Shown.of(found, visitor),
            form=forms.of_settings(found.settings, masked=visitor.masked),
            secret=None,
        )
    return _form_page(request, visitor, forms.of_settings(found.settings), integration=found)


@router.post("/{integration_id:int}")
async def save(request: Request, integration_id: int, visitor: Signed) -> Response:
    form = await posted(request, visitor)
    ctx = context_of(request)
    current = await ops.get_integration(ctx, visitor.principal, integration_id)
    typed = forms.read_integration(form)
    settings = forms.check(typed, enabled=current.settings.enabled)
    if settings is None:
        return _form_page(request, visitor, typed, integration=current, status=422)
    try:
        await ops.update_integration(ctx, visitor.principal, integration_id, settings)
    except (TargetRefused, Invalid) as exc:
        typed.errors[_field(exc)] = str(exc)
        return _form_page(request, visitor, typed, integration=current, status=422)
    return redirect(request, "/integrations?done=saved")


def _field(exc: Exception) -> str:
    return exc.field if isinstance(exc, Invalid) and exc.field in forms.FIELDS else "url"


@router.post("/test")
async def test_unsaved(request: Request, visitor: Signed) -> Response:
    typed = forms.read_integration(await posted(request, visitor))
    settings = forms.check(typed)
    if settings is None:
        return page(request, "_form_errors.html", visitor=visitor, errors=typed.errors)
    try:
        outcome = await ops.test_settings(context_of(request), visitor.principal, settings)
    except (TargetRefused, Invalid) as exc:
        return page(request, "_form_errors.html", visitor=visitor, errors={_field(exc): str(exc)})
    return _result(request, visitor, outcome)


@router.post("/{integration_id:int}/test")
async def test_saved(request: Request, integration_id: int, visitor: Signed) -> Response:
    await posted(request, visitor)
    outcome = await ops.test_integration(context_of(request), visitor.principal, integration_id)
    return _result(request, visitor, outcome)


def _result(request: Request, visitor: Visitor, outcome: AttemptOutcome) -> Response:
    return page(request, "_test_result.html", visitor=visitor, result=outcome)


@router.post("/{integration_id:int}/enable")
async def enable(request: Request, integration_id: int, visitor: Signed) -> Response:
    await posted(request, visitor)
    ctx = context_of(request)
    await ops.set_enabled(ctx, visitor.principal, integration_id, enabled=True)
    return redirect(request, "/integrations?done=enabled")


@router.post("/{integration_id:int}/disable")
async def disable(request: Request, integration_id: int, visitor: Signed) -> Response:
    await posted(request, visitor)
    ctx = context_of(request)
    await ops.set_enabled(ctx, visitor.principal, integration_id, enabled=False)
    return redirect(request, "/integrations?done=disabled")


@router.post("/{integration_id:int}/delete")
async def delete(request: Request, integration_id: int, visitor: Signed) -> Response:
    await posted(request, visitor)
    await ops.delete_integration(context_of(request), visitor.principal, integration_id)
    return redirect(request, "/integrations?done=deleted")


@router.post("/{integration_id:int}/rotate-secret")
async def rotate_secret(request: Request, integration_id: int, visitor: Signed) -> Response:
    await posted(request, visitor)
    rotated = await ops.rotate_secret(context_of(request), visitor.principal, integration_id)
    return _form_page(
        request,
        visitor,
        forms.of_settings(rotated.settings),
        integration=rotated,
        secret=rotated.signing_secret,
    )
