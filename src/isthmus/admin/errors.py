"""One error shape for every admin API failure: ``{"error": {"message", "type", "field"?}}``.

FastAPI's own answers (422 validation details, ``{"detail": …}`` for 404/405) are replaced here, so a
client handles exactly one shape whatever went wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from isthmus.config.loader import format_path
from isthmus.errors import IsthmusError

log = logging.getLogger("isthmus.admin")

_TYPE_BY_STATUS = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    502: "upstream",
    503: "unavailable",
    504: "timeout",
}


def error_type(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "internal" if status >= 500 else "invalid_request"


def error_response(
    status: int,
    message: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "type": error_type(status)}
    if field:
        body["field"] = field
    if extra:
        body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=dict(headers or {}))


def validation_field(loc: Sequence[int | str]) -> str:
    """``("body", "routes", 0, "provider")`` → ``routes[0].provider``; query and path keep their prefix."""
    parts = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return format_path(parts)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    problems: list[dict[str, str]] = []
    for err in exc.errors():
        field = validation_field(tuple(err.get("loc", ())))
        message = str(err.get("msg", "invalid value"))
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        elif err.get("type") == "missing":
            message = "this field is required"
        problems.append({"field": field, "message": message})
    if not problems:
        return error_response(422, "the request is invalid")
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return error_response(422, summary, field=problems[0]["field"], extra={"errors": problems})


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _validation_response(exc)


async def _on_isthmus_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IsthmusError)
    if exc.status >= 500:
        log.warning("admin request failed: %s", exc.message)
    return error_response(exc.status, exc.message, field=exc.param, headers=exc.headers)


async def _on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such admin API endpoint"
    elif exc.status_code == 405:
        detail = "this method is not allowed on this endpoint"
    return error_response(exc.status_code, detail, headers=exc.headers)


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in the admin API", exc_info=exc)
    return error_response(500, "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(IsthmusError, _on_isthmus_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
