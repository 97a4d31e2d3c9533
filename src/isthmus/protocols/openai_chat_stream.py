"""OpenAI Chat Completions streams to and from the IR, and the tables the codec shares with them.

Decoding: Chat numbers only tool calls (``tool_calls[].index``); text (``content``/``refusal``) and
vendor reasoning (``reasoning_content``, ``reasoning``) are unnumbered. The decoder opens one IR part
per run of text or reasoning and one per tool call, closing the open text/reasoning part when the
kind changes and a tool call when the next one starts; everything open closes at the finish. Only
choice 0 is read. ``[DONE]`` is the terminal event (a stream that ends after a ``finish_reason`` but
without ``[DONE]`` is finished too: some compatible vendors never send it).

Encoding: a role chunk first (``{"role":"assistant","content":""}``), then one chunk per delta, tool
calls numbered from 0 in the order they start, a finish chunk, the usage chunk when the client asked
for ``stream_options.include_usage`` (every chunk then carries ``"usage": null`` as OpenAI's do), and
``data: [DONE]``. Reasoning goes out as ``reasoning_content`` deltas (the convention of
DeepSeek-style vendors; the openai SDK keeps it as an extra field); signatures have no slot here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from isthmus.ir import (
    EncryptedReasoningPart,
    Finish,
    MessageStart,
    PartStart,
    PartStop,
    Protocol,
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
from isthmus.protocols.base import as_int, as_mapping
from isthmus.protocols.codec import as_str
from isthmus.protocols.openai_chat import stream_error_event, usage_from_wire, usage_to_wire
from isthmus.protocols.openai_common import upstream_error_from_object
from isthmus.protocols.sse import DONE_EVENT, SSEEvent

OPENAI_CHAT = Protocol.OPENAI_CHAT

FINISH_FROM_WIRE: dict[str, StopReason] = {
    "stop": StopReason.END_TURN,
    "eos": StopReason.END_TURN,
    "length": StopReason.MAX_TOKENS,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
    "content_filter": StopReason.CONTENT_FILTER,
}
FINISH_TO_WIRE: dict[StopReason, str] = {
    StopReason.END_TURN: "stop",
    StopReason.MAX_TOKENS: "length",
    StopReason.STOP_SEQUENCE: "stop",
    StopReason.TOOL_USE: "tool_calls",
    StopReason.CONTENT_FILTER: "content_filter",
    StopReason.REFUSAL: "content_filter",
    StopReason.PAUSE: "stop",
    StopReason.ERROR: "stop",
    StopReason.OTHER: "stop",
}
# Vendor fields carrying reasoning text in assistant messages and deltas, in order of preference.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def stop_from_wire(reason: str | None) -> StopReason:
    if reason is None:
        return StopReason.END_TURN
    return FINISH_FROM_WIRE.get(reason, StopReason.OTHER)


def completion_id(resp_id: str) -> str:
    return resp_id or f"chatcmpl-{uuid.uuid4().hex[:24]}"


def reasoning_text(message: Mapping[str, Any]) -> str | None:
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return None


class ChatStreamDecoder:
    __slots__ = ("_done", "_finish", "_next", "_open", "_started", "_text_kind", "_tools", "_usage")

    def __init__(self) -> None:
        self._started = False
        self._next = 0  # next part index
        self._open: int | None = None  # index of the open text/reasoning part
        self._text_kind = ""  # "text" | "thinking" for the open part
        self._tools: dict[int, int] = {}  # wire tool-call index -> part index, while open
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._done = False

    def _new_part(self) -> int:
        index = self._next
        self._next += 1
        return index

    def _close_text(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        return [PartStop(index=index)]

    def _close_all(self) -> list[StreamEvent]:
        out = self._close_text()
        out.extend(PartStop(index=i) for i in self._tools.values())
        self._tools.clear()
        return out

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        data = event.data
        if not data or self._done:
            return []
        if data.startswith(b"[DONE]"):
            return self._end()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(chunk, dict):
            return []
        error = chunk.get("error")
        if error:
            obj = error if isinstance(error, Mapping) else {"message": str(error)}
            self._done = True
            return [StreamError(error=upstream_error_from_object(obj, data))]
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(
                MessageStart(
                    id=str(chunk.get("id", "")),
                    model=str(chunk.get("model", "")),
                    created=as_int(chunk.get("created")),
                )
            )
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                c = as_mapping(choice)
                if as_int(c.get("index")) != 0:
                    continue
                out.extend(self._delta(as_mapping(c.get("delta"))))
                reason = as_str(c.get("finish_reason"))
                if reason:
                    self._finish = reason
                    out.extend(self._close_all())
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._usage = usage_from_wire(usage)
            out.append(UsageUpdate(usage=self._usage))
        return out

    def _text(self, kind: str, text: str) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self._open is None or self._text_kind != kind:
            out.extend(self._close_text())
            if self._tools:  # text after tool calls: those calls are complete
                out.extend(PartStop(index=i) for i in self._tools.values())
                self._tools.clear()
            self._open = self._new_part()
            self._text_kind = kind
            part = TextPart(text="") if kind == "text" else ThinkingPart(text="", origin=OPENAI_CHAT)
            out.append(PartStart(index=self._open, part=part))
        if kind == "text":
            out.append(TextDelta(index=self._open, text=text))
        else:
            out.append(ThinkingDelta(index=self._open, text=text))
        return out

    def _delta(self, delta: Mapping[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        thinking = reasoning_text(delta)
        if thinking:
            out.extend(self._text("thinking", thinking))
        for name in ("content", "refusal"):
            text = delta.get(name)
            if isinstance(text, str) and text:
                out.extend(self._text("text", text))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                out.extend(self._tool_call(position, as_mapping(call)))
        return out

    def _tool_call(self, position: int, call: Mapping[str, Any]) -> list[StreamEvent]:
        wire = call.get("index")
        # Some compatible vendors omit the index and send each call whole: count them instead.
        wire_index = wire if isinstance(wire, int) else len(self._tools) + position
        function = as_mapping(call.get("function") or call.get("custom"))
        arguments = function.get("arguments", function.get("input"))
        out: list[StreamEvent] = []
        index = self._tools.get(wire_index)
        if index is None:
            out.extend(self._close_text())
            for open_index in list(self._tools.values()):  # the previous call is complete
                out.append(PartStop(index=open_index))
            self._tools.clear()
            index = self._new_part()
            self._tools[wire_index] = index
            call_id = as_str(call.get("id")) or f"call_{uuid.uuid4().hex[:24]}"
            kind = "custom" if call.get("type") == "custom" else "function"
            part = ToolCallPart(id=call_id, name=str(function.get("name", "")), kind=kind)
            out.append(PartStart(index=index, part=part))
        if isinstance(arguments, str) and arguments:
            out.append(ToolArgumentsDelta(index=index, fragment=arguments))
        return out

    def _end(self) -> list[StreamEvent]:
        self._done = True
        out = self._close_all()
        out.append(Finish(stop_reason=stop_from_wire(self._finish), usage=self._usage))
        return out

    def finish(self) -> list[StreamEvent]:
        if self._done or self._finish is None:
            return []
        return self._end()


class ChatStreamEncoder:
    __slots__ = ("_base", "_custom", "_include_usage", "_model", "_tool_index", "_tools_seen", "_usage")

    def __init__(self, *, model: str, include_usage: bool = False) -> None:
        self._model = model
        self._include_usage = include_usage
        self._base: dict[str, Any] | None = None
        self._tool_index: dict[int, int] = {}  # part index -> Chat tool-call index
        self._tools_seen = 0
        self._custom: dict[int, bool] = {}  # part index -> a custom (free-text input) tool call
        self._usage = Usage()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        assert self._base is not None
        chunk = dict(self._base)
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _start(self, resp_id: str, created: int) -> bytes:
        self._base = {
            "id": completion_id(resp_id),
            "object": "chat.completion.chunk",
            "created": created or int(time.time()),
            "model": self._model,
            "system_fingerprint": None,
        }
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, MessageStart):
            self._usage = event.usage
            return self._start(event.id, event.created)
        if isinstance(event, StreamError):
            return stream_error_event(event.error)
        prefix = b"" if self._base is not None else self._start("", 0)
        return prefix + self._encode(event)

    def _encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            if event.index in self._tool_index:
                return b""
            return self._chunk({"content": event.text})
        if isinstance(event, ThinkingDelta):
            return self._chunk({"reasoning_content": event.text})
        if isinstance(event, ToolArgumentsDelta):
            wire = self._tool_index.get(event.index)
            if wire is None or not event.fragment:
                return b""
            key = "custom" if self._custom.get(event.index) else "function"
            field = "input" if key == "custom" else "arguments"
            return self._chunk({"tool_calls": [{"index": wire, key: {field: event.fragment}}]})
        if isinstance(event, PartStart):
            return self._part_start(event.index, event)
        if isinstance(event, UsageUpdate):
            self._usage = event.usage
            return b""
        if isinstance(event, Finish):
            if event.usage is not None:
                self._usage = event.usage
            out = self._chunk({}, FINISH_TO_WIRE[event.stop_reason])
            if self._include_usage:
                assert self._base is not None
                usage_chunk = {**self._base, "choices": [], "usage": usage_to_wire(self._usage)}
                out += b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
            return out + DONE_EVENT
        return b""  # PartStop, SignatureDelta: nothing to say on this wire

    def _part_start(self, index: int, event: PartStart) -> bytes:
        part = event.part
        if isinstance(part, ToolCallPart):
            wire = self._tools_seen
            self._tools_seen += 1
            self._tool_index[index] = wire
            call: dict[str, Any] = {"index": wire, "id": part.id}
            if part.kind == "custom":
                self._custom[index] = True
                call.update(type="custom", custom={"name": part.name, "input": part.arguments})
            else:
                call.update(type="function", function={"name": part.name, "arguments": part.arguments})
            return self._chunk({"tool_calls": [call]})
        if isinstance(part, TextPart) and part.text:
            return self._chunk({"content": part.text})
        if isinstance(part, ThinkingPart) and part.text:
            return self._chunk({"reasoning_content": part.text})
        if isinstance(part, EncryptedReasoningPart) and part.summary:
            return self._chunk({"reasoning_content": "\n\n".join(part.summary)})
        return b""
