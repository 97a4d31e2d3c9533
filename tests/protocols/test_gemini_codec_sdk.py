"""Conformance through the ``google-genai`` SDK (what Gemini CLI speaks): a converting proxy over real
HTTP in front of upstreams of every other protocol, streamed and not; and the ``anthropic``/``openai``
clients in front of a Gemini upstream (calls without ids, thought signatures)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from isthmus.ir import Protocol
from isthmus.protocols.sse import SSEParser

from .conversion_rig import Rig, start_rig

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
FOREIGN = (Protocol.ANTHROPIC, Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES)
TOOLS = [
    types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="get_weather", description="Weather", parameters_json_schema=WEATHER
            )
        ]
    )
]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    yield from start_rig()


def gemini(rig: Rig) -> genai.Client:
    return genai.Client(
        api_key="k",
        http_options=types.HttpOptions(base_url=rig.proxy_url, api_version="v1beta", timeout=30_000),
    )


def ask(
    rig: Rig, stream: bool, contents: Any, config: types.GenerateContentConfig
) -> types.GenerateContentResponse:
    """One call; a stream's chunks are merged the way Gemini CLI merges them."""
    client = gemini(rig)
    if not stream:
        return client.models.generate_content(model="gw", contents=contents, config=config)
    chunks = list(client.models.generate_content_stream(model="gw", contents=contents, config=config))
    assert chunks and chunks[-1].candidates and chunks[-1].candidates[0].finish_reason is not None
    parts: list[types.Part] = []
    for chunk in chunks:
        for part in (
            chunk.candidates[0].content.parts or []
            if chunk.candidates and chunk.candidates[0].content
            else []
        ):
            last = parts[-1] if parts else None
            if (
                last is not None
                and last.text is not None
                and part.text is not None
                and bool(last.thought) == bool(part.thought)
                and not part.thought_signature
            ):
                last.text += part.text
            else:
                parts.append(part.model_copy())
    final = chunks[-1].model_copy(deep=True)
    assert final.candidates and final.candidates[0].content
    final.candidates[0].content.parts = parts
    return final


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("upstream", FOREIGN)
def test_tool_use_round_trip(rig: Rig, upstream: Protocol, stream: bool) -> None:
    rig.use_mock(upstream)
    config = types.GenerateContentConfig(
        tools=TOOLS, system_instruction="You are a CLI agent.", temperature=0.2, max_output_tokens=512
    )
    contents: list[Any] = [types.Content(role="user", parts=[types.Part(text="please use tool get_weather")])]
    first = ask(rig, stream, contents, config)
    calls = first.function_calls or []
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "mock"})]
    assert first.usage_metadata is not None and (first.usage_metadata.prompt_token_count or 0) > 0
    assert first.candidates and first.candidates[0].finish_reason == types.FinishReason.STOP
    contents.append(first.candidates[0].content)
    response = types.FunctionResponse(id=calls[0].id, name="get_weather", response={"output": "21C"})
    contents.append(types.Content(role="user", parts=[types.Part(function_response=response)]))
    second = ask(rig, stream, contents, config)
    assert second.text == "mock: tool result: 21C"
    sent = json.dumps(rig.proxy.sent[-1])
    assert sent.count(str(calls[0].id)) == 2 and "You are a CLI agent." in sent


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_claude_thinking_comes_home_through_gemini_cli(rig: Rig, stream: bool) -> None:
    """Gemini CLI keeps the thoughtSignature of a function call but not thought parts: Claude's
    signed thinking rides in that signature and reaches Anthropic again intact."""
    rig.use_mock(Protocol.ANTHROPIC, "mock+reasoning=4")
    thinking = types.ThinkingConfig(include_thoughts=True, thinking_budget=2048)
    config = types.GenerateContentConfig(tools=TOOLS, thinking_config=thinking, max_output_tokens=8192)
    contents: list[Any] = [types.Content(role="user", parts=[types.Part(text="please use tool get_weather")])]
    first = ask(rig, stream, contents, config)
    assert first.candidates and first.candidates[0].content
    parts = first.candidates[0].content.parts or []
    thought_text = "".join(p.text or "" for p in parts if p.thought)
    upstream_text, upstream_signature = _anthropic_thinking(rig.proxy.received[-1], stream)
    assert thought_text == upstream_text
    kept = [p for p in parts if not p.thought]  # what Gemini CLI records in its history
    call = next(p for p in kept if p.function_call)
    assert call.thought_signature
    contents.append(types.Content(role="model", parts=kept))
    response = types.FunctionResponse(
        id=call.function_call.id, name="get_weather", response={"output": "21C"}
    )
    contents.append(types.Content(role="user", parts=[types.Part(function_response=response)]))
    second = ask(rig, stream, contents, config)
    assert second.text == "mock: tool result: 21C"
    assistant = rig.proxy.sent[-1]["messages"][1]["content"]
    assert assistant[0] == {"type": "thinking", "thinking": upstream_text, "signature": upstream_signature}
    assert rig.proxy.sent[-1]["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def _anthropic_thinking(raw: bytes, stream: bool) -> tuple[str, str]:
    if not stream:
        block = json.loads(raw)["content"][0]
        return str(block["thinking"]), str(block["signature"])
    text, signature = "", ""
    for event in SSEParser().feed(raw):
        delta = (json.loads(event.data) if event.data else {}).get("delta", {})
        text += delta.get("thinking", "")
        signature = delta.get("signature", signature)
    return text, signature


def test_structured_output_for_the_cli_router(rig: Rig) -> None:
    """Gemini CLI's model router asks for JSON by ``responseJsonSchema``; a Chat upstream gets a
    json_schema response format."""
    rig.use_mock(Protocol.OPENAI_CHAT)
    schema = {
        "type": "object",
        "properties": {"model_choice": {"type": "string"}},
        "required": ["model_choice"],
    }
    config = types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=schema)
    answer = ask(rig, False, "route this", config)
    assert answer.text
    sent = rig.proxy.sent[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema


# --- other clients in front of a Gemini upstream ------------------------------------------------


def _without_ids(raw: bytes, stream: bool) -> tuple[str, bytes]:
    """A recorded Gemini answer with its function-call ids removed (as Gemini often sends them)."""
    if not stream:
        body = json.loads(raw)
        for part in body["candidates"][0]["content"]["parts"]:
            part.get("functionCall", {}).pop("id", None)
        return "application/json", json.dumps(body).encode()
    out = b""
    for event in SSEParser().feed(raw):
        chunk = json.loads(event.data)
        for part in chunk["candidates"][0]["content"]["parts"]:
            part.get("functionCall", {}).pop("id", None)
        out += b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
    return "text/event-stream", out


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_anthropic_client_on_gemini_calls_without_ids(rig: Rig, stream: bool) -> None:
    claude = anthropic.Anthropic(base_url=rig.proxy_url, api_key="k", max_retries=0)
    tools: Any = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": "please use tool get_weather"}]

    def call() -> anthropic.types.Message:
        if stream:
            with claude.messages.stream(model="gw", max_tokens=512, messages=messages, tools=tools) as s:
                return s.get_final_message()
        return claude.messages.create(model="gw", max_tokens=512, messages=messages, tools=tools)

    # Record a real mock answer, then replay it without call ids.
    rig.use_mock(Protocol.GEMINI, "mock+reasoning=2")
    call()
    recorded = rig.proxy.received[-1]
    signature = next(p["thoughtSignature"] for p in _gemini_parts(recorded, stream) if "functionCall" in p)
    rig.use_canned(Protocol.GEMINI, _without_ids(recorded, stream))
    first = call()
    tool_use = next(b for b in first.content if b.type == "tool_use")
    assert tool_use.id.startswith("call_gm_") and first.stop_reason == "tool_use"
    messages.append({"role": "assistant", "content": first.content})
    messages.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "21C"}]}
    )
    rig.use_mock(Protocol.GEMINI)
    second = call()
    assert [b.text for b in second.content if b.type == "text"] == ["mock: tool result: 21C"]
    contents = rig.proxy.sent[-1]["contents"]
    model_call = next(p for p in contents[1]["parts"] if "functionCall" in p)
    assert "id" not in model_call["functionCall"] and model_call["thoughtSignature"] == signature
    result = contents[2]["parts"][0]["functionResponse"]
    assert result == {"name": "get_weather", "response": {"output": "21C"}}


def _gemini_parts(raw: bytes, stream: bool) -> list[dict[str, Any]]:
    chunks = [json.loads(e.data) for e in SSEParser().feed(raw) if e.data] if stream else [json.loads(raw)]
    return [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_chat_client_on_a_gemini_upstream(rig: Rig, stream: bool) -> None:
    rig.use_mock(Protocol.GEMINI)
    chat = openai.OpenAI(base_url=rig.proxy_url + "/v1", api_key="k", max_retries=0)
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    messages: list[Any] = [{"role": "user", "content": "please use tool get_weather"}]

    def call() -> Any:
        if stream:
            with chat.chat.completions.stream(
                model="gw", messages=messages, tools=tools, stream_options={"include_usage": True}
            ) as s:
                return s.get_final_completion()
        return chat.chat.completions.create(model="gw", messages=messages, tools=tools)

    first = call()
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "mock"}
    messages.append(
        {"role": "assistant", "content": None, "tool_calls": [message.tool_calls[0].model_dump()]}
    )
    messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "21C"})
    second = call()
    assert second.choices[0].message.content == "mock: tool result: 21C"
    assert second.usage is not None and second.usage.completion_tokens > 0
