"""Signing in with an API token, and out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tocsin import roles
from tocsin.app import accounts
from tocsin.errors import Unauthorized
from tocsin.roles import Permission
from tocsin.web import security
from tocsin.web.base import (
    ConsoleRoute,
    NotSignedInError,
    Signed,
    context_of,
    page,
    posted,
    read_form,
    redirect,
    sessions_of,
    signed_in,
)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
HOME = "/integrations"
_REASONS = {
    "signed-out": "Your session ended. Sign in again.",
    "bye": "You are signed out.",
}


@router.get("/")
async def sign_in_page(request: Request) -> Response:
    try:
        await signed_in(request)
    except NotSignedInError:
        notice = _REASONS.get(request.query_params.get("reason", ""))
        return _sign_in_form(request, notice=notice)
    return redirect(request, HOME)


def _sign_in_form(
    request: Request, *, error: str | None = None, notice: str | None = None, status: int = 200
) -> Response:
    sessions = sessions_of(request)
    cookie, csrf = sessions.seal_sign_in(context_of(request).clock.now())
    response = page(request, "sign_in.html", status=status, csrf=csrf, error=error, notice=notice)
    name = sessions.sign_in_cookie(request)
    sessions.set_cookie(response, request, name, cookie, security.SIGN_IN_SECONDS)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    ctx = context_of(request)
    sessions = sessions_of(request)
    now = ctx.clock.now()
    form = await read_form(request)
    expected = sessions.open_sign_in(request.cookies.get(sessions.sign_in_cookie(request)), now)
    if expected is None or not security.same_origin(request):
        return _sign_in_form(request, error="The sign-in form expired. Paste your token again.")
    if not security.same_token(expected, form.get(security.CSRF_FIELD)):
        return _sign_in_form(
            request, error="This form did not come from this console; try again.", status=403
        )
    token = form.get("token").strip()
    if not token:
        return _sign_in_form(request, error="Paste an API token.", status=422)
    try:
        principal = await accounts.authenticate(ctx, token)
    except Unauthorized:
        return _sign_in_form(
            request, error="This token is unknown, expired or revoked.", status=422
        )
    if why := roles.refusal(principal.role, Permission.READ):
        return _sign_in_form(request, error=f"The console needs a token that can read: {why}.")
    sealed, _ = sessions.seal_session(token, now)
    response = redirect(request, HOME)
    sessions.set_cookie(
        response, request, sessions.session_cookie(request), sealed, security.SESSION_SECONDS
    )
    sessions.clear_cookie(response, request, sessions.sign_in_cookie(request))
    return response


@router.post("/sign-out")
async def sign_out(request: Request, visitor: Signed) -> Response:
    await posted(request, visitor)
    sessions = sessions_of(request)
    response = redirect(request, "/?reason=bye")
    sessions.clear_cookie(response, request, sessions.session_cookie(request))
    return response
