"""Ingestion: sensors report hits and vulnerabilities; 202 once they are durably stored."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from tocsin import events, ids
from tocsin.api.deps import Caller, Service, json_body
from tocsin.api.schemas import Accepted

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
async def report_hits(body: Body, runtime: Service, caller: Caller) -> Accepted:
    client = caller.client
    new = events.hit_events(
        body,
        runtime.notify_settings(client),
        now=runtime.clock.now(),
        new_id=ids.hit_ids(client.id),
    )
    return Accepted(accepted=await runtime.ingest(client, new))


@router.post(
    "/vulnerabilities", status_code=202, response_model=Accepted, openapi_extra=_VULNS_SCHEMA
)
async def report_vulnerabilities(body: Body, runtime: Service, caller: Caller) -> Accepted:
    client = caller.client
    new = events.vuln_events(
        body, runtime.notify_settings(client), new_id=lambda: secrets.randbelow(2**53)
    )
    return Accepted(accepted=await runtime.ingest(client, new))
