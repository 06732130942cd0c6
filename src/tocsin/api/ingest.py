"""Ingestion: sensors report hits, vulnerabilities, scope and API changes.

Each route answers 202 once the events (and their deliveries) are durably stored, and
counts the events against the token's ingestion rate (429 with Retry-After past it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.routing import Route

from tocsin.api.deps import Ctx, Ingester, JsonRoute, bearer_token, json_body
from tocsin.api.schemas import Accepted, ApiChangesIn, ScopeChangeIn
from tocsin.app import Context, accounts, ingestion
from tocsin.models import Principal
from tocsin.roles import Permission, require

router = APIRouter(tags=["ingestion"])

Body = Annotated[Any, Depends(json_body)]

_HITS_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {"type": "object", "additionalProperties": True},
                }
            }
        },
    }
}
_VULNS_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "additionalProperties": True},
                        {
                            "type": "array",
                            "items": {"type": "object", "additionalProperties": True},
                        },
                    ]
                }
            }
        },
    }
}


@router.post("/hits", status_code=202, response_model=Accepted, openapi_extra=_HITS_SCHEMA)
async def report_hits(body: Body, ctx: Ctx, caller: Ingester) -> Accepted:
    return Accepted(accepted=await ingestion.report_hits(ctx, caller, body))


@router.post(
    "/vulnerabilities", status_code=202, response_model=Accepted, openapi_extra=_VULNS_SCHEMA
)
async def report_vulnerabilities(body: Body, ctx: Ctx, caller: Ingester) -> Accepted:
    return Accepted(accepted=await ingestion.report_vulnerabilities(ctx, caller, body))


Accept = Callable[[Context, Principal, Any], Awaitable[int]]


def _direct(accept: Accept) -> Callable[[Request], Awaitable[Response]]:
    """A plain Starlette endpoint doing what the FastAPI route above does, in the same order
    (token, role, body): a sensor's POST skips FastAPI's dependency solving and response
    validation, two thirds of the cost of a single-hit request. The FastAPI routes stay
    for the OpenAPI document, which they describe exactly (tests/integration/test_openapi.py
    checks these endpoints against it)."""

    async def endpoint(request: Request) -> Response:
        ctx: Context = request.app.state.context
        token = bearer_token(request.headers.get("authorization"))
        caller = require(await accounts.authenticate(ctx, token), Permission.INGEST)
        accepted = await accept(ctx, caller, await json_body(request))
        body = orjson.dumps({"accepted": accepted})
        return Response(body, status_code=202, media_type="application/json")

    return endpoint


# Mounted ahead of the API router by create_app.
DIRECT_ROUTES = (
    Route("/api/v1/hits", _direct(ingestion.report_hits), methods=["POST"]),
    Route("/api/v1/vulnerabilities", _direct(ingestion.report_vulnerabilities), methods=["POST"]),
)


typed = APIRouter(tags=["ingestion"], route_class=JsonRoute)


@typed.post("/scope-changes", status_code=202, response_model=Accepted)
async def report_scope_change(body: ScopeChangeIn, ctx: Ctx, caller: Ingester) -> Accepted:
    """One `scope_changed` notification to integrations subscribed to `scope`."""
    return Accepted(accepted=await ingestion.report_scope_change(ctx, caller, body.model_dump()))


@typed.post("/api-changes", status_code=202, response_model=Accepted)
async def report_api_changes(body: ApiChangesIn, ctx: Ctx, caller: Ingester) -> Accepted:
    """Stored as one `api_change` event per item, for the api_changes and rogue_api triggers."""
    items = [change.model_dump() for change in body.changes]
    items += [rogue.model_dump() | {"rogue": True} for rogue in body.rogue_apis]
    return Accepted(accepted=await ingestion.report_api_changes(ctx, caller, items))
