"""What every protocol module shares: stream event classes, the inspector interface, model lists,
error-kind resolution and the passthrough model rewrite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import orjson

from isthmus.errors import ErrorKind, InvalidRequestError, IsthmusError, UpstreamStreamError
from isthmus.ir.usage import Usage
from isthmus.protocols.sse import SSEEvent, block_start


class EventClass(IntEnum):
    """How the relay treats one upstream stream event."""

    META = 0  # lifecycle / no content yet: message_start, ping, role-only chunk, response.created
    CONTENT = 1  # real output: text/thinking/tool-call delta, or any event carrying output
    USAGE_ONLY = 2  # OpenAI chat usage-only chunk (empty choices + usage); hidden unless asked for
    ERROR = 3  # an error event inside a 200 stream; ``inspector.error`` says what
    DONE = 4  # terminal event without new content: [DONE], message_stop, response.completed, ...


class StreamInspector(Protocol):
    """Watches one upstream stream event by event, keeping billing facts up to date.

    ``completed`` turns true on the protocol's terminal event. It may be set by an event classed
    CONTENT (a Gemini chunk can carry the last text, the finish reason and the usage at once), so a
    stream that ends with ``completed`` false was cut.
    """

    usage: Usage
    finish_reason: str | None
    error: UpstreamStreamError | None
    model: str | None
    completed: bool

    def inspect(self, event: SSEEvent) -> EventClass: ...

    def plain_prefix(self, region: bytes) -> int:
        """How many leading bytes of a run of whole events are events that can change no billing
        fact (usage, finish reason, error, completion), once content has been seen: those are
        content to relay as they are, unparsed; the rest must be inspected event by event. 0 when
        that cannot be told from the bytes alone.

        This lets a committed passthrough stream relay the deltas that make up most of a long
        answer without parsing them.
        """
        ...


def first_marker(region: bytes, markers: tuple[bytes, ...], stop: int) -> int:
    """Where the first of ``markers`` occurs in ``region[:stop]``, else ``stop``."""
    for marker in markers:
        found = region.find(marker, 0, stop)
        if found >= 0:
            stop = found
    return stop


def prefix_before(region: bytes, stop: int) -> int:
    """The whole blocks of ``region`` that end before the block holding ``region[stop]``."""
    return stop if stop >= len(region) else block_start(region, stop)


@dataclass(slots=True, frozen=True)
class ModelInfo:
    """One entry of a model list, in protocol-neutral form."""

    id: str
    created: int  # unix seconds
    owned_by: str = "isthmus"
    context_window: int | None = None
    max_output_tokens: int | None = None
    display_name: str | None = None


# HTTP statuses that say more than a generic upstream/internal kind.
STATUS_KINDS: dict[int, ErrorKind] = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.AUTHENTICATION,
    402: ErrorKind.PERMISSION,
    403: ErrorKind.PERMISSION,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    413: ErrorKind.TOO_LARGE,
    422: ErrorKind.INVALID_REQUEST,
    429: ErrorKind.RATE_LIMITED,
    503: ErrorKind.UNAVAILABLE,
    504: ErrorKind.TIMEOUT,
    529: ErrorKind.OVERLOADED,
}


def error_kind(err: IsthmusError) -> ErrorKind:
    """The kind to render: a generic upstream/internal error takes the kind its status implies, so
    an upstream 429 re-raised with ``status=429`` reads as a rate limit in every protocol."""
    if err.kind in (ErrorKind.UPSTREAM, ErrorKind.INTERNAL):
        return STATUS_KINDS.get(err.status, err.kind)
    return err.kind


def as_int(value: object) -> int:
    """A token count from a wire object: missing, null or malformed counts as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float):
        return max(int(value), 0)
    return 0


def as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object, or raise ``InvalidRequestError``."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # stdlib json accepts what orjson refuses (e.g. numbers beyond float range)
            parsed = json.loads(body)
        except ValueError as exc:
            raise InvalidRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return parsed


def extract_model(body: bytes) -> str | None:
    """The top-level ``"model"`` of a JSON request body (None when absent or not a string)."""
    model = parse_json_object(body).get("model")
    return model if isinstance(model, str) else None


_WS = b" \t\r\n"


def splice_json_model(body: bytes, old: str, new: str) -> bytes | None:
    """Replace the bytes of the top-level model value in place, or None when that is not provably
    safe (several "model" keys, escaped key spellings, unusual string escapes)."""
    key = b'"model"'
    k = body.find(key)
    if k < 0 or body.find(key, k + 1) >= 0 or b"\\u006" in body:
        # One "model" occurrence (and no \\u-escaped letter of it) means it is the top-level key.
        return None
    i = k + len(key)
    n = len(body)
    while i < n and body[i] in _WS:
        i += 1
    if i >= n or body[i] != 0x3A:  # ":"
        return None
    i += 1
    while i < n and body[i] in _WS:
        i += 1
    old_bytes = orjson.dumps(old)
    if not body.startswith(old_bytes, i):
        return None
    return body[:i] + orjson.dumps(new) + body[i + len(old_bytes) :]


def rewrite_json_model(body: bytes, new_model: str, parsed: Mapping[str, Any] | None = None) -> bytes:
    """Set the top-level ``"model"`` of a JSON object body, keeping every other field.

    The common case splices the new name into the original bytes, so unknown fields, key order,
    number spellings and formatting survive exactly; otherwise the body is re-serialised with the
    stdlib json module (exact for big integers, unlike orjson which turns them into floats).
    ``parsed`` is the body already parsed by the caller, to save a second parse.
    """
    if parsed is None:
        parsed = parse_json_object(body)
    old = parsed.get("model")
    if isinstance(old, str):
        if old == new_model:
            return body
        spliced = splice_json_model(body, old, new_model)
        if spliced is not None:
            return spliced
    exact = json.loads(body)
    exact["model"] = new_model
    return json.dumps(exact, ensure_ascii=False, separators=(",", ":")).encode()
