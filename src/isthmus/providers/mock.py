"""The mock provider: a deterministic upstream for every protocol, with no network and no account.

It answers OpenAI Chat Completions, OpenAI Responses, Anthropic Messages and Gemini, streamed
(SSE exactly as those APIs send it) and not, plus the auxiliary calls: OpenAI ``embeddings``,
Anthropic ``count_tokens``, Gemini ``countTokens``, ``embedContent``/``batchEmbedContents`` and
model lists. :func:`mock_respond` is the core; ``isthmus.providers.mock_server`` serves it over
HTTP at the official paths for tests and benchmarks.

What it answers
---------------
- Text: ``"mock: <last user text>"``, streamed one word per delta. The last user text is the last
  non-empty text part of the last user message (earlier parts, such as Claude Code's reminders,
  count as prompt tokens but are neither echoed nor scanned for tool requests).
- Tool calls: when the request offers tools and the last user text says ``call tool [NAME]``,
  ``use tool [NAME]``, ``use the tool`` or ``use the NAME tool`` (case-insensitive), it calls tool
  NAME (or the first offered tool when NAME is not given or not offered). Arguments are
  ``args={...}`` from the text when present (JSON), otherwise a placeholder for every property of
  the tool's schema (``"mock"``, ``1``, ``true``, ``[]``, ``{}``, or the first ``enum`` value).
- After a tool result is sent back (OpenAI ``tool`` message / ``function_call_output``, Anthropic
  ``tool_result``, Gemini ``functionResponse`` as the last turn): ``"mock: tool result: <content>"``.
- The request's ``max_tokens`` (``max_completion_tokens``, ``max_output_tokens``,
  ``maxOutputTokens``) truncates the answer and reports the protocol's length stop reason.

Usage is reported in each protocol's own shape and is the same streamed or not. Tokens are
estimated as ``ceil(characters / 4)`` for every prompt text (system, messages, tool results, tool
definitions) and one token per output word. ``count_tokens``/``countTokens`` return the same
prompt count that a generation with the same body would report.

Prompt caching: when an Anthropic request carries ``cache_control`` marks, the prompt up to the last
mark (in order tools, system, messages) is reported as cache writes, 1h for the part up to the last
``"ttl": "1h"`` mark and 5m for the rest; knob ``cache=hit`` reports it as cache reads instead.

Knobs
-----
Set per request by headers ``x-mock-<knob>: <value>`` and/or a model-name suffix
``<model>+<knob>=<value>+...`` (e.g. ``mock-gpt+latency=200+fail=500``); the suffix wins, so one
route of a model can fail while another works. Unknown knobs are a 400.

=============== ========================================================================
``latency=MS``  wait MS milliseconds before answering (before status and headers)
``ttft=MS``     in streams, wait MS milliseconds after the lifecycle events, before content
``tps=N``       in streams, emit N content deltas (≈ tokens) per second
``tokens=N``    answer with exactly N words (cycling the echo text)
``reasoning=N`` also produce N reasoning tokens (Anthropic thinking block with a signature,
                Responses reasoning item, Gemini thought part; Chat reports them in usage only)
``cache_read=N`` report N extra prompt tokens as cache reads (any protocol)
``cache_write=N`` report N extra prompt tokens as cache writes; ``cache_ttl=5m|1h`` picks the TTL
``cache=hit``   report Anthropic ``cache_control`` prefixes as reads instead of writes
``fail=STATUS`` answer with that HTTP status (400-599) and the protocol's error body;
                ``429`` adds ``retry-after`` (``retry_after=S``, default 1)
``fail=timeout`` never answer (sleeps before the status line)
``fail=cut``    streams stop after half the content without a terminal event; non-streamed
                bodies are cut in half
``fail=stream_error`` a 200 stream whose first event after the lifecycle events is an error
                event (overloaded); non-streamed requests answer normally
``fail=empty``  a 200 answer with no content (lifecycle and terminal events only)
=============== ========================================================================
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from isthmus.errors import InvalidRequestError, IsthmusError, NotFoundError
from isthmus.ir.protocol import Operation, Protocol
from isthmus.ir.usage import Usage
from isthmus.protocols.base import as_mapping, parse_json_object
from isthmus.providers import mock_wire
from isthmus.providers.mock_wire import estimate_tokens

FAIL_MODES = frozenset({"timeout", "cut", "stream_error", "empty"})
_INT_KNOBS = ("tokens", "reasoning", "cache_read", "cache_write")
_FLOAT_KNOBS = ("latency", "ttft", "tps", "retry_after")
KNOB_NAMES = frozenset({*_INT_KNOBS, *_FLOAT_KNOBS, "fail", "cache", "cache_ttl"})


@dataclass(slots=True)
class MockKnobs:
    latency: float = 0.0  # ms before the answer starts
    ttft: float = 0.0  # ms before the first content event of a stream
    tps: float = 0.0  # content deltas per second (0: as fast as possible)
    tokens: int | None = None
    reasoning: int = 0
    fail: str | None = None  # an HTTP status as text, or one of FAIL_MODES
    retry_after: float = 1.0
    cache_read: int = 0
    cache_write: int = 0
    cache_ttl: str = "5m"
    cache: str | None = None  # "hit": cache_control prefixes are reads


def _set_knob(knobs: MockKnobs, name: str, value: str) -> None:
    if name not in KNOB_NAMES:
        raise InvalidRequestError(f"unknown mock knob {name!r}; known: {', '.join(sorted(KNOB_NAMES))}")
    try:
        if name in _INT_KNOBS:
            setattr(knobs, name, max(int(value), 0))
        elif name in _FLOAT_KNOBS:
            setattr(knobs, name, max(float(value), 0.0))
        elif name == "fail":
            if value not in FAIL_MODES and not (value.isdigit() and 400 <= int(value) <= 599):
                raise ValueError(value)
            knobs.fail = value
        elif name == "cache_ttl":
            if value not in ("5m", "1h"):
                raise ValueError(value)
            knobs.cache_ttl = value
        else:
            knobs.cache = value
    except ValueError as exc:
        raise InvalidRequestError(f"bad value for mock knob {name}: {value!r}") from exc


def parse_knobs(model: str, headers: Mapping[str, str]) -> tuple[str, MockKnobs]:
    """Split ``model+knob=value+...`` and read ``x-mock-*`` headers; returns (bare model, knobs)."""
    knobs = MockKnobs()
    for key, value in headers.items():
        lower = key.lower()
        if lower.startswith("x-mock-"):
            _set_knob(knobs, lower[7:].replace("-", "_"), value.strip())
    base, *suffixes = model.split("+")
    for suffix in suffixes:
        name, sep, value = suffix.partition("=")
        if not sep:
            raise InvalidRequestError(f"mock model suffix {suffix!r} is not knob=value")
        _set_knob(knobs, name.strip().lower(), value.strip())
    return base, knobs


@dataclass(slots=True)
class MockRequest:
    """What the mock needs from a request, whichever protocol it came in."""

    prompt_tokens: int = 0
    last_user_text: str = ""
    tool_result: str | None = None
    tools: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    max_tokens: int | None = None
    json_schema: Mapping[str, Any] | None = None  # the answer must be JSON (matching this schema)
    # Prompt tokens counted up to each cache_control mark, with the mark's TTL.
    cache_marks: list[tuple[int, str]] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)

    def add(self, text: str) -> None:
        self.prompt_tokens += estimate_tokens(text)

    def add_json(self, value: object) -> None:
        if value is not None:
            self.add(value if isinstance(value, str) else orjson.dumps(value).decode())

    def mark(self, block: Mapping[str, Any]) -> None:
        control = block.get("cache_control")
        if isinstance(control, Mapping):
            self.cache_marks.append((self.prompt_tokens, "1h" if control.get("ttl") == "1h" else "5m"))


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _parts_text(parts: object, keys: Sequence[str] = ("text",)) -> str:
    """Join the text of a content value that is a string or a list of typed parts."""
    if isinstance(parts, str):
        return parts
    texts: list[str] = []
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping):
                for key in keys:
                    if isinstance(part.get(key), str):
                        texts.append(part[key])
                        break
    return "\n".join(texts)


def _last_text(parts: object) -> str:
    """The last non-empty text part: clients such as Claude Code put reminders in earlier parts and
    the user's own words last, and only those should be echoed or scanned for tool requests."""
    if isinstance(parts, str):
        return parts
    if isinstance(parts, list):
        for part in reversed(parts):
            text = _parts_text([part])
            if text.strip():
                return text
    return ""


def _read_openai_chat(req: MockRequest, body: Mapping[str, Any]) -> None:
    req.max_tokens = _opt_int(body.get("max_completion_tokens")) or _opt_int(body.get("max_tokens"))
    for tool in body.get("tools") or ():
        function = as_mapping(as_mapping(tool).get("function"))
        if isinstance(function.get("name"), str):
            req.tools.append((function["name"], as_mapping(function.get("parameters"))))
            req.add_json(tool)
    messages = [m for m in body.get("messages") or () if isinstance(m, Mapping)]
    for message in messages:
        req.add(_parts_text(message.get("content")))
        for call in message.get("tool_calls") or ():
            req.add_json(as_mapping(call).get("function"))
    if messages:
        last = messages[-1]
        if last.get("role") in ("tool", "function"):
            results = []
            for message in reversed(messages):
                if message.get("role") not in ("tool", "function"):
                    break
                results.append(_parts_text(message.get("content")))
            req.tool_result = "\n".join(reversed(results))
        elif last.get("role") == "user":
            req.last_user_text = _last_text(last.get("content"))


def _read_openai_responses(req: MockRequest, body: Mapping[str, Any]) -> None:
    req.max_tokens = _opt_int(body.get("max_output_tokens"))
    for tool in body.get("tools") or ():
        tool = as_mapping(tool)
        if tool.get("type") == "function" and isinstance(tool.get("name"), str):
            req.tools.append((tool["name"], as_mapping(tool.get("parameters"))))
        req.add_json(tool)
    if isinstance(body.get("instructions"), str):
        req.add(body["instructions"])
    items = body.get("input")
    if isinstance(items, str):
        req.add(items)
        req.last_user_text = items
        return
    items = [i for i in items or () if isinstance(i, Mapping)]
    for item in items:
        if item.get("type") == "function_call_output":
            req.add(_parts_text(item.get("output")))
        elif item.get("type") == "function_call":
            req.add_json(item.get("arguments"))
        else:
            req.add(_parts_text(item.get("content")))
    if items:
        last = items[-1]
        if last.get("type") == "function_call_output":
            results = []
            for item in reversed(items):
                if item.get("type") != "function_call_output":
                    break
                results.append(_parts_text(item.get("output")))
            req.tool_result = "\n".join(reversed(results))
        elif last.get("role") == "user":
            req.last_user_text = _last_text(last.get("content"))


def _tool_result_text(block: Mapping[str, Any]) -> str:
    return _parts_text(block.get("content"))


def _read_anthropic(req: MockRequest, body: Mapping[str, Any]) -> None:
    req.max_tokens = _opt_int(body.get("max_tokens"))
    for tool in body.get("tools") or ():
        tool = as_mapping(tool)
        if isinstance(tool.get("name"), str) and isinstance(tool.get("input_schema"), Mapping):
            req.tools.append((tool["name"], tool["input_schema"]))
        req.add_json(tool)
        req.mark(tool)
    system = body.get("system")
    if isinstance(system, str):
        req.add(system)
    for block in system if isinstance(system, list) else ():
        req.add(_parts_text([block]))
        req.mark(as_mapping(block))
    messages = [m for m in body.get("messages") or () if isinstance(m, Mapping)]
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            req.add(content)
            continue
        for block in content if isinstance(content, list) else ():
            block = as_mapping(block)
            if block.get("type") == "tool_result":
                req.add(_tool_result_text(block))
            elif block.get("type") == "tool_use":
                req.add_json(block.get("input"))
            else:
                req.add(_parts_text([block], ("text", "thinking")))
            req.mark(block)
    if messages and messages[-1].get("role") == "user":
        content = messages[-1].get("content")
        blocks = [as_mapping(b) for b in content] if isinstance(content, list) else []
        results = [_tool_result_text(b) for b in blocks if b.get("type") == "tool_result"]
        if results:
            req.tool_result = "\n".join(results)
        else:
            req.last_user_text = _last_text(content)


def _function_response_text(response: object) -> str:
    response = as_mapping(response)
    for key in ("output", "result", "content"):
        if isinstance(response.get(key), str):
            return str(response[key])
    return orjson.dumps(response).decode()


def _field(obj: Mapping[str, Any], camel: str) -> Any:
    """A Gemini field by its JSON name or its proto name (the API takes both; google-genai sends
    some in snake_case, e.g. ``parameters_json_schema``)."""
    value = obj.get(camel)
    if value is None:
        value = obj.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))
    return value


def _function_response(part: Mapping[str, Any]) -> str | None:
    response = _field(part, "functionResponse")
    return None if response is None else _function_response_text(as_mapping(response).get("response"))


def _read_gemini(req: MockRequest, body: Mapping[str, Any]) -> None:
    wrapped = _field(body, "generateContentRequest")  # countTokens' wrapped form
    if isinstance(wrapped, Mapping):
        body = wrapped
    config = as_mapping(_field(body, "generationConfig"))
    req.max_tokens = _opt_int(_field(config, "maxOutputTokens"))
    schema = _field(config, "responseJsonSchema") or _field(config, "responseSchema")
    if isinstance(schema, Mapping) or _field(config, "responseMimeType") == "application/json":
        req.json_schema = schema if isinstance(schema, Mapping) else {}
    for tool in body.get("tools") or ():
        for decl in _field(as_mapping(tool), "functionDeclarations") or ():
            decl = as_mapping(decl)
            schema = _field(decl, "parametersJsonSchema") or decl.get("parameters")
            if isinstance(decl.get("name"), str):
                req.tools.append((decl["name"], as_mapping(schema)))
        req.add_json(tool)
    system = as_mapping(_field(body, "systemInstruction"))
    req.add(_parts_text(system.get("parts")))
    contents = [c for c in body.get("contents") or () if isinstance(c, Mapping)]
    for content in contents:
        for part in content.get("parts") or ():
            part = as_mapping(part)
            result = _function_response(part)
            if result is not None:
                req.add(result)
            elif _field(part, "functionCall") is not None:
                req.add_json(_field(part, "functionCall"))
            elif isinstance(part.get("text"), str):
                req.add(part["text"])
    if contents and contents[-1].get("role", "user") == "user":
        parts = [as_mapping(p) for p in contents[-1].get("parts") or ()]
        results = [r for r in map(_function_response, parts) if r is not None]
        if results:
            req.tool_result = "\n".join(results)
        else:
            req.last_user_text = _last_text(parts)


_READERS = {
    Protocol.OPENAI_CHAT: _read_openai_chat,
    Protocol.OPENAI_RESPONSES: _read_openai_responses,
    Protocol.ANTHROPIC: _read_anthropic,
    Protocol.GEMINI: _read_gemini,
}


def read_request(protocol: Protocol, body: Mapping[str, Any]) -> MockRequest:
    req = MockRequest(body=dict(body))
    _READERS[protocol](req, body)
    return req


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(slots=True)
class MockAnswer:
    """A protocol-neutral answer; ``mock_wire`` renders it in each protocol's shape."""

    pieces: list[str]  # text deltas, one output token each; "".join(pieces) is the text
    reasoning: list[str]
    tool_call: ToolCall | None
    usage: Usage
    truncated: bool  # stopped by max tokens

    @property
    def text(self) -> str:
        return "".join(self.pieces)


_TOOL_ASK = re.compile(
    r"\b(?:call|use)\s+(?:the\s+|a\s+)?tool\b(?:\s+([A-Za-z_][\w.:-]*))?|\buse\s+the\s+([A-Za-z_][\w.:-]*)\s+tool\b",
    re.IGNORECASE,
)
_ARGS = re.compile(r"args=(\{.*\})", re.DOTALL)


def requested_tool(text: str, tools: Sequence[tuple[str, Mapping[str, Any]]]) -> str | None:
    """The tool the text asks for (see the module docstring), or None."""
    if not tools:
        return None
    match = _TOOL_ASK.search(text)
    if match is None:
        return None
    wanted = match.group(1) or match.group(2)
    names = [name for name, _ in tools]
    return wanted if wanted in names else names[0]


def _placeholder(schema: Mapping[str, Any]) -> object:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(
        kind if isinstance(kind, str) else "string", "mock"
    )


def json_value(schema: Mapping[str, Any]) -> object:
    """A value of the schema's shape: every declared property of an object filled in."""
    properties = schema.get("properties")
    if schema.get("type") == "object" or isinstance(properties, Mapping):
        props = properties if isinstance(properties, Mapping) else {}
        return {k: json_value(v) if isinstance(v, Mapping) else "mock" for k, v in props.items()}
    return _placeholder(schema)


def tool_arguments(text: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    match = _ARGS.search(text)
    if match is not None:
        try:
            given = orjson.loads(match.group(1))
        except orjson.JSONDecodeError:
            given = None
        if isinstance(given, dict):
            return given
    properties = as_mapping(schema.get("properties"))
    return {name: _placeholder(as_mapping(prop)) for name, prop in properties.items()}


_WORDS = re.compile(r"\S+\s*")


def _cycle_words(text: str, count: int) -> list[str]:
    words = text.split() or ["mock"]
    return [words[i % len(words)] + (" " if i < count - 1 else "") for i in range(count)]


def _cache_usage(req: MockRequest, knobs: MockKnobs) -> Usage:
    """Prompt-side usage: plain input, cache reads and writes."""
    usage = Usage(input_tokens=req.prompt_tokens)
    if req.cache_marks:
        prefix = req.cache_marks[-1][0]
        long = max((tokens for tokens, ttl in req.cache_marks if ttl == "1h"), default=0)
        usage.input_tokens -= prefix
        if knobs.cache == "hit":
            usage.cache_read_tokens = prefix
        else:
            usage.cache_write_1h_tokens = long
            usage.cache_write_5m_tokens = prefix - long
    usage.cache_read_tokens += knobs.cache_read
    if knobs.cache_ttl == "1h":
        usage.cache_write_1h_tokens += knobs.cache_write
    else:
        usage.cache_write_5m_tokens += knobs.cache_write
    return usage


def plan_answer(req: MockRequest, knobs: MockKnobs) -> MockAnswer:
    usage = _cache_usage(req, knobs)
    reasoning = _cycle_words("thinking about the mock answer", knobs.reasoning) if knobs.reasoning else []
    tool_call: ToolCall | None = None
    pieces: list[str] = []
    if knobs.fail == "empty":
        pass
    elif req.tool_result is not None:
        pieces = _WORDS.findall(f"mock: tool result: {req.tool_result}")
    elif (name := requested_tool(req.last_user_text, req.tools)) is not None:
        schema = next(s for n, s in req.tools if n == name)
        arguments = orjson.dumps(tool_arguments(req.last_user_text, schema)).decode()
        tool_call = ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, arguments)
    elif req.json_schema is not None:
        # Structured output (e.g. Gemini CLI's model router): a JSON value the schema accepts.
        pieces = [orjson.dumps(json_value(req.json_schema)).decode()]
    else:
        pieces = _WORDS.findall(f"mock: {req.last_user_text}".strip())
    if knobs.tokens is not None and tool_call is None and knobs.fail != "empty":
        pieces = _cycle_words("".join(pieces), knobs.tokens)
    truncated = False
    if req.max_tokens is not None and len(pieces) > req.max_tokens:
        pieces = pieces[: req.max_tokens]
        truncated = True
    output = len(pieces) + len(reasoning)
    if tool_call is not None:
        output += max(1, estimate_tokens(tool_call.name + tool_call.arguments))
    usage.output_tokens = output
    usage.reasoning_tokens = len(reasoning)
    return MockAnswer(pieces, reasoning, tool_call, usage, truncated)


@dataclass(slots=True)
class MockResponse:
    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]  # for streams, one SSE event per chunk


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _error_response(protocol: Protocol, err: IsthmusError) -> MockResponse:
    headers = {"content-type": "application/json", **err.headers}
    return MockResponse(err.status, headers, _once(mock_wire.error_body(protocol, err)))


async def mock_respond(
    protocol: Protocol,
    operation: Operation,
    body: bytes,
    headers: Mapping[str, str],
    model: str,
    stream: bool,
) -> MockResponse:
    """Answer one call as the real API of ``protocol`` would (see the module docstring)."""
    try:
        bare_model, knobs = parse_knobs(model, headers)
    except InvalidRequestError as err:
        return _error_response(protocol, err)
    if knobs.latency:
        await asyncio.sleep(knobs.latency / 1000)
    fail = knobs.fail
    if fail == "timeout":
        await asyncio.Event().wait()  # never set: the caller's timeout is what ends this
    if fail is not None and fail.isdigit():
        status = int(fail)
        failure = IsthmusError(
            f"mock failure: status {status} requested",
            status=status,
            retry_after=knobs.retry_after if status == 429 else None,
        )
        return _error_response(protocol, failure)
    if operation in (Operation.RESPONSE_GET, Operation.RESPONSE_DELETE):
        return _error_response(protocol, NotFoundError("the mock provider does not store responses"))
    if operation is Operation.LIST_MODELS:
        return MockResponse(200, {"content-type": "application/json"}, _once(mock_wire.model_list(protocol)))
    try:
        parsed = parse_json_object(body) if body else {}
    except InvalidRequestError as bad_body:
        return _error_response(protocol, bad_body)
    if operation is Operation.EMBED:
        payload = mock_wire.embeddings(protocol, parsed, bare_model)
        return MockResponse(200, {"content-type": "application/json"}, _once(payload))
    req = read_request(protocol, parsed)
    if operation is Operation.COUNT_TOKENS:
        payload = mock_wire.count_tokens(protocol, req)
        return MockResponse(200, {"content-type": "application/json"}, _once(payload))
    answer = plan_answer(req, knobs)
    if not stream:
        payload = mock_wire.render_body(protocol, answer, req, bare_model)
        if fail == "cut":
            return MockResponse(
                200, {"content-type": "application/json"}, _once(payload[: len(payload) // 2])
            )
        return MockResponse(200, {"content-type": "application/json"}, _once(payload))
    frames = mock_wire.render_stream(protocol, answer, req, bare_model)
    sse_headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
    return MockResponse(200, sse_headers, mock_wire.play(protocol, frames, knobs))
