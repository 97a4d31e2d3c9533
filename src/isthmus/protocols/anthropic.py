"""Anthropic Messages (``POST /v1/messages``): relay helpers for passthrough.

Wire facts relied on: streams are named events ``message_start`` (whole message, usage with the
input side and cache counts), ``content_block_start``/``content_block_delta``/``content_block_stop``,
``message_delta`` (stop reason; usage counts are cumulative and overwrite, optional ones omitted),
``message_stop``, ``ping`` and ``error`` (``{"type":"error","error":{"type","message"}}``).
``input_tokens`` excludes ``cache_read_input_tokens`` and ``cache_creation_input_tokens``; the
latter is split by TTL in ``cache_creation.ephemeral_5m_input_tokens``/``ephemeral_1h_input_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from isthmus.errors import ErrorKind, IsthmusError, UpstreamStreamError
from isthmus.ir.usage import Usage
from isthmus.protocols.base import (
    EventClass,
    ModelInfo,
    as_int,
    as_mapping,
    error_kind,
    first_marker,
    prefix_before,
)
from isthmus.protocols.sse import SSEEvent, encode_event

__all__ = [
    "AnthropicStreamInspector",
    "encode_model_list",
    "error_body",
    "stream_error_event",
    "usage_from_response",
    "usage_from_wire",
    "usage_to_wire",
]

ERROR_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.PERMISSION: "permission_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.TOO_LARGE: "request_too_large",
    ErrorKind.RATE_LIMITED: "rate_limit_error",
    ErrorKind.OVERLOADED: "overloaded_error",
    ErrorKind.UPSTREAM: "api_error",
    ErrorKind.UNAVAILABLE: "overloaded_error",
    ErrorKind.TIMEOUT: "timeout_error",
    ErrorKind.INTERNAL: "api_error",
}

# The HTTP status each error type comes with (needed for errors inside 200 streams).
STATUS_BY_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_object(err: IsthmusError) -> dict[str, str]:
    error_type = "billing_error" if err.status == 402 else ERROR_TYPES[error_kind(err)]
    return {"type": error_type, "message": err.message}


def error_body(err: IsthmusError) -> bytes:
    """``{"type":"error","error":{"type","message"}}``."""
    return orjson.dumps({"type": "error", "error": error_object(err)})


def stream_error_event(err: IsthmusError) -> bytes:
    return encode_event({"type": "error", "error": error_object(err)}, "error")


def upstream_error(data: Mapping[str, Any], raw: bytes) -> UpstreamStreamError:
    error = as_mapping(data.get("error"))
    error_type = error.get("type")
    message = error.get("message")
    return UpstreamStreamError(
        message if isinstance(message, str) and message else "upstream stream reported an error",
        upstream_status=STATUS_BY_TYPE.get(error_type) if isinstance(error_type, str) else None,
        body=raw,
        code=error_type if isinstance(error_type, str) else None,
    )


def _cache_writes(usage: Mapping[str, Any]) -> tuple[int, int]:
    """(5m, 1h) cache-write tokens; without the TTL breakdown every write is taken as 5m."""
    total = as_int(usage.get("cache_creation_input_tokens"))
    breakdown = usage.get("cache_creation")
    if not isinstance(breakdown, Mapping):
        return total, 0
    short = as_int(breakdown.get("ephemeral_5m_input_tokens"))
    long = as_int(breakdown.get("ephemeral_1h_input_tokens"))
    if short + long < total:  # a breakdown that misses some writes: bill the rest at the 5m rate
        short = total - long
    return short, long


def usage_from_wire(usage: Mapping[str, Any]) -> Usage:
    short, long = _cache_writes(usage)
    return Usage(
        input_tokens=as_int(usage.get("input_tokens")),
        output_tokens=as_int(usage.get("output_tokens")),
        cache_read_tokens=as_int(usage.get("cache_read_input_tokens")),
        cache_write_5m_tokens=short,
        cache_write_1h_tokens=long,
        reasoning_tokens=as_int(as_mapping(usage.get("output_tokens_details")).get("thinking_tokens")),
    )


def usage_from_response(body: Mapping[str, Any]) -> Usage:
    """From a ``Message`` (or a ``message_start`` event, which nests one)."""
    if body.get("type") == "message_start":
        body = as_mapping(body.get("message"))
    return usage_from_wire(as_mapping(body.get("usage")))


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_5m_tokens + usage.cache_write_1h_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
        "output_tokens": usage.output_tokens,
        "service_tier": "standard",
    }
    if usage.reasoning_tokens:
        wire["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return wire


def _apply_delta_usage(current: Usage, usage: Mapping[str, Any]) -> None:
    """``message_delta`` counts are cumulative totals; absent ones keep the ``message_start`` value."""
    if usage.get("output_tokens") is not None:
        current.output_tokens = as_int(usage["output_tokens"])
    if usage.get("input_tokens") is not None:
        current.input_tokens = as_int(usage["input_tokens"])
    if usage.get("cache_read_input_tokens") is not None:
        current.cache_read_tokens = as_int(usage["cache_read_input_tokens"])
    if usage.get("cache_creation_input_tokens") is not None:
        if isinstance(usage.get("cache_creation"), Mapping):
            current.cache_write_5m_tokens, current.cache_write_1h_tokens = _cache_writes(usage)
        else:
            total = as_int(usage["cache_creation_input_tokens"])
            current.cache_write_1h_tokens = min(current.cache_write_1h_tokens, total)
            current.cache_write_5m_tokens = total - current.cache_write_1h_tokens
    details = usage.get("output_tokens_details")
    if isinstance(details, Mapping) and details.get("thinking_tokens") is not None:
        current.reasoning_tokens = as_int(details["thinking_tokens"])


def _block_has_output(block: Mapping[str, Any]) -> bool:
    # text and thinking blocks open empty and fill through deltas; any other block (tool_use,
    # server_tool_use, redacted_thinking, *_tool_result) is output the moment it starts.
    block_type = block.get("type")
    if block_type == "text":
        return bool(block.get("text"))
    if block_type == "thinking":
        return bool(block.get("thinking"))
    return True


_BILLING_MARKERS = (b"message_", b"error")


class AnthropicStreamInspector:
    """Inspector for Messages streams; deltas are classified by event name without parsing."""

    __slots__ = ("_content_seen", "completed", "error", "finish_reason", "model", "usage")

    def __init__(self) -> None:
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.error: UpstreamStreamError | None = None
        self.model: str | None = None
        self.completed = False
        self._content_seen = False

    def plain_prefix(self, region: bytes) -> int:
        # Usage, the stop reason and the end arrive in message_* events; errors in "error" ones.
        if not self._content_seen:
            return 0
        return prefix_before(region, first_marker(region, _BILLING_MARKERS, len(region)))

    def inspect(self, event: SSEEvent) -> EventClass:
        name = event.event
        if name == "content_block_delta":
            self._content_seen = True
            return EventClass.CONTENT
        if name == "ping" or not event.data:
            return EventClass.META
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return EventClass.META
        if not isinstance(data, dict):
            return EventClass.META
        if name is None:  # not sent by Anthropic, but the type inside data says the same
            kind = data.get("type")
            name = kind if isinstance(kind, str) else ""
            if name == "content_block_delta":
                self._content_seen = True
                return EventClass.CONTENT
        if name == "content_block_start":
            if self._content_seen or _block_has_output(as_mapping(data.get("content_block"))):
                self._content_seen = True
                return EventClass.CONTENT
            return EventClass.META
        if name == "message_start":
            message = as_mapping(data.get("message"))
            self.usage = usage_from_wire(as_mapping(message.get("usage")))
            if isinstance(message.get("model"), str):
                self.model = message["model"]
            return EventClass.META
        if name == "message_delta":
            reason = as_mapping(data.get("delta")).get("stop_reason")
            if isinstance(reason, str):
                self.finish_reason = reason
            _apply_delta_usage(self.usage, as_mapping(data.get("usage")))
            return EventClass.META
        if name == "message_stop":
            self.completed = True
            return EventClass.DONE
        if name == "error":
            self.error = upstream_error(data, event.data)
            return EventClass.ERROR
        return EventClass.CONTENT if self._content_seen else EventClass.META


def _rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_model_list(models: Sequence[ModelInfo]) -> bytes:
    """``GET /v1/models``: ``{"data":[{"type":"model","id",...}],"has_more","first_id","last_id"}``."""
    data: list[dict[str, Any]] = []
    for m in models:
        entry: dict[str, Any] = {
            "type": "model",
            "id": m.id,
            "display_name": m.display_name or m.id,
            "created_at": _rfc3339(m.created),
            "lifecycle": "active",
        }
        if m.context_window is not None:
            entry["max_input_tokens"] = m.context_window
        if m.max_output_tokens is not None:
            entry["max_tokens"] = m.max_output_tokens
        data.append(entry)
    return orjson.dumps(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )
