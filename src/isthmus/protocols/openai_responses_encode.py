"""OpenAI Responses requests from the IR (toward a Responses upstream), and the request settings a
Response object echoes back to a Responses client. See :mod:`isthmus.protocols.openai_responses_codec`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from isthmus.errors import InvalidRequestError
from isthmus.ir import (
    AudioPart,
    BuiltinTool,
    DocumentPart,
    EncryptedReasoningPart,
    ImagePart,
    MediaSource,
    OpaquePart,
    Part,
    ReasoningConfig,
    ReasoningMode,
    Request,
    ResponseFormat,
    ResponseFormatKind,
    Role,
    SourceKind,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoiceMode,
    ToolResultPart,
)
from isthmus.ir.reasoning import effort_for_budget
from isthmus.protocols.base import as_mapping
from isthmus.protocols.codec import data_url, require
from isthmus.protocols.openai_responses_items import INCLUDE_ENCRYPTED_REASONING
from isthmus.protocols.openai_responses_parts import (
    CUSTOM_KEY,
    NAMESPACE_KEY,
    RESPONSES,
    ToolNames,
    reasoning_item,
)

TOOL_CHOICE_TO_WIRE: dict[ToolChoiceMode, str] = {
    ToolChoiceMode.AUTO: "auto",
    ToolChoiceMode.NONE: "none",
    ToolChoiceMode.REQUIRED: "required",
}
EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
EFFORT_FROM_FOREIGN: dict[str, str] = {"max": "xhigh"}


def _encode_source_url(source: MediaSource, fallback_type: str) -> dict[str, Any]:
    if source.kind is SourceKind.BASE64:
        return {"url": data_url(source.media_type or fallback_type, source.data)}
    if source.kind is SourceKind.URL:
        return {"url": source.data}
    if source.kind is SourceKind.FILE_ID:
        return {"file_id": source.data}
    return {"text": source.data}


def _encode_content(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        src = _encode_source_url(part.source, "image/png")
        require("text" not in src, "an image cannot be given as text")
        image: dict[str, Any] = {"type": "input_image", "detail": part.detail or "auto"}
        image.update({"image_url": src["url"]} if "url" in src else {"file_id": src["file_id"]})
        return image
    if isinstance(part, DocumentPart):
        if part.source.kind is SourceKind.TEXT:
            return {"type": "input_text", "text": part.source.data}
        src = _encode_source_url(part.source, "application/pdf")
        document: dict[str, Any] = {"type": "input_file"}
        if part.source.kind is SourceKind.BASE64:
            document["file_data"] = src["url"]
            document["filename"] = part.filename or part.title or "document.pdf"
        elif part.source.kind is SourceKind.URL:
            document["file_url"] = src["url"]
        else:
            document["file_id"] = src["file_id"]
        return document
    if isinstance(part, AudioPart):
        fmt = part.format or (part.source.media_type or "audio/wav").removeprefix("audio/")
        return {"type": "input_audio", "input_audio": {"data": part.source.data, "format": fmt}}
    raise InvalidRequestError(f"a {type(part).__name__} cannot be sent as message content")


def _encode_result(part: ToolResultPart, custom: bool) -> dict[str, Any]:
    output: str | list[dict[str, Any]]
    if all(isinstance(c, TextPart) for c in part.content):
        output = "".join(c.text for c in part.content if isinstance(c, TextPart))
    else:
        output = [_encode_content(c) for c in part.content]
    kind = "custom_tool_call_output" if custom else "function_call_output"
    return {"type": kind, "call_id": part.call_id, "output": output}


def _encode_call(part: ToolCallPart, names: ToolNames) -> dict[str, Any]:
    item = names.call_item(part, "", done=True)
    for key in ("id", "status"):
        item.pop(key, None)
    return item


class _ItemWriter:
    """IR messages → Responses input items (upstream-bound: only this family's payloads)."""

    def __init__(self, names: ToolNames) -> None:
        self.items: list[dict[str, Any]] = []
        self._names = names
        self._custom_calls: set[str] = set()

    def _flush(self, role: str, content: list[dict[str, Any]]) -> None:
        if content:
            self.items.append({"type": "message", "role": role, "content": list(content)})
            content.clear()

    def user(self, parts: Sequence[Part]) -> None:
        content: list[dict[str, Any]] = []
        for part in parts:
            if isinstance(part, ToolResultPart):
                self._flush("user", content)
                self.items.append(_encode_result(part, part.call_id in self._custom_calls))
            elif isinstance(part, OpaquePart):
                if part.origin is RESPONSES:
                    self._flush("user", content)
                    self.items.append(dict(part.data))
            elif isinstance(part, TextPart | ImagePart | DocumentPart | AudioPart):
                content.append(_encode_content(part))
        self._flush("user", content)

    def assistant(self, parts: Sequence[Part]) -> None:
        texts: list[dict[str, Any]] = []
        for part in parts:
            if isinstance(part, TextPart):
                texts.append({"type": "output_text", "text": part.text})
                continue
            self._flush("assistant", texts)
            if isinstance(part, ToolCallPart):
                item = _encode_call(part, self._names)
                if item["type"] == "custom_tool_call":
                    self._custom_calls.add(part.id)
                self.items.append(item)
            elif isinstance(part, EncryptedReasoningPart):
                if part.origin is RESPONSES and part.encrypted_content:
                    item = reasoning_item(part, part.id or "")
                    self.items.append(item)
            elif isinstance(part, OpaquePart) and part.origin is RESPONSES:
                self.items.append(dict(part.data))
            # other protocols' reasoning and built-in tool history cannot go to OpenAI
        self._flush("assistant", texts)

    def system(self, parts: Sequence[Part]) -> None:
        content = [{"type": "input_text", "text": p.text} for p in parts if isinstance(p, TextPart)]
        self._flush("developer", content)


def _foreign_tool(tool: BuiltinTool) -> dict[str, Any]:
    if tool.kind in ("web_search", "google_search"):
        out: dict[str, Any] = {"type": "web_search"}
        domains = tool.config.get("allowed_domains")
        if isinstance(domains, list) and domains:
            out["filters"] = {"allowed_domains": domains}
        location = as_mapping(tool.config.get("user_location"))
        if location:
            keys = ("city", "region", "country", "timezone")
            out["user_location"] = {"type": "approximate", **{k: location[k] for k in keys if k in location}}
        return out
    if tool.kind == "code_execution":
        return {"type": "code_interpreter", "container": {"type": "auto"}}
    raise InvalidRequestError(
        f"the {tool.kind!r} tool ({tool.origin} built-in) has no equivalent on an OpenAI Responses upstream"
    )


def encode_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    namespaces: dict[str, dict[str, Any]] = {}
    for tool in tools:
        if isinstance(tool, BuiltinTool):
            out.append(dict(tool.config) if tool.origin is RESPONSES else _foreign_tool(tool))
            continue
        ext = dict(tool.extensions.get(RESPONSES, {}))
        namespace = as_mapping(ext.pop(NAMESPACE_KEY, None))
        custom = ext.pop(CUSTOM_KEY, None)
        if isinstance(custom, Mapping):
            wire = dict(custom)
        else:
            wire = {"type": "function", "name": tool.name}
            if tool.description is not None:
                wire["description"] = tool.description
            wire["parameters"] = (
                tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
            )
            if tool.strict is not None:
                wire["strict"] = tool.strict
            wire.update(ext)
        if not namespace:
            out.append(wire)
            continue
        wire["name"] = str(namespace.get("tool") or wire["name"])
        group = namespaces.get(str(namespace.get("name")))
        if group is None:
            group = {
                "type": "namespace",
                "name": str(namespace.get("name", "")),
                "description": str(namespace.get("description") or ""),
                "tools": [],
            }
            namespaces[group["name"]] = group
            out.append(group)
        group["tools"].append(wire)
    return out


def _encode_tool_choice(req: Request, ext: Mapping[str, Any], names: ToolNames) -> object:
    if "tool_choice" in ext:
        return ext["tool_choice"]
    choice = req.tool_choice
    if choice is None:
        return None
    if choice.mode is not ToolChoiceMode.TOOL:
        return TOOL_CHOICE_TO_WIRE[choice.mode]
    name = choice.name or ""
    namespace, bare = names.namespaced.get(name, (None, name))
    out: dict[str, Any] = {"type": "custom" if name in names.custom else "function", "name": bare}
    if namespace is not None:
        out["namespace"] = namespace
    return out


def _encode_reasoning(reasoning: ReasoningConfig | None, ext: Mapping[str, Any]) -> dict[str, Any] | None:
    if reasoning is None:
        return None
    out: dict[str, Any] = dict(as_mapping(ext.get("reasoning")))
    if reasoning.mode is ReasoningMode.DISABLED:
        out["effort"] = "none"
    elif reasoning.effort is not None:
        effort = EFFORT_FROM_FOREIGN.get(reasoning.effort, reasoning.effort)
        out["effort"] = effort if effort in EFFORTS else "medium"
    elif reasoning.budget_tokens is not None and reasoning.mode is ReasoningMode.ENABLED:
        out["effort"] = effort_for_budget(reasoning.budget_tokens, allowed=("low", "medium", "high"))
    summary = reasoning.summary
    if summary is None and reasoning.include_thoughts:
        summary = "auto"
    if summary is not None:
        out["summary"] = summary
    return out


def _encode_text(fmt: ResponseFormat | None, ext: Mapping[str, Any]) -> dict[str, Any] | None:
    text: dict[str, Any] = dict(as_mapping(ext.get("text")))
    if fmt is not None:
        wire: dict[str, Any] = {"type": fmt.kind.value}
        if fmt.kind is ResponseFormatKind.JSON_SCHEMA:
            wire["name"] = fmt.name or "response"
            wire["schema"] = fmt.schema or {"type": "object"}
            if fmt.description is not None:
                wire["description"] = fmt.description
            if fmt.strict is not None:
                wire["strict"] = fmt.strict
        text["format"] = wire
    return text or None


def encode_request(req: Request, *, model: str, stream: bool) -> dict[str, Any]:
    if req.n is not None and req.n > 1:
        raise InvalidRequestError("an OpenAI Responses upstream returns one choice; n > 1 cannot be honoured")
    # req.stop is dropped: the Responses API has no stop sequences (see docs/fidelity.md).
    ext = dict(req.extensions.get(RESPONSES, {}))
    names = ToolNames.of(req)
    writer = _ItemWriter(names)
    system = [p.text for p in req.system]
    for message in req.messages:
        if message.role is Role.SYSTEM:
            writer.system(message.parts)
        elif message.role is Role.USER:
            writer.user(message.parts)
        else:
            writer.assistant(message.parts)
    body: dict[str, Any] = {"model": model}
    if len(system) == 1:
        body["instructions"] = system[0]
        body["input"] = writer.items
    else:  # several blocks keep their boundaries as parts of one developer message
        writer_head = _ItemWriter(names)
        writer_head.system(req.system)
        body["input"] = writer_head.items + writer.items
    if req.tools:
        body["tools"] = encode_tools(req.tools)
    tool_choice = _encode_tool_choice(req, ext, names)
    ext.pop("tool_choice", None)
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    text = _encode_text(req.response_format, ext)
    ext.pop("text", None)
    if text is not None:
        body["text"] = text
    reasoning = _encode_reasoning(req.reasoning, ext)
    ext.pop("reasoning", None)
    if reasoning is not None:
        body["reasoning"] = reasoning
    for key, value in (
        ("max_output_tokens", req.max_output_tokens),
        ("temperature", req.temperature),
        ("top_p", req.top_p),
        ("user", req.user),
    ):
        if value is not None:
            body[key] = value
    if req.metadata:
        body["metadata"] = dict(req.metadata)
    if RESPONSES not in req.extensions:
        # Another protocol's conversation: keep nothing at OpenAI, and get reasoning back whole so
        # the next turn can return it.
        body["store"] = False
        if reasoning is not None and reasoning.get("effort") != "none":
            body["include"] = [INCLUDE_ENCRYPTED_REASONING]
    if stream:
        body["stream"] = True
    for key, value in ext.items():
        body.setdefault(key, value)
    return body


# --- encoding responses -----------------------------------------------------------------------


def response_settings(request: Request | None) -> dict[str, Any]:
    """The request fields a Response object echoes back."""
    settings: dict[str, Any] = {
        "instructions": None,
        "max_output_tokens": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": None,
        "store": True,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "user": None,
    }
    if request is None:
        return settings
    ext = request.extensions.get(RESPONSES, {})
    names = ToolNames.of(request)
    if request.system:
        settings["instructions"] = "\n\n".join(p.text for p in request.system)
    try:
        settings["tools"] = encode_tools(request.tools)
    except InvalidRequestError:
        settings["tools"] = []
    settings["tool_choice"] = _encode_tool_choice(request, ext, names) or "auto"
    if request.parallel_tool_calls is not None:
        settings["parallel_tool_calls"] = request.parallel_tool_calls
    settings["text"] = _encode_text(request.response_format, ext) or settings["text"]
    settings["reasoning"] = _encode_reasoning(request.reasoning, ext)
    settings["max_output_tokens"] = request.max_output_tokens
    settings["temperature"] = request.temperature
    settings["top_p"] = request.top_p
    settings["user"] = request.user
    settings["metadata"] = dict(request.metadata)
    for key in ("store", "previous_response_id", "truncation", "prompt_cache_key", "service_tier"):
        if key in ext:
            settings[key] = ext[key]
    return settings
