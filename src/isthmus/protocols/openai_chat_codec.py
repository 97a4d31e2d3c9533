"""OpenAI Chat Completions codec: requests and responses to and from the IR (streams are in
``openai_chat_stream``).

What crosses how (the rest is in ``docs/fidelity.md``):
- Leading ``system``/``developer`` messages form ``Request.system``; later ones are ``Role.SYSTEM``
  messages in place. The encoder writes ``system`` for both.
- Consecutive ``tool`` messages decode into one user message of ``ToolResultPart``s (named from the
  matching call earlier in the conversation); the encoder writes one ``tool`` message per result and
  puts a result's images/documents, which ``tool`` messages cannot hold, in a user message after them.
- ``reasoning_content``/``reasoning`` (DeepSeek-style vendors) decode as thinking; only reasoning this
  wire produced is written back (as ``reasoning_content``), others' is dropped.
- ``max_tokens`` is written back as ``max_tokens`` when the caller used it, else
  ``max_completion_tokens``. ``cache_control`` marks are dropped (OpenAI caches prefixes itself).
- Everything else the IR does not model (``logprobs``, ``store``, ``service_tier``,
  ``prompt_cache_key``, ``modalities``, ``web_search_options``, vendor extras, ...) rides in
  ``Request.extensions[OPENAI_CHAT]``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
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
    StopReason,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
)
from isthmus.ir.reasoning import effort_for_budget
from isthmus.protocols.base import as_int, as_mapping
from isthmus.protocols.codec import (
    Codec,
    as_float,
    as_opt_int,
    as_str,
    data_url,
    parse_data_url,
    require,
    short_user_id,
)
from isthmus.protocols.openai_chat import stream_error_event, usage_from_wire, usage_to_wire
from isthmus.protocols.openai_chat_stream import (
    FINISH_TO_WIRE,
    OPENAI_CHAT,
    ChatStreamDecoder,
    ChatStreamEncoder,
    completion_id,
    reasoning_text,
    stop_from_wire,
)

TOOL_CHOICE_FROM_WIRE: dict[str, ToolChoiceMode] = {
    "auto": ToolChoiceMode.AUTO,
    "none": ToolChoiceMode.NONE,
    "required": ToolChoiceMode.REQUIRED,
}
TOOL_CHOICE_TO_WIRE: dict[ToolChoiceMode, str] = {v: k for k, v in TOOL_CHOICE_FROM_WIRE.items()}
# input_audio ``format`` ↔ media type.
AUDIO_MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "mp3": "audio/mpeg"}
AUDIO_FORMATS: dict[str, str] = {v: k for k, v in AUDIO_MEDIA_TYPES.items()} | {"audio/mp3": "mp3"}
EFFORTS = ("minimal", "low", "medium", "high", "xhigh")

_KNOWN_REQUEST_KEYS = frozenset(
    {
        "model",
        "messages",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "response_format",
        "temperature",
        "top_p",
        "seed",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "max_completion_tokens",
        "max_tokens",
        "reasoning_effort",
        "user",
        "metadata",
        "stream",
        "stream_options",
    }
)

# --- decoding ---------------------------------------------------------------------------------


def _image(part: Mapping[str, Any]) -> ImagePart:
    image = as_mapping(part.get("image_url"))
    url = str(image.get("url", ""))
    parsed = parse_data_url(url)
    source = (
        MediaSource(kind=SourceKind.BASE64, data=parsed[1], media_type=parsed[0])
        if parsed is not None
        else MediaSource(kind=SourceKind.URL, data=url)
    )
    return ImagePart(source=source, detail=as_str(image.get("detail")))


def _file(part: Mapping[str, Any]) -> DocumentPart:
    file = as_mapping(part.get("file"))
    filename = as_str(file.get("filename"))
    file_data = as_str(file.get("file_data"))
    if file_data is not None:
        parsed = parse_data_url(file_data)
        media_type, payload = parsed if parsed is not None else ("application/pdf", file_data)
        source = MediaSource(kind=SourceKind.BASE64, data=payload, media_type=media_type)
    else:
        source = MediaSource(kind=SourceKind.FILE_ID, data=str(file.get("file_id", "")))
    return DocumentPart(source=source, filename=filename)


def _audio(part: Mapping[str, Any]) -> AudioPart:
    audio = as_mapping(part.get("input_audio"))
    fmt = as_str(audio.get("format"))
    media_type = AUDIO_MEDIA_TYPES.get(fmt or "", f"audio/{fmt}" if fmt else None)
    return AudioPart(
        source=MediaSource(kind=SourceKind.BASE64, data=str(audio.get("data", "")), media_type=media_type),
        format=fmt,
    )


def _content(content: object) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(text=content)]
    parts: list[Part] = []
    for raw in content if isinstance(content, list) else []:
        p = as_mapping(raw)
        kind = p.get("type")
        if kind == "text":
            parts.append(TextPart(text=str(p.get("text", ""))))
        elif kind == "refusal":
            parts.append(TextPart(text=str(p.get("refusal", ""))))
        elif kind == "image_url":
            parts.append(_image(p))
        elif kind == "input_audio":
            parts.append(_audio(p))
        elif kind == "file":
            parts.append(_file(p))
        elif isinstance(kind, str):
            parts.append(OpaquePart(type=kind, data=dict(p), origin=OPENAI_CHAT))
    return parts


def _texts(content: object) -> list[TextPart]:
    return [p for p in _content(content) if isinstance(p, TextPart)]


def _assistant(m: Mapping[str, Any], names: dict[str, str]) -> Message:
    parts: list[Part] = []
    thinking = reasoning_text(m)
    if thinking is not None:
        parts.append(ThinkingPart(text=thinking, origin=OPENAI_CHAT))
    calls = m.get("tool_calls")
    legacy = as_mapping(m.get("function_call"))
    has_calls = bool(calls) or bool(legacy)
    content = m.get("content")
    if not (has_calls and content in ("", None)):
        parts.extend(_content(content))
    refusal = as_str(m.get("refusal"))
    if refusal:
        parts.append(TextPart(text=refusal))
    for raw in calls if isinstance(calls, list) else []:
        call = as_mapping(raw)
        custom = call.get("type") == "custom"
        function = as_mapping(call.get("custom") if custom else call.get("function"))
        call_id = str(call.get("id", ""))
        name = str(function.get("name", ""))
        names[call_id] = name
        arguments = function.get("input") if custom else function.get("arguments")
        parts.append(
            ToolCallPart(
                id=call_id,
                name=name,
                arguments=arguments if isinstance(arguments, str) else "",
                kind="custom" if custom else "function",
            )
        )
    if legacy:
        name = str(legacy.get("name", ""))
        names[name] = name
        args = legacy.get("arguments")
        parts.append(ToolCallPart(id=name, name=name, arguments=args if isinstance(args, str) else ""))
    return Message(role=Role.ASSISTANT, parts=parts)


def _decode_messages(raw_messages: list[Any]) -> tuple[list[TextPart], list[Message]]:
    system: list[TextPart] = []
    messages: list[Message] = []
    names: dict[str, str] = {}
    results_open = False  # the last message holds tool results only, so more may join it
    for i, raw in enumerate(raw_messages):
        m = as_mapping(raw)
        role = m.get("role")
        if role in ("system", "developer"):
            if messages:
                messages.append(Message(role=Role.SYSTEM, parts=list(_texts(m.get("content")))))
            else:
                system.extend(_texts(m.get("content")))
            results_open = False
            continue
        if role in ("tool", "function"):
            call_id = str(m.get("tool_call_id", m.get("name", "")))
            result = ToolResultPart(
                call_id=call_id,
                name=names.get(call_id, as_str(m.get("name"))),
                content=[
                    p
                    for p in _content(m.get("content"))
                    if isinstance(p, TextPart | ImagePart | DocumentPart)
                ],
            )
            if results_open:
                messages[-1].parts.append(result)
            else:
                messages.append(Message(role=Role.USER, parts=[result]))
                results_open = True
            continue
        results_open = False
        if role == "assistant":
            messages.append(_assistant(m, names))
        elif role == "user":
            messages.append(Message(role=Role.USER, parts=_content(m.get("content"))))
        else:
            raise InvalidRequestError(f"messages[{i}].role {role!r} is not a chat role", param="messages")
    return system, messages


def _decode_tool(raw: object) -> Tool:
    t = as_mapping(raw)
    kind = t.get("type", "function")
    if kind == "function":
        f = as_mapping(t.get("function"))
        params = f.get("parameters")
        strict = f.get("strict")
        return FunctionTool(
            name=str(f.get("name", "")),
            description=as_str(f.get("description")),
            parameters=dict(params) if isinstance(params, Mapping) else None,
            strict=strict if isinstance(strict, bool) else None,
        )
    name = as_str(as_mapping(t.get(str(kind))).get("name"))
    return BuiltinTool(kind=str(kind), name=name, config=dict(t), origin=OPENAI_CHAT)


def _decode_tool_choice(body: Mapping[str, Any], ext: dict[str, Any]) -> ToolChoice | None:
    choice = body.get("tool_choice", body.get("function_call"))
    if choice is None:
        return None
    if isinstance(choice, str):
        mode = TOOL_CHOICE_FROM_WIRE.get(choice)
        if mode is None:
            ext["tool_choice"] = choice
            return None
        return ToolChoice(mode=mode)
    c = as_mapping(choice)
    kind = c.get("type")
    if kind in ("function", "custom") or (kind is None and "name" in c):
        named = as_mapping(c.get(str(kind))) if kind else c
        return ToolChoice(mode=ToolChoiceMode.TOOL, name=as_str(named.get("name")))
    ext["tool_choice"] = dict(c)  # allowed_tools and future shapes: carried as is
    return None


def _decode_format(value: object) -> ResponseFormat | None:
    fmt = as_mapping(value)
    kind = fmt.get("type")
    if kind == "json_schema":
        spec = as_mapping(fmt.get("json_schema"))
        schema = spec.get("schema")
        strict = spec.get("strict")
        return ResponseFormat(
            kind=ResponseFormatKind.JSON_SCHEMA,
            schema=dict(schema) if isinstance(schema, Mapping) else None,
            name=as_str(spec.get("name")),
            description=as_str(spec.get("description")),
            strict=strict if isinstance(strict, bool) else None,
        )
    if kind == "json_object":
        return ResponseFormat(kind=ResponseFormatKind.JSON_OBJECT)
    if kind == "text":
        return ResponseFormat(kind=ResponseFormatKind.TEXT)
    return None


def decode_request(body: Mapping[str, Any]) -> Request:
    raw_messages = body.get("messages")
    require(isinstance(raw_messages, list), "messages must be a list", "messages")
    assert isinstance(raw_messages, list)
    ext: dict[str, Any] = {k: v for k, v in body.items() if k not in _KNOWN_REQUEST_KEYS}
    system, messages = _decode_messages(raw_messages)
    tools = [_decode_tool(t) for t in body.get("tools") or [] if isinstance(t, Mapping)]
    tools += [
        _decode_tool({"type": "function", "function": f})
        for f in body.get("functions") or []
        if isinstance(f, Mapping)
    ]
    max_tokens = as_opt_int(body.get("max_completion_tokens"))
    if max_tokens is None and body.get("max_tokens") is not None:
        max_tokens = as_opt_int(body.get("max_tokens"))
        ext["max_tokens"] = body["max_tokens"]  # the caller's spelling, kept for a Chat upstream
    effort = as_str(body.get("reasoning_effort"))
    reasoning = None
    if effort is not None:
        reasoning = ReasoningConfig(
            mode=ReasoningMode.DISABLED if effort == "none" else ReasoningMode.ENABLED, effort=effort
        )
    stop = body.get("stop")
    metadata = as_mapping(body.get("metadata"))
    parallel = body.get("parallel_tool_calls")
    return Request(
        model=as_str(body.get("model")),
        system=system,
        messages=messages,
        tools=tools,
        tool_choice=_decode_tool_choice(body, ext),
        parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        response_format=_decode_format(body.get("response_format")),
        temperature=as_float(body.get("temperature")),
        top_p=as_float(body.get("top_p")),
        seed=as_opt_int(body.get("seed")),
        n=as_opt_int(body.get("n")),
        presence_penalty=as_float(body.get("presence_penalty")),
        frequency_penalty=as_float(body.get("frequency_penalty")),
        stop=[stop] if isinstance(stop, str) else [str(s) for s in stop] if isinstance(stop, list) else [],
        max_output_tokens=max_tokens,
        reasoning=reasoning,
        user=as_str(body.get("user")),
        metadata={str(k): str(v) for k, v in metadata.items()},
        stream=body.get("stream") is True,
        extensions={OPENAI_CHAT: ext} if ext else {},
    )


def _message_parts(message: Mapping[str, Any]) -> list[Part]:
    return _assistant(message, {}).parts


def decode_response(body: Mapping[str, Any]) -> Response:
    choices = body.get("choices")
    choice = as_mapping(choices[0]) if isinstance(choices, list) and choices else {}
    message = as_mapping(choice.get("message"))
    stop = stop_from_wire(as_str(choice.get("finish_reason")))
    if as_str(message.get("refusal")) and stop is StopReason.END_TURN:
        stop = StopReason.REFUSAL
    return Response(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        parts=_message_parts(message),
        stop_reason=stop,
        usage=usage_from_wire(as_mapping(body.get("usage"))),
        created=as_int(body.get("created")),
    )


# --- encoding ---------------------------------------------------------------------------------


def _encode_image(part: ImagePart) -> dict[str, Any]:
    src = part.source
    if src.kind is SourceKind.BASE64:
        url = data_url(src.media_type or "image/png", src.data)
    elif src.kind is SourceKind.URL:
        url = src.data
    else:
        raise InvalidRequestError(f"an image given as {src.kind} cannot be sent to an OpenAI Chat upstream")
    image: dict[str, Any] = {"url": url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _encode_document(part: DocumentPart) -> dict[str, Any]:
    src = part.source
    if src.kind is SourceKind.TEXT:  # plain-text documents become text (approximation)
        heading = f"{part.title}\n\n" if part.title else ""
        return {"type": "text", "text": heading + src.data}
    if src.kind is SourceKind.BASE64:
        media_type = src.media_type or "application/pdf"
        file: dict[str, Any] = {"file_data": data_url(media_type, src.data)}
        extension = ".pdf" if media_type.endswith("pdf") else ""
        name = part.filename or part.title or "document"
        file["filename"] = name if "." in name or not extension else name + extension
        return {"type": "file", "file": file}
    if src.kind is SourceKind.FILE_ID:
        return {"type": "file", "file": {"file_id": src.data}}
    raise InvalidRequestError("a document given by URL cannot be sent to an OpenAI Chat upstream")


def _encode_audio(part: AudioPart) -> dict[str, Any]:
    if part.source.kind is not SourceKind.BASE64:
        raise InvalidRequestError("audio must be inline base64 for an OpenAI Chat upstream")
    fmt = part.format or AUDIO_FORMATS.get(part.source.media_type or "", "wav")
    return {"type": "input_audio", "input_audio": {"data": part.source.data, "format": fmt}}


def _encode_user_part(part: Part) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return _encode_image(part)
    if isinstance(part, DocumentPart):
        return _encode_document(part)
    if isinstance(part, AudioPart):
        return _encode_audio(part)
    if isinstance(part, OpaquePart) and part.origin is OPENAI_CHAT:
        return dict(part.data)
    return None  # reasoning and foreign opaque parts: not user content on this wire


def _content_value(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _encode_user(message: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []  # tool-result media a tool message cannot hold
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            texts = [c.text for c in part.content if isinstance(c, TextPart)]
            text = "\n".join(texts)
            if part.is_error:
                text = f"Error: {text}" if text else "Error"
            out.append({"role": "tool", "tool_call_id": part.call_id, "content": text})
            media = [_encode_user_part(c) for c in part.content if not isinstance(c, TextPart)]
            if media:
                attachments.append({"type": "text", "text": f"Attachments of tool result {part.call_id}:"})
                attachments.extend(m for m in media if m is not None)
            continue
        encoded = _encode_user_part(part)
        if encoded is not None:
            content.append(encoded)
    content = attachments + content
    if content:
        out.append({"role": "user", "content": _content_value(content)})
    return out


def _encode_assistant(message: Message) -> dict[str, Any] | None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ThinkingPart) and part.origin is OPENAI_CHAT:
            reasoning.append(part.text)
        elif isinstance(part, ToolCallPart):
            if part.kind == "custom":
                calls.append(
                    {"id": part.id, "type": "custom", "custom": {"name": part.name, "input": part.arguments}}
                )
            else:
                function = {"name": part.name, "arguments": part.arguments or "{}"}
                calls.append({"id": part.id, "type": "function", "function": function})
        elif isinstance(part, AudioPart | ImagePart | DocumentPart):
            raise InvalidRequestError(
                "an assistant message with media cannot be sent to an OpenAI Chat upstream"
            )
    if not texts and not calls and not reasoning:
        return None
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        out["reasoning_content"] = "".join(reasoning)
    if calls:
        out["tool_calls"] = calls
    return out


def _encode_tool(tool: Tool) -> dict[str, Any]:
    if isinstance(tool, FunctionTool):
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = tool.parameters
        if tool.strict is not None:
            function["strict"] = tool.strict
        function.update(tool.extensions.get(OPENAI_CHAT, {}))
        return {"type": "function", "function": function}
    if tool.origin is OPENAI_CHAT:
        return dict(tool.config)
    if tool.kind == "custom" and tool.name:  # Responses custom tool → Chat custom tool
        custom = {k: v for k, v in tool.config.items() if k in ("name", "description", "format")}
        return {"type": "custom", "custom": custom}
    raise InvalidRequestError(
        f"the {tool.kind!r} tool ({tool.origin} built-in) has no equivalent on an OpenAI Chat upstream"
    )


def _encode_reasoning(reasoning: ReasoningConfig | None) -> str | None:
    if reasoning is None:
        return None
    if reasoning.effort is not None:
        return reasoning.effort
    if reasoning.mode is ReasoningMode.ENABLED and reasoning.budget_tokens is not None:
        return effort_for_budget(reasoning.budget_tokens, allowed=EFFORTS)
    return None  # adaptive/disabled without an effort: the model's default


def _encode_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.kind is ResponseFormatKind.JSON_SCHEMA:
        spec: dict[str, Any] = {"name": fmt.name or "response"}
        if fmt.description is not None:
            spec["description"] = fmt.description
        spec["schema"] = fmt.schema if fmt.schema is not None else {"type": "object"}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        return {"type": "json_schema", "json_schema": spec}
    return {"type": str(fmt.kind)}


def encode_request(req: Request, *, model: str, stream: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append(
            {
                "role": "system",
                "content": _content_value([{"type": "text", "text": p.text} for p in req.system]),
            }
        )
    for m in req.messages:
        if m.role is Role.SYSTEM:
            texts = [{"type": "text", "text": p.text} for p in m.parts if isinstance(p, TextPart)]
            if texts:
                messages.append({"role": "system", "content": _content_value(texts)})
        elif m.role is Role.USER:
            messages.extend(_encode_user(m))
        else:
            assistant = _encode_assistant(m)
            if assistant is not None:
                messages.append(assistant)
    ext = dict(req.extensions.get(OPENAI_CHAT, {}))
    body: dict[str, Any] = {"model": model, "messages": messages}
    if req.tools:
        body["tools"] = [_encode_tool(t) for t in req.tools]
        if req.tool_choice is not None:
            if req.tool_choice.mode is ToolChoiceMode.TOOL:
                body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name or ""}}
            else:
                body["tool_choice"] = TOOL_CHOICE_TO_WIRE[req.tool_choice.mode]
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    else:
        ext.pop("tool_choice", None)
    if req.response_format is not None:
        body["response_format"] = _encode_format(req.response_format)
    scalars = {
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "n": req.n,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "reasoning_effort": _encode_reasoning(req.reasoning),
    }
    body.update({k: v for k, v in scalars.items() if v is not None})
    if req.stop:
        body["stop"] = list(req.stop)
    if req.max_output_tokens is not None:
        key = "max_tokens" if ext.pop("max_tokens", None) is not None else "max_completion_tokens"
        body[key] = req.max_output_tokens
    if req.user is not None:
        body["user"] = short_user_id(req.user)
    if req.metadata:
        body["metadata"] = dict(req.metadata)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    for key, value in ext.items():
        body.setdefault(key, value)
    return body


def encode_response(resp: Response, *, model: str) -> dict[str, Any]:
    message = _encode_assistant(Message(role=Role.ASSISTANT, parts=_client_parts(resp.parts))) or {
        "role": "assistant",
        "content": None,
    }
    message.setdefault("refusal", None)
    message["content"] = message.get("content")
    return {
        "id": completion_id(resp.id),
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_TO_WIRE[resp.stop_reason],
            }
        ],
        "usage": usage_to_wire(resp.usage),
        "system_fingerprint": None,
    }


def _client_parts(parts: list[Part]) -> list[Part]:
    """An answer's parts as a Chat client can see them: every kind of readable reasoning becomes
    ``reasoning_content``; opaque payloads and media have no slot and are left out."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, ThinkingPart):
            out.append(ThinkingPart(text=part.text, origin=OPENAI_CHAT))
        elif isinstance(part, EncryptedReasoningPart) and (part.summary or part.content):
            out.append(ThinkingPart(text="\n\n".join(part.summary or part.content), origin=OPENAI_CHAT))
        elif isinstance(part, TextPart | ToolCallPart):
            out.append(part)
        elif isinstance(part, RedactedThinkingPart | OpaquePart | ImagePart | DocumentPart | AudioPart):
            continue
    return out


def _stream_encoder(*, model: str, include_usage: bool = False) -> ChatStreamEncoder:
    return ChatStreamEncoder(model=model, include_usage=include_usage)


def encode_error_event(err: IsthmusError) -> bytes:
    return stream_error_event(err)


CODEC = Codec(
    protocol=OPENAI_CHAT,
    decode_request=decode_request,
    encode_request=encode_request,
    decode_response=decode_response,
    encode_response=encode_response,
    stream_decoder=ChatStreamDecoder,
    stream_encoder=_stream_encoder,
    encode_error_event=encode_error_event,
)

__all__ = [
    "CODEC",
    "ChatStreamDecoder",
    "ChatStreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]
