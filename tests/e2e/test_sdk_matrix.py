"""The official Python SDKs through the gateway, to upstreams of every protocol (same-protocol
passthrough and cross-protocol conversion alike): OpenAI chat and responses, Anthropic messages and
google-genai generate, unary and streamed, including the streaming helpers
(``chat.completions.stream``, ``responses.stream``, ``messages.stream``).

Each case checks that the SDK's typed objects are complete: the text, the stop reason, usage that adds
up, and tool calls with ids, names and parsed arguments; then that the request reached the upstream of
the route. The mock upstream answers ``mock: <last user text>``, one output token per word.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from isthmus.providers.mock_server import BackgroundMockServer

from .conftest import failed
from .harness import (
    UPSTREAMS,
    E2EGateway,
    foreign_query,
    request_model,
    start_gateway,
    stop_gateway,
    upstream_model,
)

ROUTES = list(UPSTREAMS)  # anthropic, openai-chat, openai-responses, gemini
LIMIT = 16  # max output tokens in the truncation cases (the smallest the Responses API takes)
TOOL = "get_weather"
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}


def model_for(route: str) -> str:
    return f"via-{route}"


@pytest.fixture(scope="module")
def sdk_gateway(
    e2e_mock: BackgroundMockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[E2EGateway]:
    gateway = start_gateway(
        e2e_mock, {model_for(route): route for route in ROUTES}, tmp_path_factory.mktemp("sdk")
    )
    yield gateway
    stop_gateway(gateway)


@pytest.fixture
def gw(sdk_gateway: E2EGateway, request: pytest.FixtureRequest) -> Iterator[E2EGateway]:
    """The module's gateway, with the upstream log cleared; a failing test prints its exchanges."""
    sdk_gateway.forget_upstream_requests()
    start = len(sdk_gateway.recorder.exchanges)
    yield sdk_gateway
    if failed(request.node):
        print(sdk_gateway.gateway_view(since=start))


def expect_upstream(gw: E2EGateway, route: str, calls: int = 1) -> None:
    """Every upstream request of the test went to the route's upstream, as its model."""
    upstream = UPSTREAMS[route]
    seen = [r for r in gw.upstream_requests() if r["method"] == "POST"]
    assert len(seen) == calls, f"expected {calls} upstream request(s), got {len(seen)}"
    for request in seen:
        assert request["path"].startswith(upstream.path_prefix), request["path"]
        assert request_model(request) == upstream_model(model_for(route))
        assert not foreign_query(request, upstream), f"client query leaked upstream: {request['query']}"


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def long_prompt() -> str:
    """More words than LIMIT, so the answer is cut by max tokens."""
    return " ".join(f"w{i}-{nonce()[:4]}" for i in range(LIMIT + 8))


@dataclass
class Result:
    """What every SDK surface reports, in one shape for the shared checks."""

    text: str
    stop: str
    input_tokens: int
    output_tokens: int
    total_tokens: int | None
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # id, name, args


def check_text(result: Result, answer: str, stop: str) -> None:
    assert result.text == answer
    assert result.stop == stop
    assert not result.tool_calls
    assert result.input_tokens > 0
    assert result.output_tokens == len(answer.split()), "one output token per answer word"
    if result.total_tokens is not None:
        assert result.total_tokens == result.input_tokens + result.output_tokens


def check_truncated(result: Result, prompt: str, stop: str) -> None:
    assert result.text.split() == f"mock: {prompt}".split()[:LIMIT]
    assert result.stop == stop
    assert result.output_tokens == LIMIT
    assert result.input_tokens > 0


def check_tool_call(result: Result, city: str, stop: str) -> tuple[str, str, dict[str, Any]]:
    assert len(result.tool_calls) == 1, result.tool_calls
    call = result.tool_calls[0]
    assert call[1] == TOOL and call[2] == {"city": city}
    assert result.stop == stop
    assert result.input_tokens > 0 and result.output_tokens > 0
    return call


def tool_prompt(city: str) -> str:
    return f"call tool {TOOL} args={json.dumps({'city': city})}"


# --- OpenAI Chat Completions -----------------------------------------------------------------------

CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": TOOL, "description": "Weather", "parameters": TOOL_SCHEMA}}
]


def openai_client(gw: E2EGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0, timeout=30)


def chat_result(completion: Any) -> Result:
    assert completion.object == "chat.completion" and completion.id and completion.created > 0
    choice = completion.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    usage = completion.usage
    assert usage is not None
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or ()
    ]
    for call_id, _, _ in calls:
        assert call_id
    return Result(
        choice.message.content or "",
        choice.finish_reason,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        calls,
    )


def chat_stream_result(chunks: list[Any]) -> Result:
    """Reassemble streamed chunks as a client would, checking the chunk sequence on the way."""
    assert chunks, "empty stream"
    assert len({c.id for c in chunks}) == 1, "every chunk carries the completion's id"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    finishes = [c.choices[0].finish_reason for c in content_chunks if c.choices[0].finish_reason]
    assert len(finishes) == 1, f"one finish_reason per choice, got {finishes}"
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1, "include_usage asks for exactly one usage chunk"
    assert not chunks[-1].choices, "the usage chunk comes last, with no choices"
    calls: dict[int, list[str]] = {}
    for chunk in content_chunks:
        for delta in chunk.choices[0].delta.tool_calls or ():
            slot = calls.setdefault(delta.index, ["", "", ""])
            if delta.id:
                slot[0] = delta.id
            if delta.function and delta.function.name:
                slot[1] += delta.function.name
            if delta.function and delta.function.arguments:
                slot[2] += delta.function.arguments
    tool_calls = [(i, n, json.loads(a)) for i, n, a in calls.values()]
    usage = usages[0]
    return Result(
        text, finishes[0], usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, tool_calls
    )


def chat_run(gw: E2EGateway, route: str, mode: str, messages: list[Any], **extra: Any) -> Result:
    client = openai_client(gw)
    model = model_for(route)
    if mode == "create":
        return chat_result(client.chat.completions.create(model=model, messages=messages, **extra))
    if mode == "stream":
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **extra
        )
        return chat_stream_result(list(stream))
    with client.chat.completions.stream(
        model=model, messages=messages, stream_options={"include_usage": True}, **extra
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "chunk" in events
    if final.choices[0].message.content:
        assert "content.done" in events
    return chat_result(final)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream", "helper"])
def test_openai_chat_text(gw: E2EGateway, route: str, mode: str) -> None:
    prompt = f"chat words {nonce()}"
    result = chat_run(gw, route, mode, [{"role": "user", "content": prompt}])
    check_text(result, f"mock: {prompt}", "stop")
    expect_upstream(gw, route)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream", "helper"])
def test_openai_chat_tool_call(gw: E2EGateway, route: str, mode: str) -> None:
    city = f"Paris {nonce()}"
    messages = [{"role": "user", "content": tool_prompt(city)}]
    check_tool_call(chat_run(gw, route, mode, messages, tools=CHAT_TOOLS), city, "tool_calls")
    expect_upstream(gw, route)


@pytest.mark.parametrize("route", ROUTES)
def test_openai_chat_tool_result(gw: E2EGateway, route: str) -> None:
    city = f"Oslo {nonce()}"
    messages: list[Any] = [{"role": "user", "content": tool_prompt(city)}]
    call_id, name, args = check_tool_call(
        chat_run(gw, route, "create", messages, tools=CHAT_TOOLS), city, "tool_calls"
    )
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call_id, "content": f"sunny in {city}"})
    result = chat_run(gw, route, "create", messages, tools=CHAT_TOOLS)
    check_text(result, f"mock: tool result: sunny in {city}", "stop")
    expect_upstream(gw, route, calls=2)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream"])
def test_openai_chat_max_tokens(gw: E2EGateway, route: str, mode: str) -> None:
    prompt = long_prompt()
    result = chat_run(gw, route, mode, [{"role": "user", "content": prompt}], max_tokens=LIMIT)
    check_truncated(result, prompt, "length")
    expect_upstream(gw, route)


# --- OpenAI Responses --------------------------------------------------------------------------------

RESPONSES_TOOLS: list[Any] = [
    {"type": "function", "name": TOOL, "description": "Weather", "parameters": TOOL_SCHEMA, "strict": False}
]


def responses_result(response: Any) -> Result:
    assert response.object == "response" and response.id and response.created_at > 0
    usage = response.usage
    assert usage is not None
    calls = []
    for item in response.output:
        assert item.type in ("message", "function_call", "reasoning"), item.type
        if item.type == "message":
            assert item.role == "assistant" and item.id
            assert all(part.type == "output_text" for part in item.content)
        if item.type == "function_call":
            assert item.call_id
            calls.append((item.call_id, item.name, json.loads(item.arguments)))
    stop = response.status
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        stop = f"incomplete:{response.incomplete_details.reason}"
    return Result(
        response.output_text, stop, usage.input_tokens, usage.output_tokens, usage.total_tokens, calls
    )


def responses_stream_result(events: list[Any]) -> Result:
    """Check the event sequence a Responses stream must have, then read its final response."""
    types = [e.type for e in events]
    assert types[0] == "response.created", types[:3]
    assert types[-1] in ("response.completed", "response.incomplete"), types[-3:]
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), "sequence numbers increase"
    final = responses_result(events[-1].response)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.text
    if final.text:
        done = [e.text for e in events if e.type == "response.output_text.done"]
        assert done == [final.text]
    if final.tool_calls:
        args = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
        assert [json.loads(a) for a in args] == [c[2] for c in final.tool_calls]
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    finished = [e.item.type for e in events if e.type == "response.output_item.done"]
    assert added == finished, "every output item that opens is closed"
    return final


def responses_run(gw: E2EGateway, route: str, mode: str, input: Any, **extra: Any) -> Result:
    client = openai_client(gw)
    model = model_for(route)
    if mode == "create":
        return responses_result(client.responses.create(model=model, input=input, **extra))
    if mode == "stream":
        return responses_stream_result(
            list(client.responses.create(model=model, input=input, stream=True, **extra))
        )
    with client.responses.stream(model=model, input=input, **extra) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert events and events[-1].type in ("response.completed", "response.incomplete")
    return responses_result(final)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream", "helper"])
def test_openai_responses_text(gw: E2EGateway, route: str, mode: str) -> None:
    prompt = f"responses words {nonce()}"
    result = responses_run(gw, route, mode, prompt)
    check_text(result, f"mock: {prompt}", "completed")
    expect_upstream(gw, route)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream", "helper"])
def test_openai_responses_tool_call(gw: E2EGateway, route: str, mode: str) -> None:
    city = f"Lima {nonce()}"
    result = responses_run(gw, route, mode, tool_prompt(city), tools=RESPONSES_TOOLS)
    check_tool_call(result, city, "completed")
    expect_upstream(gw, route)


@pytest.mark.parametrize("route", ROUTES)
def test_openai_responses_tool_result(gw: E2EGateway, route: str) -> None:
    city = f"Quito {nonce()}"
    items: list[Any] = [{"role": "user", "content": tool_prompt(city)}]
    call_id, name, args = check_tool_call(
        responses_run(gw, route, "create", items, tools=RESPONSES_TOOLS), city, "completed"
    )
    items.append({"type": "function_call", "call_id": call_id, "name": name, "arguments": json.dumps(args)})
    items.append({"type": "function_call_output", "call_id": call_id, "output": f"windy in {city}"})
    result = responses_run(gw, route, "create", items, tools=RESPONSES_TOOLS)
    check_text(result, f"mock: tool result: windy in {city}", "completed")
    expect_upstream(gw, route, calls=2)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream"])
def test_openai_responses_max_output_tokens(gw: E2EGateway, route: str, mode: str) -> None:
    prompt = long_prompt()
    result = responses_run(gw, route, mode, prompt, max_output_tokens=LIMIT)
    check_truncated(result, prompt, "incomplete:max_output_tokens")
    expect_upstream(gw, route)


# --- Anthropic Messages ------------------------------------------------------------------------------

ANTHROPIC_TOOLS: list[Any] = [{"name": TOOL, "description": "Weather", "input_schema": TOOL_SCHEMA}]


def anthropic_client(gw: E2EGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=30)


def message_result(message: Any) -> Result:
    assert message.type == "message" and message.role == "assistant" and message.id
    texts, calls = [], []
    for block in message.content:
        assert block.type in ("text", "tool_use", "thinking"), block.type
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            assert block.id
            calls.append((block.id, block.name, block.input))
    usage = message.usage
    return Result("".join(texts), message.stop_reason, usage.input_tokens, usage.output_tokens, None, calls)


def message_stream_result(events: list[Any]) -> Result:
    """Check the raw event sequence of a Messages stream and rebuild the message from it."""
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop", types
    starts = [e.index for e in events if e.type == "content_block_start"]
    stops = [e.index for e in events if e.type == "content_block_stop"]
    assert starts == stops == list(range(len(starts))), "blocks open and close in order"
    deltas = [e for e in events if e.type == "message_delta"]
    assert len(deltas) == 1
    start = events[0].message
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    calls = []
    for e in events:
        if e.type == "content_block_start" and e.content_block.type == "tool_use":
            args = "".join(
                d.delta.partial_json
                for d in events
                if d.type == "content_block_delta"
                and d.index == e.index
                and d.delta.type == "input_json_delta"
            )
            calls.append((e.content_block.id, e.content_block.name, json.loads(args or "{}")))
    # As the SDK's accumulator reads it: message_delta's usage is cumulative and, when it carries an
    # input count (a converted stream may only know it at the end), that count wins.
    final_usage = deltas[0].usage
    input_tokens = start.usage.input_tokens if final_usage.input_tokens is None else final_usage.input_tokens
    return Result(
        text,
        deltas[0].delta.stop_reason,
        input_tokens,
        final_usage.output_tokens,
        None,
        calls,
    )


def messages_run(gw: E2EGateway, route: str, mode: str, messages: list[Any], **extra: Any) -> Result:
    client = anthropic_client(gw)
    extra.setdefault("max_tokens", 256)
    model = model_for(route)
    if mode == "create":
        return message_result(client.messages.create(model=model, messages=messages, **extra))
    if mode == "stream":
        return message_stream_result(
            list(client.messages.create(model=model, messages=messages, stream=True, **extra))
        )
    with client.messages.stream(model=model, messages=messages, **extra) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    result = message_result(final)
    assert streamed_text == result.text
    return result


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream", "helper"])
def test_anthropic_messages_text(gw: E2EGateway, route: str, mode: str) -> None:
    prompt = f"anthropic words {nonce()}"
    result = messages_run(gw, route, mode, [{"role": "user", "content": prompt}])
    check_text(result, f"mock: {prompt}", "end_turn")
    expect_upstream(gw, route)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream", "helper"])
def test_anthropic_messages_tool_call(gw: E2EGateway, route: str, mode: str) -> None:
    city = f"Rome {nonce()}"
    messages = [{"role": "user", "content": tool_prompt(city)}]
    check_tool_call(messages_run(gw, route, mode, messages, tools=ANTHROPIC_TOOLS), city, "tool_use")
    expect_upstream(gw, route)


@pytest.mark.parametrize("route", ROUTES)
def test_anthropic_messages_tool_result(gw: E2EGateway, route: str) -> None:
    city = f"Kyiv {nonce()}"
    messages: list[Any] = [{"role": "user", "content": tool_prompt(city)}]
    call_id, name, args = check_tool_call(
        messages_run(gw, route, "create", messages, tools=ANTHROPIC_TOOLS), city, "tool_use"
    )
    messages.append(
        {"role": "assistant", "content": [{"type": "tool_use", "id": call_id, "name": name, "input": args}]}
    )
    messages.append(
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call_id, "content": f"snow in {city}"}],
        }
    )
    result = messages_run(gw, route, "create", messages, tools=ANTHROPIC_TOOLS)
    check_text(result, f"mock: tool result: snow in {city}", "end_turn")
    expect_upstream(gw, route, calls=2)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream"])
def test_anthropic_messages_max_tokens(gw: E2EGateway, route: str, mode: str) -> None:
    prompt = long_prompt()
    result = messages_run(gw, route, mode, [{"role": "user", "content": prompt}], max_tokens=LIMIT)
    check_truncated(result, prompt, "max_tokens")
    expect_upstream(gw, route)


# --- google-genai generate -----------------------------------------------------------------------------

GENAI_TOOLS = [
    genai_types.Tool(
        function_declarations=[
            genai_types.FunctionDeclaration(
                name=TOOL, description="Weather", parameters_json_schema=TOOL_SCHEMA
            )
        ]
    )
]


def genai_client(gw: E2EGateway) -> genai.Client:
    options = genai_types.HttpOptions(base_url=gw.url, timeout=30_000)
    return genai.Client(api_key=gw.key, http_options=options)


def generate_result(responses: list[genai_types.GenerateContentResponse]) -> Result:
    """One response, or the chunks of a stream: text joined, the last chunk's reason and usage."""
    assert responses, "no response"
    text, calls, reasons = "", [], []
    for response in responses:
        for candidate in response.candidates or ():
            if candidate.finish_reason is not None:
                reasons.append(candidate.finish_reason)
            for part in (candidate.content.parts if candidate.content else None) or ():
                if part.text and not part.thought:
                    text += part.text
                if part.function_call is not None:
                    call = part.function_call
                    calls.append((call.id or "", call.name or "", dict(call.args or {})))
    assert len(reasons) == 1 and responses[-1].candidates and responses[-1].candidates[0].finish_reason
    usage = responses[-1].usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count is not None
    return Result(
        text,
        reasons[0].value,
        usage.prompt_token_count,
        usage.candidates_token_count,
        usage.total_token_count,
        calls,
    )


def generate_run(gw: E2EGateway, route: str, mode: str, contents: Any, **config: Any) -> Result:
    client = genai_client(gw)
    settings = genai_types.GenerateContentConfig(
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True), **config
    )
    if mode == "create":
        return generate_result(
            [client.models.generate_content(model=model_for(route), contents=contents, config=settings)]
        )
    chunks = client.models.generate_content_stream(model=model_for(route), contents=contents, config=settings)
    return generate_result(list(chunks))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream"])
def test_genai_generate_text(gw: E2EGateway, route: str, mode: str) -> None:
    prompt = f"gemini words {nonce()}"
    result = generate_run(gw, route, mode, prompt)
    check_text(result, f"mock: {prompt}", "STOP")
    expect_upstream(gw, route)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream"])
def test_genai_generate_tool_call(gw: E2EGateway, route: str, mode: str) -> None:
    city = f"Cairo {nonce()}"
    # Gemini has no tool-call finish reason: a function call ends with STOP.
    check_tool_call(generate_run(gw, route, mode, tool_prompt(city), tools=GENAI_TOOLS), city, "STOP")
    expect_upstream(gw, route)


@pytest.mark.parametrize("route", ROUTES)
def test_genai_generate_tool_result(gw: E2EGateway, route: str) -> None:
    city = f"Accra {nonce()}"
    question = genai_types.Content(role="user", parts=[genai_types.Part(text=tool_prompt(city))])
    first = generate_run(gw, route, "create", [question], tools=GENAI_TOOLS)
    call_id, name, args = check_tool_call(first, city, "STOP")
    call = genai_types.Part(function_call=genai_types.FunctionCall(id=call_id or None, name=name, args=args))
    answer = genai_types.Part(
        function_response=genai_types.FunctionResponse(
            id=call_id or None, name=name, response={"output": f"hot in {city}"}
        )
    )
    contents = [
        question,
        genai_types.Content(role="model", parts=[call]),
        genai_types.Content(role="user", parts=[answer]),
    ]
    result = generate_run(gw, route, "create", contents, tools=GENAI_TOOLS)
    check_text(result, f"mock: tool result: hot in {city}", "STOP")
    expect_upstream(gw, route, calls=2)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["create", "stream"])
def test_genai_generate_max_output_tokens(gw: E2EGateway, route: str, mode: str) -> None:
    prompt = long_prompt()
    result = generate_run(gw, route, mode, prompt, max_output_tokens=LIMIT)
    check_truncated(result, prompt, "MAX_TOKENS")
    expect_upstream(gw, route)


def test_gateway_key_is_required(gw: E2EGateway) -> None:
    """The matrix's gateway is a real one: the SDKs' errors for a wrong key come back typed."""
    bad = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(
            model=model_for("openai-chat"), messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="sk-wrong", max_retries=0).messages.create(
            model=model_for("anthropic"), max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert httpx.get(f"{gw.url}/healthz").status_code == 200
    assert not gw.upstream_requests(), "a refused request must not reach the upstream"
