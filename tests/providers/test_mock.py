"""The mock server over real HTTP, driven by the official SDKs: every answer must parse into their
typed objects (text, usage, stop reasons, tool calls), and the failure knobs must look real."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from isthmus.protocols.anthropic import AnthropicStreamInspector
from isthmus.protocols.base import EventClass
from isthmus.protocols.sse import SSEParser
from isthmus.providers.mock_server import BackgroundMockServer

WEATHER_TOOL_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture(scope="module")
def mock_server() -> Iterator[BackgroundMockServer]:
    with BackgroundMockServer() as server:
        yield server


@pytest.fixture
def oai(mock_server: BackgroundMockServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_server.url + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def claude(mock_server: BackgroundMockServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock_server.url, api_key="sk-ant-test", max_retries=0)


@pytest.fixture
def gem(mock_server: BackgroundMockServer) -> genai.Client:
    options = genai_types.HttpOptions(
        base_url=mock_server.url, retry_options=genai_types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key="gemini-test", http_options=options)


# --- OpenAI Chat Completions ---------------------------------------------------------------------


def test_chat_completion_and_stream(oai: openai.OpenAI) -> None:
    messages: Any = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello mock world"},
    ]
    completion = oai.chat.completions.create(model="mock-gpt", messages=messages)
    assert completion.choices[0].message.content == "mock: hello mock world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4

    chunks = list(
        oai.chat.completions.create(
            model="mock-gpt", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock: hello mock world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == completion.usage


def test_chat_stream_without_usage_has_no_usage_chunk(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert all(c.choices and c.usage is None for c in chunks)


def test_chat_tool_round_trip(oai: openai.OpenAI) -> None:
    tools: Any = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL_SCHEMA}}
    ]
    messages: list[Any] = [{"role": "user", "content": 'use the get_weather tool args={"city":"Lima"}'}]
    with oai.chat.completions.stream(model="mock-gpt", messages=messages, tools=tools) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Lima"})

    messages += [
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"},
    ]
    answer = oai.chat.completions.create(model="mock-gpt", messages=messages, tools=tools)
    assert answer.choices[0].message.content == "mock: tool result: sunny, 24C"


async def test_chat_async_stream(mock_server: BackgroundMockServer) -> None:
    client = openai.AsyncOpenAI(base_url=mock_server.url + "/v1", api_key="k", max_retries=0)
    stream = await client.chat.completions.create(
        model="m+tokens=12", messages=[{"role": "user", "content": "count"}], stream=True
    )
    deltas = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(deltas) == 12
    await client.close()


def test_chat_stream_error_raises_in_sdk(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="m+fail=stream_error", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="overloaded"):
        list(stream)


def test_embeddings_float_and_base64(oai: openai.OpenAI) -> None:
    floats = oai.embeddings.create(model="mock-embed", input=["alpha", "beta"], encoding_format="float")
    packed = oai.embeddings.create(model="mock-embed", input=["alpha", "beta"])  # SDK asks for base64
    for packed_item, float_item in zip(packed.data, floats.data, strict=True):
        assert packed_item.embedding == pytest.approx(float_item.embedding, abs=1e-6)
    assert len(floats.data[0].embedding) == 8
    assert floats.usage.prompt_tokens == 2 + 1  # ceil(5/4) + ceil(4/4)
    raw = oai.embeddings.with_raw_response.create(model="e", input="alpha", encoding_format="base64")
    vector = raw.http_response.json()["data"][0]["embedding"]
    assert len(struct.unpack("<8f", base64.b64decode(vector))) == 8


# --- OpenAI Responses ----------------------------------------------------------------------------


def test_responses_create_and_stream(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="mock-gpt", input="hello responses", instructions="be kind")
    assert response.status == "completed" and response.output_text == "mock: hello responses"
    assert response.usage is not None and response.usage.output_tokens == 3
    assert response.instructions == "be kind"

    with oai.responses.stream(model="mock-gpt", input="hello responses", instructions="be kind") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert final.output_text == "mock: hello responses"
    assert final.usage == response.usage


def test_responses_reasoning_and_tool_round_trip(oai: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "name": "lookup", "parameters": WEATHER_TOOL_SCHEMA, "strict": False}]
    with oai.responses.stream(
        model="m+reasoning=5",
        input=[{"role": "user", "content": "call tool lookup"}],
        tools=tools,
        include=["reasoning.encrypted_content"],
    ) as stream:
        final = stream.get_final_response()
    reasoning, call = final.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert call.type == "function_call" and call.name == "lookup"
    assert json.loads(call.arguments) == {"city": "mock"}
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 5

    follow_up: Any = [
        {"role": "user", "content": "call tool lookup"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "42 degrees"},
    ]
    answer = oai.responses.create(model="m", input=follow_up, tools=tools)
    assert answer.output_text == "mock: tool result: 42 degrees"


def test_responses_stream_error_events(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="m+fail=stream_error", input="x", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-2:] == ["error", "response.failed"]
    assert not any(kind.endswith(".delta") for kind in kinds)
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_responses_retrieve_is_not_found(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve("resp_123")


# --- Anthropic -----------------------------------------------------------------------------------


def test_messages_create_and_stream(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="mock-claude", max_tokens=64, messages=[{"role": "user", "content": "hi claude"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "mock: hi claude"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 3

    with claude.messages.stream(
        model="mock-claude", max_tokens=64, messages=[{"role": "user", "content": "hi claude"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "mock: hi claude" and final.usage == message.usage and final.stop_reason == "end_turn"


def test_messages_thinking_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    tools: Any = [{"name": "get_weather", "input_schema": WEATHER_TOOL_SCHEMA}]
    messages: list[Any] = [{"role": "user", "content": "please call tool get_weather"}]
    with claude.messages.stream(
        model="m+reasoning=3",
        max_tokens=256,
        thinking={"type": "enabled", "budget_tokens": 128},
        tools=tools,
        messages=messages,
    ) as stream:
        final = stream.get_final_message()
    thinking, tool_use = final.content
    assert thinking.type == "thinking" and thinking.signature and thinking.thinking
    assert (
        tool_use.type == "tool_use" and tool_use.name == "get_weather" and tool_use.input == {"city": "mock"}
    )
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens_details is not None
    assert final.usage.output_tokens_details.thinking_tokens == 3

    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in final.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "rainy"}],
        },
    ]
    answer = claude.messages.create(model="m", max_tokens=64, tools=tools, messages=messages)
    assert answer.content[0].type == "text" and answer.content[0].text == "mock: tool result: rainy"


def test_messages_cache_usage(claude: anthropic.Anthropic) -> None:
    system: Any = [{"type": "text", "text": "x" * 4000, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    first = claude.messages.create(
        model="m", max_tokens=8, system=system, messages=[{"role": "user", "content": "q"}]
    )
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 1000
    assert first.usage.cache_creation_input_tokens == 1000 and first.usage.input_tokens == 1
    second = claude.messages.create(
        model="m+cache=hit", max_tokens=8, system=system, messages=[{"role": "user", "content": "q"}]
    )
    assert second.usage.cache_read_input_tokens == 1000 and second.usage.cache_creation_input_tokens == 0


def test_count_tokens_and_models(claude: anthropic.Anthropic) -> None:
    messages: Any = [{"role": "user", "content": "count me in"}]
    counted = claude.messages.count_tokens(model="m", messages=messages)
    created = claude.messages.create(model="m", max_tokens=8, messages=messages)
    assert counted.input_tokens == created.usage.input_tokens == 3
    assert [m.id for m in claude.models.list()] == ["mock-gpt", "mock-claude", "mock-gemini"]


def test_messages_failures(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(
            model="m+fail=429+retry_after=7", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        claude.messages.create(model="m+fail=529", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert overloaded.value.status_code == 529
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded_error"),
        claude.messages.stream(
            model="m+fail=stream_error", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        stream.get_final_message()


# --- Gemini --------------------------------------------------------------------------------------


def test_generate_content_and_stream(gem: genai.Client) -> None:
    response = gem.models.generate_content(model="mock-gemini", contents="hello gemini")
    assert response.text == "mock: hello gemini"
    assert response.usage_metadata is not None and response.usage_metadata.candidates_token_count == 3
    assert response.candidates and response.candidates[0].finish_reason == genai_types.FinishReason.STOP

    chunks = list(gem.models.generate_content_stream(model="mock-gemini", contents="hello gemini"))
    assert "".join(c.text or "" for c in chunks) == "mock: hello gemini"
    assert chunks[-1].usage_metadata == response.usage_metadata


def test_gemini_function_call_round_trip(gem: genai.Client) -> None:
    declaration = genai_types.FunctionDeclaration(
        name="get_weather", parameters_json_schema=WEATHER_TOOL_SCHEMA
    )
    config = genai_types.GenerateContentConfig(
        tools=[genai_types.Tool(function_declarations=[declaration])],
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
    )
    ask = genai_types.Content(role="user", parts=[genai_types.Part(text="call tool get_weather")])
    response = gem.models.generate_content(model="m", contents=[ask], config=config)
    assert response.function_calls is not None
    call = response.function_calls[0]
    assert (call.name, call.args) == ("get_weather", {"city": "mock"})
    assert response.candidates and response.candidates[0].content is not None
    model_turn = response.candidates[0].content
    assert model_turn.parts is not None and model_turn.parts[0].thought_signature

    result = genai_types.Part.from_function_response(name="get_weather", response={"output": "foggy"})
    follow = gem.models.generate_content(
        model="m", contents=[ask, model_turn, genai_types.Content(role="user", parts=[result])], config=config
    )
    assert follow.text == "mock: tool result: foggy"


def test_gemini_count_embed_models(gem: genai.Client) -> None:
    counted = gem.models.count_tokens(model="m", contents="twelve characters!")
    generated = gem.models.generate_content(model="m", contents="twelve characters!")
    assert generated.usage_metadata is not None
    assert counted.total_tokens == generated.usage_metadata.prompt_token_count == 5
    embedded = gem.models.embed_content(
        model="mock-embed",
        contents=["a", "b"],
        config=genai_types.EmbedContentConfig(output_dimensionality=6),
    )
    assert embedded.embeddings is not None and [len(e.values or []) for e in embedded.embeddings] == [6, 6]
    assert [m.name for m in gem.models.list()] == [
        "models/mock-gpt",
        "models/mock-claude",
        "models/mock-gemini",
    ]


def test_gemini_failures(gem: genai.Client) -> None:
    with pytest.raises(genai_errors.ClientError) as limited:
        gem.models.generate_content(model="m+fail=429", contents="x")
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(genai_errors.APIError) as in_stream:
        list(gem.models.generate_content_stream(model="m+fail=stream_error", contents="x"))
    assert in_stream.value.code == 529


# --- raw HTTP: paths, knobs that SDKs hide, request recording -----------------------------------


def test_gemini_paths_and_json_array_stream(mock_server: BackgroundMockServer) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "array please"}]}]}
    with httpx.Client(base_url=mock_server.url) as http:
        streamed = http.post("/v1beta/models/m:streamGenerateContent", json=body)
        assert streamed.status_code == 200
        chunks = streamed.json()
        assert (
            "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "mock: array please"
        )
        assert http.get("/v1beta/models", headers={"x-goog-api-key": "k"}).json()["models"][0]["name"] == (
            "models/mock-gpt"
        )
        assert http.get("/v1/models", params={"key": "k"}).json()["models"]
        assert http.get("/v1/models", headers={"anthropic-version": "2023-06-01"}).json()["has_more"] is False
        assert http.get("/v1/models").json()["object"] == "list"
        missing = http.post("/v1beta/models/m:unknownAction", json=body)
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"


def test_last_request_is_recorded(mock_server: BackgroundMockServer) -> None:
    with httpx.Client(base_url=mock_server.url) as http:
        http.delete("/_mock/requests")
        assert http.get("/_mock/last").status_code == 404
        body = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"rec"}],"x_unknown":1}'
        http.post(
            "/v1/messages?beta=true",
            content=body,
            headers={"x-api-key": "secret", "anthropic-beta": "b1,b2", "content-type": "application/json"},
        )
        last = http.get("/_mock/last").json()
    assert (last["method"], last["path"], last["query"]) == ("POST", "/v1/messages", "beta=true")
    assert last["headers"]["anthropic-beta"] == "b1,b2" and last["body"] == body.decode()


def _sse_classes(response: httpx.Response) -> tuple[AnthropicStreamInspector, list[EventClass]]:
    parser = SSEParser()
    inspector = AnthropicStreamInspector()
    classes = [inspector.inspect(e) for chunk in response.iter_bytes() for e in parser.feed(chunk)]
    return inspector, classes


def test_cut_and_empty_streams_over_http(mock_server: BackgroundMockServer) -> None:
    body = {
        "model": "m",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "1 2 3 4 5"}],
    }
    with httpx.Client(base_url=mock_server.url) as http:
        with http.stream("POST", "/v1/messages", json=body, headers={"x-mock-fail": "cut"}) as response:
            inspector, classes = _sse_classes(response)
        assert response.status_code == 200 and EventClass.CONTENT in classes and not inspector.completed
        with http.stream("POST", "/v1/messages", json=body, headers={"x-mock-fail": "empty"}) as response:
            inspector, classes = _sse_classes(response)
        assert EventClass.CONTENT not in classes and classes[-1] is EventClass.DONE


def test_latency_and_timeout(mock_server: BackgroundMockServer, oai: openai.OpenAI) -> None:
    started = time.monotonic()
    oai.chat.completions.create(model="m+latency=150", messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - started >= 0.15
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.3).chat.completions.create(
            model="m+fail=timeout", messages=[{"role": "user", "content": "x"}]
        )
    # The abandoned request must not wedge the server.
    assert oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "ok"}]).choices
