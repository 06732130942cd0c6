"""What every console page shares: who is signed in, reading forms, rendering, refusing.

Console routes use `ConsoleRoute`: whatever a page raises becomes an HTML answer (a
redirect to sign in, a 403 page for a refused CSRF token or role, a 404 page), never
the API's JSON, and every answer carries the security headers of `security.protect`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from tocsin import __version__, roles
from tocsin.api.deps import check_ids, read_body
from tocsin.app import Context, accounts
from tocsin.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    StoreError,
    TargetRefused,
    TocsinError,
    Unauthorized,
)
from tocsin.models import Principal
from tocsin.roles import Permission
from tocsin.web import security
from tocsin.web.security import Session, Sessions

log = logging.getLogger("tocsin.web")
STATIC = Path(__file__).parent / "static"
MAX_FORM_FIELDS = 1000

templates = Environment(
    loader=PackageLoader("tocsin.web", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals["version"] = __version__


def _isotime(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def _shorttime(seconds: float) -> str:
    """Times read in UTC, as the API and the notifications give them."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.filters["isotime"] = _isotime
templates.filters["shorttime"] = _shorttime


class NotSignedInError(TocsinError):
    """No session, an expired one, or its token no longer signs anybody in."""


class RefusedError(TocsinError):
    """A request the console will not act on: the message says why, in words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Visitor:
    """The person signed in: who they are through their token, and their session."""

    principal: Principal
    session: Session

    def can(self, permission: Permission) -> bool:
        return roles.allows(self.principal.role, permission)

    @property
    def masked(self) -> bool:
        return self.principal.role in roles.MASKED_ROLES

    def require(self, permission: Permission) -> None:
        """Refuse, with a page saying why, what the visitor's role may not do."""
        if why := roles.refusal(self.principal.role, permission):
            raise RefusedError(403, f"Not allowed: {why}.")


def masked_url(url: str) -> str:
    """The URL as read_only sees it: scheme and host; the path and query may be the
    credential (Slack- and Teams-style hooks), so they are masked."""
    parts = urlsplit(url)
    hidden = parts.path not in ("", "/") or parts.query
    return f"{parts.scheme}://{parts.netloc}{'/' + roles.MASK if hidden else parts.path}"


def context_of(request: Request) -> Context:
    """The operations context: what every page calls (tocsin.app), never the store."""
    ctx: Context = request.app.state.context
    return ctx


def sessions_of(request: Request) -> Sessions:
    found: Sessions = request.app.state.console_sessions
    return found


async def signed_in(request: Request) -> Visitor:
    """The visitor of a page that needs a session with a role that may read."""
    ctx = context_of(request)
    sessions = sessions_of(request)
    cookie = request.cookies.get(sessions.session_cookie(request))
    session = sessions.open_session(cookie, ctx.clock.now())
    if session is None:
        raise NotSignedInError("sign in to continue")
    try:
        principal = await accounts.authenticate(ctx, session.token)
    except Unauthorized as exc:
        raise NotSignedInError("your token is no longer valid; sign in again") from exc
    if not roles.allows(principal.role, Permission.READ):
        raise NotSignedInError(f"the {principal.role.value} role cannot use the console")
    check_ids(request)
    return Visitor(principal=principal, session=session)


Signed = Annotated[Visitor, Depends(signed_in)]


class Form:
    """A submitted urlencoded form: every value of every field, in order."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._pairs = list(pairs)

    def get(self, name: str, default: str = "") -> str:
        for key, value in self._pairs:
            if key == name:
                return value
        return default

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self._pairs)


async def read_form(request: Request) -> Form:
    """The request's urlencoded form, within the deployment's body limit."""
    body = await read_body(request)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RefusedError(
            400, "the form could not be read; reload the page and try again"
        ) from exc
    return Form(pairs)


async def posted(request: Request, visitor: Visitor) -> Form:
    """A state-changing form: it must come from a console page of this session."""
    form = await read_form(request)
    given = form.get(security.CSRF_FIELD) or request.headers.get(security.CSRF_HEADER)
    if not security.same_origin(request) or not security.same_token(visitor.session.csrf, given):
        raise RefusedError(
            403,
            "This request was refused: it did not carry this session's form token "
            "(a page from another site, or an old tab). Reload the page and try again.",
        )
    return form


def page(
    request: Request,
    template: str,
    *,
    visitor: Visitor | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a template (with the visitor, its CSRF token and permissions) as HTML."""
    html = templates.get_template(template).render(
        request=request,
        visitor=visitor,
        csrf=visitor.session.csrf if visitor else context.pop("csrf", ""),
        Permission=Permission,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=headers)


def redirect(request: Request, to: str) -> Response:
    """See `to` next: a 303 for a form, an HX-Redirect for an htmx request."""
    if request.headers.get("hx-request") == "true":
        return Response(status_code=204, headers={"HX-Redirect": to})
    return RedirectResponse(to, status_code=303)


_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    422: "Not accepted",
    500: "Error",
    503: "Unavailable",
}


def _status_and_message(exc: Exception) -> tuple[int, str]:
    """What to tell a person about a failure, with its HTTP status."""
    known: list[tuple[type[Exception], int]] = [
        (Forbidden, 403),  # a role forcing what the page did not offer
        (NotFound, 404),
        (Conflict, 409),
        (Invalid, 422),
        (TargetRefused, 422),
        (RequestValidationError, 404),  # a path or query value that names nothing
    ]
    if isinstance(exc, RefusedError):
        return exc.status, str(exc)
    for kind, status in known:
        if isinstance(exc, kind):
            plain = isinstance(exc, RequestValidationError)  # its text is pydantic's
            return status, "no such page" if plain or not str(exc) else str(exc)
    if isinstance(exc, StoreError):
        log.error("database error: %s", exc)
        return 503, "the database is unavailable; retry in a moment"
    log.error("unexpected error in the console", exc_info=exc)
    return 500, "internal error; see the server log"


def answer_error(request: Request, exc: Exception) -> Response:
    """The HTML answer to what a console page raised."""
    if isinstance(exc, NotSignedInError):
        return redirect(request, "/?reason=signed-out")
    status, message = _status_and_message(exc)
    return page(
        request,
        "error.html",
        status=status,
        title=_TITLES.get(status, "Error"),
        message=message,
    )


class ConsoleRoute(APIRoute):
    """A console page: errors become HTML pages, every answer gets the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:  # every failure becomes a page a person can read
                response = answer_error(request, exc)
            return security.protect(response, request)

        return handle
