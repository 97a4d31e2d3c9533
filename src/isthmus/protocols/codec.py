"""The codec interface every protocol implements, and small wire helpers the codecs share.

A protocol's codec lives in ``isthmus.protocols.<name>_codec`` and exposes ``CODEC: Codec``
(``anthropic_codec``, ``openai_chat_codec``, ``openai_responses_codec``, ``gemini_codec``); the
conversion façade (:mod:`isthmus.protocols.convert`) finds it there by name, so a new codec needs
no registration step and codec modules never import each other.

Decoders are lenient (they accept what real clients send, including fields they do not know, which
go to ``Request.extensions``); encoders are strict about meaning: when the IR holds something the
target cannot express and dropping it would change the answer (audio for a target without audio, a
built-in tool with no equivalent, several choices), they raise ``InvalidRequestError`` naming it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from typing import Protocol as Interface
from urllib.parse import unquote_to_bytes

import orjson

from isthmus.errors import InvalidRequestError, IsthmusError
from isthmus.ir import Protocol, Request, Response, StreamEvent
from isthmus.protocols.sse import SSEEvent


class StreamDecoder(Interface):
    """Turns one upstream stream, event by event, into IR stream events."""

    def feed(self, event: SSEEvent) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]:
        """Events owed at the end of the byte stream (e.g. a finish the wire only implies)."""
        ...


class StreamEncoder(Interface):
    """Turns IR stream events into the client's SSE bytes, event by event."""

    def encode(self, event: StreamEvent) -> bytes: ...


@dataclass(slots=True, frozen=True)
class Codec:
    """One protocol's conversions. ``stream_encoder(model, include_usage)``: ``model`` is the name
    the client sees; ``include_usage`` says the client asked for a usage chunk (OpenAI Chat's
    ``stream_options.include_usage``; other protocols always report usage and ignore it)."""

    protocol: Protocol
    decode_request: Callable[[Mapping[str, Any]], Request]
    encode_request: Callable[..., dict[str, Any]]  # (req, *, model: str, stream: bool)
    decode_response: Callable[[Mapping[str, Any]], Response]
    encode_response: Callable[..., dict[str, Any]]  # (resp, *, model: str)
    stream_decoder: Callable[[], StreamDecoder]
    stream_encoder: Callable[..., StreamEncoder]  # (*, model: str, include_usage: bool)
    encode_error_event: Callable[[IsthmusError], bytes]
    # True when encode_response and stream_encoder also take ``request=`` (the client's decoded
    # request), which Responses needs to echo settings and give namespaced/custom tool calls back
    # their own shapes.
    uses_request: bool = False


# --- shared wire helpers ----------------------------------------------------------------------


def dump_json(value: Any) -> str:
    """Compact JSON text (orjson, falling back to the stdlib for integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def arguments_object(arguments: str) -> dict[str, Any]:
    """A tool call's ``arguments`` text as the object Anthropic/Gemini want.

    ``""`` is ``{}``. Valid JSON that is not an object becomes ``{"value": ...}`` and text that is not
    JSON ``{"raw_arguments": text}``: a model's malformed call stays visible instead of vanishing.
    """
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"raw_arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),(.*)$", re.DOTALL)


def parse_data_url(url: str) -> tuple[str | None, str] | None:
    """``data:<media type>;base64,<payload>`` → (media type, base64 payload); None if not a data URL.
    Non-base64 data URLs are re-encoded as base64."""
    if not url.startswith("data:"):
        return None
    match = _DATA_URL.match(url)
    if match is None:
        return None
    media_type = match.group(1) or None
    params = match.group(2)
    payload = match.group(3)
    if ";base64" not in params:
        payload = base64.b64encode(unquote_to_bytes(payload)).decode()
    return media_type, payload


def data_url(media_type: str | None, payload: str) -> str:
    return f"data:{media_type or 'application/octet-stream'};base64,{payload}"


def is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def short_user_id(user: str, limit: int = 64) -> str:
    """An end-user id within ``limit`` characters: kept when short, else a stable digest of it."""
    if len(user) <= limit:
        return user
    return hashlib.sha256(user.encode()).hexdigest()[:limit]


def require(condition: bool, message: str, param: str | None = None) -> None:
    """Raise the 400 every decoder raises for a body that is not what the protocol allows."""
    if not condition:
        raise InvalidRequestError(message, param=param)


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    return float(value) if isinstance(value, int | float) else None


def as_opt_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
