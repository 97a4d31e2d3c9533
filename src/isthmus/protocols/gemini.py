"""Gemini API (``/v1beta/models/{model}:generateContent`` and friends): relay helpers for passthrough.

Wire facts relied on: ``:streamGenerateContent?alt=sse`` sends ``data: {GenerateContentResponse}``
blocks with no event names and no terminator; each chunk may carry ``usageMetadata`` (cumulative;
the last one is final) and the last candidate chunk a ``finishReason``. ``promptTokenCount``
includes ``cachedContentTokenCount``; ``thoughtsTokenCount`` and ``toolUsePromptTokenCount`` are
reported beside ``candidatesTokenCount``/``promptTokenCount``. Errors are
``{"error":{"code","message","status"}}``; inside a stream the same object is one data chunk, which
google-genai raises as ``APIError``. The model lives in the URL, not the body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from isthmus.errors import ErrorKind, IsthmusError, UpstreamStreamError
from isthmus.ir.usage import Usage
from isthmus.protocols.base import EventClass, ModelInfo, as_int, as_mapping, error_kind
from isthmus.protocols.sse import SSEEvent

__all__ = [
    "GeminiStreamInspector",
    "encode_model_list",
    "error_body",
    "split_model_action",
    "stream_error_event",
    "usage_from_response",
    "usage_from_wire",
    "usage_to_wire",
]

ERROR_STATUSES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "INVALID_ARGUMENT",
    ErrorKind.AUTHENTICATION: "UNAUTHENTICATED",
    ErrorKind.PERMISSION: "PERMISSION_DENIED",
    ErrorKind.NOT_FOUND: "NOT_FOUND",
    ErrorKind.TOO_LARGE: "INVALID_ARGUMENT",
    ErrorKind.RATE_LIMITED: "RESOURCE_EXHAUSTED",
    ErrorKind.OVERLOADED: "UNAVAILABLE",
    ErrorKind.UPSTREAM: "UNAVAILABLE",
    ErrorKind.UNAVAILABLE: "UNAVAILABLE",
    ErrorKind.TIMEOUT: "DEADLINE_EXCEEDED",
    ErrorKind.INTERNAL: "INTERNAL",
}

# HTTP status for a google.rpc status name, for error chunks that carry no numeric code.
STATUS_BY_NAME: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "NOT_IMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def error_object(err: IsthmusError) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": err.status,
        "message": err.message,
        "status": ERROR_STATUSES[error_kind(err)],
    }
    if err.retry_after is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{max(1, round(err.retry_after))}s",
            }
        ]
    return error


def error_body(err: IsthmusError) -> bytes:
    """``{"error":{"code","message","status"}}`` (plus ``RetryInfo`` details when known)."""
    return orjson.dumps({"error": error_object(err)})


def stream_error_event(err: IsthmusError) -> bytes:
    # google-genai recognises an error chunk by its text starting with '{"error":'.
    return b"data: " + error_body(err) + b"\n\n"


def upstream_error(data: Mapping[str, Any], raw: bytes) -> UpstreamStreamError:
    error = as_mapping(data.get("error"))
    code = error.get("code")
    status_name = error.get("status")
    status: int | None = code if isinstance(code, int) and 400 <= code <= 599 else None
    if status is None and isinstance(status_name, str):
        status = STATUS_BY_NAME.get(status_name)
    message = error.get("message")
    return UpstreamStreamError(
        message if isinstance(message, str) and message else "upstream stream reported an error",
        upstream_status=status,
        body=raw,
        code=status_name if isinstance(status_name, str) else None,
    )


def _count(usage: Mapping[str, Any], camel: str, snake: str) -> int:
    value = usage.get(camel)
    return as_int(value if value is not None else usage.get(snake))


def usage_from_wire(usage: Mapping[str, Any]) -> Usage:
    """Normalise ``usageMetadata`` (camelCase as sent; snake_case as SDK dumps write it)."""
    prompt = _count(usage, "promptTokenCount", "prompt_token_count")
    cached = _count(usage, "cachedContentTokenCount", "cached_content_token_count")
    tool_prompt = _count(usage, "toolUsePromptTokenCount", "tool_use_prompt_token_count")
    candidates = _count(usage, "candidatesTokenCount", "candidates_token_count")
    thoughts = _count(usage, "thoughtsTokenCount", "thoughts_token_count")
    return Usage(
        input_tokens=max(prompt - cached, 0) + tool_prompt,
        output_tokens=candidates + thoughts,  # thoughts are billed as output
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
    )


def usage_from_response(body: Mapping[str, Any]) -> Usage:
    return usage_from_wire(as_mapping(body.get("usageMetadata") or body.get("usage_metadata")))


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    """``usageMetadata``. Gemini has no cache-write counts: writes are reported as prompt tokens."""
    visible = max(usage.output_tokens - usage.reasoning_tokens, 0)
    wire: dict[str, Any] = {
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": visible,
        "totalTokenCount": usage.total_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt_tokens}],
    }
    if usage.cache_read_tokens:
        wire["cachedContentTokenCount"] = usage.cache_read_tokens
    if usage.reasoning_tokens:
        wire["thoughtsTokenCount"] = usage.reasoning_tokens
    return wire


def _part_has_output(part: object) -> bool:
    # Empty text (possibly only carrying a thoughtSignature) is not output; a functionCall,
    # inlineData, executableCode, ... part is.
    if not isinstance(part, Mapping):
        return False
    return any(value for key, value in part.items() if key not in ("thoughtSignature", "thought"))


class GeminiStreamInspector:
    """Inspector for ``streamGenerateContent?alt=sse``; every chunk is parsed (each may carry usage).

    A chunk with both content and a ``finishReason`` is classed CONTENT and sets ``completed``.
    A prompt blocked outright (``promptFeedback.blockReason``, no candidates) is an answer, not an
    empty stream: it is classed CONTENT with ``finish_reason`` set to the block reason.
    """

    __slots__ = ("completed", "error", "finish_reason", "model", "usage")

    def __init__(self) -> None:
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.error: UpstreamStreamError | None = None
        self.model: str | None = None
        self.completed = False

    def plain_prefix(self, region: bytes) -> int:
        return 0  # any chunk may carry usage and a finish reason alongside its text

    def inspect(self, event: SSEEvent) -> EventClass:
        if not event.data:
            return EventClass.META
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return EventClass.META
        if not isinstance(chunk, dict):
            return EventClass.META
        if "error" in chunk:
            self.error = upstream_error(chunk, event.data)
            return EventClass.ERROR
        usage = chunk.get("usageMetadata")
        if isinstance(usage, Mapping):
            self.usage = usage_from_wire(usage)
        if isinstance(chunk.get("modelVersion"), str):
            self.model = chunk["modelVersion"]
        has_content = False
        finished = False
        candidates = chunk.get("candidates")
        if isinstance(candidates, list):
            for candidate in candidates:
                if not isinstance(candidate, Mapping):
                    continue
                reason = candidate.get("finishReason")
                if isinstance(reason, str) and reason:
                    self.finish_reason = reason
                    finished = True
                parts = as_mapping(candidate.get("content")).get("parts")
                if not has_content and isinstance(parts, list):
                    has_content = any(_part_has_output(p) for p in parts)
        elif not candidates:
            block = as_mapping(chunk.get("promptFeedback")).get("blockReason")
            if isinstance(block, str) and block:
                self.finish_reason = block
                self.completed = True
                return EventClass.CONTENT
        if finished:
            self.completed = True
        if has_content:
            return EventClass.CONTENT
        return EventClass.DONE if finished else EventClass.META


def split_model_action(segment: str) -> tuple[str, str] | None:
    """``"gemini-2.5-flash:generateContent"`` (or ``"models/...:..."``) -> (model, action)."""
    model, sep, action = segment.removeprefix("models/").rpartition(":")
    if not sep or not model or not action:
        return None
    return model, action


GENERATION_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]


def encode_model_list(models: Sequence[ModelInfo]) -> bytes:
    """``GET /v1beta/models``: ``{"models":[{"name":"models/ID","displayName",...}]}``."""
    entries: list[dict[str, Any]] = []
    for m in models:
        entry: dict[str, Any] = {
            "name": f"models/{m.id}",
            "version": "001",
            "displayName": m.display_name or m.id,
            "supportedGenerationMethods": GENERATION_METHODS,
        }
        if m.context_window is not None:
            entry["inputTokenLimit"] = m.context_window
        if m.max_output_tokens is not None:
            entry["outputTokenLimit"] = m.max_output_tokens
        entries.append(entry)
    return orjson.dumps({"models": entries})
