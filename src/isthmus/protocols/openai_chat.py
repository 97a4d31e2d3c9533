"""OpenAI Chat Completions (``POST /v1/chat/completions``): relay helpers for passthrough.

Wire facts relied on: stream chunks are ``data: {chat.completion.chunk}`` lines ended by
``data: [DONE]``; with ``stream_options.include_usage`` every chunk carries ``"usage":null`` and
one extra chunk with ``"choices":[]`` carries the usage; an error after the stream started is a
``data: {"error":{...}}`` chunk (the openai SDK raises ``APIError`` on any chunk with ``error``).
``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens`` (and cache writes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

from isthmus.errors import IsthmusError, UpstreamStreamError
from isthmus.ir.usage import Usage
from isthmus.protocols.base import (
    EventClass,
    as_int,
    as_mapping,
    first_marker,
    parse_json_object,
    prefix_before,
    splice_json_model,
)
from isthmus.protocols.openai_common import (
    encode_model_list,
    error_body,
    error_object,
    upstream_error_from_object,
)
from isthmus.protocols.sse import SSEEvent

__all__ = [
    "ChatStreamInspector",
    "encode_model_list",
    "ensure_include_usage",
    "error_body",
    "rewrite_request",
    "stream_error_event",
    "usage_from_response",
    "usage_from_wire",
    "usage_to_wire",
]


def stream_error_event(err: IsthmusError) -> bytes:
    return b"data: " + orjson.dumps({"error": error_object(err)}) + b"\n\n"


def usage_from_wire(usage: Mapping[str, Any]) -> Usage:
    """Normalise a ``usage`` object: cache reads and writes are taken out of ``prompt_tokens``."""
    prompt = as_int(usage.get("prompt_tokens", usage.get("input_tokens")))
    details = as_mapping(usage.get("prompt_tokens_details") or usage.get("input_tokens_details"))
    cached = as_int(details.get("cached_tokens"))
    if not cached:  # DeepSeek-style compatible vendors report the hit count at the top level
        cached = as_int(usage.get("prompt_cache_hit_tokens"))
    written = as_int(details.get("cache_write_tokens"))
    completion = as_int(usage.get("completion_tokens", usage.get("output_tokens")))
    completion_details = as_mapping(
        usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    )
    return Usage(
        input_tokens=max(prompt - cached - written, 0),
        output_tokens=completion,
        cache_read_tokens=cached,
        cache_write_5m_tokens=written,
        reasoning_tokens=as_int(completion_details.get("reasoning_tokens")),
    )


def usage_from_response(body: Mapping[str, Any]) -> Usage:
    return usage_from_wire(as_mapping(body.get("usage")))


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    """The ``usage`` object for a response or the final stream chunk."""
    written = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    prompt_details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0}
    if written:
        prompt_details["cache_write_tokens"] = written
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def ensure_include_usage(body: dict[str, Any]) -> bool:
    """Ask the upstream for the usage chunk; returns whether the client had asked for it itself
    (if not, the relay hides the chunk classed ``USAGE_ONLY``)."""
    options = body.get("stream_options")
    if isinstance(options, dict):
        asked = options.get("include_usage") is True
        options["include_usage"] = True
        return asked
    body["stream_options"] = {"include_usage": True}
    return False


_INCLUDE_USAGE = b',"stream_options":{"include_usage":true}'


def rewrite_request(
    body: bytes, model: str, *, stream: bool, parsed: Mapping[str, Any] | None = None
) -> tuple[bytes, bool]:
    """Passthrough rewrite of a request body: set ``model`` and, for streams, ask for usage.

    Returns ``(new_body, client_asked_for_usage)``. When the body has no ``stream_options`` the
    addition is spliced in before the closing brace, keeping the client's bytes otherwise intact.
    ``parsed`` is the body already parsed by the caller, to save a second parse.
    """
    if parsed is None:
        parsed = parse_json_object(body)
    old = parsed.get("model")
    new_body: bytes | None = body if old == model else None
    if new_body is None and isinstance(old, str):
        new_body = splice_json_model(body, old, model)
    asked = True
    if stream:
        options = parsed.get("stream_options")
        asked = isinstance(options, Mapping) and options.get("include_usage") is True
        if not asked and new_body is not None and "stream_options" not in parsed:
            stripped = new_body.rstrip()
            if stripped.endswith(b"}") and stripped[:-1].rstrip()[-1:] not in (b"{", b","):
                new_body = stripped[:-1] + _INCLUDE_USAGE + b"}"
            else:
                new_body = None
        elif not asked:
            new_body = None
    if new_body is None:
        exact = json.loads(body)  # stdlib: integers beyond 64 bits survive, unlike with orjson
        exact["model"] = model
        if stream:
            ensure_include_usage(exact)
        new_body = json.dumps(exact, ensure_ascii=False, separators=(",", ":")).encode()
    return new_body, asked


_ALWAYS_MARKERS = (b'"error"', b"[DONE]")


def _set_key(key: bytes) -> re.Pattern[bytes]:
    """``key`` other than as ``key:null``: OpenAI repeats ``"finish_reason":null`` and
    ``"usage":null`` in every chunk, and one search in C skips them (≈ 11 µs for both keys over the
    benchmark's 8.5 KB of deltas) where finding each and checking what follows took ≈ 17 µs."""
    return re.compile(re.escape(key) + rb"(?!:null|: null)")


_USAGE_SET = _set_key(b'"usage"')
_FINISH_SET = _set_key(b'"finish_reason"')


def _first_set(data: bytes, key: re.Pattern[bytes], stop: int) -> int:
    """Where ``key`` (a :func:`_set_key`) first occurs in ``data[:stop]``, else ``stop``."""
    found = key.search(data, 0, stop)
    return found.start() if found else stop


def _billing_marker(data: bytes) -> int:
    """Where the first bytes that may carry an error, usage, a finish reason or the end are, else
    ``len(data)``; conservative: any spelling it does not know counts as such."""
    stop = first_marker(data, _ALWAYS_MARKERS, len(data))
    stop = _first_set(data, _USAGE_SET, stop)
    return _first_set(data, _FINISH_SET, stop)


def _delta_has_content(delta: object) -> bool:
    # Anything beyond the role counts: content, refusal, tool_calls, function_call, audio, and
    # vendor reasoning fields (reasoning_content, reasoning) alike.
    if not isinstance(delta, Mapping):
        return False
    return any(value for key, value in delta.items() if key != "role")


class ChatStreamInspector:
    """Inspector for Chat Completions streams.

    Once content has been seen, a chunk whose bytes mention no error, usage or finish reason is
    classed CONTENT without being parsed: the relay has committed by then and only needs billing
    facts, which such a chunk cannot change.
    """

    __slots__ = ("_content_seen", "completed", "error", "finish_reason", "model", "usage")

    def __init__(self) -> None:
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.error: UpstreamStreamError | None = None
        self.model: str | None = None
        self.completed = False
        self._content_seen = False

    def plain_prefix(self, region: bytes) -> int:
        return prefix_before(region, _billing_marker(region)) if self._content_seen else 0

    def inspect(self, event: SSEEvent) -> EventClass:
        data = event.data
        if not data:
            return EventClass.META
        if data[0] != 0x7B:  # not a JSON object: "[DONE]" or noise
            if data.startswith(b"[DONE]"):
                self.completed = True
                return EventClass.DONE
            return EventClass.META
        if self._content_seen and _billing_marker(data) == len(data):
            return EventClass.CONTENT
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return EventClass.META
        if not isinstance(chunk, dict):
            return EventClass.META
        error = chunk.get("error")
        if error:
            obj = error if isinstance(error, Mapping) else {"message": str(error)}
            self.error = upstream_error_from_object(obj, data)
            return EventClass.ERROR
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self.usage = usage_from_wire(usage)
        choices = chunk.get("choices")
        has_content = False
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, Mapping):
                    continue
                reason = choice.get("finish_reason")
                if isinstance(reason, str) and reason:
                    self.finish_reason = reason
                if not has_content and _delta_has_content(choice.get("delta")):
                    has_content = True
        if has_content:
            self._content_seen = True
            return EventClass.CONTENT
        if not choices and isinstance(usage, Mapping):
            return EventClass.USAGE_ONLY
        return EventClass.META
