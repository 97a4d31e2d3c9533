"""Protocol conversion through the IR: the only entry points the relay calls.

Every conversion is ``decode`` with the source protocol's codec and ``encode`` with the target's, so
there is no pairwise code: a protocol joins every pair by providing
``isthmus.protocols.<module>_codec.CODEC`` (see :data:`CODEC_MODULES`). Codecs are imported on first
use, so a missing one only makes :func:`can_convert` false for its pairs.

What each pair carries, approximates and drops is documented in ``docs/fidelity.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from typing import Any

from isthmus.errors import InvalidRequestError, IsthmusError, UpstreamStreamError
from isthmus.ir import (
    Finish,
    MessageStart,
    PartStart,
    Protocol,
    Request,
    StreamError,
    StreamEvent,
    Usage,
    UsageUpdate,
)
from isthmus.protocols.codec import Codec
from isthmus.protocols.sse import SSEEvent

# Where each protocol's codec lives (a module exposing ``CODEC: Codec``).
CODEC_MODULES: dict[Protocol, str] = {
    Protocol.ANTHROPIC: "isthmus.protocols.anthropic_codec",
    Protocol.OPENAI_CHAT: "isthmus.protocols.openai_chat_codec",
    Protocol.OPENAI_RESPONSES: "isthmus.protocols.openai_responses_codec",
    Protocol.GEMINI: "isthmus.protocols.gemini_codec",
}


@cache
def _load(protocol: Protocol) -> Codec | None:
    name = CODEC_MODULES.get(protocol)
    if name is None:
        return None
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # the codec exists but something it imports does not: a real bug
            raise
        return None
    codec = getattr(module, "CODEC", None)
    return codec if isinstance(codec, Codec) else None


def codec(protocol: Protocol) -> Codec:
    """The codec of a protocol, or ``InvalidRequestError`` when there is none yet."""
    found = _load(protocol)
    if found is None:
        raise InvalidRequestError(f"conversion to or from {protocol} is not available")
    return found


def can_convert(src: Protocol, dst: Protocol) -> bool:
    return _load(src) is not None and _load(dst) is not None


def convert_request(
    src: Protocol, dst: Protocol, body: Mapping[str, Any], *, model: str, stream: bool
) -> dict[str, Any]:
    """A client request in ``src`` as an upstream request in ``dst`` for upstream model ``model``.

    Raises ``InvalidRequestError`` (400) when the body is malformed or holds something ``dst``
    cannot express where dropping it would change the answer."""
    req = codec(src).decode_request(body)
    return codec(dst).encode_request(req, model=model, stream=stream)


def convert_response(
    src: Protocol, dst: Protocol, body: Mapping[str, Any], *, model: str, request: Request | None = None
) -> dict[str, Any]:
    """A non-streamed upstream answer in ``src`` as the client's ``dst`` answer naming ``model``.
    ``request``: the client's decoded request (``codec(dst).decode_request(client_body)``), used by
    codecs with ``uses_request`` (Responses)."""
    resp = codec(src).decode_response(body)
    target = codec(dst)
    if target.uses_request and request is not None:
        return target.encode_response(resp, model=model, request=request)
    return target.encode_response(resp, model=model)


class StreamTranslator:
    """Converts one upstream stream (``src``) into the client's protocol (``dst``), event by event.

    ``feed`` returns the client bytes for one upstream event (often empty, e.g. for a ping). When
    the upstream reports an error inside the stream, ``upstream_error`` is set and ``feed`` returns
    the client-protocol error event, so after the commit point the relay just forwards it; before
    it, the relay discards the bytes and fails over. Billing facts are kept current:
    ``usage`` (cumulative, normalised), ``finish_reason`` (the IR stop reason, e.g. ``"max_tokens"``),
    ``saw_content`` (a text, thinking or tool part has started), ``completed`` (the terminal event
    was seen).
    """

    __slots__ = (
        "_decoder",
        "_dst",
        "_encoder",
        "completed",
        "finish_reason",
        "model",
        "saw_content",
        "upstream_error",
        "usage",
    )

    def __init__(
        self, src: Protocol, dst: Protocol, *, model: str, include_usage: bool, request: Request | None = None
    ) -> None:
        self._decoder = codec(src).stream_decoder()
        self._dst = codec(dst)
        if self._dst.uses_request and request is not None:
            self._encoder = self._dst.stream_encoder(
                model=model, include_usage=include_usage, request=request
            )
        else:
            self._encoder = self._dst.stream_encoder(model=model, include_usage=include_usage)
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.saw_content = False
        self.completed = False
        self.upstream_error: UpstreamStreamError | None = None
        self.model: str | None = None  # the model the upstream says answered

    def _note(self, event: StreamEvent) -> None:
        if isinstance(event, PartStart):
            self.saw_content = True
        elif isinstance(event, UsageUpdate):
            self.usage = replace(event.usage)
        elif isinstance(event, MessageStart):
            self.usage = replace(event.usage)
            self.model = event.model or None
        elif isinstance(event, Finish):
            self.completed = True
            self.finish_reason = str(event.stop_reason)
            if event.usage is not None:
                self.usage = replace(event.usage)
        elif isinstance(event, StreamError):
            err = event.error
            self.upstream_error = (
                err
                if isinstance(err, UpstreamStreamError)
                else UpstreamStreamError(err.message, upstream_status=err.status, code=err.code)
            )

    def _emit(self, events: list[StreamEvent]) -> bytes:
        out: list[bytes] = []
        for event in events:
            if self.completed or self.upstream_error is not None:
                break  # nothing follows a terminal or error event
            self._note(event)
            out.append(self._encoder.encode(event))
        return b"".join(out)

    def feed(self, event: SSEEvent) -> bytes:
        return self._emit(self._decoder.feed(event))

    @property
    def final_response(self) -> dict[str, Any] | None:
        """The client-protocol answer object once ``completed``, for encoders that build one (the
        Responses encoder: the Response object the Responses state store saves)."""
        response = getattr(self._encoder, "response", None)
        return response if isinstance(response, dict) else None

    def finish(self) -> bytes:
        """Bytes owed at the end of the upstream byte stream (usually none). If ``completed`` is
        still false afterwards, the stream was cut: send :meth:`error`."""
        return self._emit(self._decoder.finish())

    def error(self, err: IsthmusError) -> bytes:
        """A client-protocol error event, for a failure after the commit point."""
        return self._dst.encode_error_event(err)


__all__ = [
    "CODEC_MODULES",
    "StreamTranslator",
    "can_convert",
    "codec",
    "convert_request",
    "convert_response",
]
