"""Anthropic Messages streams to and from the IR, and the block helpers the codec shares with them.

The decoder keeps Anthropic's block indices as part indices (the API numbers blocks 0, 1, 2, ... in
order, as the IR does). The encoder writes what the API writes: ``message_start``, a ``ping`` right
after the first block opens, dense block indices (parts this wire cannot show are skipped), then
``message_delta`` with the stop reason and cumulative usage, and ``message_stop``. Reasoning made by
another protocol is streamed as a thinking block whose signature (a sealed envelope) is sent just
before the block closes, once everything it seals is known.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from isthmus.ir import (
    EncryptedReasoningPart,
    Finish,
    MessageStart,
    OpaquePart,
    Part,
    PartStart,
    PartStop,
    Protocol,
    RedactedThinkingPart,
    SignatureDelta,
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
from isthmus.ir.reasoning import seal
from isthmus.protocols.anthropic import (
    _apply_delta_usage,
    stream_error_event,
    upstream_error,
    usage_from_wire,
    usage_to_wire,
)
from isthmus.protocols.base import as_mapping
from isthmus.protocols.codec import as_str, dump_json
from isthmus.protocols.sse import SSEEvent, encode_event

ANTHROPIC = Protocol.ANTHROPIC

STOP_FROM_WIRE: dict[str, StopReason] = {
    "end_turn": StopReason.END_TURN,
    "max_tokens": StopReason.MAX_TOKENS,
    "model_context_window_exceeded": StopReason.MAX_TOKENS,
    "stop_sequence": StopReason.STOP_SEQUENCE,
    "tool_use": StopReason.TOOL_USE,
    "pause_turn": StopReason.PAUSE,
    "refusal": StopReason.REFUSAL,
}
STOP_TO_WIRE: dict[StopReason, str] = {
    StopReason.END_TURN: "end_turn",
    StopReason.MAX_TOKENS: "max_tokens",
    StopReason.STOP_SEQUENCE: "stop_sequence",
    StopReason.TOOL_USE: "tool_use",
    StopReason.CONTENT_FILTER: "refusal",
    StopReason.REFUSAL: "refusal",
    StopReason.PAUSE: "pause_turn",
    StopReason.ERROR: "end_turn",
    StopReason.OTHER: "end_turn",
}
_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def tool_id(call_id: str) -> str:
    """A tool-use id Anthropic accepts (``^[a-zA-Z0-9_-]+$``); the same input always maps alike, so
    a call and its result still match."""
    safe = _ID_UNSAFE.sub("_", call_id)
    return safe or "toolu_unnamed"


def message_id(resp_id: str) -> str:
    return resp_id or f"msg_{uuid.uuid4().hex[:24]}"


def sealed_thinking(part: ThinkingPart | RedactedThinkingPart | EncryptedReasoningPart) -> dict[str, Any]:
    """A foreign reasoning part as a thinking block the client will hand back intact."""
    if isinstance(part, ThinkingPart):
        text = part.text
    elif isinstance(part, EncryptedReasoningPart):
        text = "\n\n".join(part.summary or part.content)
    else:
        text = ""
    return {"type": "thinking", "thinking": text, "signature": seal(part)}


def signature_carrier(signature: str, attach: str) -> dict[str, Any]:
    carrier = ThinkingPart(text="", signature=signature, origin=Protocol.GEMINI)
    return {"type": "thinking", "thinking": "", "signature": seal(carrier, attach=attach)}


class AnthropicStreamDecoder:
    """Messages SSE → IR events. Block indices are kept as part indices (Anthropic numbers its
    blocks 0, 1, 2, ... in order, as the IR does)."""

    __slots__ = ("_finished", "_stop", "_stop_sequence", "_usage")

    def __init__(self) -> None:
        self._usage = Usage()
        self._stop: StopReason = StopReason.END_TURN
        self._stop_sequence: str | None = None
        self._finished = False

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if not event.data or event.event == "ping":
            return []
        try:
            data = event.json()
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        kind = event.event or data.get("type")
        if kind == "content_block_delta":
            return self._delta(int(data.get("index", 0)), as_mapping(data.get("delta")))
        if kind == "content_block_start":
            return self._start(int(data.get("index", 0)), as_mapping(data.get("content_block")))
        if kind == "content_block_stop":
            return [PartStop(index=int(data.get("index", 0)))]
        if kind == "message_start":
            message = as_mapping(data.get("message"))
            self._usage = usage_from_wire(as_mapping(message.get("usage")))
            return [
                MessageStart(
                    id=str(message.get("id", "")),
                    model=str(message.get("model", "")),
                    usage=replace(self._usage),
                )
            ]
        if kind == "message_delta":
            delta = as_mapping(data.get("delta"))
            reason = as_str(delta.get("stop_reason"))
            if reason is not None:
                self._stop = STOP_FROM_WIRE.get(reason, StopReason.OTHER)
            self._stop_sequence = as_str(delta.get("stop_sequence")) or self._stop_sequence
            _apply_delta_usage(self._usage, as_mapping(data.get("usage")))
            return [UsageUpdate(usage=replace(self._usage))]
        if kind == "message_stop":
            self._finished = True
            return [
                Finish(stop_reason=self._stop, usage=replace(self._usage), stop_sequence=self._stop_sequence)
            ]
        if kind == "error":
            return [StreamError(error=upstream_error(data, event.data))]
        return []

    def _start(self, index: int, block: Mapping[str, Any]) -> list[StreamEvent]:
        kind = block.get("type")
        if kind == "text":
            out: list[StreamEvent] = [PartStart(index=index, part=TextPart(text=""))]
            if block.get("text"):
                out.append(TextDelta(index=index, text=str(block["text"])))
            return out
        if kind == "thinking":
            out = [PartStart(index=index, part=ThinkingPart(text="", origin=ANTHROPIC))]
            if block.get("thinking"):
                out.append(ThinkingDelta(index=index, text=str(block["thinking"])))
            if block.get("signature"):
                out.append(SignatureDelta(index=index, signature=str(block["signature"])))
            return out
        if kind == "redacted_thinking":
            return [
                PartStart(
                    index=index, part=RedactedThinkingPart(data=str(block.get("data", "")), origin=ANTHROPIC)
                )
            ]
        if kind == "tool_use":
            part = ToolCallPart(id=str(block.get("id", "")), name=str(block.get("name", "")))
            out = [PartStart(index=index, part=part)]
            tool_input = block.get("input")
            if isinstance(tool_input, Mapping) and tool_input:
                out.append(ToolArgumentsDelta(index=index, fragment=dump_json(tool_input)))
            return out
        return [PartStart(index=index, part=OpaquePart(type=str(kind), data=dict(block), origin=ANTHROPIC))]

    def _delta(self, index: int, delta: Mapping[str, Any]) -> list[StreamEvent]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [TextDelta(index=index, text=str(delta.get("text", "")))]
        if kind == "thinking_delta":
            return [ThinkingDelta(index=index, text=str(delta.get("thinking", "")))]
        if kind == "signature_delta":
            return [SignatureDelta(index=index, signature=str(delta.get("signature", "")))]
        if kind == "input_json_delta":
            return [ToolArgumentsDelta(index=index, fragment=str(delta.get("partial_json", "")))]
        return []  # citations_delta and future deltas: not carried

    def finish(self) -> list[StreamEvent]:
        return []


class _OpenBlock:
    __slots__ = ("kind", "part", "signature", "wire")

    def __init__(self, wire: int, kind: str, part: Part) -> None:
        self.wire = wire  # the Anthropic block index
        self.kind = kind  # "text" | "thinking" | "sealed" | "tool_use" | "opaque"
        self.part = part
        self.signature: str | None = None  # a foreign signature to seal at stop


class AnthropicStreamEncoder:
    """IR events → Messages SSE, as the API sends it: ``message_start``, ``ping`` after the first
    block opens, blocks numbered densely (parts this wire cannot show are skipped), then
    ``message_delta`` with the stop reason and cumulative usage, and ``message_stop``."""

    def __init__(self, *, model: str, include_usage: bool = True) -> None:
        self._model = model
        self._usage = Usage()
        self._blocks: dict[int, _OpenBlock | None] = {}
        self._next_wire = 0
        self._pinged = False
        self._started = False

    def _start_message(self, msg_id: str, usage: Usage) -> bytes:
        self._started = True
        self._usage = replace(usage)
        message: dict[str, Any] = {
            "id": message_id(msg_id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_to_wire(usage),
        }
        return encode_event({"type": "message_start", "message": message}, "message_start")

    def _open(self, block: dict[str, Any]) -> tuple[int, bytes]:
        wire = self._next_wire
        self._next_wire += 1
        out = encode_event(
            {"type": "content_block_start", "index": wire, "content_block": block}, "content_block_start"
        )
        if not self._pinged:
            self._pinged = True
            out += encode_event({"type": "ping"}, "ping")
        return wire, out

    def _whole_block(self, block: dict[str, Any]) -> bytes:
        """A block that opens and closes at once (signature carriers, redacted thinking)."""
        wire, out = self._open({**block, "signature": ""} if block["type"] == "thinking" else block)
        if block["type"] == "thinking":
            out += self._delta(wire, {"type": "signature_delta", "signature": block["signature"]})
        return out + encode_event({"type": "content_block_stop", "index": wire}, "content_block_stop")

    @staticmethod
    def _delta(wire: int, delta: dict[str, Any]) -> bytes:
        return encode_event(
            {"type": "content_block_delta", "index": wire, "delta": delta}, "content_block_delta"
        )

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, MessageStart):
            return self._start_message(event.id, event.usage)
        prefix = b"" if self._started or isinstance(event, StreamError) else self._start_message("", Usage())
        return prefix + self._encode(event)

    def _encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, PartStart):
            return self._part_start(event.index, event.part)
        if isinstance(event, TextDelta | ThinkingDelta | ToolArgumentsDelta | SignatureDelta):
            block = self._blocks.get(event.index)
            if block is None:
                return b""
            if isinstance(event, TextDelta) and block.kind == "text":
                return self._delta(block.wire, {"type": "text_delta", "text": event.text})
            if isinstance(event, ThinkingDelta) and block.kind in ("thinking", "sealed"):
                return self._delta(block.wire, {"type": "thinking_delta", "thinking": event.text})
            if (
                isinstance(event, ToolArgumentsDelta)
                and block.kind in ("tool_use", "opaque")
                and event.fragment
            ):
                return self._delta(block.wire, {"type": "input_json_delta", "partial_json": event.fragment})
            if isinstance(event, SignatureDelta):
                if block.kind == "thinking":
                    return self._delta(block.wire, {"type": "signature_delta", "signature": event.signature})
                block.signature = event.signature
            return b""
        if isinstance(event, PartStop):
            return self._part_stop(event.index, event.part)
        if isinstance(event, UsageUpdate):
            self._usage = replace(event.usage)
            return b""
        if isinstance(event, Finish):
            if event.usage is not None:
                self._usage = replace(event.usage)
            usage = usage_to_wire(self._usage)
            usage.pop("service_tier", None)
            delta = {"stop_reason": STOP_TO_WIRE[event.stop_reason], "stop_sequence": event.stop_sequence}
            return encode_event(
                {"type": "message_delta", "delta": delta, "usage": usage}, "message_delta"
            ) + encode_event({"type": "message_stop"}, "message_stop")
        if isinstance(event, StreamError):
            return stream_error_event(event.error)
        return b""

    def _part_start(self, index: int, part: Part) -> bytes:
        out = b""
        if isinstance(part, TextPart):
            wire, out = self._open({"type": "text", "text": ""})
            self._blocks[index] = _OpenBlock(wire, "text", part)
            if part.text:
                out += self._delta(wire, {"type": "text_delta", "text": part.text})
            self._blocks[index].signature = part.thought_signature  # type: ignore[union-attr]
            return out
        if isinstance(part, ThinkingPart | EncryptedReasoningPart):
            native = isinstance(part, ThinkingPart) and part.origin is ANTHROPIC
            wire, out = self._open({"type": "thinking", "thinking": "", "signature": ""})
            self._blocks[index] = _OpenBlock(wire, "thinking" if native else "sealed", part)
            if isinstance(part, ThinkingPart) and part.text:
                out += self._delta(wire, {"type": "thinking_delta", "thinking": part.text})
            if isinstance(part, ThinkingPart) and part.signature:
                if native:
                    out += self._delta(wire, {"type": "signature_delta", "signature": part.signature})
                else:
                    self._blocks[index].signature = part.signature  # type: ignore[union-attr]
            return out
        if isinstance(part, RedactedThinkingPart):
            self._blocks[index] = None
            if part.origin is ANTHROPIC:
                return self._whole_block({"type": "redacted_thinking", "data": part.data})
            return self._whole_block(sealed_thinking(part))
        if isinstance(part, ToolCallPart):
            if part.thought_signature:
                out = self._whole_block(signature_carrier(part.thought_signature, "next"))
            wire, opened = self._open(
                {"type": "tool_use", "id": tool_id(part.id), "name": part.name, "input": {}}
            )
            self._blocks[index] = _OpenBlock(wire, "tool_use", part)
            out += opened
            if part.arguments:
                out += self._delta(wire, {"type": "input_json_delta", "partial_json": part.arguments})
            return out
        if isinstance(part, OpaquePart) and part.origin is ANTHROPIC:
            wire, out = self._open(dict(part.data))
            self._blocks[index] = _OpenBlock(wire, "opaque", part)
            return out
        self._blocks[index] = None  # images, audio, foreign opaque parts: not shown on this wire
        return b""

    def _part_stop(self, index: int, final: Part | None) -> bytes:
        block = self._blocks.pop(index, None)
        if block is None:
            return b""
        out = b""
        if block.kind == "sealed":
            part = final if isinstance(final, ThinkingPart | EncryptedReasoningPart) else block.part
            if isinstance(part, ThinkingPart) and block.signature is not None:
                part = ThinkingPart(text="", signature=block.signature, origin=part.origin)
            assert isinstance(part, ThinkingPart | EncryptedReasoningPart)
            out += self._delta(block.wire, {"type": "signature_delta", "signature": seal(part)})
        out += encode_event({"type": "content_block_stop", "index": block.wire}, "content_block_stop")
        if block.kind in ("text", "tool_use") and block.signature:
            out += self._whole_block(signature_carrier(block.signature, "previous"))
        return out
