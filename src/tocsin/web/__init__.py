"""The web console (SPEC 6.4): server-rendered pages with htmx, served by `tocsin serve`.

Pages call the same operations as the API; see docs/console.md for the decisions.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from tocsin.app import Context
from tocsin.web import auth, integrations, users
from tocsin.web.base import STATIC
from tocsin.web.security import Sessions, protect


class _Static(StaticFiles):
    """The console's own stylesheet and scripts, with the console's headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        protect(response, Request(scope))
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


def install(app: FastAPI, ctx: Context) -> None:
    """Serve the console at `/` of the app; its pages call the operations of `ctx`."""
    app.state.console_sessions = Sessions(ctx.vault, secure=ctx.settings.console_secure_cookies)
    app.include_router(auth.router)
    app.include_router(integrations.router)
    app.include_router(users.router)
    app.mount("/static", _Static(directory=STATIC), name="static")
