"""The FastAPI application: `/api/v1` plus health endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse

from tocsin import __version__
from tocsin.api import deliveries, errors, ingest, integrations
from tocsin.api.deps import Service, known_ids
from tocsin.errors import StoreError
from tocsin.service import Tocsin


def create_app(runtime: Tocsin, *, manage_lifecycle: bool = False) -> FastAPI:
    """The ASGI app for a service; with `manage_lifecycle` the app starts and stops it."""

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
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.tocsin = runtime
    errors.install(app)
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(known_ids)])
    api.include_router(integrations.router)
    api.include_router(ingest.router)
    api.include_router(deliveries.router)
    app.include_router(api)
    app.include_router(health)
    return app


health = APIRouter(tags=["health"])


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(runtime: Service) -> JSONResponse:
    """The database answers and the delivery workers run."""
    problems = []
    try:
        await runtime.store.ping()
    except StoreError as exc:
        problems.append(f"database: {exc}")
    if runtime.settings.deliver and not runtime.dispatcher.running:
        problems.append("delivery workers are not running")
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})
