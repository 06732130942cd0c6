"""Request dependencies: the running service and the authenticated caller."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tocsin import ids
from tocsin.api.errors import ApiError
from tocsin.models import Principal
from tocsin.service import Tocsin

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer <token>`")


def service(request: Request) -> Tocsin:
    runtime: Tocsin = request.app.state.tocsin
    return runtime


Service = Annotated[Tocsin, Depends(service)]


async def principal(
    runtime: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    found = await runtime.store.principal(
        ids.token_hash(credentials.credentials), runtime.clock.now()
    )
    if found is None:
        raise ApiError(401, "unauthorized", "the token is unknown, expired or revoked")
    return found


Caller = Annotated[Principal, Depends(principal)]


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON (orjson), within the deployment's size limit."""
    runtime: Tocsin = request.app.state.tocsin
    limit = runtime.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body exceeds {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the body exceeds {limit} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}", "body") from exc
