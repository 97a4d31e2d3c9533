"""The neutral request and response: what every protocol codec decodes into and encodes from.

Conventions every codec follows
-------------------------------
- A codec decodes what its wire can say into the fields below and everything else it understands
  but the IR has no field for into ``extensions[<its protocol>]`` (raw wire values, top-level key →
  value). An encoder writes back ``extensions[<its own protocol>]`` verbatim (unknown fields survive a
  same-protocol round trip) and ignores other protocols' entries: those are the fields that only the
  same protocol can carry, so the conversion layer reports them as dropped.
- ``None`` means "not set by the caller" (the upstream's default applies); an empty list likewise.
- Reasoning parts (``ThinkingPart``, ``RedactedThinkingPart``, ``EncryptedReasoningPart``) and
  ``OpaquePart`` record the protocol whose wire produced them in ``origin``. Their opaque payloads
  (signatures, redacted data, encrypted content) are only valid when sent back to the same family
  (see :func:`isthmus.ir.reasoning.family`); encoders of another family drop them, or seal them
  into an envelope when the client's protocol has an opaque slot to carry them home
  (:mod:`isthmus.ir.reasoning`).
- Roles are only ``user``, ``assistant`` and ``system``: tool results are parts of a ``user``
  message (as in Anthropic and Gemini); Chat ``tool`` messages and Responses
  ``function_call_output`` items decode into one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from isthmus.ir.protocol import Protocol
from isthmus.ir.usage import Usage

# --- small shared values ----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class CacheControl:
    """A prompt-cache breakpoint (Anthropic ``cache_control``): the prompt up to and including the
    marked element is cached. ``ttl`` is ``"5m"`` or ``"1h"`` (None = the provider default, 5m)."""

    type: str = "ephemeral"
    ttl: str | None = None


class SourceKind(StrEnum):
    BASE64 = "base64"  # ``data`` is the base64 payload, never a ``data:`` URL; media_type says what
    URL = "url"  # ``data`` is an http(s) URL
    TEXT = "text"  # ``data`` is the document's plain text (Anthropic text documents)
    FILE_ID = "file_id"  # ``data`` is a provider file id (only meaningful to that provider)


@dataclass(slots=True, kw_only=True)
class MediaSource:
    """Where an image, document or audio part's bytes are."""

    kind: SourceKind
    data: str
    media_type: str | None = None  # "image/png", "application/pdf", "text/plain", ... (None if unknown)


# --- parts ------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class TextPart:
    text: str
    cache_control: CacheControl | None = None
    # Gemini ``thoughtSignature`` carried on a text part (always Gemini-made; see ToolCallPart).
    thought_signature: str | None = None


@dataclass(slots=True, kw_only=True)
class ImagePart:
    source: MediaSource
    detail: str | None = None  # OpenAI "auto" | "low" | "high"; None when not given
    cache_control: CacheControl | None = None


@dataclass(slots=True, kw_only=True)
class DocumentPart:
    """A document (PDF or plain text) given as input."""

    source: MediaSource
    title: str | None = None  # Anthropic ``title``
    context: str | None = None  # Anthropic ``context``
    filename: str | None = None  # OpenAI ``file.filename``
    citations: bool | None = None  # Anthropic ``citations.enabled``
    cache_control: CacheControl | None = None


@dataclass(slots=True, kw_only=True)
class AudioPart:
    """Audio input (OpenAI ``input_audio``, Gemini inline audio). ``format`` is the OpenAI name
    ("wav", "mp3"); ``source`` is normally base64 with ``media_type`` "audio/wav" etc."""

    source: MediaSource
    format: str | None = None


@dataclass(slots=True, kw_only=True)
class ThinkingPart:
    """Visible model reasoning: Anthropic ``thinking`` (with ``signature``), Gemini ``thought`` text
    (``signature`` = its ``thoughtSignature``), Chat-compatible vendors' ``reasoning_content``
    (no signature). ``text`` must be sent back unchanged for a signature to verify."""

    text: str
    signature: str | None = None
    origin: Protocol


@dataclass(slots=True, kw_only=True)
class RedactedThinkingPart:
    """Anthropic ``redacted_thinking``: encrypted reasoning with no readable text."""

    data: str
    origin: Protocol


@dataclass(slots=True, kw_only=True)
class EncryptedReasoningPart:
    """An OpenAI Responses ``reasoning`` item: ``id`` (``rs_…``), ``encrypted_content`` (present when
    the caller asked for ``include: ["reasoning.encrypted_content"]``), ``summary`` (the
    ``summary_text`` entries, in order) and ``content`` (``reasoning_text`` entries, when given)."""

    id: str | None = None
    encrypted_content: str | None = None
    summary: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    origin: Protocol = Protocol.OPENAI_RESPONSES


@dataclass(slots=True, kw_only=True)
class ToolCallPart:
    """A call the model made to a client-side tool.

    ``id`` is the call id the result must quote (Anthropic ``toolu_…``, OpenAI ``call_…``; Gemini
    may give none, then its decoder makes one up). ``arguments`` is JSON text of an object, exactly as
    received (Chat/Responses send strings; Anthropic/Gemini objects are serialised compactly);
    ``""`` means no arguments. The call's position among tool calls (the Chat ``index``) is its order
    in the message's parts. ``kind`` is ``"function"``, or ``"custom"`` for Responses custom tools
    whose ``arguments`` is free text rather than JSON.
    """

    id: str
    name: str
    arguments: str = ""
    kind: str = "function"
    thought_signature: str | None = None  # Gemini ``thoughtSignature`` on the functionCall part
    cache_control: CacheControl | None = None


@dataclass(slots=True, kw_only=True)
class ToolResultPart:
    """The client's answer to a tool call. ``name`` is the called tool's name when known (Gemini's
    ``functionResponse`` requires it; decoders of protocols without it fill it in from the matching
    call earlier in the conversation when they can)."""

    call_id: str
    name: str | None = None
    content: list[TextPart | ImagePart | DocumentPart] = field(default_factory=list)
    is_error: bool = False
    cache_control: CacheControl | None = None


@dataclass(slots=True, kw_only=True)
class OpaquePart:
    """A part only its own protocol can carry, kept as the raw wire object: Anthropic
    ``server_tool_use``/``web_search_tool_result``/``container_upload``, Responses
    ``web_search_call``/``computer_call`` items, Gemini ``executableCode``, ... Encoders of
    ``origin`` emit ``data`` verbatim; others drop it (it is history of a built-in tool)."""

    type: str  # the wire type name, e.g. "server_tool_use"
    data: dict[str, Any]
    origin: Protocol


Part = (
    TextPart
    | ImagePart
    | DocumentPart
    | AudioPart
    | ThinkingPart
    | RedactedThinkingPart
    | EncryptedReasoningPart
    | ToolCallPart
    | ToolResultPart
    | OpaquePart
)
ReasoningPart = ThinkingPart | RedactedThinkingPart | EncryptedReasoningPart
ToolResultContent = TextPart | ImagePart | DocumentPart


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    # An instruction message inside the conversation (Chat/Responses ``system``/``developer`` after
    # the first turn, Claude Code's ``role: "system"`` message). Encoders of protocols without such
    # messages fold its text into the system prompt, at the end.
    SYSTEM = "system"


@dataclass(slots=True, kw_only=True)
class Message:
    role: Role
    parts: list[Part] = field(default_factory=list)


# --- tools ------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class FunctionTool:
    """A client-side function tool. ``parameters`` is a JSON Schema object (None = no parameters)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    cache_control: CacheControl | None = None
    # Per protocol, raw fields of the tool object the IR has no field for (Anthropic
    # ``defer_loading``, ``input_examples``, ...); written back only by that protocol's encoder.
    extensions: dict[Protocol, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class BuiltinTool:
    """A non-function tool, kept as its raw wire config so the same protocol can carry it exactly.

    ``kind`` is a neutral name so another protocol may map it to its own equivalent or reject it:
    ``web_search``, ``web_fetch``, ``code_execution``, ``computer``, ``bash``, ``text_editor``,
    ``file_search``, ``image_generation``, ``mcp``, ``namespace``, ``custom``, ``memory``,
    ``google_search``, ``url_context``, ... (``other`` when unknown). ``config`` is the whole wire
    object (including its ``type``/``name``).
    """

    kind: str
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    origin: Protocol
    cache_control: CacheControl | None = None


Tool = FunctionTool | BuiltinTool


class ToolChoiceMode(StrEnum):
    AUTO = "auto"  # the model decides
    NONE = "none"  # no tool calls
    REQUIRED = "required"  # at least one tool call (Anthropic "any", Gemini mode ANY)
    TOOL = "tool"  # this named tool (``ToolChoice.name``)


@dataclass(slots=True, kw_only=True)
class ToolChoice:
    mode: ToolChoiceMode
    name: str | None = None  # set when mode is TOOL


# --- generation settings ----------------------------------------------------------------------


class ResponseFormatKind(StrEnum):
    TEXT = "text"
    JSON_OBJECT = "json_object"  # any JSON object (no schema)
    JSON_SCHEMA = "json_schema"  # JSON matching ``schema``


@dataclass(slots=True, kw_only=True)
class ResponseFormat:
    """Structured output. ``name``/``description``/``strict`` are OpenAI's ``json_schema`` fields."""

    kind: ResponseFormatKind
    schema: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


class ReasoningMode(StrEnum):
    DISABLED = "disabled"  # Anthropic thinking disabled, OpenAI effort "none", Gemini budget 0
    ENABLED = "enabled"  # on, with ``budget_tokens`` and/or ``effort``
    ADAPTIVE = "adaptive"  # the model decides how much (Anthropic adaptive, Gemini budget -1)
    # The caller set only an effort and left thinking itself unsaid (Anthropic ``output_config.effort``
    # without ``thinking``): the upstream's default thinking behaviour applies.
    DEFAULT = "default"


@dataclass(slots=True, kw_only=True)
class ReasoningConfig:
    """How much the model should think. Set what the caller set; encoders derive what their wire
    needs from the rest by the tables in :mod:`isthmus.ir.reasoning` (effort ↔ budget).

    ``effort``: "minimal" | "low" | "medium" | "high" | "xhigh" | "max" (OpenAI ``reasoning_effort``,
    Anthropic ``output_config.effort``, Gemini ``thinkingLevel``). ``budget_tokens``: Anthropic
    ``budget_tokens`` / Gemini ``thinkingBudget``. ``summary``: Responses ``reasoning.summary``.
    ``include_thoughts``: Gemini ``includeThoughts`` (None = not said).
    """

    mode: ReasoningMode = ReasoningMode.ENABLED
    effort: str | None = None
    budget_tokens: int | None = None
    summary: str | None = None
    include_thoughts: bool | None = None


@dataclass(slots=True, kw_only=True)
class Request:
    """One generation request, protocol-neutral.

    ``system``: the system prompt as text blocks in order (Anthropic ``system``, leading Chat
    ``system``/``developer`` messages, Responses ``instructions``, Gemini ``systemInstruction``).
    ``stop``: stop sequences. ``max_output_tokens``: the caller's output cap (Anthropic
    ``max_tokens``, Chat ``max_completion_tokens``/``max_tokens``, Responses ``max_output_tokens``,
    Gemini ``maxOutputTokens``). ``user``: an end-user id (Anthropic ``metadata.user_id``, OpenAI
    ``user``); ``metadata``: other string tags (OpenAI ``metadata``). ``stream`` is what the body said
    (informational; encoders take ``stream`` as an argument). ``extensions``: per protocol, the raw
    top-level fields that only that protocol understands (see the module docstring).
    """

    model: str | None = None
    system: list[TextPart] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    n: int | None = None  # number of choices; every codec but Chat supports only 1
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    max_output_tokens: int | None = None
    reasoning: ReasoningConfig | None = None
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    extensions: dict[Protocol, dict[str, Any]] = field(default_factory=dict)


# --- responses --------------------------------------------------------------------------------


class StopReason(StrEnum):
    """Why generation stopped. Each codec maps its wire values to these by a table."""

    END_TURN = "end_turn"  # natural end
    MAX_TOKENS = "max_tokens"  # output cap reached (incomplete)
    STOP_SEQUENCE = "stop_sequence"  # a caller's stop sequence matched
    TOOL_USE = "tool_use"  # the model called tools and waits for results
    CONTENT_FILTER = "content_filter"  # output blocked or cut by a safety filter
    REFUSAL = "refusal"  # the model refused (Anthropic "refusal")
    PAUSE = "pause"  # a long server-tool turn paused (Anthropic "pause_turn"); resend to continue
    ERROR = "error"  # the upstream failed mid-answer
    OTHER = "other"  # anything else (recitation, malformed call, ...)


@dataclass(slots=True, kw_only=True)
class Response:
    """One complete (non-streamed) answer. ``created`` is unix seconds. ``stop_sequence`` is the
    matched sequence when ``stop_reason`` is STOP_SEQUENCE and the wire says which."""

    id: str
    model: str
    parts: list[Part] = field(default_factory=list)
    stop_reason: StopReason = StopReason.END_TURN
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    created: int = 0
