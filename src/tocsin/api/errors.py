"""Every error the API returns is `{"error": {"code", "message", "field"}}`; never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tocsin.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    StoreError,
    TargetRefused,
    TocsinError,
    Unauthorized,
)
from tocsin.events import InvalidEvent

log = logging.getLogger("tocsin.api")


class ApiError(TocsinError):
    """An error with its HTTP status, machine code and the field it concerns."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers)


def field_of(loc: Sequence[object]) -> str | None:
    """`("body", "events", 1)` -> `events[1]`; the whole body is `body`."""
    parts = [str(part) for part in loc]
    source = parts.pop(0) if parts and parts[0] in ("body", "query", "path", "header") else None
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or source


def described(error: Mapping[str, Any]) -> tuple[str | None, str]:
    """A pydantic error's field and message, in the words every 422 of tocsin uses."""
    field = field_of(tuple(error.get("loc", ())))
    if error.get("type") == "extra_forbidden":
        return field, "unknown field"
    return field, str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def invalid(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """422 naming the first error's field (a body validated past FastAPI, as PATCH does)."""
    field, message = described(errors[0])
    return ApiError(422, "invalid", f"{field}: {message}" if field else message, field)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    kind = first.get("type")
    if kind == "json_invalid":
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        reason = str(first.get("ctx", {}).get("error", "syntax error"))
        message = f"the body is not valid JSON: {reason}{where}"
        return error_response(400, "bad_json", message, "body")
    if kind == "missing" and loc == ("body",):
        return error_response(400, "bad_json", "the body is empty; send a JSON object", "body")
    return await _api(_, invalid([first]))


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # noqa: S101
    codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
    headers = dict(exc.headers or {})
    return error_response(
        exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail), None, headers
    )


async def _api(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)  # noqa: S101
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


# Refusals whose message is the whole answer, by the status they become.
_PLAIN: tuple[tuple[type[TocsinError], int, str], ...] = (
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
)


async def _domain(_: Request, exc: Exception) -> JSONResponse:
    for kind, status, code in _PLAIN:
        if isinstance(exc, kind):
            return error_response(status, code, str(exc))
    if isinstance(exc, TargetRefused):
        return error_response(422, "target_refused", str(exc), "url")
    if isinstance(exc, (Invalid, InvalidEvent)):
        return error_response(422, "invalid", f"{exc.field}: {exc}", exc.field)
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
        return error_response(429, "rate_limited", str(exc), headers=headers)
    if isinstance(exc, StoreError):
        log.error("database error: %s", exc)
        return error_response(503, "unavailable", "the database is unavailable; retry later")
    return await _unexpected(_, exc)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    return error_response(500, "internal", "internal error; see the server log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(TocsinError, _domain)
    app.add_exception_handler(Exception, _unexpected)
