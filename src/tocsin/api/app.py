"""The FastAPI application: `/api/v1` plus health endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response

from tocsin import __version__, web
from tocsin.api import (
    applications,
    clients,
    deliveries,
    denylist,
    docs,
    errors,
    ingest,
    integrations,
    triggers,
    users,
)
from tocsin.api.deps import Ctx, known_ids
from tocsin.api.schemas import ErrorOut
from tocsin.app import health as checks
from tocsin.metrics import CONTENT_TYPE
from tocsin.service import Tocsin


def create_app(runtime: Tocsin, *, manage_lifecycle: bool = False) -> FastAPI:
    """The ASGI app for a service; with `manage_lifecycle` the app starts and stops it.

    Routes reach the service's operations context (`app.state.context`), never the
    service itself.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await runtime.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await runtime.stop()

    app = FastAPI(
        title="tocsin",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served from the package by docs.install, not from a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.context = runtime.context
    errors.install(app)
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(known_ids)], responses=ERRORS)
    api.include_router(integrations.router)
    api.include_router(ingest.router)
    api.include_router(ingest.typed)
    api.include_router(deliveries.router)
    api.include_router(users.users)
    api.include_router(users.tokens)
    api.include_router(applications.router)
    api.include_router(denylist.router)
    api.include_router(triggers.router)
    operators = APIRouter(prefix="/api/v1", responses=ERRORS)
    operators.include_router(clients.router)
    app.include_router(api)
    app.include_router(operators)
    app.include_router(health)
    docs.install(app, "/api/v1/openapi.json")
    web.install(app, runtime.context)
    app.router.routes[:0] = ingest.DIRECT_ROUTES  # sensors' hot path, ahead of FastAPI's
    return app


_ERROR_MEANINGS = {
    400: "The body is not JSON, or incomplete.",
    401: "No token, or an unknown, expired or revoked one.",
    403: "The token's role may not make this call.",
    404: "No such object in the token's client.",
    409: "The change conflicts with what is stored.",
    413: "The body exceeds the deployment's limit.",
    415: "The body is not declared as JSON.",
    422: "A field is invalid; `field` names it.",
    429: "The token exceeded its ingestion rate; see Retry-After.",
    503: "The database is unavailable.",
}
# Every API error is `{"error": {"code", "message", "field"}}`.
ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorOut, "description": meaning}
    for status, meaning in _ERROR_MEANINGS.items()
}

health = APIRouter(tags=["health"])


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@health.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics: this process's counters, the deployment's queue and integrations."""
    return Response(await checks.metrics(ctx), media_type=CONTENT_TYPE)


@health.get(
    "/readyz",
    responses={503: {"description": "The database does not answer or delivery is not running."}},
)
async def readyz(ctx: Ctx) -> JSONResponse:
    """The database answers and the delivery workers run."""
    problems = await checks.problems(ctx)
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})
