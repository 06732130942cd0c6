"""Ingestion: sensors report hits, vulnerabilities, scope and API changes.

Each route answers 202 once the events (and their deliveries) are durably stored, and
counts the events against the token's ingestion rate (429 with Retry-After past it).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.routing import Route

from tocsin import events, ids
from tocsin.api.deps import (
    Ingester,
    JsonRoute,
    Service,
    actor,
    admit_events,
    authenticate,
    bearer_token,
    json_body,
    require,
)
from tocsin.api.schemas import Accepted, ApiChangesIn, ScopeChangeIn
from tocsin.models import EventType, Principal
from tocsin.roles import Permission
from tocsin.service import Tocsin

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
async def report_hits(body: Body, runtime: Service, caller: Ingester) -> Accepted:
    return Accepted(accepted=await _accept_hits(runtime, caller, body))


@router.post(
    "/vulnerabilities", status_code=202, response_model=Accepted, openapi_extra=_VULNS_SCHEMA
)
async def report_vulnerabilities(body: Body, runtime: Service, caller: Ingester) -> Accepted:
    return Accepted(accepted=await _accept_vulnerabilities(runtime, caller, body))


async def _accept_hits(runtime: Tocsin, caller: Principal, body: Any) -> int:
    client = caller.client
    new = events.hit_events(
        body,
        runtime.notify_settings(client),
        now=runtime.clock.now(),
        new_id=ids.hit_ids(client.id),
    )
    admit_events(runtime, caller, len(new))
    return await runtime.ingest(client, new)


async def _accept_vulnerabilities(runtime: Tocsin, caller: Principal, body: Any) -> int:
    client = caller.client
    new = events.vuln_events(
        body, runtime.notify_settings(client), new_id=lambda: secrets.randbelow(2**53)
    )
    admit_events(runtime, caller, len(new))
    return await runtime.ingest(client, new)


Accept = Callable[[Tocsin, Principal, Any], Awaitable[int]]


def _direct(accept: Accept) -> Callable[[Request], Awaitable[Response]]:
    """A plain Starlette endpoint doing what the FastAPI route above does, in the same order
    (token, role, body): a sensor's POST skips FastAPI's dependency solving and response
    validation, two thirds of the cost of a single-hit request. The FastAPI routes stay
    for the OpenAPI document, which they describe exactly (tests/integration/test_openapi.py
    checks these endpoints against it)."""

    async def endpoint(request: Request) -> Response:
        runtime: Tocsin = request.app.state.tocsin
        token = bearer_token(request.headers.get("authorization"))
        caller = require(await authenticate(runtime, token), Permission.INGEST)
        accepted = await accept(runtime, caller, await json_body(request))
        body = orjson.dumps({"accepted": accepted})
        return Response(body, status_code=202, media_type="application/json")

    return endpoint


# Mounted ahead of the API router by create_app.
DIRECT_ROUTES = (
    Route("/api/v1/hits", _direct(_accept_hits), methods=["POST"]),
    Route("/api/v1/vulnerabilities", _direct(_accept_vulnerabilities), methods=["POST"]),
)


typed = APIRouter(tags=["ingestion"], route_class=JsonRoute)


@typed.post("/scope-changes", status_code=202, response_model=Accepted)
async def report_scope_change(body: ScopeChangeIn, runtime: Service, caller: Ingester) -> Accepted:
    """One `scope_changed` notification to integrations subscribed to `scope`."""
    admit_events(runtime, caller, 1)
    changes = body.model_dump()
    event = events.scope_event(
        changes,
        runtime.notify_settings(caller.client),
        actor=actor(caller),
        now=runtime.clock.now(),
    )
    return Accepted(accepted=await runtime.ingest(caller.client, [event]))


@typed.post("/api-changes", status_code=202, response_model=Accepted)
async def report_api_changes(body: ApiChangesIn, runtime: Service, caller: Ingester) -> Accepted:
    """Stored as one `api_change` event per item, for the api_changes and rogue_api triggers."""
    items = [change.model_dump() for change in body.changes]
    items += [rogue.model_dump() | {"rogue": True} for rogue in body.rogue_apis]
    admit_events(runtime, caller, len(items))
    new = [events.record_event(EventType.API_CHANGE, item) for item in items]
    return Accepted(accepted=await runtime.ingest(caller.client, new))
