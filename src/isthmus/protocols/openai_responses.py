"""OpenAI Responses (``POST /v1/responses``): relay helpers for passthrough.

Wire facts relied on: every stream event has an ``event:`` line and a ``type`` inside ``data`` plus
a ``sequence_number``; lifecycle events (``response.created``/``in_progress``/``completed``/
``incomplete``/``failed``) nest the whole ``response``; usage arrives only in the terminal event's
``response.usage``, where ``input_tokens`` includes ``input_tokens_details.cached_tokens`` (and
``cache_write_tokens``, split by TTL in ``cache_write_tokens_details``). An error once streaming
has begun is an ``error`` event (``ResponseErrorEvent``: ``code``, ``message``, ``param``) and/or a
``response.failed`` whose ``response.error`` says why; Codex only stops cleanly on the latter.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from isthmus.errors import ErrorKind, IsthmusError, UpstreamStreamError
from isthmus.ir.usage import Usage
from isthmus.protocols.base import (
    EventClass,
    as_int,
    as_mapping,
    error_kind,
    first_marker,
    prefix_before,
)
from isthmus.protocols.openai_common import (
    encode_model_list,
    error_body,
    upstream_error_from_object,
)
from isthmus.protocols.sse import SSEEvent, encode_event

__all__ = [
    "ResponsesStreamInspector",
    "encode_model_list",
    "error_body",
    "stream_error_event",
    "usage_from_response",
    "usage_from_wire",
    "usage_to_wire",
]

# ``ResponseError.code`` is a closed list in the SDK; map our kinds onto it.
_RESPONSE_ERROR_CODES: dict[ErrorKind, str] = {
    ErrorKind.RATE_LIMITED: "rate_limit_exceeded",
    ErrorKind.INVALID_REQUEST: "invalid_prompt",
    ErrorKind.TOO_LARGE: "invalid_prompt",
}


# The ``error`` event's code is free text: say more there (Codex treats "server_is_overloaded" as
# a retryable overload).
_ERROR_EVENT_CODES: dict[ErrorKind, str] = {
    **_RESPONSE_ERROR_CODES,
    ErrorKind.OVERLOADED: "server_is_overloaded",
    ErrorKind.UNAVAILABLE: "server_is_overloaded",
    ErrorKind.TIMEOUT: "timeout",
}


def failed_response(
    err: IsthmusError, *, response_id: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """A minimal ``Response`` object with ``status: "failed"``, for ``response.failed``."""
    kind = error_kind(err)
    return {
        "id": response_id or f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "failed",
        "error": {
            "code": err.code or _RESPONSE_ERROR_CODES.get(kind, "server_error"),
            "message": err.message,
        },
        "incomplete_details": None,
        "model": model or "",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None,
    }


def stream_error_event(
    err: IsthmusError,
    *,
    sequence_number: int = 0,
    response_id: str | None = None,
    model: str | None = None,
) -> bytes:
    """``event: error`` then ``event: response.failed`` (``sequence_number`` is the next unused one)."""
    kind = error_kind(err)
    error_event = {
        "type": "error",
        "code": err.code or _ERROR_EVENT_CODES.get(kind, "server_error"),
        "message": err.message,
        "param": err.param,
        "sequence_number": sequence_number,
    }
    failed_event = {
        "type": "response.failed",
        "response": failed_response(err, response_id=response_id, model=model),
        "sequence_number": sequence_number + 1,
    }
    return encode_event(error_event, "error") + encode_event(failed_event, "response.failed")


def usage_from_wire(usage: Mapping[str, Any]) -> Usage:
    """Normalise ``response.usage``: cache reads and writes are taken out of ``input_tokens``."""
    prompt = as_int(usage.get("input_tokens", usage.get("prompt_tokens")))
    details = as_mapping(usage.get("input_tokens_details") or usage.get("prompt_tokens_details"))
    cached = as_int(details.get("cached_tokens"))
    ttl = as_mapping(details.get("cache_write_tokens_details"))
    if ttl:
        # OpenAI's 30-minute and 12-hour tiers land in our short and long cache-write buckets.
        short, long = as_int(ttl.get("ttl_30m_tokens")), as_int(ttl.get("ttl_12h_tokens"))
    else:
        short, long = as_int(details.get("cache_write_tokens")), 0
    output_details = as_mapping(usage.get("output_tokens_details") or usage.get("completion_tokens_details"))
    return Usage(
        input_tokens=max(prompt - cached - short - long, 0),
        output_tokens=as_int(usage.get("output_tokens", usage.get("completion_tokens"))),
        cache_read_tokens=cached,
        cache_write_5m_tokens=short,
        cache_write_1h_tokens=long,
        reasoning_tokens=as_int(output_details.get("reasoning_tokens")),
    )


def usage_from_response(body: Mapping[str, Any]) -> Usage:
    """From a ``Response`` object (or a lifecycle event that nests one)."""
    if body.get("object") != "response" and isinstance(body.get("response"), Mapping):
        body = body["response"]
    return usage_from_wire(as_mapping(body.get("usage")))


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    written = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    input_details: dict[str, Any] = {"cached_tokens": usage.cache_read_tokens, "cache_write_tokens": written}
    if written:
        input_details["cache_write_tokens_details"] = {
            "ttl_30m_tokens": usage.cache_write_5m_tokens,
            "ttl_12h_tokens": usage.cache_write_1h_tokens,
        }
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": input_details,
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def finish_reason_of(response: Mapping[str, Any]) -> str | None:
    """``completed``/``failed``, or for ``incomplete`` the reason (e.g. ``max_output_tokens``)."""
    status = response.get("status")
    if status == "incomplete":
        reason = as_mapping(response.get("incomplete_details")).get("reason")
        return reason if isinstance(reason, str) else "incomplete"
    return status if isinstance(status, str) else None


_LIFECYCLE_META = frozenset({"response.created", "response.in_progress", "response.queued"})


def _item_has_output(item: Mapping[str, Any]) -> bool:
    item_type = item.get("type")
    if item_type == "message":
        return any(
            isinstance(part, Mapping) and (part.get("text") or part.get("refusal"))
            for part in item.get("content") or ()
        )
    if item_type == "reasoning":
        return bool(item.get("summary") or item.get("content") or item.get("encrypted_content"))
    return True  # function_call, custom_tool_call, web_search_call, ...: the call itself is output


def _event_type(event: SSEEvent) -> tuple[str | None, dict[str, Any] | None]:
    if event.event is not None:
        return event.event, None
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    kind = data.get("type")
    return (kind if isinstance(kind, str) else None), data


# Events that carry usage, the finish reason, the end or an error (the rest only need relaying).
_BILLING_MARKERS = (b"response.completed", b"response.incomplete", b"response.failed", b"error")


class ResponsesStreamInspector:
    """Inspector for Responses streams; parses only lifecycle, item and error events."""

    __slots__ = ("_content_seen", "completed", "error", "finish_reason", "model", "usage")

    def __init__(self) -> None:
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.error: UpstreamStreamError | None = None
        self.model: str | None = None
        self.completed = False
        self._content_seen = False

    def _load(self, event: SSEEvent, parsed: dict[str, Any] | None) -> dict[str, Any]:
        if parsed is not None:
            return parsed
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    def _content(self) -> EventClass:
        self._content_seen = True
        return EventClass.CONTENT

    def plain_prefix(self, region: bytes) -> int:
        if not self._content_seen:
            return 0
        return prefix_before(region, first_marker(region, _BILLING_MARKERS, len(region)))

    def inspect(self, event: SSEEvent) -> EventClass:
        if not event.data:
            return EventClass.META
        name, parsed = _event_type(event)
        if name is None:
            return EventClass.META
        if name.endswith(".delta"):
            return self._content()
        if name in _LIFECYCLE_META:
            if self.model is None:
                model = as_mapping(self._load(event, parsed).get("response")).get("model")
                if isinstance(model, str):
                    self.model = model
            return EventClass.META
        if not self._content_seen and name in ("response.output_item.added", "response.output_item.done"):
            item = as_mapping(self._load(event, parsed).get("item"))
            if name.endswith(".added") and item.get("type") in ("message", "reasoning"):
                return EventClass.META
            return self._content() if _item_has_output(item) else EventClass.META
        if name in ("response.completed", "response.incomplete"):
            response = as_mapping(self._load(event, parsed).get("response"))
            self.usage = usage_from_wire(as_mapping(response.get("usage")))
            self.finish_reason = finish_reason_of(response) or name.removeprefix("response.")
            if isinstance(response.get("model"), str):
                self.model = response["model"]
            self.completed = True
            return EventClass.DONE
        if name == "response.failed":
            data = self._load(event, parsed)
            response = as_mapping(data.get("response"))
            usage = as_mapping(response.get("usage"))
            if usage:
                self.usage = usage_from_wire(usage)
            self.finish_reason = "failed"
            if self.error is None:  # an "error" event just before says the same, with more detail
                self.error = upstream_error_from_object(as_mapping(response.get("error")), event.data)
            return EventClass.ERROR
        if name == "error":
            data = self._load(event, parsed)
            nested = data.get("error")  # some gateways nest the object; the API puts it flat
            self.error = upstream_error_from_object(
                nested if isinstance(nested, Mapping) else data, event.data
            )
            return EventClass.ERROR
        return EventClass.CONTENT if self._content_seen else EventClass.META
