"""The adapt step of one attempt: the same protocol passes through, another is converted via the IR.

An :class:`Adapter` gives the upstream request body and turns the upstream's answer into the client's:
a whole body (:meth:`Adapter.response_body`) or a stream (:meth:`Adapter.stream`, one
:class:`StreamAdapter` per attempt). The stream adapters share one small interface so the relay's
read-ahead and relay loops do not care which kind they drive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from isthmus import ir
from isthmus.errors import IsthmusError, UpstreamStreamError
from isthmus.ir import Operation, Usage
from isthmus.ir import Protocol as WireProtocol
from isthmus.protocols import convert, openai_chat
from isthmus.protocols.base import EventClass, rewrite_json_model
from isthmus.protocols.sse import SSEEvent, count_blocks, split_region
from isthmus.relay import wire


class StreamAdapter(Protocol):
    """One upstream stream seen from the relay: what to send the client, and the billing facts."""

    same_protocol: bool  # the upstream's own framing goes out (its content-type applies)

    @property
    def usage(self) -> Usage: ...

    @property
    def finish_reason(self) -> str | None: ...

    @property
    def completed(self) -> bool: ...

    @property
    def error(self) -> UpstreamStreamError | None: ...

    @property
    def final_response(self) -> dict[str, Any] | None:
        """The whole answer in the client's protocol once complete, where one is built (Responses)."""
        ...

    def take(self, event: SSEEvent) -> tuple[bytes, EventClass]:
        """The client bytes for one upstream event (maybe empty) and how the event counts."""
        ...

    def take_region(self, region: bytes) -> tuple[bytes, int]:
        """The client bytes for a run of whole upstream events (``SSEParser.feed_region``) once the
        stream is committed, and how many content events it held."""
        ...

    def finish(self) -> bytes:
        """Bytes owed when the upstream byte stream ends."""
        ...

    def error_event(self, err: IsthmusError) -> bytes: ...


class ModelRenamer:
    """Puts the public model name back into a passthrough answer in place of the upstream's.

    Clients compare the answer's model with the one they asked for (Claude Code drops its signed
    thinking blocks from the next turn when they differ), so the name the client used is the one it
    sees. A byte replacement of the JSON member keeps every other byte as the upstream sent it.
    """

    __slots__ = ("_pairs",)

    def __init__(self, upstream: str, public: str, seen: bytes | None = None) -> None:
        up, pub = orjson.dumps(upstream), orjson.dumps(public)
        pairs: tuple[tuple[bytes, bytes], ...] = (
            (b'"model":' + up, b'"model":' + pub),
            (b'"model": ' + up, b'"model": ' + pub),
        )
        # A stream's events come from one serializer: once an event shows which spelling it uses,
        # the rest of the stream is scanned for that one only (each spelling is a scan of every byte).
        if seen is not None:
            pairs = tuple(pair for pair in pairs if pair[0] in seen) or pairs
        self._pairs = pairs

    def __call__(self, data: bytes) -> bytes:
        for old, new in self._pairs:
            data = data.replace(old, new)  # one scan; the same object back when nothing matched
        return data


def _same(data: bytes) -> bytes:
    return data


def _take_each(adapter: StreamAdapter, region: bytes) -> tuple[bytes, int]:
    pieces: list[bytes] = []
    produced = 0
    for event in split_region(region):
        piece, kind = adapter.take(event)
        pieces.append(piece)
        if kind is EventClass.CONTENT:
            produced += 1
    return b"".join(pieces), produced


def renamer(upstream: object, public: str, seen: bytes | None = None) -> Callable[[bytes], bytes]:
    """What turns the upstream's name for the model (as its answer gives it) into the public one;
    ``seen``: the bytes that gave the name, to learn how the upstream spells the member."""
    if not isinstance(upstream, str) or upstream == public:
        return _same
    return ModelRenamer(upstream, public, seen)


class PassthroughStream:
    """Same protocol: events go out as they came (the model renamed); only OpenAI's extra usage
    chunk may be hidden. Once committed, a run of events that cannot change a billing fact goes out
    whole, unparsed."""

    __slots__ = ("_client", "_hide_usage", "_inspector", "_named", "_public", "outgoing")

    same_protocol = True

    def __init__(self, protocol: WireProtocol, hide_usage: bool, public_model: str) -> None:
        self._inspector = wire.new_inspector(protocol)
        self._client = protocol
        self._hide_usage = hide_usage
        self._public = public_model
        self._named = False  # the upstream's own name for the model has been seen
        self.outgoing: Callable[[bytes], bytes] = _same  # applied to whatever bytes go out

    @property
    def usage(self) -> Usage:
        return self._inspector.usage

    @property
    def finish_reason(self) -> str | None:
        return self._inspector.finish_reason

    @property
    def completed(self) -> bool:
        return self._inspector.completed

    @property
    def error(self) -> UpstreamStreamError | None:
        return self._inspector.error

    def take(self, event: SSEEvent) -> tuple[bytes, EventClass]:
        kind = self._inspector.inspect(event)
        if not self._named and self._inspector.model is not None:
            # The first event names the model (message_start, the first chunk, response.created).
            self._named = True
            self.outgoing = renamer(self._inspector.model, self._public, event.raw)
        if kind is EventClass.USAGE_ONLY and self._hide_usage:
            return b"", kind
        return self.outgoing(event.raw), kind

    def take_region(self, region: bytes) -> tuple[bytes, int]:
        end = self._inspector.plain_prefix(region)
        if end == 0:
            return _take_each(self, region)
        produced = count_blocks(region, end)
        if end == len(region):
            return self.outgoing(region), produced
        rest, more = _take_each(self, region[end:])
        return self.outgoing(region[:end]) + rest, produced + more

    def finish(self) -> bytes:
        return b""

    def error_event(self, err: IsthmusError) -> bytes:
        return wire.stream_error_event(self._client, err)

    @property
    def final_response(self) -> dict[str, Any] | None:
        return None  # the upstream itself keeps what it answered


class ConvertingStream:
    """Another protocol: each upstream event is decoded to IR events and re-encoded for the client."""

    __slots__ = ("_seen_content", "_translator")

    same_protocol = False

    def __init__(
        self,
        src: WireProtocol,
        dst: WireProtocol,
        *,
        model: str,
        include_usage: bool,
        request: ir.Request | None,
    ) -> None:
        self._translator = convert.StreamTranslator(
            src, dst, model=model, include_usage=include_usage, request=request
        )
        self._seen_content = False

    @property
    def usage(self) -> Usage:
        return self._translator.usage

    @property
    def finish_reason(self) -> str | None:
        return self._translator.finish_reason

    @property
    def completed(self) -> bool:
        return self._translator.completed

    @property
    def error(self) -> UpstreamStreamError | None:
        return self._translator.upstream_error

    def take(self, event: SSEEvent) -> tuple[bytes, EventClass]:
        translator = self._translator
        out = translator.feed(event)
        if translator.upstream_error is not None:
            return out, EventClass.ERROR
        if translator.saw_content and not self._seen_content:
            self._seen_content = True
            return out, EventClass.CONTENT
        if translator.completed:
            return out, EventClass.DONE
        return out, EventClass.CONTENT if self._seen_content else EventClass.META

    def take_region(self, region: bytes) -> tuple[bytes, int]:
        return _take_each(self, region)

    def finish(self) -> bytes:
        return self._translator.finish()

    def error_event(self, err: IsthmusError) -> bytes:
        return self._translator.error(err)

    @property
    def final_response(self) -> dict[str, Any] | None:
        return self._translator.final_response


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class Adapter:
    """How one attempt talks to its upstream: passthrough when protocols match, else conversion."""

    __slots__ = (
        "client",
        "converting",
        "hide_usage",
        "operation",
        "public_model",
        "request",
        "upstream",
    )

    def __init__(
        self, client: WireProtocol, upstream: WireProtocol, operation: Operation, public_model: str
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.operation = operation
        self.public_model = public_model
        self.converting = client is not upstream
        self.hide_usage = False
        self.request: ir.Request | None = None  # the client's request in IR, once decoded

    def request_body(self, body: dict[str, Any], raw: bytes, upstream_model: str, stream: bool) -> bytes:
        """The body for the upstream. Raises ``InvalidRequestError`` when a conversion would change
        the meaning of the request."""
        if self.converting:
            # Decoded once: the client's codec may need it again to shape the answer (Responses).
            self.request = convert.codec(self.client).decode_request(body)
            converted = convert.codec(self.upstream).encode_request(
                self.request, model=upstream_model, stream=stream
            )
            return orjson.dumps(converted)
        if self.client is WireProtocol.GEMINI:
            return raw  # the model travels in the URL
        if self.client is WireProtocol.OPENAI_CHAT and self.operation is Operation.GENERATE:
            new_body, asked = openai_chat.rewrite_request(raw, upstream_model, stream=stream, parsed=body)
            self.hide_usage = stream and not asked
            return new_body
        return rewrite_json_model(raw, upstream_model, body)

    def response_object(self, parsed: dict[str, Any]) -> dict[str, Any]:
        """The upstream's answer converted to the client's protocol (only when converting)."""
        return convert.convert_response(
            self.upstream, self.client, parsed, model=self.public_model, request=self.request
        )

    def stream(self, body: dict[str, Any]) -> StreamAdapter:
        if self.converting:
            return ConvertingStream(
                self.upstream,
                self.client,
                model=self.public_model,
                include_usage=_include_usage(body),
                request=self.request,
            )
        return PassthroughStream(self.upstream, self.hide_usage, self.public_model)
