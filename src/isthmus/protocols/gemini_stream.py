"""Gemini streams (``:streamGenerateContent?alt=sse``) to and from the IR, and the part helpers the
codec shares with them.

Each SSE chunk is a whole ``GenerateContentResponse`` carrying the next parts. The decoder joins
consecutive text chunks (thought or not) into one part, turns each ``functionCall`` into a complete
tool-call part (Gemini sends calls whole), and ends on the chunk with a ``finishReason``.

Function calls often come without ids: decoders make stable ones (``call_gm_…``, from the response
id and the call's position, or the message's position in a request), and encoders never send those
back to Gemini, which matches results to calls by name and order.

Reasoning made by another protocol reaches a Gemini client as visible thought text, and the part
itself, sealed with its text (:func:`isthmus.ir.reasoning.seal` ``with_text``), rides in the
``thoughtSignature`` of the next function call or text part: Gemini clients keep signatures on
those parts but may drop thought parts from their history.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from isthmus.ir import (
    AudioPart,
    DocumentPart,
    EncryptedReasoningPart,
    Finish,
    ImagePart,
    MediaSource,
    MessageStart,
    OpaquePart,
    Part,
    PartStart,
    PartStop,
    Protocol,
    ReasoningPart,
    RedactedThinkingPart,
    SignatureDelta,
    SourceKind,
    StopReason,
    StreamError,
    StreamEvent,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolArgumentsDelta,
    ToolCallPart,
    Usage,
    UsageUpdate,
)
from isthmus.ir.reasoning import seal, unseal
from isthmus.protocols.base import as_mapping
from isthmus.protocols.codec import arguments_object, as_str, dump_json
from isthmus.protocols.gemini import stream_error_event, upstream_error, usage_from_wire, usage_to_wire
from isthmus.protocols.sse import SSEEvent, encode_event

GEMINI = Protocol.GEMINI

STOP_FROM_WIRE: dict[str, StopReason] = {
    "STOP": StopReason.END_TURN,
    "MAX_TOKENS": StopReason.MAX_TOKENS,
    "SAFETY": StopReason.CONTENT_FILTER,
    "BLOCKLIST": StopReason.CONTENT_FILTER,
    "PROHIBITED_CONTENT": StopReason.CONTENT_FILTER,
    "SPII": StopReason.CONTENT_FILTER,
    "IMAGE_SAFETY": StopReason.CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": StopReason.CONTENT_FILTER,
    "MODEL_ARMOR": StopReason.CONTENT_FILTER,
    # RECITATION, LANGUAGE, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS,
    # OTHER, ...: StopReason.OTHER
}
STOP_TO_WIRE: dict[StopReason, str] = {
    StopReason.END_TURN: "STOP",
    StopReason.TOOL_USE: "STOP",
    StopReason.STOP_SEQUENCE: "STOP",
    StopReason.PAUSE: "STOP",
    StopReason.MAX_TOKENS: "MAX_TOKENS",
    StopReason.CONTENT_FILTER: "SAFETY",
    StopReason.REFUSAL: "SAFETY",
    StopReason.ERROR: "OTHER",
    StopReason.OTHER: "OTHER",
}
# Prompt-level blocks (promptFeedback.blockReason) are content filtering too.
BLOCK_STOP = StopReason.CONTENT_FILTER

SYNTHETIC_ID_PREFIX = "call_gm_"
_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def synthetic_id(scope: str, position: int) -> str:
    return f"{SYNTHETIC_ID_PREFIX}{_ID_UNSAFE.sub('_', scope)}_{position}"


def is_synthetic_id(call_id: str) -> bool:
    return call_id.startswith(SYNTHETIC_ID_PREFIX)


def stop_from_wire(reason: str | None, *, called_tools: bool) -> StopReason:
    if reason is None:
        return StopReason.TOOL_USE if called_tools else StopReason.END_TURN
    stop = STOP_FROM_WIRE.get(reason, StopReason.OTHER)
    if stop is StopReason.END_TURN and called_tools:
        return StopReason.TOOL_USE
    return stop


def field(part: Mapping[str, Any], camel: str, snake: str) -> Any:
    """A field by its JSON (camelCase) name or its proto (snake_case) name."""
    value = part.get(camel)
    return value if value is not None else part.get(snake)


def media_part(mime: str | None, source: MediaSource) -> Part:
    """Inline or file data as the IR part its media type says."""
    mime = mime or ""
    if mime.startswith("image/"):
        return ImagePart(source=source)
    if mime.startswith("audio/"):
        return AudioPart(source=source, format=mime.removeprefix("audio/"))
    if mime == "application/pdf" or mime.startswith("text/"):
        return DocumentPart(source=source)
    raise ValueError(mime)


class PartsBuilder:
    """One Gemini content's parts → IR parts: opens sealed envelopes, keeps Gemini signatures on
    their parts, hangs a signature-only empty text part on its neighbour, and gives function calls
    without ids stable synthetic ones."""

    __slots__ = ("calls", "parts", "pending_signature", "scope")

    def __init__(self, scope: str) -> None:
        self.parts: list[Part] = []
        self.pending_signature: str | None = None
        self.scope = scope  # for synthetic call ids
        self.calls = 0

    def _add(self, part: Part) -> None:
        if self.pending_signature is not None and isinstance(part, TextPart | ToolCallPart):
            part.thought_signature = self.pending_signature
            self.pending_signature = None
        self.parts.append(part)

    def _opened(self, signature: str | None, text: str) -> str | None:
        """Add the reasoning part a sealed signature carries; return the signature when it was
        Gemini's own (to keep on its part), else None."""
        if not signature:
            return None
        sealed = unseal(signature, text=text)
        if sealed is None:
            return signature
        self.parts.append(sealed.part)
        return None

    def add(self, raw: Mapping[str, Any]) -> None:
        signature = as_str(field(raw, "thoughtSignature", "thought_signature"))
        call = field(raw, "functionCall", "function_call")
        text = raw.get("text")
        if isinstance(call, Mapping):
            own = self._opened(signature, "")
            call_id = as_str(call.get("id")) or synthetic_id(self.scope, self.calls)
            self.calls += 1
            args = call.get("args")
            self._add(
                ToolCallPart(
                    id=call_id,
                    name=str(call.get("name", "")),
                    arguments=dump_json(args) if args is not None else "",
                    thought_signature=own,
                )
            )
        elif isinstance(text, str):
            if raw.get("thought") is True:
                sealed = unseal(signature, text=text) if signature else None
                if sealed is not None:
                    self.parts.append(sealed.part)
                else:
                    self.parts.append(ThinkingPart(text=text, signature=signature, origin=GEMINI))
                return
            own = self._opened(signature, "")
            if text:
                self._add(TextPart(text=text, thought_signature=own))
            elif own is not None:  # a signature on an empty text part belongs to a neighbour
                self._attach(own)
        elif isinstance(field(raw, "inlineData", "inline_data"), Mapping):
            blob = as_mapping(field(raw, "inlineData", "inline_data"))
            mime = as_str(field(blob, "mimeType", "mime_type"))
            source = MediaSource(kind=SourceKind.BASE64, data=str(blob.get("data", "")), media_type=mime)
            self._media(mime, source, raw)
        elif isinstance(field(raw, "fileData", "file_data"), Mapping):
            data = as_mapping(field(raw, "fileData", "file_data"))
            mime = as_str(field(data, "mimeType", "mime_type"))
            uri = str(field(data, "fileUri", "file_uri") or "")
            self._media(mime, MediaSource(kind=SourceKind.URL, data=uri, media_type=mime), raw)
        elif raw:
            kind = next(iter(k for k in raw if k not in ("thoughtSignature", "thought_signature")), "part")
            self.parts.append(OpaquePart(type=kind, data=dict(raw), origin=GEMINI))

    def _media(self, mime: str | None, source: MediaSource, raw: Mapping[str, Any]) -> None:
        try:
            self.parts.append(media_part(mime, source))
        except ValueError:  # video and other media: only Gemini carries them
            self.parts.append(OpaquePart(type="inlineData", data=dict(raw), origin=GEMINI))

    def _attach(self, signature: str) -> None:
        for part in reversed(self.parts):
            if isinstance(part, TextPart | ToolCallPart) and part.thought_signature is None:
                part.thought_signature = signature
                return
        self.pending_signature = signature


# --- encoding parts for a Gemini client -------------------------------------------------------


def sealed_signature(part: ReasoningPart) -> str:
    return seal(part, with_text=True)


def visible_thought(part: ReasoningPart) -> dict[str, Any] | None:
    """The readable text of a reasoning part as a thought part (None when there is none)."""
    if isinstance(part, ThinkingPart):
        text = part.text
    elif isinstance(part, EncryptedReasoningPart):
        text = "\n\n".join(part.summary or part.content)
    else:
        text = ""
    return {"text": text, "thought": True} if text else None


def call_part(part: ToolCallPart, signature: str | None) -> dict[str, Any]:
    call: dict[str, Any] = {"name": part.name, "args": arguments_object(part.arguments)}
    if part.id:
        call = {"id": part.id, **call}
    out: dict[str, Any] = {"functionCall": call}
    if signature:
        out["thoughtSignature"] = signature
    return out


def client_parts(parts: list[Part]) -> list[dict[str, Any]]:
    """A response's parts for a Gemini client."""
    out: list[dict[str, Any]] = []
    pending: str | None = None  # a sealed foreign reasoning part waiting for its carrier
    for part in parts:
        if isinstance(part, ThinkingPart) and part.origin is GEMINI:
            thought: dict[str, Any] = {"text": part.text, "thought": True}
            if part.signature:
                thought["thoughtSignature"] = part.signature
            out.append(thought)
        elif isinstance(part, ThinkingPart | RedactedThinkingPart | EncryptedReasoningPart):
            visible = visible_thought(part)
            if visible is not None:
                out.append(visible)
            if pending is not None:  # two in a row: the first waits on an empty part of its own
                out.append({"text": "", "thoughtSignature": pending})
            pending = sealed_signature(part)
        elif isinstance(part, TextPart):
            text: dict[str, Any] = {"text": part.text}
            signature = part.thought_signature or pending
            if signature:
                text["thoughtSignature"] = signature
                pending = None if part.thought_signature is None else pending
            out.append(text)
        elif isinstance(part, ToolCallPart):
            signature = part.thought_signature or pending
            if part.thought_signature is None:
                pending = None
            out.append(call_part(part, signature))
        elif isinstance(part, ImagePart) and part.source.kind is SourceKind.BASE64:
            out.append(
                {"inlineData": {"mimeType": part.source.media_type or "image/png", "data": part.source.data}}
            )
        elif isinstance(part, OpaquePart) and part.origin is GEMINI:
            out.append(dict(part.data))
    if pending is not None:
        out.append({"text": "", "thoughtSignature": pending})
    return out


def candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"content": {"role": "model", "parts": parts or [{"text": ""}]}, "index": 0}
    if finish is not None:
        out["finishReason"] = finish
    return out


# --- decoding a Gemini stream -----------------------------------------------------------------


class GeminiStreamDecoder:
    """Gemini SSE chunks → IR events."""

    def __init__(self) -> None:
        self._next = 0
        self._open: tuple[int, str] | None = None  # (part index, "text" | "thought")
        self._started = False
        self._done = False
        self._calls = 0
        self._usage: Usage | None = None
        self._scope = ""

    def _new(self) -> int:
        index = self._next
        self._next += 1
        return index

    def _close(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        index, _ = self._open
        self._open = None
        return [PartStop(index=index)]

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if not event.data or self._done:
            return []
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk:
            self._done = True
            return [*self._close(), StreamError(error=upstream_error(chunk, event.data))]
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            self._scope = str(field(chunk, "responseId", "response_id") or uuid.uuid4().hex[:16])
            model = str(field(chunk, "modelVersion", "model_version") or "")
            out.append(MessageStart(id=self._scope, model=model))
        usage = field(chunk, "usageMetadata", "usage_metadata")
        if isinstance(usage, Mapping):
            self._usage = usage_from_wire(usage)
        candidates = chunk.get("candidates")
        first = as_mapping(candidates[0]) if isinstance(candidates, list) and candidates else {}
        for raw in as_mapping(first.get("content")).get("parts") or ():
            out.extend(self._part(as_mapping(raw)))
        reason = as_str(field(first, "finishReason", "finish_reason"))
        block = as_str(as_mapping(field(chunk, "promptFeedback", "prompt_feedback")).get("blockReason"))
        if reason is None and not first and block:
            reason = "SAFETY"
        if reason is not None:
            self._done = True
            out.extend(self._close())
            stop = BLOCK_STOP if block and not first else stop_from_wire(reason, called_tools=self._calls > 0)
            out.append(Finish(stop_reason=stop, usage=self._usage))
        elif isinstance(usage, Mapping) and self._usage is not None:
            out.append(UsageUpdate(usage=replace(self._usage)))
        return out

    def _part(self, raw: Mapping[str, Any]) -> list[StreamEvent]:
        signature = as_str(field(raw, "thoughtSignature", "thought_signature"))
        text = raw.get("text")
        call = field(raw, "functionCall", "function_call")
        if isinstance(text, str) and not isinstance(call, Mapping):
            kind = "thought" if raw.get("thought") is True else "text"
            out: list[StreamEvent] = []
            if self._open is None or self._open[1] != kind:
                if not text and signature and self._open is not None:
                    return [SignatureDelta(index=self._open[0], signature=signature)]
                out.extend(self._close())
                index = self._new()
                self._open = (index, kind)
                part: Part = ThinkingPart(text="", origin=GEMINI) if kind == "thought" else TextPart(text="")
                out.append(PartStart(index=index, part=part))
            index = self._open[0]
            if text:
                out.append(
                    ThinkingDelta(index=index, text=text)
                    if kind == "thought"
                    else TextDelta(index=index, text=text)
                )
            if signature:
                out.append(SignatureDelta(index=index, signature=signature))
            return out
        out = self._close()
        builder = PartsBuilder(self._scope)
        builder.calls = self._calls
        builder.add(raw)
        self._calls = builder.calls
        for part in builder.parts:
            index = self._new()
            if isinstance(part, ToolCallPart):
                arguments = part.arguments
                out.append(PartStart(index=index, part=replace(part, arguments="")))
                if arguments:
                    out.append(ToolArgumentsDelta(index=index, fragment=arguments))
                out.append(PartStop(index=index, part=part))
            else:
                out.extend((PartStart(index=index, part=part), PartStop(index=index)))
        return out

    def finish(self) -> list[StreamEvent]:
        return []


# --- encoding a Gemini stream -----------------------------------------------------------------


class _Open:
    __slots__ = ("buffer", "kind", "part", "signature")

    def __init__(self, kind: str, part: Part) -> None:
        self.kind = kind  # "text" | "thought" | "foreign" | "call"
        self.part = part
        self.buffer = ""  # a call's arguments, or a foreign thinking part's text
        self.signature: str | None = None


class GeminiStreamEncoder:
    """IR events → Gemini SSE chunks, each a ``GenerateContentResponse`` with the new parts and the
    usage known so far; the last one carries the ``finishReason`` and the final usage."""

    def __init__(self, *, model: str, include_usage: bool = True) -> None:
        self._model = model
        self._id = uuid.uuid4().hex[:22]
        self._usage = Usage()
        self._open: dict[int, _Open | None] = {}
        self._pending: str | None = None  # sealed foreign reasoning waiting for a carrier part

    def _chunk(self, parts: list[dict[str, Any]], finish: str | None = None) -> bytes:
        body = {
            "candidates": [candidate(parts, finish)],
            "usageMetadata": usage_to_wire(self._usage),
            "modelVersion": self._model,
            "responseId": self._id,
        }
        return encode_event(body)

    def _carry(self, part: dict[str, Any]) -> dict[str, Any]:
        if self._pending is not None and "thoughtSignature" not in part:
            part["thoughtSignature"] = self._pending
            self._pending = None
        return part

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, MessageStart):
            if event.id:
                self._id = _ID_UNSAFE.sub("", event.id)[:64] or self._id
            self._usage = replace(event.usage)
            return b""
        if isinstance(event, PartStart):
            return self._start(event.index, event.part)
        if isinstance(event, TextDelta | ThinkingDelta):
            open_part = self._open.get(event.index)
            if open_part is None or not event.text:
                return b""
            if open_part.kind == "text":
                return self._chunk([self._carry({"text": event.text})])
            if open_part.kind in ("thought", "foreign"):
                open_part.buffer += event.text
                return self._chunk([{"text": event.text, "thought": True}])
            return b""
        if isinstance(event, ToolArgumentsDelta):
            open_part = self._open.get(event.index)
            if open_part is not None and open_part.kind == "call":
                open_part.buffer += event.fragment
            return b""
        if isinstance(event, SignatureDelta):
            open_part = self._open.get(event.index)
            if open_part is not None:
                open_part.signature = event.signature
            return b""
        if isinstance(event, PartStop):
            return self._stop(event.index, event.part)
        if isinstance(event, UsageUpdate):
            self._usage = replace(event.usage)
            return b""
        if isinstance(event, Finish):
            if event.usage is not None:
                self._usage = replace(event.usage)
            parts: list[dict[str, Any]] = []
            if self._pending is not None:
                parts.append({"text": "", "thoughtSignature": self._pending})
                self._pending = None
            return self._chunk(parts, STOP_TO_WIRE[event.stop_reason])
        if isinstance(event, StreamError):
            return stream_error_event(event.error)
        return b""

    def _start(self, index: int, part: Part) -> bytes:
        if isinstance(part, TextPart):
            self._open[index] = _Open("text", part)
            self._open[index].signature = part.thought_signature  # type: ignore[union-attr]
            return self._chunk([self._carry({"text": part.text})]) if part.text else b""
        if isinstance(part, ThinkingPart) and part.origin is GEMINI:
            self._open[index] = _Open("thought", part)
            self._open[index].signature = part.signature  # type: ignore[union-attr]
            return self._chunk([{"text": part.text, "thought": True}]) if part.text else b""
        if isinstance(part, ThinkingPart | EncryptedReasoningPart):
            self._open[index] = open_part = _Open("foreign", part)
            if isinstance(part, ThinkingPart) and part.text:
                open_part.buffer = part.text
                return self._chunk([{"text": part.text, "thought": True}])
            return b""
        if isinstance(part, RedactedThinkingPart):
            self._open[index] = None
            return self._hold(sealed_signature(part))
        if isinstance(part, ToolCallPart):
            self._open[index] = open_part = _Open("call", part)
            open_part.buffer = part.arguments
            open_part.signature = part.thought_signature
            return b""
        self._open[index] = None
        if isinstance(part, ImagePart) and part.source.kind is SourceKind.BASE64:
            blob = {"mimeType": part.source.media_type or "image/png", "data": part.source.data}
            return self._chunk([{"inlineData": blob}])
        if isinstance(part, OpaquePart) and part.origin is GEMINI:
            return self._chunk([dict(part.data)])
        return b""

    def _hold(self, sealed: str) -> bytes:
        """Keep a sealed part for the next carrier; a second one flushes the first on its own."""
        out = b""
        if self._pending is not None:
            out = self._chunk([{"text": "", "thoughtSignature": self._pending}])
        self._pending = sealed
        return out

    def _stop(self, index: int, final: Part | None) -> bytes:
        open_part = self._open.pop(index, None)
        if open_part is None:
            return b""
        if open_part.kind == "call":
            part = open_part.part
            assert isinstance(part, ToolCallPart)
            call = replace(part, arguments=open_part.buffer)
            signature = open_part.signature
            if signature is None and self._pending is not None:
                signature, self._pending = self._pending, None
            return self._chunk([call_part(call, signature)])
        if open_part.kind in ("text", "thought") and open_part.signature:
            empty: dict[str, Any] = {"text": "", "thoughtSignature": open_part.signature}
            if open_part.kind == "thought":
                empty["thought"] = True
            return self._chunk([empty])
        if open_part.kind == "foreign":
            part = final if isinstance(final, ThinkingPart | EncryptedReasoningPart) else open_part.part
            out = b""
            if isinstance(part, ThinkingPart):
                signature = part.signature or open_part.signature
                part = ThinkingPart(
                    text=open_part.buffer or part.text, signature=signature, origin=part.origin
                )
            elif isinstance(part, EncryptedReasoningPart) and not open_part.buffer:
                visible = visible_thought(part)  # its summary came only with the finished part
                out += self._chunk([visible]) if visible is not None else b""
            assert isinstance(part, ThinkingPart | EncryptedReasoningPart)
            return out + self._hold(sealed_signature(part))
        return b""
