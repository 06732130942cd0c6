"""Request dependencies: the operations context, the authenticated caller and the JSON body."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect

from tocsin import formats
from tocsin.api.errors import ApiError
from tocsin.app import Context, accounts
from tocsin.errors import NotFound
from tocsin.models import Principal
from tocsin.roles import Permission, require

bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer <token>`")


async def context(request: Request) -> Context:  # async: no thread hop per request
    ctx: Context = request.app.state.context
    return ctx


Ctx = Annotated[Context, Depends(context)]


async def principal(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    return await accounts.authenticate(
        ctx, None if credentials is None else credentials.credentials
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, as HTTPBearer reads it."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


Caller = Annotated[Principal, Depends(principal)]


def _requiring(*permissions: Permission) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency admitting callers whose role holds any of the permissions (SPEC 6.3).

    The operation checks the same again (it is what the console and triggers call); the
    route checks first so that a refused caller hears 403 before its body is validated.
    """

    async def check(caller: Caller) -> Principal:
        return require(caller, *permissions)

    return check


Reader = Annotated[Principal, Depends(_requiring(Permission.READ))]
Operator = Annotated[Principal, Depends(_requiring(Permission.OPERATE))]
Manager = Annotated[Principal, Depends(_requiring(Permission.MANAGE))]
Ingester = Annotated[Principal, Depends(_requiring(Permission.INGEST))]
# A sensor reports a denylisted IP; an administrator adds one by hand.
Denylister = Annotated[Principal, Depends(_requiring(Permission.INGEST, Permission.MANAGE))]


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
    limit: int = request.app.state.context.settings.max_body_bytes
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
    """The request body, declared as JSON, parsed (orjson) within the deployment's limit."""
    require_json(request)
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


def require_json(request: Request) -> None:
    """The one rule of every route taking a JSON body: it is declared as JSON, or 415."""
    content_type = request.headers.get("content-type")
    if not declared_json(content_type):
        given = f"not {content_type}" if content_type else "none was given"
        message = f"send the body as JSON with Content-Type: application/json ({given})"
        raise ApiError(415, "unsupported_media_type", message, "Content-Type")


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
    require_json(request)
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
