"""The mock responder without HTTP: knobs, the tool rule, usage consistency across stream and not."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from isthmus.errors import InvalidRequestError
from isthmus.ir.protocol import Operation, Protocol
from isthmus.ir.usage import Usage
from isthmus.protocols import anthropic, gemini, openai_chat, openai_responses
from isthmus.protocols.anthropic import AnthropicStreamInspector
from isthmus.protocols.base import EventClass, StreamInspector
from isthmus.protocols.gemini import GeminiStreamInspector
from isthmus.protocols.openai_chat import ChatStreamInspector
from isthmus.protocols.openai_responses import ResponsesStreamInspector
from isthmus.protocols.sse import SSEParser
from isthmus.providers.mock import (
    MockKnobs,
    mock_respond,
    parse_knobs,
    requested_tool,
    tool_arguments,
)
from isthmus.providers.mock_wire import estimate_tokens

TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
}


def request(protocol: Protocol, text: str, **extra: Any) -> dict[str, Any]:
    """A minimal one-turn request in the protocol's own shape."""
    if protocol is Protocol.OPENAI_CHAT:
        return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
    if protocol is Protocol.OPENAI_RESPONSES:
        return {"model": "m", "input": [{"role": "user", "content": text}], **extra}
    if protocol is Protocol.ANTHROPIC:
        return {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": text}], **extra}
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


INSPECTORS: dict[Protocol, type[StreamInspector]] = {
    Protocol.OPENAI_CHAT: ChatStreamInspector,
    Protocol.OPENAI_RESPONSES: ResponsesStreamInspector,
    Protocol.ANTHROPIC: AnthropicStreamInspector,
    Protocol.GEMINI: GeminiStreamInspector,
}
USAGE_FROM_RESPONSE = {
    Protocol.OPENAI_CHAT: openai_chat.usage_from_response,
    Protocol.OPENAI_RESPONSES: openai_responses.usage_from_response,
    Protocol.ANTHROPIC: anthropic.usage_from_response,
    Protocol.GEMINI: gemini.usage_from_response,
}


async def run(
    protocol: Protocol,
    body: dict[str, Any],
    *,
    stream: bool,
    model: str = "mock",
    headers: dict[str, str] | None = None,
    operation: Operation = Operation.GENERATE,
) -> tuple[int, dict[str, str], list[bytes]]:
    response = await mock_respond(protocol, operation, orjson.dumps(body), headers or {}, model, stream)
    return response.status, response.headers, [chunk async for chunk in response.chunks]


async def inspect_stream(
    protocol: Protocol, body: dict[str, Any], **kwargs: Any
) -> tuple[Any, list[EventClass]]:
    status, headers, chunks = await run(protocol, body, stream=True, **kwargs)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    parser = SSEParser()
    inspector = INSPECTORS[protocol]()
    classes = []
    for chunk in chunks:
        events = parser.feed(chunk)
        assert len(events) == 1, "the mock yields one SSE event per chunk"
        classes += [inspector.inspect(e) for e in events]
    assert parser.flush() == []
    return inspector, classes


def test_knobs_from_headers_and_model_suffix() -> None:
    model, knobs = parse_knobs("mock-gpt+latency=20+fail=500", {"X-Mock-Tps": "40", "x-mock-fail": "429"})
    assert model == "mock-gpt"
    assert (knobs.latency, knobs.tps, knobs.fail) == (20.0, 40.0, "500")  # the suffix wins
    assert parse_knobs("plain", {}) == ("plain", MockKnobs())
    for bad in ("m+nope=1", "m+fail=200", "m+fail=maybe", "m+latency", "m+cache_ttl=2h"):
        with pytest.raises(InvalidRequestError):
            parse_knobs(bad, {})


def test_tool_rule() -> None:
    tools = [("get_weather", TOOL_SCHEMA), ("search", {})]
    assert requested_tool("please call tool", tools) == "get_weather"
    assert requested_tool("Use the search tool now", tools) == "search"
    assert requested_tool("call tool search", tools) == "search"
    assert requested_tool("use tool missing_one", tools) == "get_weather"
    assert requested_tool("what tools do you have?", tools) is None
    assert requested_tool("call tool", []) is None
    assert tool_arguments("call tool", TOOL_SCHEMA) == {"city": "mock", "days": 1, "unit": "c"}
    assert tool_arguments('call tool args={"city": "Oslo"}', TOOL_SCHEMA) == {"city": "Oslo"}


async def test_only_the_last_text_part_is_echoed_or_scanned_for_tools() -> None:
    reminder = "<system-reminder>Use the get_weather tool when asked about weather.</system-reminder>"
    body = {
        "model": "m",
        "max_tokens": 50,
        "tools": [{"name": "get_weather", "input_schema": TOOL_SCHEMA}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": reminder}, {"type": "text", "text": "hello"}],
            }
        ],
    }
    _, _, chunks = await run(Protocol.ANTHROPIC, body, stream=False)
    answer = orjson.loads(b"".join(chunks))
    assert answer["content"] == [{"type": "text", "text": "mock: hello"}]
    assert answer["usage"]["input_tokens"] > estimate_tokens(reminder)


@pytest.mark.parametrize("protocol", list(Protocol))
async def test_stream_and_body_report_the_same_usage(protocol: Protocol) -> None:
    body = request(protocol, "tell me about the sea and the sky")
    if protocol is Protocol.OPENAI_CHAT:
        body["stream_options"] = {"include_usage": True}
    status, _, chunks = await run(protocol, body, stream=False)
    assert status == 200
    answer = orjson.loads(b"".join(chunks))
    usage = USAGE_FROM_RESPONSE[protocol](answer)
    # "mock: tell me about the sea and the sky" is nine words; the prompt is 33 characters.
    assert usage == Usage(input_tokens=estimate_tokens("tell me about the sea and the sky"), output_tokens=9)
    inspector, classes = await inspect_stream(protocol, body)
    assert inspector.usage == usage
    assert inspector.completed and inspector.error is None
    assert EventClass.CONTENT in classes
    assert classes.index(EventClass.CONTENT) > 0 or protocol is Protocol.GEMINI


@pytest.mark.parametrize("protocol", list(Protocol))
async def test_count_tokens_matches_generation(protocol: Protocol) -> None:
    body = request(protocol, "count every one of these characters please")
    _, _, chunks = await run(protocol, body, stream=False)
    generated = USAGE_FROM_RESPONSE[protocol](orjson.loads(b"".join(chunks)))
    _, _, chunks = await run(protocol, body, stream=False, operation=Operation.COUNT_TOKENS)
    counted = orjson.loads(b"".join(chunks))
    total = counted.get("input_tokens", counted.get("totalTokens"))
    assert total == generated.prompt_tokens > 0


@pytest.mark.parametrize("protocol", list(Protocol))
async def test_max_tokens_truncates_with_length_reason(protocol: Protocol) -> None:
    limits: dict[Protocol, dict[str, Any]] = {
        Protocol.OPENAI_CHAT: {"max_completion_tokens": 3, "stream_options": {"include_usage": True}},
        Protocol.OPENAI_RESPONSES: {"max_output_tokens": 3},
        Protocol.ANTHROPIC: {"max_tokens": 3},
        Protocol.GEMINI: {"generationConfig": {"maxOutputTokens": 3}},
    }
    body = request(protocol, "one two three four five six", **limits[protocol])
    inspector, _ = await inspect_stream(protocol, body)
    assert inspector.usage.output_tokens == 3
    assert (
        inspector.finish_reason
        == {
            Protocol.OPENAI_CHAT: "length",
            Protocol.OPENAI_RESPONSES: "max_output_tokens",
            Protocol.ANTHROPIC: "max_tokens",
            Protocol.GEMINI: "MAX_TOKENS",
        }[protocol]
    )


@pytest.mark.parametrize("protocol", list(Protocol))
async def test_failure_knobs_in_streams(protocol: Protocol) -> None:
    body = request(protocol, "a b c d e f g h")
    _, full = await inspect_stream(protocol, body)
    inspector, classes = await inspect_stream(protocol, body, model="mock+fail=cut")
    assert not inspector.completed and EventClass.DONE not in classes
    assert 0 < classes.count(EventClass.CONTENT) < full.count(EventClass.CONTENT)

    inspector, classes = await inspect_stream(protocol, body, headers={"x-mock-fail": "stream_error"})
    assert classes[-1] is EventClass.ERROR and EventClass.CONTENT not in classes
    assert inspector.error is not None and inspector.error.upstream_status == 529

    inspector, classes = await inspect_stream(protocol, body, model="mock+fail=empty")
    assert EventClass.CONTENT not in classes
    assert inspector.completed and inspector.usage.output_tokens == 0


@pytest.mark.parametrize("protocol", list(Protocol))
async def test_http_failures_use_the_protocol_error_shape(protocol: Protocol) -> None:
    status, headers, chunks = await run(protocol, request(protocol, "x"), stream=True, model="m+fail=429")
    assert status == 429 and headers["retry-after"] == "1"
    body = orjson.loads(b"".join(chunks))
    if protocol is Protocol.ANTHROPIC:
        assert body["error"]["type"] == "rate_limit_error"
    elif protocol is Protocol.GEMINI:
        assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
    else:
        assert body["error"]["type"] == "rate_limit_error"
    status, _, chunks = await run(protocol, request(protocol, "x"), stream=False, model="m+nope=1")
    assert status == 400 and b"unknown mock knob" in b"".join(chunks)


async def test_cut_non_stream_body_is_truncated() -> None:
    status, _, chunks = await run(
        Protocol.OPENAI_CHAT, request(Protocol.OPENAI_CHAT, "hi"), stream=False, model="m+fail=cut"
    )
    assert status == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b"".join(chunks))


async def test_pacing_knobs() -> None:
    body = request(Protocol.ANTHROPIC, "one two three four five")
    started = time.monotonic()
    await run(Protocol.ANTHROPIC, body, stream=True, model="m+latency=100+ttft=100+tps=50+tokens=6")
    # 100 ms before the answer, 100 ms before the first delta, then 5 gaps of 20 ms.
    assert time.monotonic() - started >= 0.3


async def test_cache_control_marks_become_cache_writes_or_reads() -> None:
    tools_text = orjson.dumps(
        {"name": "t", "input_schema": {}, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    )
    system = "s" * 400  # 100 tokens
    body = {
        "model": "m",
        "max_tokens": 50,
        "tools": [orjson.loads(tools_text)],
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hello"}],
    }
    tool_tokens = estimate_tokens(tools_text.decode())
    _, _, chunks = await run(Protocol.ANTHROPIC, body, stream=False)
    usage = anthropic.usage_from_response(orjson.loads(b"".join(chunks)))
    assert (usage.cache_write_1h_tokens, usage.cache_write_5m_tokens, usage.input_tokens) == (
        tool_tokens,
        100,
        2,
    )
    _, _, chunks = await run(Protocol.ANTHROPIC, body, stream=False, model="m+cache=hit")
    usage = anthropic.usage_from_response(orjson.loads(b"".join(chunks)))
    assert (usage.cache_read_tokens, usage.cache_write_5m_tokens, usage.input_tokens) == (
        tool_tokens + 100,
        0,
        2,
    )


@pytest.mark.parametrize("protocol", list(Protocol))
async def test_explicit_cache_and_reasoning_knobs(protocol: Protocol) -> None:
    body = request(protocol, "hello there")
    model = "m+cache_read=1000+cache_write=300+cache_ttl=1h+reasoning=4"
    _, _, chunks = await run(protocol, body, stream=False, model=model)
    usage = USAGE_FROM_RESPONSE[protocol](orjson.loads(b"".join(chunks)))
    assert usage.cache_read_tokens == 1000
    assert usage.reasoning_tokens == 4 and usage.output_tokens == 4 + 3
    if protocol is Protocol.GEMINI:  # no cache-write counts on Gemini's wire: they read as input
        assert usage.input_tokens == 3 + 300
    elif protocol is Protocol.OPENAI_CHAT:  # chat reports writes without a TTL
        assert (usage.input_tokens, usage.cache_write_5m_tokens) == (3, 300)
    else:
        assert (usage.input_tokens, usage.cache_write_1h_tokens) == (3, 300)


async def test_auxiliary_operations() -> None:
    status, _, chunks = await run(Protocol.OPENAI_CHAT, {}, stream=False, operation=Operation.LIST_MODELS)
    assert status == 200 and orjson.loads(b"".join(chunks))["object"] == "list"
    status, _, _ = await run(Protocol.OPENAI_RESPONSES, {}, stream=False, operation=Operation.RESPONSE_GET)
    assert status == 404
    body = {"input": ["a", "b"], "model": "e", "dimensions": 4}
    _, _, chunks = await run(Protocol.OPENAI_CHAT, body, stream=False, operation=Operation.EMBED)
    data = orjson.loads(b"".join(chunks))["data"]
    assert [len(d["embedding"]) for d in data] == [4, 4] and data[0]["embedding"] != data[1]["embedding"]
    again = orjson.loads(
        b"".join((await run(Protocol.OPENAI_CHAT, body, stream=False, operation=Operation.EMBED))[2])
    )
    assert again["data"] == data  # deterministic


async def test_gemini_structured_output_answers_json_matching_the_schema() -> None:
    from isthmus.ir import Operation, Protocol
    from isthmus.providers.mock import mock_respond

    schema = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "model_choice": {"type": "string", "enum": ["flash", "pro"]},
        },
        "required": ["reasoning", "model_choice"],
    }
    body = {
        "contents": [{"role": "user", "parts": [{"text": "route me"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema},
    }
    resp = await mock_respond(
        Protocol.GEMINI, Operation.GENERATE, orjson.dumps(body), {}, "mock-gemini", False
    )
    payload = orjson.loads(b"".join([chunk async for chunk in resp.chunks]))
    text = payload["candidates"][0]["content"]["parts"][0]["text"]
    assert orjson.loads(text) == {"reasoning": "mock", "model_choice": "flash"}
