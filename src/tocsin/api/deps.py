"""Request dependencies: the running service and the authenticated caller."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tocsin.api.errors import ApiError
from tocsin.errors import NotFound
from tocsin.models import Principal
from tocsin.service import Tocsin

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer <token>`")


async def service(request: Request) -> Tocsin:  # async: no thread hop per request
    runtime: Tocsin = request.app.state.tocsin
    return runtime


Service = Annotated[Tocsin, Depends(service)]


async def principal(
    runtime: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    digests = runtime.vault.token_digests(credentials.credentials)
    found = await runtime.store.principal(digests, runtime.clock.now())
    if found is None:
        raise ApiError(401, "unauthorized", "the token is unknown, expired or revoked")
    return found


Caller = Annotated[Principal, Depends(principal)]

_MAX_ID = 2**63 - 1  # ids are 64-bit database integers


async def known_ids(request: Request, _: Caller) -> None:
    """An `{..._id}` in the path that is no 64-bit integer names nothing: 404, not 422 or 500."""
    for name, value in request.path_params.items():
        if not name.endswith("_id"):
            continue
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or abs(number) > _MAX_ID:
            raise NotFound(f"{name.removesuffix('_id')} {value} not found")


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON (orjson), within the deployment's size limit."""
    runtime: Tocsin = request.app.state.tocsin
    limit = runtime.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body exceeds {limit} bytes", "body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body exceeds {limit} bytes", "body")
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}", "body") from exc
