"""Request dependencies: the running service, the authenticated caller and the JSON body."""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect

from tocsin import formats, roles
from tocsin.api.errors import ApiError
from tocsin.errors import NotFound
from tocsin.models import Principal
from tocsin.roles import Permission
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
    return await authenticate(runtime, None if credentials is None else credentials.credentials)


async def authenticate(runtime: Tocsin, token: str | None) -> Principal:
    """The holder of a bearer token (remembered briefly: PrincipalCache), or 401."""
    if not token:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    digests = runtime.vault.token_digests(token)
    now = runtime.clock.now()
    cache = runtime.principals
    found = cache.get(digests[0], now)
    if found is None:
        found = await runtime.store.principal(digests, now)
        if found is None:
            raise ApiError(401, "unauthorized", "the token is unknown, expired or revoked")
        cache.put(digests[0], found, now)
    return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, as HTTPBearer reads it."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def require(caller: Principal, *permissions: Permission) -> Principal:
    """The caller, if its role holds any of the permissions (SPEC 6.3); else 403."""
    if why := roles.refusal(caller.role, *permissions):
        raise ApiError(403, "forbidden", why)
    return caller


Caller = Annotated[Principal, Depends(principal)]


def _requiring(*permissions: Permission) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency admitting callers whose role holds any of the permissions (SPEC 6.3)."""

    async def check(caller: Caller) -> Principal:
        return require(caller, *permissions)

    return check


Reader = Annotated[Principal, Depends(_requiring(Permission.READ))]
Operator = Annotated[Principal, Depends(_requiring(Permission.OPERATE))]
Manager = Annotated[Principal, Depends(_requiring(Permission.MANAGE))]
Ingester = Annotated[Principal, Depends(_requiring(Permission.INGEST))]
# A sensor reports a denylisted IP; an administrator adds one by hand.
Denylister = Annotated[Principal, Depends(_requiring(Permission.INGEST, Permission.MANAGE))]


def actor(caller: Principal) -> str:
    """How system notifications name the caller: `Name <email>`."""
    return f"{caller.name} <{caller.email}>" if caller.name else caller.email


def admit_events(runtime: Tocsin, caller: Principal, count: int) -> None:
    """Count ingested events against the caller's token: 429 with Retry-After past its rate."""
    wait = runtime.ingest_limiter.take(caller.token_id, count, runtime.clock.now())
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        limit = runtime.settings.ingest_rate
        raise ApiError(
            429,
            "rate_limited",
            f"this token may report {limit:g} events per second; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


async def operator(
    runtime: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The deployment-wide operator token (TOCSIN_OPERATOR_TOKEN) manages clients."""
    if credentials is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <operator token>")
    configured = runtime.settings.operator_token
    if not configured:
        message = "clients are managed with the operator token; none is set (TOCSIN_OPERATOR_TOKEN)"
        raise ApiError(403, "forbidden", message)
    if not hmac.compare_digest(credentials.credentials.encode(), configured.encode()):
        raise ApiError(403, "forbidden", "clients are managed with the deployment's operator token")


_MAX_ID = 2**63 - 1  # ids are 64-bit database integers


async def known_ids(request: Request, _: Caller) -> None:
    """An `{..._id}` in the path that is no 64-bit integer names nothing: 404, not 422 or 500."""
    check_ids(request)


def check_ids(request: Request) -> None:
    """Refuse, with 404, path ids that cannot name a stored object."""
    for name, value in request.path_params.items():
        if not name.endswith("_id"):
            continue
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or abs(number) > _MAX_ID:
            raise NotFound(f"{name.removesuffix('_id')} {value} not found")


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past the deployment's limit, declared or streamed."""
    limit: int = request.app.state.tocsin.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body exceeds {limit} bytes", "body")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"the body exceeds {limit} bytes", "body")
    except ClientDisconnect as exc:
        # Nobody reads the answer, but the log should not call it an internal error.
        message = "the client left before sending the whole body"
        raise ApiError(400, "incomplete", message, "body") from exc
    return b"".join(chunks)


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON (orjson), within the deployment's size limit."""
    try:
        return orjson.loads(await read_body(request))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}", "body") from exc


class JsonRequest(Request):
    """A request whose body is bounded by the deployment's limit and parsed by orjson.

    orjson refuses what the standard library would pass on to validation or fail on
    without saying why (invalid UTF-8, lone surrogates, NaN, nesting past 1024 levels);
    its JSONDecodeError is a json.JSONDecodeError, which FastAPI reports as invalid JSON,
    so each of these is a 400 naming `body`.
    """

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            self._body = await read_body(self)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


def declared_json(content_type: str | None) -> bool:
    """`application/json` or `application/<anything>+json`: what FastAPI parses as JSON."""
    if content_type is None:
        return False
    media = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


# Settings nest two levels (an object of headers or a list of events); validating a value
# nested far deeper recurses in pydantic and enum reprs until Python gives up.
MAX_SETTINGS_DEPTH = 32


async def check_typed_body(request: JsonRequest) -> None:
    """A typed body is declared as JSON and nests at most MAX_SETTINGS_DEPTH levels."""
    body = await request.body()
    if not body:
        return
    content_type = request.headers.get("content-type")
    if not declared_json(content_type):
        given = f"not {content_type}" if content_type else "none was given"
        message = f"send the body as JSON with Content-Type: application/json ({given})"
        raise ApiError(415, "unsupported_media_type", message, "Content-Type")
    if body.count(b"[") + body.count(b"{") <= MAX_SETTINGS_DEPTH:
        return  # nesting never exceeds the count of brackets
    try:
        document = await request.json()
    except orjson.JSONDecodeError:
        return  # FastAPI reports where the JSON breaks
    field = _too_deep(document)
    if field is not None:
        message = f"{field}: nests deeper than {MAX_SETTINGS_DEPTH} levels of arrays and objects"
        raise ApiError(422, "invalid", message, field)


def _too_deep(document: Any) -> str | None:
    """The member of the document nested too deeply, `body` if not an object member."""
    if isinstance(document, dict):
        for key, value in document.items():
            if formats.nests_deeper_than(value, MAX_SETTINGS_DEPTH - 1):
                return str(key)
        return None
    return "body" if formats.nests_deeper_than(document, MAX_SETTINGS_DEPTH) else None


class JsonRoute(APIRoute):
    """A route taking a typed JSON body: bounded, parsed by orjson, declared as JSON, shallow.

    FastAPI hands a body of another declared type to validation as bytes, which reads as
    "Input should be a valid dictionary"; a 415 says what is wrong. Declaring JSON also
    keeps the management API out of reach of cross-site forms, which can send text/plain.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        typed = self.body_field is not None

        async def handle(request: Request) -> Response:
            bounded = JsonRequest(request.scope, request.receive)
            if typed:
                await check_typed_body(bounded)
            return await handler(bounded)

        return handle
