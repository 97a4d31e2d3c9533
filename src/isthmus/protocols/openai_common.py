"""Wire pieces shared by OpenAI Chat Completions and Responses: the error shape and model lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from isthmus.errors import ErrorKind, IsthmusError, UpstreamStreamError
from isthmus.protocols.base import ModelInfo, as_mapping, error_kind

# ErrorKind -> (error.type, default error.code).
ERROR_TYPES: dict[ErrorKind, tuple[str, str | None]] = {
    ErrorKind.INVALID_REQUEST: ("invalid_request_error", None),
    ErrorKind.AUTHENTICATION: ("authentication_error", "invalid_api_key"),
    ErrorKind.PERMISSION: ("permission_error", None),
    ErrorKind.NOT_FOUND: ("not_found_error", None),
    ErrorKind.TOO_LARGE: ("invalid_request_error", "request_too_large"),
    ErrorKind.RATE_LIMITED: ("rate_limit_error", "rate_limit_exceeded"),
    ErrorKind.OVERLOADED: ("server_error", "overloaded"),
    ErrorKind.UPSTREAM: ("server_error", None),
    ErrorKind.UNAVAILABLE: ("server_error", "service_unavailable"),
    ErrorKind.TIMEOUT: ("server_error", "timeout"),
    ErrorKind.INTERNAL: ("server_error", None),
}

# What an upstream error's type or code says its HTTP status was (errors inside 200 streams carry
# no status of their own). Keys are matched against both ``type`` and ``code``.
UPSTREAM_STATUS_BY_NAME: dict[str, int] = {
    "invalid_request_error": 400,
    "invalid_prompt": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "insufficient_quota": 429,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "requests": 429,
    "tokens": 429,
    "server_error": 500,
    "internal_error": 500,
    "overloaded": 529,
    "server_is_overloaded": 529,
    "service_unavailable": 503,
    "slow_down": 503,
    "timeout": 504,
}


def error_object(err: IsthmusError) -> dict[str, Any]:
    error_type, default_code = ERROR_TYPES[error_kind(err)]
    return {"message": err.message, "type": error_type, "param": err.param, "code": err.code or default_code}


def error_body(err: IsthmusError) -> bytes:
    """``{"error":{"message","type","param","code"}}``."""
    return orjson.dumps({"error": error_object(err)})


def upstream_error_from_object(error: Mapping[str, Any], raw: bytes) -> UpstreamStreamError:
    """An OpenAI-shaped error object (``{"message","type","code",...}``) seen inside a 200 stream."""
    message = error.get("message")
    error_type = error.get("type")
    code = error.get("code")
    status: int | None = None
    if isinstance(code, int) and 400 <= code <= 599:  # some compatible vendors put the status here
        status = code
    else:
        for name in (code, error_type):
            if isinstance(name, str) and name in UPSTREAM_STATUS_BY_NAME:
                status = UPSTREAM_STATUS_BY_NAME[name]
                break
    code_text = code if isinstance(code, str) else (error_type if isinstance(error_type, str) else None)
    return UpstreamStreamError(
        message if isinstance(message, str) and message else "upstream stream reported an error",
        upstream_status=status,
        body=raw,
        code=code_text,
    )


def upstream_error_from_body(body: Mapping[str, Any], raw: bytes) -> UpstreamStreamError:
    return upstream_error_from_object(as_mapping(body.get("error")), raw)


def encode_model_list(models: Sequence[ModelInfo]) -> bytes:
    """``GET /v1/models``: ``{"object":"list","data":[{"id","object","created","owned_by"}]}``."""
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by} for m in models
            ],
        }
    )
