"""OpenAI Responses codec: ``POST /v1/responses`` requests, Response objects and streams ↔ the IR.

What crosses how (the pairs are tabled in ``docs/fidelity.md``):
- ``instructions`` and the ``system``/``developer`` messages that open ``input`` are the system
  prompt; later ones are ``Role.SYSTEM`` messages. Consecutive assistant-side items (messages,
  reasoning, calls) form one assistant turn; ``function_call_output`` items are tool results in a
  user turn.
- ``namespace`` tools (Codex's MCP tools) are flattened into function tools named
  ``<namespace>__<name>`` and ``custom`` (free-text) tools into function tools taking one string
  ``input``, so any upstream can call them; the markers they keep in ``FunctionTool.extensions``
  let this codec give the calls back their own shapes (pass the decoded ``request`` to
  ``encode_response``/``stream_encoder``).
- Other built-in tools (``web_search``, ``file_search``, ``local_shell``, ...) are kept whole as
  ``BuiltinTool``; built-in tool items in the history are ``OpaquePart``s only this wire carries.
- ``reasoning`` items: OpenAI's own go back upstream with their ``encrypted_content`` (only to a
  Responses upstream); reasoning from another protocol reaches a Responses client sealed (see
  :mod:`isthmus.protocols.openai_responses_stream`).
- ``store``, ``include``, ``prompt_cache_key``, ``previous_response_id``, ``truncation``,
  ``service_tier``, ... are kept in ``Request.extensions`` and written back only to a Responses
  upstream. Toward a Responses upstream the gateway asks for ``store: false`` and encrypted
  reasoning unless the client said otherwise, so no conversation state is left with OpenAI.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Mapping, Sequence
from typing import Any

from isthmus.errors import InvalidRequestError, IsthmusError
from isthmus.ir import (
    AudioPart,
    BuiltinTool,
    DocumentPart,
    EncryptedReasoningPart,
    FunctionTool,
    ImagePart,
    MediaSource,
    Message,
    OpaquePart,
    Part,
    ReasoningConfig,
    ReasoningMode,
    RedactedThinkingPart,
    Request,
    Response,
    ResponseFormat,
    ResponseFormatKind,
    Role,
    SourceKind,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultContent,
    ToolResultPart,
)
from isthmus.ir.reasoning import effort_for_budget
from isthmus.protocols.base import as_mapping
from isthmus.protocols.codec import (
    Codec,
    as_float,
    as_opt_int,
    as_str,
    data_url,
    parse_data_url,
    require,
)
from isthmus.protocols.openai_responses import stream_error_event, usage_from_response, usage_to_wire
from isthmus.protocols.openai_responses_items import INCLUDE_ENCRYPTED_REASONING
from isthmus.protocols.openai_responses_stream import (
    CUSTOM_INPUT,
    CUSTOM_KEY,
    NAMESPACE_KEY,
    RESPONSES,
    STOP_TO_WIRE,
    PartsBuilder,
    ResponsesStreamDecoder,
    ResponsesStreamEncoder,
    ToolNames,
    custom_input,
    flat_tool_name,
    item_id,
    message_item,
    reasoning_item,
    response_id_for,
    signature_item,
    stop_from_response,
)

# Built-in tool types → neutral kinds (see ``BuiltinTool``); anything else keeps its own type name.
BUILTIN_KINDS: dict[str, str] = {
    "web_search": "web_search",
    "web_search_preview": "web_search",
    "web_search_2025_08_26": "web_search",
    "web_search_preview_2025_03_11": "web_search",
    "file_search": "file_search",
    "computer": "computer",
    "computer_use_preview": "computer",
    "code_interpreter": "code_execution",
    "image_generation": "image_generation",
    "mcp": "mcp",
    "local_shell": "bash",
    "shell": "bash",
    "apply_patch": "text_editor",
    "tool_search": "tool_search",
}
TOOL_CHOICE_FROM_WIRE: dict[str, ToolChoiceMode] = {
    "auto": ToolChoiceMode.AUTO,
    "none": ToolChoiceMode.NONE,
    "required": ToolChoiceMode.REQUIRED,
}
TOOL_CHOICE_TO_WIRE: dict[ToolChoiceMode, str] = {v: k for k, v in TOOL_CHOICE_FROM_WIRE.items()}
EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
EFFORT_FROM_FOREIGN: dict[str, str] = {"max": "xhigh"}
RESPONSE_FORMAT_KINDS = {kind.value: kind for kind in ResponseFormatKind}

# Item types a client sends on the user's side of the conversation (the rest are the model's).
_USER_SIDE_ITEMS = ("_output", "mcp_approval_response")

_KNOWN_REQUEST_KEYS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "max_output_tokens",
        "temperature",
        "top_p",
        "metadata",
        "user",
        "stream",
    }
)
_KNOWN_FUNCTION_KEYS = frozenset({"type", "name", "description", "parameters", "strict"})


# --- decoding requests ------------------------------------------------------------------------


def _media_type_of(filename: str | None) -> str | None:
    return mimetypes.guess_type(filename)[0] if filename else None


def _image(c: Mapping[str, Any]) -> ImagePart:
    detail = as_str(c.get("detail"))
    url = as_str(c.get("image_url"))
    if url is not None:
        parsed = parse_data_url(url)
        if parsed is not None:
            source = MediaSource(kind=SourceKind.BASE64, data=parsed[1], media_type=parsed[0])
        else:
            source = MediaSource(kind=SourceKind.URL, data=url)
    else:
        source = MediaSource(kind=SourceKind.FILE_ID, data=str(c.get("file_id", "")))
    return ImagePart(source=source, detail=detail)


def _document(c: Mapping[str, Any]) -> DocumentPart:
    filename = as_str(c.get("filename"))
    file_data = as_str(c.get("file_data"))
    if file_data is not None:
        parsed = parse_data_url(file_data)
        if parsed is not None:
            source = MediaSource(kind=SourceKind.BASE64, data=parsed[1], media_type=parsed[0])
        else:
            media = _media_type_of(filename) or "application/pdf"
            source = MediaSource(kind=SourceKind.BASE64, data=file_data, media_type=media)
    elif isinstance(c.get("file_url"), str):
        source = MediaSource(kind=SourceKind.URL, data=c["file_url"], media_type=_media_type_of(filename))
    else:
        source = MediaSource(kind=SourceKind.FILE_ID, data=str(c.get("file_id", "")))
    return DocumentPart(source=source, filename=filename)


def _audio(c: Mapping[str, Any]) -> AudioPart:
    audio = as_mapping(c.get("input_audio"))
    fmt = as_str(audio.get("format"))
    return AudioPart(
        source=MediaSource(
            kind=SourceKind.BASE64,
            data=str(audio.get("data", "")),
            media_type=f"audio/{fmt}" if fmt else None,
        ),
        format=fmt,
    )


def _content_parts(content: object) -> list[ToolResultContent | AudioPart]:
    """User-side content (a message's, or a tool output's when it is a list)."""
    if isinstance(content, str):
        return [TextPart(text=content)]
    parts: list[ToolResultContent | AudioPart] = []
    for raw in content if isinstance(content, list) else ():
        c = as_mapping(raw)
        kind = c.get("type")
        if kind == "input_image":
            parts.append(_image(c))
        elif kind == "input_file":
            parts.append(_document(c))
        elif kind == "input_audio":
            parts.append(_audio(c))
        elif isinstance(c.get("text"), str):  # input_text, output_text, text
            parts.append(TextPart(text=c["text"]))
        elif isinstance(c.get("refusal"), str):
            parts.append(TextPart(text=c["refusal"]))
    return parts


def _system_texts(content: object) -> list[TextPart]:
    return [p for p in _content_parts(content) if isinstance(p, TextPart)]


def _result(item: Mapping[str, Any], names: Mapping[str, str]) -> ToolResultPart:
    call_id = str(item.get("call_id", ""))
    output = item.get("output")
    if isinstance(output, list):
        content = [p for p in _content_parts(output) if not isinstance(p, AudioPart)]
    else:
        content = [TextPart(text=output if isinstance(output, str) else "")]
    return ToolResultPart(call_id=call_id, name=names.get(call_id), content=content)


def _is_user_side(kind: str) -> bool:
    return kind.endswith(_USER_SIDE_ITEMS[0]) or kind in _USER_SIDE_ITEMS[1:]


class _Conversation:
    """Builds IR messages from Responses items, in order."""

    def __init__(self) -> None:
        self.system: list[TextPart] = []
        self.messages: list[Message] = []
        self.names: dict[str, str] = {}  # call id → (flattened) tool name
        self._assistant: PartsBuilder | None = None

    def _user_message(self, *, joinable: bool) -> Message:
        """The user message to add tool results to: the last one when it holds only results."""
        last = self.messages[-1] if self.messages else None
        if (
            joinable
            and last is not None
            and last.role is Role.USER
            and all(isinstance(p, ToolResultPart | OpaquePart) for p in last.parts)
        ):
            return last
        self._assistant = None
        message = Message(role=Role.USER)
        self.messages.append(message)
        return message

    def _assistant_parts(self) -> PartsBuilder:
        if self._assistant is None or not self.messages or self.messages[-1].role is not Role.ASSISTANT:
            self._assistant = PartsBuilder()
            self.messages.append(Message(role=Role.ASSISTANT, parts=self._assistant.parts))
        return self._assistant

    def add(self, item: Mapping[str, Any], position: int) -> None:
        kind = item.get("type") or ("message" if "role" in item else None)
        require(isinstance(kind, str), f"input.{position} has no type", "input")
        assert isinstance(kind, str)
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                texts = _system_texts(item.get("content"))
                if not self.messages:
                    self.system.extend(texts)
                else:
                    self._assistant = None
                    self.messages.append(Message(role=Role.SYSTEM, parts=list(texts)))
            elif role == "assistant":
                self._assistant_parts().add_item({**item, "type": "message"})
            elif role == "user":
                message = self._user_message(joinable=False)
                message.parts.extend(_content_parts(item.get("content")))
            else:
                raise InvalidRequestError(f"input.{position}.role {role!r} is not supported", param="input")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._user_message(joinable=True).parts.append(_result(item, self.names))
        elif kind == "item_reference":
            raise InvalidRequestError(
                "item_reference needs a stored conversation (store and previous_response_id)", param="input"
            )
        elif _is_user_side(kind):
            self._user_message(joinable=True).parts.append(
                OpaquePart(type=kind, data=dict(item), origin=RESPONSES)
            )
        else:
            builder = self._assistant_parts()
            builder.add_item(item)
            last = builder.parts[-1] if builder.parts else None
            if isinstance(last, ToolCallPart):
                self.names[last.id] = last.name


def _custom_parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The one-string-parameter schema a custom tool is offered as, its grammar in the description."""
    fmt = as_mapping(tool.get("format"))
    description = "The tool's free-form input."
    if fmt.get("type") == "grammar":
        description += f" It must match this {fmt.get('syntax', '')} grammar:\n{fmt.get('definition', '')}"
    return {
        "type": "object",
        "properties": {CUSTOM_INPUT: {"type": "string", "description": description}},
        "required": [CUSTOM_INPUT],
        "additionalProperties": False,
    }


def _function_tool(t: Mapping[str, Any], namespace: Mapping[str, Any] | None = None) -> FunctionTool:
    name = str(t.get("name", ""))
    ext: dict[str, Any]
    if t.get("type") == "custom":
        ext = {CUSTOM_KEY: dict(t)}
        parameters: dict[str, Any] | None = _custom_parameters(t)
        strict: object = None
    else:
        ext = {k: v for k, v in t.items() if k not in _KNOWN_FUNCTION_KEYS}
        schema = t.get("parameters")
        parameters = dict(schema) if isinstance(schema, Mapping) else None
        strict = t.get("strict")
    if namespace is not None:
        ns_name = str(namespace.get("name", ""))
        ext[NAMESPACE_KEY] = {"name": ns_name, "description": namespace.get("description"), "tool": name}
        name = flat_tool_name(ns_name, name)
    return FunctionTool(
        name=name,
        description=as_str(t.get("description")),
        parameters=parameters,
        strict=strict if isinstance(strict, bool) else None,
        extensions={RESPONSES: ext} if ext else {},
    )


def decode_tools(raw: object) -> list[Tool]:
    tools: list[Tool] = []
    for entry in raw if isinstance(raw, list) else ():
        t = as_mapping(entry)
        kind = str(t.get("type", "function"))
        if kind in ("function", "custom"):
            tools.append(_function_tool(t))
        elif kind == "namespace":
            tools.extend(_function_tool(as_mapping(sub), t) for sub in t.get("tools") or ())
        else:
            tools.append(
                BuiltinTool(
                    kind=BUILTIN_KINDS.get(kind, kind),
                    name=as_str(t.get("name")),
                    config=dict(t),
                    origin=RESPONSES,
                )
            )
    return tools


def _decode_tool_choice(value: object, ext: dict[str, Any]) -> ToolChoice | None:
    if isinstance(value, str):
        mode = TOOL_CHOICE_FROM_WIRE.get(value)
        require(mode is not None, f"unknown tool_choice {value!r}", "tool_choice")
        assert mode is not None
        return ToolChoice(mode=mode)
    choice = as_mapping(value)
    if not choice:
        return None
    kind = choice.get("type")
    if kind in ("function", "custom") and isinstance(choice.get("name"), str):
        name = choice["name"]
        namespace = as_str(choice.get("namespace"))
        return ToolChoice(
            mode=ToolChoiceMode.TOOL, name=flat_tool_name(namespace, name) if namespace else name
        )
    ext["tool_choice"] = dict(choice)  # allowed_tools, hosted tools, mcp: this wire only
    if kind == "allowed_tools" and choice.get("mode") == "required":
        return ToolChoice(mode=ToolChoiceMode.REQUIRED)
    return ToolChoice(mode=ToolChoiceMode.AUTO)


def _decode_reasoning(value: object, ext: dict[str, Any]) -> ReasoningConfig | None:
    reasoning = as_mapping(value)
    if not reasoning:
        return None
    effort = as_str(reasoning.get("effort"))
    summary = as_str(reasoning.get("summary")) or as_str(reasoning.get("generate_summary"))
    leftover = {k: v for k, v in reasoning.items() if k not in ("effort", "summary", "generate_summary")}
    if leftover:
        ext["reasoning"] = leftover
    if effort == "none":
        return ReasoningConfig(mode=ReasoningMode.DISABLED, summary=summary)
    mode = ReasoningMode.ENABLED if effort is not None else ReasoningMode.DEFAULT
    return ReasoningConfig(mode=mode, effort=effort, summary=summary)


def _decode_text(value: object, ext: dict[str, Any]) -> ResponseFormat | None:
    text = as_mapping(value)
    leftover = {k: v for k, v in text.items() if k != "format"}
    if leftover:
        ext["text"] = leftover  # verbosity, ...
    fmt = as_mapping(text.get("format"))
    kind = RESPONSE_FORMAT_KINDS.get(str(fmt.get("type")))
    if kind is None:
        return None
    schema = fmt.get("schema")
    strict = fmt.get("strict")
    return ResponseFormat(
        kind=kind,
        schema=dict(schema) if isinstance(schema, Mapping) else None,
        name=as_str(fmt.get("name")),
        description=as_str(fmt.get("description")),
        strict=strict if isinstance(strict, bool) else None,
    )


def decode_request(body: Mapping[str, Any]) -> Request:
    ext: dict[str, Any] = {k: v for k, v in body.items() if k not in _KNOWN_REQUEST_KEYS}
    conversation = _Conversation()
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        conversation.system.append(TextPart(text=instructions))
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        raw_input = [{"type": "message", "role": "user", "content": raw_input}]
    require(raw_input is None or isinstance(raw_input, list), "input must be a string or a list", "input")
    for position, item in enumerate(raw_input or ()):
        require(isinstance(item, Mapping), f"input.{position} must be an object", "input")
        conversation.add(item, position)
    metadata = as_mapping(body.get("metadata"))
    parallel = body.get("parallel_tool_calls")
    return Request(
        model=as_str(body.get("model")),
        system=conversation.system,
        messages=conversation.messages,
        tools=decode_tools(body.get("tools")),
        tool_choice=_decode_tool_choice(body.get("tool_choice"), ext),
        parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        response_format=_decode_text(body.get("text"), ext),
        temperature=as_float(body.get("temperature")),
        top_p=as_float(body.get("top_p")),
        max_output_tokens=as_opt_int(body.get("max_output_tokens")),
        reasoning=_decode_reasoning(body.get("reasoning"), ext),
        user=as_str(body.get("user")),
        metadata={str(k): str(v) for k, v in metadata.items()},
        stream=body.get("stream") is True,
        extensions={RESPONSES: ext} if ext else {},
    )


def decode_response(body: Mapping[str, Any]) -> Response:
    builder = PartsBuilder()
    for item in body.get("output") or ():
        builder.add_item(as_mapping(item))
    called = any(isinstance(p, ToolCallPart) for p in builder.parts)
    created = body.get("created_at")
    return Response(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        parts=builder.parts,
        stop_reason=stop_from_response(body, called_tools=called, refused=builder.refused),
        usage=usage_from_response(body),
        created=int(created) if isinstance(created, int | float) else 0,
    )


# --- encoding requests ------------------------------------------------------------------------


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
    if req.stop:
        raise InvalidRequestError(
            "stop sequences cannot be sent to an OpenAI Responses upstream (the API has none)", param="stop"
        )
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


def encode_output(parts: Sequence[Part], names: ToolNames, response_id: str) -> list[dict[str, Any]]:
    """A response's parts as output items (client-bound: foreign reasoning sealed)."""
    output: list[dict[str, Any]] = []

    def next_id(prefix: str) -> str:
        return item_id(response_id, prefix, len(output))

    for part in parts:
        if isinstance(part, TextPart):
            output.append(message_item(next_id("msg"), [part.text], done=True))
            if part.thought_signature:
                output.append(signature_item(part.thought_signature, next_id("rs")))
        elif isinstance(part, ThinkingPart | RedactedThinkingPart | EncryptedReasoningPart):
            output.append(reasoning_item(part, next_id("rs")))
        elif isinstance(part, ToolCallPart):
            output.append(names.call_item(part, next_id("fc"), done=True))
            if part.thought_signature:
                output.append(signature_item(part.thought_signature, next_id("rs")))
        elif isinstance(part, OpaquePart) and part.origin is RESPONSES:
            output.append(dict(part.data))
    return output


def encode_response(resp: Response, *, model: str, request: Request | None = None) -> dict[str, Any]:
    """A Response object. Pass the client's decoded ``request`` so the object echoes its settings and
    calls to namespaced/custom tools take their own shapes."""
    status, reason = STOP_TO_WIRE[resp.stop_reason]
    now = int(time.time())
    response_id = response_id_for(resp.id)
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": resp.created or now,
        "status": status,
        "background": False,
        "completed_at": now,
        "error": {"code": "server_error", "message": "the upstream failed"} if status == "failed" else None,
        "incomplete_details": {"reason": reason} if reason else None,
        "model": model,
        "output": encode_output(resp.parts, ToolNames.of(request), response_id),
        "usage": usage_to_wire(resp.usage),
        **response_settings(request),
    }
    return body


def stream_encoder(
    *, model: str, include_usage: bool = True, request: Request | None = None
) -> ResponsesStreamEncoder:
    """``request``: the client's decoded request (echoed settings, namespaced/custom tool calls)."""
    return ResponsesStreamEncoder(
        model=model, settings=response_settings(request), names=ToolNames.of(request)
    )


def encode_error_event(err: IsthmusError) -> bytes:
    return stream_error_event(err)


CODEC = Codec(
    protocol=RESPONSES,
    decode_request=decode_request,
    encode_request=encode_request,
    decode_response=decode_response,
    encode_response=encode_response,
    stream_decoder=ResponsesStreamDecoder,
    stream_encoder=stream_encoder,
    encode_error_event=encode_error_event,
    uses_request=True,
)

__all__ = [
    "CODEC",
    "ResponsesStreamDecoder",
    "ResponsesStreamEncoder",
    "custom_input",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "response_settings",
    "stream_encoder",
]
