"""OpenAI Responses output items ↔ IR parts: the tables, the tool-name flattening and the item
builders shared by the codec and the stream codecs (see :mod:`isthmus.protocols.openai_responses_stream`
for how foreign reasoning and Gemini signatures travel in ``reasoning`` items).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from isthmus.ir import (
    EncryptedReasoningPart,
    FunctionTool,
    OpaquePart,
    Part,
    Protocol,
    ReasoningPart,
    Request,
    StopReason,
    TextPart,
    ThinkingPart,
    ToolCallPart,
)
from isthmus.ir.reasoning import seal, unseal
from isthmus.protocols.base import as_mapping
from isthmus.protocols.codec import as_str, dump_json

RESPONSES = Protocol.OPENAI_RESPONSES

# ``status`` (and ``incomplete_details.reason``) → stop reason; a completed answer that calls tools
# is TOOL_USE, one whose message holds a refusal is REFUSAL.
INCOMPLETE_FROM_WIRE: dict[str, StopReason] = {
    "max_output_tokens": StopReason.MAX_TOKENS,
    "content_filter": StopReason.CONTENT_FILTER,
    "max_tool_calls": StopReason.OTHER,
    "max_messages": StopReason.OTHER,
    "steered": StopReason.OTHER,
}
STATUS_FROM_WIRE: dict[str, StopReason] = {
    "completed": StopReason.END_TURN,
    "failed": StopReason.ERROR,
    "cancelled": StopReason.ERROR,
    "incomplete": StopReason.MAX_TOKENS,
}
# stop reason → (status, incomplete_details.reason)
STOP_TO_WIRE: dict[StopReason, tuple[str, str | None]] = {
    StopReason.END_TURN: ("completed", None),
    StopReason.TOOL_USE: ("completed", None),
    StopReason.STOP_SEQUENCE: ("completed", None),
    StopReason.REFUSAL: ("completed", None),
    StopReason.PAUSE: ("completed", None),
    StopReason.OTHER: ("completed", None),
    StopReason.MAX_TOKENS: ("incomplete", "max_output_tokens"),
    StopReason.CONTENT_FILTER: ("incomplete", "content_filter"),
    StopReason.ERROR: ("failed", None),
}

# Markers in ``FunctionTool.extensions[RESPONSES]`` for tools this codec flattened: a function of a
# ``namespace`` tool ({"name", "description"} of the namespace and the function's own "tool" name)
# and a ``custom`` (free-text) tool (its original object). Encoders of this protocol consume them;
# they never reach the wire as is.
NAMESPACE_KEY = "_namespace"
CUSTOM_KEY = "_custom"
CUSTOM_INPUT = "input"  # the one string parameter a flattened custom tool takes


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def response_id_for(upstream_id: str) -> str:
    """The client-facing response id: the upstream's own when it is a Responses id, else a stable
    digest of it (so items derive stable ids too), else a fresh one."""
    if upstream_id.startswith("resp_"):
        return upstream_id
    if upstream_id:
        return "resp_" + hashlib.sha256(upstream_id.encode()).hexdigest()[:40]
    return new_id("resp")


def item_id(response_id: str, prefix: str, position: int) -> str:
    """An output item's id, derived from its response's id and its position in ``output``."""
    return f"{prefix}_{response_id.removeprefix('resp_')}_{position}"


def flat_tool_name(namespace: str, name: str) -> str:
    """A namespaced function's name as a plain function name (``mcp__server__`` + ``tool``, or
    ``crm`` + ``__`` + ``lookup``)."""
    return f"{namespace}{name}" if namespace.endswith("_") else f"{namespace}__{name}"


def custom_arguments(text: str) -> str:
    """A custom tool's free-text input as the arguments of its flattened function."""
    return dump_json({CUSTOM_INPUT: text})


def custom_input(arguments: str) -> str:
    """The free text back out of a flattened custom tool's arguments (the text itself when the
    model did not answer with the expected object)."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str):
        return str(value[CUSTOM_INPUT])
    return arguments


@dataclass(slots=True)
class ToolNames:
    """How the client's tools were flattened, to turn the model's calls back into the client's
    shapes: flat name → (namespace, name), and which flat names are custom tools."""

    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)
    custom: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, request: Request | None) -> ToolNames:
        names = cls()
        for tool in request.tools if request is not None else ():
            if not isinstance(tool, FunctionTool):
                continue
            ext = tool.extensions.get(RESPONSES, {})
            namespace = as_mapping(ext.get(NAMESPACE_KEY))
            if namespace:
                bare = as_str(namespace.get("tool")) or tool.name
                names.namespaced[tool.name] = (str(namespace.get("name", "")), bare)
            if ext.get(CUSTOM_KEY):
                names.custom.add(tool.name)
        return names

    def call_item(self, part: ToolCallPart, item_id: str, *, done: bool) -> dict[str, Any]:
        """The output item for a tool call (arguments empty while ``done`` is false)."""
        namespace, name = self.namespaced.get(part.name, (None, part.name))
        if part.kind == "custom" or part.name in self.custom:
            text = part.arguments if part.kind == "custom" else custom_input(part.arguments)
            item: dict[str, Any] = {
                "id": item_id,
                "type": "custom_tool_call",
                "status": "completed" if done else "in_progress",
                "call_id": part.id,
                "name": name,
                "input": text if done else "",
            }
        else:
            item = {
                "id": item_id,
                "type": "function_call",
                "status": "completed" if done else "in_progress",
                "arguments": part.arguments if done else "",
                "call_id": part.id,
                "name": name,
            }
        if namespace is not None:
            item["namespace"] = namespace
        return item


def _summary(texts: list[str]) -> list[dict[str, Any]]:
    return [{"type": "summary_text", "text": text} for text in texts]


def reasoning_text(part: ReasoningPart) -> str:
    """What a client may read of a reasoning part."""
    if isinstance(part, ThinkingPart):
        return part.text
    if isinstance(part, EncryptedReasoningPart):
        return "\n\n".join(part.summary or part.content)
    return ""


def reasoning_item(part: ReasoningPart, item_id: str) -> dict[str, Any]:
    """A reasoning part as a finished ``reasoning`` item: OpenAI's own as it came, any other sealed."""
    if isinstance(part, EncryptedReasoningPart) and part.origin is RESPONSES:
        item: dict[str, Any] = {
            "id": part.id or item_id,
            "type": "reasoning",
            "summary": _summary(part.summary),
        }
        if part.content:
            item["content"] = [{"type": "reasoning_text", "text": text} for text in part.content]
        if part.encrypted_content is not None:
            item["encrypted_content"] = part.encrypted_content
        return item
    text = reasoning_text(part)
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": _summary([text] if text else []),
        "encrypted_content": seal(part),
    }


def signature_item(signature: str, item_id: str) -> dict[str, Any]:
    """A Gemini ``thoughtSignature`` of the part just before, carried home in a reasoning item."""
    carrier = ThinkingPart(text="", signature=signature, origin=Protocol.GEMINI)
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "encrypted_content": seal(carrier, attach="previous"),
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, texts: list[str], *, done: bool) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": [output_text(text) for text in texts],
    }


class PartsBuilder:
    """Collects one message's parts from Responses items, opening sealed reasoning items and
    putting a carried Gemini signature back on its neighbouring text or tool-call part."""

    __slots__ = ("parts", "pending_signature", "refused")

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.pending_signature: str | None = None
        self.refused = False

    def add(self, part: Part) -> None:
        if self.pending_signature is not None and isinstance(part, TextPart | ToolCallPart):
            part.thought_signature = self.pending_signature
            self.pending_signature = None
        self.parts.append(part)

    def add_reasoning(self, item: Mapping[str, Any]) -> None:
        summary = [str(as_mapping(s).get("text", "")) for s in item.get("summary") or ()]
        content = [str(as_mapping(c).get("text", "")) for c in item.get("content") or ()]
        encrypted = as_str(item.get("encrypted_content"))
        sealed = unseal(encrypted, text="\n\n".join(summary or content)) if encrypted else None
        if sealed is None:
            self.add(
                EncryptedReasoningPart(
                    id=as_str(item.get("id")), encrypted_content=encrypted, summary=summary, content=content
                )
            )
            return
        signature = sealed.part.signature if isinstance(sealed.part, ThinkingPart) else None
        if sealed.attach == "next":
            self.pending_signature = signature
        elif sealed.attach == "previous":
            for part in reversed(self.parts):
                if isinstance(part, TextPart | ToolCallPart):
                    part.thought_signature = signature
                    break
        else:
            self.add(sealed.part)

    def add_item(self, item: Mapping[str, Any]) -> None:
        """One output item (or assistant-side input item)."""
        kind = item.get("type", "message")
        if kind == "message":
            for content in item.get("content") or ():
                c = as_mapping(content)
                if c.get("type") == "refusal":
                    self.refused = True
                    self.add(TextPart(text=str(c.get("refusal", ""))))
                elif isinstance(c.get("text"), str):
                    self.add(TextPart(text=c["text"]))
            if isinstance(item.get("content"), str):
                self.add(TextPart(text=item["content"]))
        elif kind == "reasoning":
            self.add_reasoning(item)
        elif kind in ("function_call", "custom_tool_call"):
            self.add(call_part(item))
        elif isinstance(kind, str):
            self.add(OpaquePart(type=kind, data=dict(item), origin=RESPONSES))


def call_part(item: Mapping[str, Any]) -> ToolCallPart:
    """A ``function_call``/``custom_tool_call`` item as a tool call of the flattened tool."""
    name = str(item.get("name", ""))
    namespace = as_str(item.get("namespace"))
    if namespace:
        name = flat_tool_name(namespace, name)
    if item.get("type") == "custom_tool_call":
        arguments = custom_arguments(str(item.get("input", "")))
    else:
        arguments = str(item.get("arguments", ""))
    return ToolCallPart(id=str(item.get("call_id") or item.get("id") or ""), name=name, arguments=arguments)


def stop_from_response(response: Mapping[str, Any], *, called_tools: bool, refused: bool) -> StopReason:
    status = str(response.get("status") or "completed")
    if status == "incomplete":
        reason = as_str(as_mapping(response.get("incomplete_details")).get("reason"))
        return INCOMPLETE_FROM_WIRE.get(reason or "", StopReason.MAX_TOKENS)
    stop = STATUS_FROM_WIRE.get(status, StopReason.END_TURN)
    if stop is StopReason.END_TURN and called_tools:
        return StopReason.TOOL_USE
    if stop is StopReason.END_TURN and refused:
        return StopReason.REFUSAL
    return stop
