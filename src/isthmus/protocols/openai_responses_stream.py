"""OpenAI Responses streams to and from the IR, and the output-item helpers the codec shares.

Every IR part becomes one output item: a text part a ``message`` item with one ``output_text``, a
reasoning part a ``reasoning`` item, a tool call a ``function_call`` (or ``custom_tool_call``) item.
The encoder writes the event sequence the API writes and the ``openai`` SDK's stream helper and
Codex parse: ``response.created``/``in_progress`` with the ``response`` nested, per item
``output_item.added`` → content/summary part events and deltas → ``output_item.done``, then
``response.completed``/``incomplete`` (or ``error`` + ``response.failed``), every event with a
``sequence_number`` and an ``event:`` line naming its ``type``.

Reasoning made by another protocol reaches a Responses client as a ``reasoning`` item whose
``encrypted_content`` is a sealed envelope (:mod:`isthmus.ir.reasoning`) and whose summary is the
thinking text; the client sends the item back on its next turn and the decoder restores the part.
A Gemini ``thoughtSignature`` on a text or tool-call part rides in an extra reasoning item right
after that part (``attach="previous"``). OpenAI's own encrypted content is never produced from
another protocol's payload.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from isthmus.ir import (
    EncryptedReasoningPart,
    Finish,
    MessageStart,
    OpaquePart,
    Part,
    PartStart,
    PartStop,
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
from isthmus.protocols.base import as_mapping
from isthmus.protocols.codec import as_str
from isthmus.protocols.openai_common import upstream_error_from_object
from isthmus.protocols.openai_responses import stream_error_event, usage_from_wire, usage_to_wire
from isthmus.protocols.openai_responses_parts import (
    RESPONSES,
    STOP_TO_WIRE,
    PartsBuilder,
    ToolNames,
    call_part,
    custom_arguments,
    item_id,
    message_item,
    output_text,
    reasoning_item,
    response_id_for,
    signature_item,
    stop_from_response,
)
from isthmus.protocols.sse import SSEEvent, encode_event

# --- decoding a Responses stream --------------------------------------------------------------


class ResponsesStreamDecoder:
    """Responses SSE → IR events. Each output item (and each content part of a message) becomes
    one IR part, numbered in the order they open."""

    def __init__(self) -> None:
        self._next = 0
        self._texts: dict[tuple[int, int], int] = {}  # (output_index, content_index) → part index
        self._items: dict[int, tuple[int, str]] = {}  # output_index → (part index, item type)
        self._argument_seen: set[int] = set()
        self._custom_input: dict[int, str] = {}
        self._summary_seen: dict[int, int] = {}  # output_index → summary parts opened
        self._called_tools = False
        self._refused = False
        self._started = False
        self._done = False

    def _new(self) -> int:
        index = self._next
        self._next += 1
        return index

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if not event.data or self._done:
            return []
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(data, dict):
            return []
        kind = str(data.get("type") or event.event or "")
        out: list[StreamEvent] = []
        if not self._started and kind not in ("error",):
            out.extend(self._start(as_mapping(data.get("response"))))
        handler = _HANDLERS.get(kind)
        if handler is not None:
            out.extend(handler(self, data))
        return out

    def _start(self, response: Mapping[str, Any]) -> list[StreamEvent]:
        self._started = True
        created = response.get("created_at")
        return [
            MessageStart(
                id=str(response.get("id") or ""),
                model=str(response.get("model") or ""),
                created=int(created) if isinstance(created, int | float) else 0,
            )
        ]

    def _item_added(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        item = as_mapping(data.get("item"))
        output_index = int(data.get("output_index") or 0)
        kind = str(item.get("type", ""))
        if kind == "message":
            self._items[output_index] = (-1, kind)  # its content parts open their own IR parts
            return []
        if kind == "reasoning":
            index = self._new()
            self._items[output_index] = (index, kind)
            return [PartStart(index=index, part=EncryptedReasoningPart(id=as_str(item.get("id"))))]
        if kind in ("function_call", "custom_tool_call"):
            index = self._new()
            self._items[output_index] = (index, kind)
            self._called_tools = True
            part = call_part({**item, "arguments": "", "input": ""})
            return [PartStart(index=index, part=replace(part, arguments=""))]
        self._items[output_index] = (-1, kind)  # built-in tool calls arrive whole at done
        return []

    def _item_done(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        item = as_mapping(data.get("item"))
        output_index = int(data.get("output_index") or 0)
        index, kind = self._items.pop(output_index, (-1, str(item.get("type", ""))))
        if kind == "message":
            out: list[StreamEvent] = []
            for key in [k for k in self._texts if k[0] == output_index]:
                out.append(PartStop(index=self._texts.pop(key)))
            return out
        if kind == "reasoning":
            builder = PartsBuilder()
            builder.add_reasoning(item)
            final = builder.parts[0] if builder.parts else None
            return [PartStop(index=index, part=final)]
        if kind in ("function_call", "custom_tool_call"):
            out = []
            if kind == "custom_tool_call":
                text = str(item.get("input") or self._custom_input.pop(output_index, ""))
                out.append(ToolArgumentsDelta(index=index, fragment=custom_arguments(text)))
            elif output_index not in self._argument_seen and item.get("arguments"):
                out.append(ToolArgumentsDelta(index=index, fragment=str(item["arguments"])))
            self._argument_seen.discard(output_index)
            return [*out, PartStop(index=index, part=call_part(item))]
        if kind:
            new = self._new()
            part = OpaquePart(type=kind, data=dict(item), origin=RESPONSES)
            return [PartStart(index=new, part=part), PartStop(index=new)]
        return []

    def _content_added(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        key = (int(data.get("output_index") or 0), int(data.get("content_index") or 0))
        part = as_mapping(data.get("part"))
        if part.get("type") == "refusal":
            self._refused = True
        index = self._new()
        self._texts[key] = index
        text = str(part.get("text") or part.get("refusal") or "")
        return [PartStart(index=index, part=TextPart(text=text))]

    def _content_done(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        key = (int(data.get("output_index") or 0), int(data.get("content_index") or 0))
        index = self._texts.pop(key, None)
        return [] if index is None else [PartStop(index=index)]

    def _text_delta(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        key = (int(data.get("output_index") or 0), int(data.get("content_index") or 0))
        out: list[StreamEvent] = []
        if key not in self._texts:  # a delta without its content_part.added
            out.extend(self._content_added({**data, "part": {"type": "output_text", "text": ""}}))
        out.append(TextDelta(index=self._texts[key], text=str(data.get("delta", ""))))
        return out

    def _summary_part_added(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        output_index = int(data.get("output_index") or 0)
        opened = self._summary_seen.get(output_index, 0)
        self._summary_seen[output_index] = opened + 1
        index, _ = self._items.get(output_index, (-1, ""))
        if opened and index >= 0:  # summaries after the first read as new paragraphs
            return [ThinkingDelta(index=index, text="\n\n")]
        return []

    def _reasoning_delta(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        index, kind = self._items.get(int(data.get("output_index") or 0), (-1, ""))
        if index < 0 or kind != "reasoning":
            return []
        return [ThinkingDelta(index=index, text=str(data.get("delta", "")))]

    def _arguments_delta(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        output_index = int(data.get("output_index") or 0)
        index, kind = self._items.get(output_index, (-1, ""))
        if index < 0:
            return []
        if kind == "custom_tool_call":
            # Free text must become JSON arguments: it is sent whole when the item is done.
            self._custom_input[output_index] = self._custom_input.get(output_index, "") + str(
                data.get("delta", "")
            )
            return []
        self._argument_seen.add(output_index)
        return [ToolArgumentsDelta(index=index, fragment=str(data.get("delta", "")))]

    def _terminal(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        self._done = True
        response = as_mapping(data.get("response"))
        out: list[StreamEvent] = []
        for index in sorted(self._texts.values()):
            out.append(PartStop(index=index))
        self._texts.clear()
        usage = as_mapping(response.get("usage"))
        stop = stop_from_response(response, called_tools=self._called_tools, refused=self._refused)
        out.append(Finish(stop_reason=stop, usage=usage_from_wire(usage) if usage else None))
        return out

    def _failed(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        self._done = True
        error = as_mapping(as_mapping(data.get("response")).get("error"))
        return [StreamError(error=upstream_error_from_object(error, orjson.dumps(dict(data))))]

    def _error(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        self._done = True
        nested = data.get("error")
        error = nested if isinstance(nested, Mapping) else data
        return [StreamError(error=upstream_error_from_object(error, orjson.dumps(dict(data))))]

    def finish(self) -> list[StreamEvent]:
        return []


_HANDLERS = {
    "response.output_item.added": ResponsesStreamDecoder._item_added,
    "response.output_item.done": ResponsesStreamDecoder._item_done,
    "response.content_part.added": ResponsesStreamDecoder._content_added,
    "response.content_part.done": ResponsesStreamDecoder._content_done,
    "response.output_text.delta": ResponsesStreamDecoder._text_delta,
    "response.refusal.delta": ResponsesStreamDecoder._text_delta,
    "response.reasoning_summary_part.added": ResponsesStreamDecoder._summary_part_added,
    "response.reasoning_summary_text.delta": ResponsesStreamDecoder._reasoning_delta,
    "response.reasoning_text.delta": ResponsesStreamDecoder._reasoning_delta,
    "response.function_call_arguments.delta": ResponsesStreamDecoder._arguments_delta,
    "response.custom_tool_call_input.delta": ResponsesStreamDecoder._arguments_delta,
    "response.completed": ResponsesStreamDecoder._terminal,
    "response.incomplete": ResponsesStreamDecoder._terminal,
    "response.failed": ResponsesStreamDecoder._failed,
    "error": ResponsesStreamDecoder._error,
}


# --- encoding a Responses stream --------------------------------------------------------------


class _OpenItem:
    __slots__ = ("done_text", "item", "kind", "output_index", "part", "signature", "text")

    def __init__(self, output_index: int, kind: str, item: dict[str, Any], part: Part) -> None:
        self.output_index = output_index
        self.kind = kind  # "message" | "reasoning" | "call"
        self.item = item
        self.part = part
        self.text = ""  # text, summary text or arguments so far
        self.signature: str | None = None
        self.done_text = False


class ResponsesStreamEncoder:
    """IR events → Responses SSE. ``response`` is the finished Response object once the terminal
    event has been produced (what the Responses state store saves).

    ``settings`` are the request fields a Response object echoes (see the codec's
    ``response_settings``); ``names`` gives calls to namespaced or custom tools back their shapes.
    """

    def __init__(
        self,
        *,
        model: str,
        settings: Mapping[str, Any] | None = None,
        names: ToolNames | None = None,
    ) -> None:
        self._model = model
        self._settings = dict(settings or {})
        self._names = names or ToolNames()
        self._seq = 0
        self._id = response_id_for("")
        self._created = int(time.time())
        self._usage = Usage()
        self._items: dict[int, _OpenItem | None] = {}
        self._output: list[dict[str, Any]] = []
        self._started = False
        self.response: dict[str, Any] | None = None

    @property
    def response_id(self) -> str:
        return self._id

    def _event(self, kind: str, **fields: Any) -> bytes:
        out = encode_event({"type": kind, "sequence_number": self._seq, **fields}, kind)
        self._seq += 1
        return out

    def _response(self, status: str, *, stop: StopReason | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": self._model,
            "output": [],
            "usage": None,
            **self._settings,
        }
        if stop is not None:
            _, reason = STOP_TO_WIRE[stop]
            body["completed_at"] = int(time.time())
            body["incomplete_details"] = {"reason": reason} if reason else None
            body["output"] = list(self._output)
            body["usage"] = usage_to_wire(self._usage)
        return body

    def _start(self, resp_id: str, created: int) -> bytes:
        self._started = True
        self._id = response_id_for(resp_id) if resp_id else self._id
        if created:
            self._created = created
        return self._event("response.created", response=self._response("in_progress")) + self._event(
            "response.in_progress", response=self._response("in_progress")
        )

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, MessageStart):
            self._usage = replace(event.usage)
            return self._start(event.id, event.created)
        prefix = b"" if self._started or isinstance(event, StreamError) else self._start("", 0)
        return prefix + self._encode(event)

    def _encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, PartStart):
            return self._part_start(event.index, event.part)
        if isinstance(event, TextDelta | ThinkingDelta | ToolArgumentsDelta):
            return self._delta(event)
        if isinstance(event, SignatureDelta):
            open_item = self._items.get(event.index)
            if open_item is not None:
                open_item.signature = event.signature
            return b""
        if isinstance(event, PartStop):
            return self._part_stop(event.index, event.part)
        if isinstance(event, UsageUpdate):
            self._usage = replace(event.usage)
            return b""
        if isinstance(event, Finish):
            return self._finish(event)
        if isinstance(event, StreamError):
            return stream_error_event(
                event.error, sequence_number=self._seq, response_id=self._id, model=self._model
            )
        return b""

    def _next_id(self, prefix: str) -> str:
        return item_id(self._id, prefix, len(self._output))

    def _add(self, item: dict[str, Any]) -> tuple[int, bytes]:
        output_index = len(self._output)
        self._output.append(item)
        return output_index, self._event("response.output_item.added", output_index=output_index, item=item)

    def _whole(self, item: dict[str, Any]) -> bytes:
        """An item that is complete when it opens (sealed payloads, built-in tool calls)."""
        output_index, out = self._add(dict(item))
        return out + self._event("response.output_item.done", output_index=output_index, item=item)

    def _part_start(self, index: int, part: Part) -> bytes:
        if isinstance(part, TextPart):
            item = message_item(self._next_id("msg"), [], done=False)
            output_index, out = self._add(dict(item))
            self._items[index] = open_item = _OpenItem(output_index, "message", item, part)
            open_item.signature = part.thought_signature
            out += self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=output_index,
                content_index=0,
                part=output_text(""),
            )
            if part.text:
                out += self._delta(TextDelta(index=index, text=part.text))
            return out
        if isinstance(part, ThinkingPart | EncryptedReasoningPart):
            own_id = part.id if isinstance(part, EncryptedReasoningPart) else None
            item = {"id": own_id or self._next_id("rs"), "type": "reasoning", "summary": []}
            output_index, out = self._add(dict(item))
            self._items[index] = open_item = _OpenItem(output_index, "reasoning", item, part)
            if isinstance(part, ThinkingPart):
                open_item.signature = part.signature
                if part.text:
                    out += self._delta(ThinkingDelta(index=index, text=part.text))
            return out
        if isinstance(part, RedactedThinkingPart):
            self._items[index] = None
            return self._whole(reasoning_item(part, self._next_id("rs")))
        if isinstance(part, ToolCallPart):
            item = self._names.call_item(part, self._next_id("fc"), done=False)
            output_index, out = self._add(dict(item))
            self._items[index] = open_item = _OpenItem(output_index, "call", item, part)
            open_item.signature = part.thought_signature
            if part.arguments:
                out += self._delta(ToolArgumentsDelta(index=index, fragment=part.arguments))
            return out
        self._items[index] = None
        if isinstance(part, OpaquePart) and part.origin is RESPONSES:
            return self._whole(dict(part.data))
        return b""  # images, audio, other protocols' built-in tool history: not on this wire

    def _delta(self, event: TextDelta | ThinkingDelta | ToolArgumentsDelta) -> bytes:
        open_item = self._items.get(event.index)
        if open_item is None:
            return b""
        item_id = open_item.item["id"]
        at = {"item_id": item_id, "output_index": open_item.output_index}
        if isinstance(event, TextDelta) and open_item.kind == "message":
            open_item.text += event.text
            return self._event(
                "response.output_text.delta", content_index=0, delta=event.text, logprobs=[], **at
            )
        if isinstance(event, ThinkingDelta) and open_item.kind == "reasoning":
            out = b""
            if not open_item.text:
                out += self._event(
                    "response.reasoning_summary_part.added",
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                    **at,
                )
            open_item.text += event.text
            return out + self._event(
                "response.reasoning_summary_text.delta", summary_index=0, delta=event.text, **at
            )
        if isinstance(event, ToolArgumentsDelta) and open_item.kind == "call":
            open_item.text += event.fragment
            if open_item.item["type"] == "custom_tool_call":
                return b""  # free text is only known once the JSON arguments are complete
            return self._event("response.function_call_arguments.delta", delta=event.fragment, **at)
        return b""

    def _part_stop(self, index: int, final: Part | None) -> bytes:
        open_item = self._items.pop(index, None)
        if open_item is None:
            return b""
        item_id = open_item.item["id"]
        at = {"item_id": item_id, "output_index": open_item.output_index}
        out = b""
        if open_item.kind == "message":
            text = open_item.text
            out += self._event("response.output_text.done", content_index=0, text=text, logprobs=[], **at)
            out += self._event("response.content_part.done", content_index=0, part=output_text(text), **at)
            item = message_item(item_id, [text], done=True)
        elif open_item.kind == "reasoning":
            item = self._reasoning_done(open_item, final)
            if open_item.text:
                out += self._event(
                    "response.reasoning_summary_text.done", summary_index=0, text=open_item.text, **at
                )
                out += self._event(
                    "response.reasoning_summary_part.done",
                    summary_index=0,
                    part={"type": "summary_text", "text": open_item.text},
                    **at,
                )
        else:
            part = open_item.part
            assert isinstance(part, ToolCallPart)
            call = replace(part, arguments=open_item.text or part.arguments)
            item = self._names.call_item(call, item_id, done=True)
            if item["type"] == "custom_tool_call":
                out += self._event("response.custom_tool_call_input.delta", delta=item["input"], **at)
                out += self._event("response.custom_tool_call_input.done", input=item["input"], **at)
            else:
                out += self._event("response.function_call_arguments.done", arguments=item["arguments"], **at)
        self._output[open_item.output_index] = item
        out += self._event("response.output_item.done", output_index=open_item.output_index, item=item)
        if open_item.kind in ("message", "call") and open_item.signature:
            out += self._whole(signature_item(open_item.signature, self._next_id("rs")))
        return out

    def _reasoning_done(self, open_item: _OpenItem, final: Part | None) -> dict[str, Any]:
        part = final if isinstance(final, ThinkingPart | EncryptedReasoningPart) else open_item.part
        if isinstance(part, ThinkingPart):
            signature = part.signature or open_item.signature
            part = ThinkingPart(text=open_item.text or part.text, signature=signature, origin=part.origin)
        elif isinstance(part, EncryptedReasoningPart) and not part.summary and open_item.text:
            part = replace(part, summary=[open_item.text])
        assert isinstance(part, ThinkingPart | EncryptedReasoningPart)
        return reasoning_item(part, open_item.item["id"])

    def _finish(self, event: Finish) -> bytes:
        out = b""
        for index in sorted(i for i, v in self._items.items() if v is not None):
            out += self._part_stop(index, None)
        if event.usage is not None:
            self._usage = replace(event.usage)
        status, _ = STOP_TO_WIRE[event.stop_reason]
        if status == "failed":
            status = "completed"  # a Finish is a normal end; failures arrive as StreamError
        body = self._response(status, stop=event.stop_reason)
        body["status"] = status
        self.response = body
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self._event(kind, response=body)
