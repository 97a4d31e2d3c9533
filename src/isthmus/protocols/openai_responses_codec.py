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
from isthmus.protocols.base import as_mapping
from isthmus.protocols.codec import (
    Codec,
    as_float,
    as_opt_int,
    as_str,
    parse_data_url,
    require,
)
from isthmus.protocols.openai_responses import stream_error_event, usage_from_response, usage_to_wire
from isthmus.protocols.openai_responses_encode import encode_request, encode_tools, response_settings
from isthmus.protocols.openai_responses_parts import (
    CUSTOM_INPUT,
    CUSTOM_KEY,
    NAMESPACE_KEY,
    RESPONSES,
    STOP_TO_WIRE,
    PartsBuilder,
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
from isthmus.protocols.openai_responses_stream import ResponsesStreamDecoder, ResponsesStreamEncoder

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
    "encode_tools",
    "response_settings",
    "stream_encoder",
]
