"""Anthropic Messages codec: requests, responses and streams to and from the IR.

What crosses how (the rest of the fidelity rules are in ``docs/fidelity.md``):
- ``system`` (string or text blocks) ↔ ``Request.system``; a ``role: "system"`` message inside
  ``messages`` (Claude Code sends them) decodes to a ``Role.SYSTEM`` message and is folded into
  ``system`` when encoding, after the top-level blocks.
- ``thinking``/``redacted_thinking`` blocks keep their text, signature and data byte for byte and are
  sent upstream only when Anthropic made them. Reasoning made by another protocol goes to an
  Anthropic *client* as a ``thinking`` block whose ``signature`` is a sealed envelope
  (:mod:`isthmus.ir.reasoning`), which this decoder opens again on the client's next turn; a Gemini
  ``thoughtSignature`` on a text or tool-call part travels as an empty thinking block next to it.
- Fields this codec does not model (``context_management``, ``container``, ``service_tier``,
  ``speed``, top-level ``cache_control``, unknown ``output_config`` keys, a ``thinking`` object with
  extra keys such as ``display``, ...) ride in ``Request.extensions[ANTHROPIC]`` and are written back
  only to an Anthropic upstream.
- Thinking needs a signed thinking block at the start of the last assistant tool-use turn; when the
  history (from another protocol) has none, thinking is switched off for that request rather than
  having the upstream reject it. With thinking on, ``temperature``/``top_k`` are dropped and
  ``top_p`` is kept only when ≥ 0.95, as the API requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from isthmus.errors import InvalidRequestError, IsthmusError
from isthmus.ir import (
    AudioPart,
    BuiltinTool,
    CacheControl,
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
    ToolResultContent,
    ToolResultPart,
)
from isthmus.ir.reasoning import budget_for_effort, unseal
from isthmus.protocols.anthropic import (
    stream_error_event,
    usage_from_wire,
    usage_to_wire,
)
from isthmus.protocols.anthropic_stream import (
    ANTHROPIC,
    STOP_FROM_WIRE,
    STOP_TO_WIRE,
    AnthropicStreamDecoder,
    AnthropicStreamEncoder,
    message_id,
    sealed_thinking,
    signature_carrier,
    tool_id,
)
from isthmus.protocols.base import as_mapping
from isthmus.protocols.codec import (
    Codec,
    arguments_object,
    as_float,
    as_opt_int,
    as_str,
    dump_json,
    require,
)

TOOL_CHOICE_FROM_WIRE: dict[str, ToolChoiceMode] = {
    "auto": ToolChoiceMode.AUTO,
    "any": ToolChoiceMode.REQUIRED,
    "tool": ToolChoiceMode.TOOL,
    "none": ToolChoiceMode.NONE,
}
TOOL_CHOICE_TO_WIRE: dict[ToolChoiceMode, str] = {v: k for k, v in TOOL_CHOICE_FROM_WIRE.items()}
THINKING_FROM_WIRE: dict[str, ReasoningMode] = {
    "enabled": ReasoningMode.ENABLED,
    "adaptive": ReasoningMode.ADAPTIVE,
    "disabled": ReasoningMode.DISABLED,
}
# Server-tool type prefixes → neutral kind (the dated suffix is the tool's version).
BUILTIN_KINDS: tuple[tuple[str, str], ...] = (
    ("web_search_", "web_search"),
    ("web_fetch_", "web_fetch"),
    ("code_execution_", "code_execution"),
    ("computer_", "computer"),
    ("bash_", "bash"),
    ("text_editor_", "text_editor"),
    ("memory_", "memory"),
    ("tool_search_tool_", "tool_search"),
    ("mcp_toolset", "mcp"),
)
EFFORTS = ("low", "medium", "high", "xhigh", "max")
EFFORT_FROM_FOREIGN: dict[str, str] = {"minimal": "low"}

DEFAULT_MAX_TOKENS = 16384  # when the caller gave no output cap (Anthropic requires one)
MAX_DEFAULT_MAX_TOKENS = 64000
MIN_THINKING_BUDGET = 1024

# Request keys this codec maps to IR fields; every other top-level key goes to extensions.
_KNOWN_REQUEST_KEYS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
    }
)
_KNOWN_TOOL_KEYS = frozenset({"type", "name", "description", "input_schema", "strict", "cache_control"})


# --- decoding ---------------------------------------------------------------------------------


def _cache_control(value: object) -> CacheControl | None:
    if not isinstance(value, Mapping):
        return None
    return CacheControl(type=as_str(value.get("type")) or "ephemeral", ttl=as_str(value.get("ttl")))


def _source(value: object) -> MediaSource:
    src = as_mapping(value)
    kind = src.get("type")
    if kind == "base64":
        return MediaSource(
            kind=SourceKind.BASE64, data=str(src.get("data", "")), media_type=as_str(src.get("media_type"))
        )
    if kind == "url":
        return MediaSource(kind=SourceKind.URL, data=str(src.get("url", "")))
    if kind == "text":
        return MediaSource(
            kind=SourceKind.TEXT, data=str(src.get("data", "")), media_type=as_str(src.get("media_type"))
        )
    if kind == "file":
        return MediaSource(kind=SourceKind.FILE_ID, data=str(src.get("file_id", "")))
    raise InvalidRequestError(f"unsupported content source type {kind!r}")


def _text_of(value: object) -> list[TextPart]:
    """System prompts and string-or-blocks text content."""
    if isinstance(value, str):
        return [TextPart(text=value)]
    parts: list[TextPart] = []
    if isinstance(value, list):
        for block in value:
            b = as_mapping(block)
            if b.get("type", "text") == "text":
                parts.append(
                    TextPart(
                        text=str(b.get("text", "")), cache_control=_cache_control(b.get("cache_control"))
                    )
                )
    return parts


def _tool_result_content(value: object) -> list[ToolResultContent]:
    if isinstance(value, str):
        return [TextPart(text=value)]
    out: list[ToolResultContent] = []
    for block in value if isinstance(value, list) else []:
        b = as_mapping(block)
        kind = b.get("type")
        if kind == "text":
            out.append(
                TextPart(text=str(b.get("text", "")), cache_control=_cache_control(b.get("cache_control")))
            )
        elif kind == "image":
            out.append(
                ImagePart(
                    source=_source(b.get("source")), cache_control=_cache_control(b.get("cache_control"))
                )
            )
        elif kind == "document":
            out.append(_document(b))
        else:  # search_result and future blocks: keep their content readable
            out.append(TextPart(text=dump_json(dict(b))))
    return out


def _document(b: Mapping[str, Any]) -> DocumentPart:
    citations = as_mapping(b.get("citations")).get("enabled")
    return DocumentPart(
        source=_source(b.get("source")),
        title=as_str(b.get("title")),
        context=as_str(b.get("context")),
        citations=citations if isinstance(citations, bool) else None,
        cache_control=_cache_control(b.get("cache_control")),
    )


class _PartsBuilder:
    """Collects one message's parts, re-attaching Gemini thought signatures that travelled in
    sealed thinking blocks next to the part they belong to."""

    __slots__ = ("parts", "pending_signature")

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.pending_signature: str | None = None

    def add(self, part: Part) -> None:
        if self.pending_signature is not None and isinstance(part, TextPart | ToolCallPart):
            part.thought_signature = self.pending_signature
            self.pending_signature = None
        self.parts.append(part)

    def add_thinking(self, text: str, signature: str | None) -> None:
        sealed = unseal(signature, text=text) if signature else None
        if sealed is None:
            self.add(ThinkingPart(text=text, signature=signature, origin=ANTHROPIC))
            return
        signature_value = sealed.part.signature if isinstance(sealed.part, ThinkingPart) else None
        if sealed.attach == "next":
            self.pending_signature = signature_value
        elif sealed.attach == "previous":
            for part in reversed(self.parts):
                if isinstance(part, TextPart | ToolCallPart):
                    part.thought_signature = signature_value
                    break
        else:
            self.add(sealed.part)


def _decode_blocks(content: object, names: dict[str, str]) -> list[Part]:
    """Content blocks of a message (request) or a response. ``names`` maps tool-use ids to tool
    names so results can name their tool (Gemini needs it)."""
    if isinstance(content, str):
        return [TextPart(text=content)]
    builder = _PartsBuilder()
    for block in content if isinstance(content, list) else []:
        b = as_mapping(block)
        kind = b.get("type")
        cache = _cache_control(b.get("cache_control"))
        if kind == "text":
            builder.add(TextPart(text=str(b.get("text", "")), cache_control=cache))
        elif kind == "image":
            builder.add(ImagePart(source=_source(b.get("source")), cache_control=cache))
        elif kind == "document":
            builder.add(_document(b))
        elif kind == "thinking":
            builder.add_thinking(str(b.get("thinking", "")), as_str(b.get("signature")))
        elif kind == "redacted_thinking":
            builder.add(RedactedThinkingPart(data=str(b.get("data", "")), origin=ANTHROPIC))
        elif kind == "tool_use":
            call_id = str(b.get("id", ""))
            name = str(b.get("name", ""))
            names[call_id] = name
            tool_input = b.get("input")
            builder.add(
                ToolCallPart(
                    id=call_id,
                    name=name,
                    arguments=dump_json(tool_input) if tool_input is not None else "",
                    cache_control=cache,
                )
            )
        elif kind == "tool_result":
            call_id = str(b.get("tool_use_id", ""))
            builder.add(
                ToolResultPart(
                    call_id=call_id,
                    name=names.get(call_id),
                    content=_tool_result_content(b.get("content")),
                    is_error=b.get("is_error") is True,
                    cache_control=cache,
                )
            )
        elif isinstance(kind, str):  # server tools, their results, container uploads, ...
            builder.add(OpaquePart(type=kind, data=dict(b), origin=ANTHROPIC))
    return builder.parts


def _decode_tool(raw: object) -> Tool:
    t = as_mapping(raw)
    kind = t.get("type")
    if kind in (None, "custom"):
        extra = {k: v for k, v in t.items() if k not in _KNOWN_TOOL_KEYS}
        schema = t.get("input_schema")
        strict = t.get("strict")
        return FunctionTool(
            name=str(t.get("name", "")),
            description=as_str(t.get("description")),
            parameters=dict(schema) if isinstance(schema, Mapping) else None,
            strict=strict if isinstance(strict, bool) else None,
            cache_control=_cache_control(t.get("cache_control")),
            extensions={ANTHROPIC: extra} if extra else {},
        )
    wire_type = str(kind)
    neutral = next((n for prefix, n in BUILTIN_KINDS if wire_type.startswith(prefix)), "other")
    return BuiltinTool(
        kind=neutral,
        name=as_str(t.get("name")),
        config=dict(t),
        origin=ANTHROPIC,
        cache_control=_cache_control(t.get("cache_control")),
    )


def _decode_reasoning(body: Mapping[str, Any], ext: dict[str, Any]) -> ReasoningConfig | None:
    thinking = body.get("thinking")
    effort = as_str(as_mapping(body.get("output_config")).get("effort"))
    config: ReasoningConfig | None = None
    if isinstance(thinking, Mapping):
        mode = THINKING_FROM_WIRE.get(str(thinking.get("type")))
        if mode is None or set(thinking) - {"type", "budget_tokens"}:
            ext["thinking"] = dict(thinking)  # unknown type or extra keys (display): carried as is
        config = ReasoningConfig(
            mode=mode or ReasoningMode.ADAPTIVE, budget_tokens=as_opt_int(thinking.get("budget_tokens"))
        )
    if effort is not None:
        config = config or ReasoningConfig(mode=ReasoningMode.DEFAULT)
        config.effort = effort
    return config


def decode_request(body: Mapping[str, Any]) -> Request:
    messages_raw = body.get("messages")
    require(isinstance(messages_raw, list), "messages must be a list", "messages")
    assert isinstance(messages_raw, list)
    ext: dict[str, Any] = {k: v for k, v in body.items() if k not in _KNOWN_REQUEST_KEYS}
    names: dict[str, str] = {}
    messages: list[Message] = []
    for i, raw in enumerate(messages_raw):
        m = as_mapping(raw)
        role = m.get("role")
        require(role in ("user", "assistant", "system"), f"messages.{i}.role must be user or assistant")
        if role == "system":
            messages.append(Message(role=Role.SYSTEM, parts=list(_text_of(m.get("content")))))
            continue
        messages.append(Message(role=Role(str(role)), parts=_decode_blocks(m.get("content"), names)))
    output_config = as_mapping(body.get("output_config"))
    response_format: ResponseFormat | None = None
    fmt = as_mapping(output_config.get("format"))
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        response_format = ResponseFormat(
            kind=ResponseFormatKind.JSON_SCHEMA, schema=dict(schema) if isinstance(schema, Mapping) else None
        )
    leftover = {k: v for k, v in output_config.items() if k not in ("effort", "format")}
    if leftover:
        ext["output_config"] = leftover
    tool_choice: ToolChoice | None = None
    parallel: bool | None = None
    choice = as_mapping(body.get("tool_choice"))
    if choice:
        mode = TOOL_CHOICE_FROM_WIRE.get(str(choice.get("type")), ToolChoiceMode.AUTO)
        tool_choice = ToolChoice(
            mode=mode, name=as_str(choice.get("name")) if mode is ToolChoiceMode.TOOL else None
        )
        if isinstance(choice.get("disable_parallel_tool_use"), bool):
            parallel = not choice["disable_parallel_tool_use"]
    metadata = as_mapping(body.get("metadata"))
    stops = body.get("stop_sequences")
    tools = body.get("tools")
    return Request(
        model=as_str(body.get("model")),
        system=_text_of(body.get("system")),
        messages=messages,
        tools=[_decode_tool(t) for t in tools] if isinstance(tools, list) else [],
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=response_format,
        temperature=as_float(body.get("temperature")),
        top_p=as_float(body.get("top_p")),
        top_k=as_opt_int(body.get("top_k")),
        stop=[str(s) for s in stops] if isinstance(stops, list) else [],
        max_output_tokens=as_opt_int(body.get("max_tokens")),
        reasoning=_decode_reasoning(body, ext),
        user=as_str(metadata.get("user_id")),
        stream=body.get("stream") is True,
        extensions={ANTHROPIC: ext} if ext else {},
    )


def decode_response(body: Mapping[str, Any]) -> Response:
    reason = as_str(body.get("stop_reason"))
    return Response(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        parts=_decode_blocks(body.get("content"), {}),
        stop_reason=STOP_FROM_WIRE.get(reason, StopReason.OTHER) if reason else StopReason.END_TURN,
        stop_sequence=as_str(body.get("stop_sequence")),
        usage=usage_from_wire(as_mapping(body.get("usage"))),
    )


# --- encoding ---------------------------------------------------------------------------------


def _with_cache(block: dict[str, Any], cache: CacheControl | None) -> dict[str, Any]:
    if cache is not None:
        block["cache_control"] = {"type": cache.type, **({"ttl": cache.ttl} if cache.ttl else {})}
    return block


def _encode_source(src: MediaSource, what: str) -> dict[str, Any]:
    if src.kind is SourceKind.BASE64:
        media_type = src.media_type or ("application/pdf" if what == "document" else "image/png")
        return {"type": "base64", "media_type": media_type, "data": src.data}
    if src.kind is SourceKind.URL:
        return {"type": "url", "url": src.data}
    if src.kind is SourceKind.TEXT:
        return {"type": "text", "media_type": src.media_type or "text/plain", "data": src.data}
    return {"type": "file", "file_id": src.data}


def _encode_document(part: DocumentPart) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "document", "source": _encode_source(part.source, "document")}
    if part.title is not None:
        block["title"] = part.title
    elif part.filename is not None:
        block["title"] = part.filename
    if part.context is not None:
        block["context"] = part.context
    if part.citations is not None:
        block["citations"] = {"enabled": part.citations}
    return _with_cache(block, part.cache_control)


def _encode_result_content(content: list[ToolResultContent]) -> str | list[dict[str, Any]]:
    if len(content) == 1 and isinstance(content[0], TextPart) and content[0].cache_control is None:
        return content[0].text
    out: list[dict[str, Any]] = []
    for c in content:
        if isinstance(c, TextPart):
            out.append(_with_cache({"type": "text", "text": c.text}, c.cache_control))
        elif isinstance(c, ImagePart):
            out.append(
                _with_cache({"type": "image", "source": _encode_source(c.source, "image")}, c.cache_control)
            )
        else:
            out.append(_encode_document(c))
    return out


def _encode_parts(parts: list[Part], *, for_client: bool) -> list[dict[str, Any]]:
    """Content blocks. Upstream-bound (``for_client`` false): foreign reasoning and opaque parts are
    dropped. Client-bound: foreign reasoning is sealed into thinking blocks."""
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if for_client and part.thought_signature:
                blocks.append(_with_cache({"type": "text", "text": part.text}, part.cache_control))
                blocks.append(signature_carrier(part.thought_signature, "previous"))
                continue
            blocks.append(_with_cache({"type": "text", "text": part.text}, part.cache_control))
        elif isinstance(part, ImagePart):
            if for_client:
                continue  # an answer's image has no Anthropic block
            blocks.append(
                _with_cache(
                    {"type": "image", "source": _encode_source(part.source, "image")}, part.cache_control
                )
            )
        elif isinstance(part, DocumentPart):
            if not for_client:
                blocks.append(_encode_document(part))
        elif isinstance(part, AudioPart):
            if not for_client:
                raise InvalidRequestError("audio input cannot be sent to an Anthropic upstream")
        elif isinstance(part, ThinkingPart):
            if part.origin is ANTHROPIC:
                blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature or ""})
            elif for_client:
                blocks.append(sealed_thinking(part))
        elif isinstance(part, RedactedThinkingPart):
            if part.origin is ANTHROPIC:
                blocks.append({"type": "redacted_thinking", "data": part.data})
            elif for_client:
                blocks.append(sealed_thinking(part))
        elif isinstance(part, EncryptedReasoningPart):
            if for_client:
                blocks.append(sealed_thinking(part))
        elif isinstance(part, ToolCallPart):
            if for_client and part.thought_signature:
                blocks.append(signature_carrier(part.thought_signature, "next"))
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": tool_id(part.id),
                "name": part.name,
                "input": arguments_object(part.arguments),
            }
            blocks.append(_with_cache(block, part.cache_control))
        elif isinstance(part, ToolResultPart):
            block = {"type": "tool_result", "tool_use_id": tool_id(part.call_id)}
            if part.content:
                block["content"] = _encode_result_content(part.content)
            if part.is_error:
                block["is_error"] = True
            blocks.append(_with_cache(block, part.cache_control))
        elif part.origin is ANTHROPIC:
            blocks.append(dict(part.data))
    return blocks


def _foreign_tool(tool: BuiltinTool) -> dict[str, Any]:
    """A built-in tool of another protocol, as Anthropic's equivalent, or a 400."""
    if tool.kind == "web_search":
        out: dict[str, Any] = {"type": "web_search_20250305", "name": "web_search"}
        filters = as_mapping(tool.config.get("filters"))
        domains = filters.get("allowed_domains") or tool.config.get("allowed_domains")
        if isinstance(domains, list) and domains:
            out["allowed_domains"] = domains
        location = as_mapping(tool.config.get("user_location"))
        if location:
            keys = ("city", "region", "country", "timezone")
            out["user_location"] = {
                "type": "approximate",
                **{k: location[k] for k in keys if isinstance(location.get(k), str)},
            }
        return out
    raise InvalidRequestError(
        f"the {tool.kind!r} tool ({tool.origin} built-in) has no equivalent on an Anthropic upstream"
    )


def _encode_tool(tool: Tool) -> dict[str, Any]:
    if isinstance(tool, FunctionTool):
        out: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            out["description"] = tool.description
        out["input_schema"] = (
            tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
        )
        if tool.strict is not None:
            out["strict"] = tool.strict
        out.update(tool.extensions.get(ANTHROPIC, {}))
        return _with_cache(out, tool.cache_control)
    if tool.origin is ANTHROPIC:
        return _with_cache(dict(tool.config), tool.cache_control)
    return _with_cache(_foreign_tool(tool), tool.cache_control)


def _last_tool_turn_unsigned(messages: list[dict[str, Any]]) -> bool:
    """True when the last assistant turn calls tools without opening with a thinking block, which
    Anthropic rejects while thinking is on."""
    for m in reversed(messages):
        content = m["content"]
        if m["role"] != "assistant":
            continue
        if isinstance(content, str):
            return False
        if not any(b.get("type") == "tool_use" for b in content):
            return False
        return content[0].get("type") not in ("thinking", "redacted_thinking")
    return False


def _encode_thinking(
    reasoning: ReasoningConfig | None, max_tokens: int, explicit_cap: bool
) -> tuple[dict[str, Any] | None, int]:
    """The ``thinking`` object and the (possibly raised) ``max_tokens``."""
    if reasoning is None or reasoning.mode is ReasoningMode.DEFAULT:
        return None, max_tokens
    if reasoning.mode is ReasoningMode.DISABLED:
        return {"type": "disabled"}, max_tokens
    if reasoning.mode is ReasoningMode.ADAPTIVE:
        return {"type": "adaptive"}, max_tokens
    budget = reasoning.budget_tokens
    if budget is None:
        budget = budget_for_effort(reasoning.effort or "medium")
    budget = max(budget, MIN_THINKING_BUDGET)
    if not explicit_cap and budget >= max_tokens:
        max_tokens = min(budget + DEFAULT_MAX_TOKENS // 2, MAX_DEFAULT_MAX_TOKENS)
    if budget >= max_tokens:
        budget = max_tokens // 2
    if budget < MIN_THINKING_BUDGET:
        return None, max_tokens  # the cap leaves no room for thinking
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def encode_request(req: Request, *, model: str, stream: bool) -> dict[str, Any]:
    if req.n is not None and req.n > 1:
        raise InvalidRequestError(
            "an Anthropic upstream returns one choice; n > 1 cannot be honoured", param="n"
        )
    system = [_with_cache({"type": "text", "text": p.text}, p.cache_control) for p in req.system]
    messages: list[dict[str, Any]] = []
    for m in req.messages:
        if m.role is Role.SYSTEM:
            system.extend(
                _with_cache({"type": "text", "text": p.text}, p.cache_control)
                for p in m.parts
                if isinstance(p, TextPart)
            )
            continue
        content = _encode_parts(m.parts, for_client=False)
        if len(content) == 1 and content[0]["type"] == "text" and "cache_control" not in content[0]:
            messages.append({"role": str(m.role), "content": content[0]["text"]})
        elif content:
            messages.append({"role": str(m.role), "content": content})
    explicit_cap = req.max_output_tokens is not None
    max_tokens = req.max_output_tokens if req.max_output_tokens is not None else DEFAULT_MAX_TOKENS
    thinking, max_tokens = _encode_thinking(req.reasoning, max_tokens, explicit_cap)
    if thinking is not None and thinking["type"] != "disabled" and _last_tool_turn_unsigned(messages):
        thinking = None
    ext = dict(req.extensions.get(ANTHROPIC, {}))
    if isinstance(ext.get("thinking"), Mapping) and (thinking is not None or req.reasoning is not None):
        thinking = dict(ext.pop("thinking"))
    else:
        ext.pop("thinking", None)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        plain = len(system) == 1 and "cache_control" not in system[0]
        body["system"] = system[0]["text"] if plain else system
    if req.tools:
        body["tools"] = [_encode_tool(t) for t in req.tools]
        choice: dict[str, Any] | None = None
        if req.tool_choice is not None:
            choice = {"type": TOOL_CHOICE_TO_WIRE[req.tool_choice.mode]}
            if req.tool_choice.mode is ToolChoiceMode.TOOL:
                choice["name"] = req.tool_choice.name or ""
        if req.parallel_tool_calls is not None and (choice is None or choice["type"] != "none"):
            choice = choice or {"type": "auto"}
            choice["disable_parallel_tool_use"] = not req.parallel_tool_calls
        if choice is not None:
            body["tool_choice"] = choice
    thinking_on = thinking is not None and thinking.get("type") not in ("disabled",)
    if thinking is not None:
        body["thinking"] = thinking
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.temperature is not None and not (thinking_on and req.temperature != 1):
        body["temperature"] = min(req.temperature, 1.0)  # Anthropic's range is 0..1
    if req.top_p is not None and not (thinking_on and req.top_p < 0.95):
        body["top_p"] = req.top_p
    if req.top_k is not None and not thinking_on:
        body["top_k"] = req.top_k
    output_config = dict(as_mapping(ext.pop("output_config", None)))
    if req.reasoning is not None and req.reasoning.effort is not None:
        mode = req.reasoning.mode
        if mode in (ReasoningMode.ADAPTIVE, ReasoningMode.DEFAULT) or req.reasoning.budget_tokens is not None:
            effort = EFFORT_FROM_FOREIGN.get(req.reasoning.effort, req.reasoning.effort)
            if effort in EFFORTS:
                output_config["effort"] = effort
    fmt = req.response_format
    if fmt is not None and fmt.kind is ResponseFormatKind.JSON_SCHEMA and fmt.schema is not None:
        output_config["format"] = {"type": "json_schema", "schema": fmt.schema}
    elif fmt is not None and fmt.kind is not ResponseFormatKind.TEXT:
        # No schema-less JSON mode on this wire: ask in words (approximation, see docs/fidelity.md).
        note = "Respond with a single JSON object and nothing else."
        if isinstance(body.get("system"), str):
            body["system"] = [{"type": "text", "text": body["system"]}]
        body.setdefault("system", []).append({"type": "text", "text": note})
    if output_config:
        body["output_config"] = output_config
    if req.user is not None:
        body["metadata"] = {"user_id": req.user}
    if stream:
        body["stream"] = True
    for key, value in ext.items():
        body.setdefault(key, value)
    return body


def encode_response(resp: Response, *, model: str) -> dict[str, Any]:
    return {
        "id": message_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _encode_parts(resp.parts, for_client=True),
        "stop_reason": STOP_TO_WIRE[resp.stop_reason],
        "stop_sequence": resp.stop_sequence,
        "usage": usage_to_wire(resp.usage),
    }


def _stream_encoder(*, model: str, include_usage: bool = True) -> AnthropicStreamEncoder:
    return AnthropicStreamEncoder(model=model, include_usage=include_usage)


def encode_error_event(err: IsthmusError) -> bytes:
    return stream_error_event(err)


CODEC = Codec(
    protocol=ANTHROPIC,
    decode_request=decode_request,
    encode_request=encode_request,
    decode_response=decode_response,
    encode_response=encode_response,
    stream_decoder=AnthropicStreamDecoder,
    stream_encoder=_stream_encoder,
    encode_error_event=encode_error_event,
)

__all__ = [
    "CODEC",
    "AnthropicStreamDecoder",
    "AnthropicStreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]
