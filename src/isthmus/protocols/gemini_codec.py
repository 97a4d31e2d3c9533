"""Gemini codec: ``generateContent`` requests and responses (and streams) ↔ the IR.

What crosses how (the pairs are tabled in ``docs/fidelity.md``):
- ``systemInstruction`` ↔ ``Request.system``; ``Role.SYSTEM`` messages from other protocols are
  folded into it (Gemini has no system turns). Roles ``user``/``model`` (legacy ``function`` is a
  user turn).
- Parts: ``text`` (``thought: true`` is reasoning), ``inlineData``/``fileData`` by media type
  (images, PDFs and text documents, audio; video and others stay Gemini-only), ``functionCall``,
  ``functionResponse`` (``{"output": ...}`` / ``{"error": ...}`` as the result text), and
  ``executableCode``/``codeExecutionResult`` as Gemini-only parts. ``thoughtSignature`` is kept on
  the part that carried it and sent back only to Gemini.
- Calls without ids get synthetic ones (``call_gm_…``); toward Gemini those are left out and
  results are matched by name and order, as the API does.
- Function declarations are sent with ``parametersJsonSchema`` (full JSON Schema), or with
  ``parameters`` when the client used that field. A model turn from another protocol has no
  signatures: its first call gets the dummy signature Gemini documents for imported history.
- ``generationConfig`` fields map to the neutral settings; ``thinkingConfig`` to ``reasoning``
  (``thinkingBudget`` 0 = off, -1 = adaptive; ``thinkingLevel`` = an effort). ``safetySettings``,
  ``cachedContent`` (same family only), ``labels`` and unknown fields ride in
  ``Request.extensions[GEMINI]``.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from typing import Any

from isthmus.errors import InvalidRequestError, IsthmusError
from isthmus.ir import (
    AudioPart,
    BuiltinTool,
    DocumentPart,
    FunctionTool,
    ImagePart,
    MediaSource,
    Message,
    OpaquePart,
    Part,
    ReasoningConfig,
    ReasoningMode,
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
from isthmus.ir.reasoning import budget_for_effort
from isthmus.protocols.base import as_mapping
from isthmus.protocols.codec import Codec, arguments_object, as_float, as_opt_int, as_str, dump_json, require
from isthmus.protocols.gemini import stream_error_event, usage_from_response, usage_to_wire
from isthmus.protocols.gemini_stream import (
    GEMINI,
    STOP_TO_WIRE,
    GeminiStreamDecoder,
    GeminiStreamEncoder,
    PartsBuilder,
    candidate,
    client_parts,
    field,
    is_synthetic_id,
    stop_from_wire,
    synthetic_id,
)

# Gemini documents this value for function calls in history that no Gemini model signed (history
# imported from another model); without a signature Gemini 3 rejects the turn.
DUMMY_SIGNATURE = "skip_thought_signature_validator"

TOOL_MODE_FROM_WIRE: dict[str, ToolChoiceMode] = {
    "AUTO": ToolChoiceMode.AUTO,
    "ANY": ToolChoiceMode.REQUIRED,
    "NONE": ToolChoiceMode.NONE,
    "VALIDATED": ToolChoiceMode.AUTO,
}
TOOL_MODE_TO_WIRE: dict[ToolChoiceMode, str] = {
    ToolChoiceMode.AUTO: "AUTO",
    ToolChoiceMode.REQUIRED: "ANY",
    ToolChoiceMode.NONE: "NONE",
    ToolChoiceMode.TOOL: "ANY",
}
# Tool entry keys (besides functionDeclarations) → neutral built-in kinds.
BUILTIN_KINDS: dict[str, str] = {
    "googleSearch": "web_search",
    "google_search": "web_search",
    "codeExecution": "code_execution",
    "code_execution": "code_execution",
    "urlContext": "url_context",
    "url_context": "url_context",
    "googleSearchRetrieval": "google_search_retrieval",
    "fileSearch": "file_search",
    "computerUse": "computer",
    "googleMaps": "google_maps",
}
FOREIGN_BUILTINS: dict[str, dict[str, Any]] = {
    "web_search": {"googleSearch": {}},
    "google_search": {"googleSearch": {}},
    "code_execution": {"codeExecution": {}},
    "url_context": {"urlContext": {}},
    "web_fetch": {"urlContext": {}},
}
THINKING_LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
LEVEL_FROM_FOREIGN: dict[str, str] = {"XHIGH": "HIGH", "MAX": "HIGH"}
JSON_MIME = "application/json"

_KNOWN_REQUEST_KEYS = frozenset(
    {"model", "contents", "systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config"}
)
_KNOWN_GENERATION_KEYS = frozenset(
    {
        "temperature",
        "topP",
        "topK",
        "seed",
        "candidateCount",
        "presencePenalty",
        "frequencyPenalty",
        "stopSequences",
        "maxOutputTokens",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "thinkingConfig",
    }
)
_SNAKE = {
    "top_p": "topP",
    "top_k": "topK",
    "candidate_count": "candidateCount",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "stop_sequences": "stopSequences",
    "max_output_tokens": "maxOutputTokens",
    "response_mime_type": "responseMimeType",
    "response_schema": "responseSchema",
    "response_json_schema": "responseJsonSchema",
    "thinking_config": "thinkingConfig",
    # google-genai (Python) sends thinkingConfig's own fields in snake_case
    "include_thoughts": "includeThoughts",
    "thinking_budget": "thinkingBudget",
    "thinking_level": "thinkingLevel",
}
# Extension keys this codec sets for itself (never sent).
_SCHEMA_FIELD = "_schema_field"  # "responseSchema" when the client used it instead of responseJsonSchema
_THINKING_LEVEL = "_thinking_level"  # the client gave thinkingLevel (send a level back, not a budget)


# --- decoding ---------------------------------------------------------------------------------


def _camel(config: Mapping[str, Any]) -> dict[str, Any]:
    return {_SNAKE.get(k, k): v for k, v in config.items()}


def _result_content(response: object) -> tuple[list[ToolResultContent], bool]:
    """A ``functionResponse.response`` as result content, and whether it reports an error."""
    r = as_mapping(response)
    if set(r) == {"output"} and isinstance(r["output"], str):
        return [TextPart(text=r["output"])], False
    if set(r) == {"error"}:
        error = r["error"]
        return [TextPart(text=error if isinstance(error, str) else dump_json(error))], True
    return [TextPart(text=dump_json(dict(r)))], False


class _Conversation:
    """Gemini contents → IR messages; results without ids are matched to calls by name and order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._pending: dict[str, deque[str]] = defaultdict(deque)  # name → call ids awaiting results

    def add(self, content: Mapping[str, Any], position: int) -> None:
        role = content.get("role") or "user"
        require(role in ("user", "model", "function"), f"contents.{position}.role must be user or model")
        parts = [as_mapping(p) for p in content.get("parts") or ()]
        if role == "model":
            builder = PartsBuilder(str(position))
            for raw in parts:
                builder.add(raw)
            self._pending.clear()
            for part in builder.parts:
                if isinstance(part, ToolCallPart):
                    self._pending[part.name].append(part.id)
            self.messages.append(Message(role=Role.ASSISTANT, parts=builder.parts))
            return
        user = PartsBuilder(str(position))
        for raw in parts:
            response = field(raw, "functionResponse", "function_response")
            if isinstance(response, Mapping):
                user.parts.append(self._result(response, position, len(user.parts)))
            else:
                user.add(raw)
        self.messages.append(Message(role=Role.USER, parts=user.parts))

    def _result(self, response: Mapping[str, Any], position: int, index: int) -> ToolResultPart:
        name = str(response.get("name", ""))
        call_id = as_str(response.get("id"))
        waiting = self._pending.get(name)
        if call_id is None:
            call_id = waiting.popleft() if waiting else synthetic_id(f"{position}_r", index)
        elif waiting and call_id in waiting:
            waiting.remove(call_id)
        content, is_error = _result_content(response.get("response"))
        for extra in response.get("parts") or ():  # multimodal function responses (Gemini 3)
            builder = PartsBuilder("")
            builder.add(as_mapping(extra))
            content.extend(p for p in builder.parts if isinstance(p, TextPart | ImagePart | DocumentPart))
        return ToolResultPart(call_id=call_id, name=name, content=content, is_error=is_error)


def _decode_tools(raw: object, ext: dict[str, Any]) -> list[Tool]:
    tools: list[Tool] = []
    for entry in raw if isinstance(raw, list) else ():
        t = as_mapping(entry)
        for key, value in t.items():
            if key in ("functionDeclarations", "function_declarations"):
                for declaration in value or ():
                    tools.append(_decode_declaration(as_mapping(declaration)))
            else:
                tools.append(
                    BuiltinTool(
                        kind=BUILTIN_KINDS.get(key, key), name=key, config={key: value}, origin=GEMINI
                    )
                )
    return tools


def _decode_declaration(d: Mapping[str, Any]) -> FunctionTool:
    json_schema = field(d, "parametersJsonSchema", "parameters_json_schema")
    schema = json_schema if json_schema is not None else d.get("parameters")
    extra = {
        k: v
        for k, v in d.items()
        if k not in ("name", "description", "parameters", "parametersJsonSchema", "parameters_json_schema")
    }
    if json_schema is None and d.get("parameters") is not None:
        extra[_SCHEMA_FIELD] = "parameters"
    return FunctionTool(
        name=str(d.get("name", "")),
        description=as_str(d.get("description")),
        parameters=dict(schema) if isinstance(schema, Mapping) else None,
        extensions={GEMINI: extra} if extra else {},
    )


def _decode_tool_choice(body: Mapping[str, Any], ext: dict[str, Any]) -> ToolChoice | None:
    tool_config = as_mapping(field(body, "toolConfig", "tool_config"))
    config = as_mapping(field(tool_config, "functionCallingConfig", "function_calling_config"))
    leftover = {
        k: v for k, v in tool_config.items() if k not in ("functionCallingConfig", "function_calling_config")
    }
    if leftover:
        ext["toolConfig"] = leftover
    mode_name = as_str(config.get("mode"))
    if mode_name is None:
        return None
    mode = TOOL_MODE_FROM_WIRE.get(mode_name.upper(), ToolChoiceMode.AUTO)
    names = field(config, "allowedFunctionNames", "allowed_function_names")
    if mode is ToolChoiceMode.REQUIRED and isinstance(names, list) and len(names) == 1:
        return ToolChoice(mode=ToolChoiceMode.TOOL, name=str(names[0]))
    if (isinstance(names, list) and names) or mode_name.upper() == "VALIDATED":
        ext["functionCallingConfig"] = dict(config)  # a subset of tools: only Gemini can say it
    return ToolChoice(mode=mode)


def _decode_reasoning(config: Mapping[str, Any], ext: dict[str, Any]) -> ReasoningConfig | None:
    thinking = _camel(as_mapping(config.get("thinkingConfig")))
    if not thinking:
        return None
    include = thinking.get("includeThoughts")
    budget = as_opt_int(thinking.get("thinkingBudget"))
    level = as_str(thinking.get("thinkingLevel"))
    # Gemini's own default for includeThoughts is false: say so, so other encoders don't ask for more.
    out = ReasoningConfig(
        mode=ReasoningMode.DEFAULT, include_thoughts=include if isinstance(include, bool) else False
    )
    if budget == 0:
        out.mode = ReasoningMode.DISABLED
    elif budget is not None and budget < 0:
        out.mode = ReasoningMode.ADAPTIVE
    elif budget is not None:
        out.mode, out.budget_tokens = ReasoningMode.ENABLED, budget
    if level is not None:
        ext[_THINKING_LEVEL] = True
        out.effort = level.lower()
        if out.mode is ReasoningMode.DEFAULT:
            out.mode = ReasoningMode.ENABLED
    return out


def _decode_format(config: Mapping[str, Any], ext: dict[str, Any]) -> ResponseFormat | None:
    mime = as_str(config.get("responseMimeType"))
    json_schema = config.get("responseJsonSchema")
    schema = json_schema if json_schema is not None else config.get("responseSchema")
    if json_schema is None and schema is not None:
        ext[_SCHEMA_FIELD] = "responseSchema"
    if mime == JSON_MIME or (mime is None and schema is not None):
        if isinstance(schema, Mapping):
            return ResponseFormat(kind=ResponseFormatKind.JSON_SCHEMA, schema=dict(schema))
        return ResponseFormat(kind=ResponseFormatKind.JSON_OBJECT)
    if mime is not None and mime != "text/plain":
        ext["responseMimeType"] = mime  # text/x.enum and friends
        if schema is not None:
            ext["responseSchema"] = schema
    return None


def decode_request(body: Mapping[str, Any]) -> Request:
    ext: dict[str, Any] = {k: v for k, v in body.items() if k not in _KNOWN_REQUEST_KEYS}
    config = _camel(as_mapping(ext.pop("generationConfig", None) or ext.pop("generation_config", None)))
    leftover = {k: v for k, v in config.items() if k not in _KNOWN_GENERATION_KEYS}
    if leftover:
        ext["generationConfig"] = leftover
    contents = body.get("contents")
    if isinstance(contents, Mapping):  # a single Content is accepted too
        contents = [contents]
    require(isinstance(contents, list), "contents must be a list", "contents")
    assert isinstance(contents, list)
    conversation = _Conversation()
    for position, content in enumerate(contents):
        conversation.add(as_mapping(content), position)
    system_instruction = as_mapping(field(body, "systemInstruction", "system_instruction"))
    system = [
        TextPart(text=str(p["text"]))
        for p in (as_mapping(x) for x in system_instruction.get("parts") or ())
        if isinstance(p.get("text"), str)
    ]
    stops = config.get("stopSequences")
    response_format = _decode_format(config, ext)
    return Request(
        model=as_str(body.get("model")),
        system=system,
        messages=conversation.messages,
        tools=_decode_tools(body.get("tools"), ext),
        tool_choice=_decode_tool_choice(body, ext),
        response_format=response_format,
        temperature=as_float(config.get("temperature")),
        top_p=as_float(config.get("topP")),
        top_k=as_opt_int(config.get("topK")),
        seed=as_opt_int(config.get("seed")),
        n=as_opt_int(config.get("candidateCount")),
        presence_penalty=as_float(config.get("presencePenalty")),
        frequency_penalty=as_float(config.get("frequencyPenalty")),
        stop=[str(s) for s in stops] if isinstance(stops, list) else [],
        max_output_tokens=as_opt_int(config.get("maxOutputTokens")),
        reasoning=_decode_reasoning(config, ext),
        extensions={GEMINI: ext} if ext else {},
    )


def decode_response(body: Mapping[str, Any]) -> Response:
    candidates = body.get("candidates")
    first = as_mapping(candidates[0]) if isinstance(candidates, list) and candidates else {}
    response_id = str(field(body, "responseId", "response_id") or "")
    builder = PartsBuilder(response_id or "response")
    for raw in as_mapping(first.get("content")).get("parts") or ():
        builder.add(as_mapping(raw))
    called = any(isinstance(p, ToolCallPart) for p in builder.parts)
    reason = as_str(field(first, "finishReason", "finish_reason"))
    block = as_str(as_mapping(field(body, "promptFeedback", "prompt_feedback")).get("blockReason"))
    stop = stop_from_wire(reason, called_tools=called)
    if not first and block:
        stop = stop_from_wire("SAFETY", called_tools=False)
    return Response(
        id=response_id,
        model=str(field(body, "modelVersion", "model_version") or ""),
        parts=builder.parts,
        stop_reason=stop,
        usage=usage_from_response(body),
    )


# --- encoding ---------------------------------------------------------------------------------


def _blob(source: MediaSource, fallback: str) -> dict[str, Any]:
    mime = source.media_type or fallback
    if source.kind is SourceKind.BASE64:
        return {"inlineData": {"mimeType": mime, "data": source.data}}
    if source.kind is SourceKind.TEXT:
        return {"text": source.data}
    return {"fileData": {"mimeType": mime, "fileUri": source.data}}


def _media(part: ImagePart | DocumentPart | AudioPart) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return _blob(part.source, "image/png")
    if isinstance(part, DocumentPart):
        return _blob(part.source, "application/pdf")
    return _blob(part.source, f"audio/{part.format or 'wav'}")


def _function_response(part: ToolResultPart, name: str) -> list[dict[str, Any]]:
    texts = [c.text for c in part.content if isinstance(c, TextPart)]
    text = "".join(texts)
    response: dict[str, Any] = {"error": text} if part.is_error else {"output": text}
    call: dict[str, Any] = {"name": name, "response": response}
    if part.call_id and not is_synthetic_id(part.call_id):
        call = {"id": part.call_id, **call}
    extra = [_media(c) for c in part.content if not isinstance(c, TextPart)]
    return [{"functionResponse": call}, *extra]


def _upstream_parts(
    parts: Sequence[Part], names: Mapping[str, str], *, model_turn: bool
) -> list[dict[str, Any]]:
    """IR parts → Gemini parts for an upstream request (Gemini-made payloads only)."""
    out: list[dict[str, Any]] = []
    signed_call = False
    for part in parts:
        if isinstance(part, TextPart):
            text: dict[str, Any] = {"text": part.text}
            if part.thought_signature:
                text["thoughtSignature"] = part.thought_signature
            out.append(text)
        elif isinstance(part, ImagePart | DocumentPart | AudioPart):
            out.append(_media(part))
        elif isinstance(part, ThinkingPart):
            if part.origin is GEMINI:
                thought: dict[str, Any] = {"text": part.text, "thought": True}
                if part.signature:
                    thought["thoughtSignature"] = part.signature
                out.append(thought)
        elif isinstance(part, ToolCallPart):
            call: dict[str, Any] = {"name": part.name, "args": arguments_object(part.arguments)}
            if part.id and not is_synthetic_id(part.id):
                call = {"id": part.id, **call}
            wire: dict[str, Any] = {"functionCall": call}
            signature = part.thought_signature
            if signature is None and model_turn and not signed_call:
                signature = DUMMY_SIGNATURE
            if signature is not None:
                wire["thoughtSignature"] = signature
                signed_call = True
            out.append(wire)
        elif isinstance(part, ToolResultPart):
            name = part.name or names.get(part.call_id)
            if not name:
                raise InvalidRequestError(
                    f"the tool result for call {part.call_id!r} names no tool and matches no earlier call"
                )
            out.extend(_function_response(part, name))
        elif isinstance(part, OpaquePart) and part.origin is GEMINI:
            out.append(dict(part.data))
        # other protocols' reasoning and built-in tool history cannot go to Gemini
    return out


def _encode_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, FunctionTool):
            ext = dict(tool.extensions.get(GEMINI, {}))
            schema_field = (
                "parameters" if ext.pop(_SCHEMA_FIELD, None) == "parameters" else "parametersJsonSchema"
            )
            declaration: dict[str, Any] = {"name": tool.name}
            if tool.description is not None:
                declaration["description"] = tool.description
            if tool.parameters is not None:
                declaration[schema_field] = tool.parameters
            declaration.update(ext)
            declarations.append(declaration)
        elif tool.origin is GEMINI:
            others.append(dict(tool.config))
        elif tool.kind in FOREIGN_BUILTINS:
            others.append(dict(FOREIGN_BUILTINS[tool.kind]))
        else:
            raise InvalidRequestError(
                f"the {tool.kind!r} tool ({tool.origin} built-in) has no equivalent on a Gemini upstream"
            )
    return ([{"functionDeclarations": declarations}] if declarations else []) + others


def _encode_thinking(reasoning: ReasoningConfig | None, ext: Mapping[str, Any]) -> dict[str, Any] | None:
    if reasoning is None:
        return None
    out: dict[str, Any] = {}
    if reasoning.mode is ReasoningMode.DISABLED:
        out["thinkingBudget"] = 0
    elif reasoning.mode is ReasoningMode.ADAPTIVE:
        out["thinkingBudget"] = -1
    elif reasoning.budget_tokens is not None:
        out["thinkingBudget"] = reasoning.budget_tokens
    elif reasoning.effort is not None:
        level = reasoning.effort.upper()
        level = LEVEL_FROM_FOREIGN.get(level, level)
        if ext.get(_THINKING_LEVEL) and level in THINKING_LEVELS:
            out["thinkingLevel"] = level
        else:  # a budget works on every thinking model; levels only on the newest
            out["thinkingBudget"] = budget_for_effort(reasoning.effort)
    include = reasoning.include_thoughts
    if include is None and reasoning.mode in (ReasoningMode.ENABLED, ReasoningMode.ADAPTIVE):
        include = True  # another protocol's client asked for thinking it expects to see
    if include is not None and reasoning.mode is not ReasoningMode.DISABLED:
        out["includeThoughts"] = include
    return out or None


def _generation_config(req: Request, ext: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = dict(as_mapping(ext.pop("generationConfig", None)))
    for key, value in (
        ("temperature", req.temperature),
        ("topP", req.top_p),
        ("topK", req.top_k),
        ("seed", req.seed),
        ("candidateCount", req.n),
        ("presencePenalty", req.presence_penalty),
        ("frequencyPenalty", req.frequency_penalty),
        ("maxOutputTokens", req.max_output_tokens),
    ):
        if value is not None:
            config[key] = value
    if req.stop:
        config["stopSequences"] = list(req.stop)
    schema_field = ext.pop(_SCHEMA_FIELD, None)
    mime = ext.pop("responseMimeType", None)
    enum_schema = ext.pop("responseSchema", None)
    fmt = req.response_format
    if fmt is not None and fmt.kind is not ResponseFormatKind.TEXT:
        config["responseMimeType"] = JSON_MIME
        if fmt.schema is not None:
            config["responseSchema" if schema_field == "responseSchema" else "responseJsonSchema"] = (
                fmt.schema
            )
    elif mime is not None:
        config["responseMimeType"] = mime
        if enum_schema is not None:
            config["responseSchema"] = enum_schema
    thinking = _encode_thinking(req.reasoning, ext)
    ext.pop(_THINKING_LEVEL, None)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    return config


def encode_request(req: Request, *, model: str, stream: bool) -> dict[str, Any]:
    """A ``generateContent`` body (the model and ``stream`` go in the URL; ``model`` is unused)."""
    ext = dict(req.extensions.get(GEMINI, {}))
    system = [p.text for p in req.system]
    names: dict[str, str] = {}
    contents: list[dict[str, Any]] = []
    for message in req.messages:
        if message.role is Role.SYSTEM:
            system.extend(p.text for p in message.parts if isinstance(p, TextPart))
            continue
        for part in message.parts:
            if isinstance(part, ToolCallPart):
                names[part.id] = part.name
        model_turn = message.role is Role.ASSISTANT
        parts = _upstream_parts(message.parts, names, model_turn=model_turn)
        if parts:
            contents.append({"role": "model" if model_turn else "user", "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    if req.tools:
        body["tools"] = _encode_tools(req.tools)
    calling = dict(as_mapping(ext.pop("functionCallingConfig", None)))
    if req.tool_choice is not None and not calling:
        calling = {"mode": TOOL_MODE_TO_WIRE[req.tool_choice.mode]}
        if req.tool_choice.mode is ToolChoiceMode.TOOL and req.tool_choice.name:
            calling["allowedFunctionNames"] = [req.tool_choice.name]
    tool_config = dict(as_mapping(ext.pop("toolConfig", None)))
    if calling:
        tool_config["functionCallingConfig"] = calling
    if tool_config:
        body["toolConfig"] = tool_config
    config = _generation_config(req, ext)
    if config:
        body["generationConfig"] = config
    for key, value in ext.items():
        body.setdefault(key, value)
    return body


def encode_response(resp: Response, *, model: str) -> dict[str, Any]:
    return {
        "candidates": [candidate(client_parts(resp.parts), STOP_TO_WIRE[resp.stop_reason])],
        "usageMetadata": usage_to_wire(resp.usage),
        "modelVersion": model,
        "responseId": resp.id or "response",
    }


def _stream_encoder(*, model: str, include_usage: bool = True) -> GeminiStreamEncoder:
    return GeminiStreamEncoder(model=model, include_usage=include_usage)


def encode_error_event(err: IsthmusError) -> bytes:
    return stream_error_event(err)


CODEC = Codec(
    protocol=GEMINI,
    decode_request=decode_request,
    encode_request=encode_request,
    decode_response=decode_response,
    encode_response=encode_response,
    stream_decoder=GeminiStreamDecoder,
    stream_encoder=_stream_encoder,
    encode_error_event=encode_error_event,
)

__all__ = [
    "CODEC",
    "GeminiStreamDecoder",
    "GeminiStreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]
