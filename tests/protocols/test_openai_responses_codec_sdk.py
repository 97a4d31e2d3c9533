"""Conformance through the ``openai`` SDK's Responses client (and Codex's tool shapes): a converting
proxy over real HTTP in front of upstreams of every other protocol, streamed and not; and the
``anthropic``/``openai`` Chat clients in front of a Responses upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from isthmus.ir import Protocol
from isthmus.ir.reasoning import is_sealed
from isthmus.protocols.sse import SSEParser

from .conversion_rig import Rig, start_rig

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
FOREIGN = (Protocol.ANTHROPIC, Protocol.OPENAI_CHAT, Protocol.GEMINI)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    yield from start_rig()


def client(rig: Rig) -> openai.OpenAI:
    return openai.OpenAI(base_url=rig.proxy_url + "/v1", api_key="k", max_retries=0)


def ask(rig: Rig, stream: bool, **kwargs: Any) -> Any:
    if stream:
        with client(rig).responses.stream(model="gw", **kwargs) as events:
            seen = list(events)
            kinds = [event.type for event in seen]
            assert kinds[:2] == ["response.created", "response.in_progress"]
            if kinds[-1] == "response.incomplete":  # the helper builds a final response only when completed
                return seen[-1].response  # type: ignore[union-attr]
            assert kinds[-1] == "response.completed"
            return events.get_final_response()
    return client(rig).responses.create(model="gw", **kwargs)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("upstream", FOREIGN)
def test_tool_use_round_trip(rig: Rig, upstream: Protocol, stream: bool) -> None:
    rig.use_mock(upstream)
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}]
    history: list[Any] = [{"role": "user", "content": "please use tool get_weather"}]
    first = ask(rig, stream, input=history, tools=tools)
    calls = [item for item in first.output if item.type == "function_call"]
    assert first.status == "completed" and [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == {"city": "mock"}
    assert first.created_at > 0 and first.usage is not None and first.usage.input_tokens > 0
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "21C"})
    second = ask(rig, stream, input=history, tools=tools)
    assert second.output_text == "mock: tool result: 21C"
    # The upstream got the call and its result under the same id.
    assert json.dumps(rig.proxy.sent[-1]).count(calls[0].call_id) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_anthropic_thinking_survives_a_codex_tool_turn(rig: Rig, stream: bool) -> None:
    """Codex (store false, encrypted reasoning) on a Claude model: the thinking block's signature
    goes out sealed in a reasoning item and comes back to Anthropic byte for byte."""
    rig.use_mock(Protocol.ANTHROPIC, "mock+reasoning=4")
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}]
    history: list[Any] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
        {"role": "user", "content": "please use tool get_weather"},
    ]
    options: dict[str, Any] = {"store": False, "include": ["reasoning.encrypted_content"], "tools": tools}
    first = ask(rig, stream, input=history, reasoning={"effort": "medium", "summary": "auto"}, **options)
    reasoning = [item for item in first.output if item.type == "reasoning"]
    assert (
        len(reasoning) == 1 and reasoning[0].encrypted_content and is_sealed(reasoning[0].encrypted_content)
    )
    thinking, signature = _anthropic_thinking(rig.proxy.received[-1], stream)
    assert reasoning[0].summary[0].text == thinking
    assert signature not in reasoning[0].encrypted_content  # never handed out as OpenAI's own content
    call = next(item for item in first.output if item.type == "function_call")
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "21C"})
    second = ask(rig, stream, input=history, **options)
    assert second.output_text == "mock: tool result: 21C"
    sent = rig.proxy.sent[-1]
    assert sent["system"] == "Be brief."
    returned = sent["messages"][1]["content"][0]
    assert returned == {"type": "thinking", "thinking": thinking, "signature": signature}


def _anthropic_thinking(raw: bytes, stream: bool) -> tuple[str, str]:
    """The thinking text and signature the Anthropic upstream sent."""
    if not stream:
        block = json.loads(raw)["content"][0]
        return str(block["thinking"]), str(block["signature"])
    text, signature = "", ""
    for event in SSEParser().feed(raw):
        delta = (json.loads(event.data) if event.data else {}).get("delta", {})
        text += delta.get("thinking", "")
        signature = delta.get("signature", signature)
    return text, signature


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_gemini_thought_signature_returns_on_its_call(rig: Rig, stream: bool) -> None:
    rig.use_mock(Protocol.GEMINI, "mock+reasoning=2")
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    history: list[Any] = [{"role": "user", "content": "please use tool get_weather"}]
    first = ask(rig, stream, input=history, tools=tools)
    upstream_parts = _gemini_parts(rig.proxy.received[-1], stream)
    signature = next(p["thoughtSignature"] for p in upstream_parts if "functionCall" in p)
    kinds = [item.type for item in first.output]
    assert kinds == ["reasoning", "function_call", "reasoning"]  # thoughts, the call, its signature
    call = first.output[1]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "21C"})
    second = ask(rig, stream, input=history, tools=tools)
    assert second.output_text == "mock: tool result: 21C"
    model_turn = rig.proxy.sent[-1]["contents"][1]
    calls = [p for p in model_turn["parts"] if "functionCall" in p]
    assert calls[0]["thoughtSignature"] == signature
    assert calls[0]["functionCall"]["id"] == call.call_id


def _gemini_parts(raw: bytes, stream: bool) -> list[dict[str, Any]]:
    chunks = [json.loads(e.data) for e in SSEParser().feed(raw) if e.data] if stream else [json.loads(raw)]
    return [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_codex_namespace_and_custom_tools_keep_their_shapes(rig: Rig, stream: bool) -> None:
    rig.use_mock(Protocol.OPENAI_CHAT)
    tools: Any = [
        {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch."},
        {
            "type": "namespace",
            "name": "mcp__github__",
            "description": "GitHub tools",
            "tools": [{"type": "function", "name": "list_issues", "parameters": WEATHER}],
        },
    ]
    namespaced = ask(rig, stream, input="please use tool mcp__github__list_issues", tools=tools)
    call = namespaced.output[0]
    assert call.type == "function_call" and call.name == "list_issues" and call.namespace == "mcp__github__"
    upstream_tools = [t["function"]["name"] for t in rig.proxy.sent[-1]["tools"]]
    assert upstream_tools == ["apply_patch", "mcp__github__list_issues"]

    custom = ask(rig, stream, input="please use tool apply_patch", tools=tools)
    patch = custom.output[0]
    assert patch.type == "custom_tool_call" and patch.name == "apply_patch" and patch.input == "mock"
    follow_up = [
        {"role": "user", "content": "please use tool apply_patch"},
        patch.model_dump(exclude_none=True),
        {"type": "custom_tool_call_output", "call_id": patch.call_id, "output": "Done"},
    ]
    done = ask(rig, stream, input=follow_up, tools=tools)
    assert done.output_text == "mock: tool result: Done"
    assistant = rig.proxy.sent[-1]["messages"][1]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"input": "mock"}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_truncated_answer_is_incomplete(rig: Rig, stream: bool) -> None:
    rig.use_mock(Protocol.ANTHROPIC, "mock+tokens=40")
    answer = ask(rig, stream, input="count", max_output_tokens=5)
    assert answer.status == "incomplete"
    assert answer.incomplete_details is not None and answer.incomplete_details.reason == "max_output_tokens"


# --- other clients in front of a Responses upstream ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_anthropic_client_on_a_responses_upstream(rig: Rig, stream: bool) -> None:
    rig.use_mock(Protocol.OPENAI_RESPONSES, "mock+reasoning=3")
    claude = anthropic.Anthropic(base_url=rig.proxy_url, api_key="k", max_retries=0)
    tools: Any = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": "please use tool get_weather"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}

    def call() -> anthropic.types.Message:
        if stream:
            with claude.messages.stream(
                model="gw", max_tokens=4096, messages=messages, tools=tools, thinking=thinking
            ) as s:
                return s.get_final_message()
        return claude.messages.create(
            model="gw", max_tokens=4096, messages=messages, tools=tools, thinking=thinking
        )

    first = call()
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].signature and first.stop_reason == "tool_use"
    sent = rig.proxy.sent[-1]
    assert sent["store"] is False and sent["include"] == ["reasoning.encrypted_content"]
    encrypted = _responses_encrypted(rig.proxy.received[-1], stream)
    tool_use = first.content[1]
    messages.append({"role": "assistant", "content": first.content})
    messages.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "21C"}]}
    )
    second = call()
    assert [b.text for b in second.content if b.type == "text"] == ["mock: tool result: 21C"]
    items = rig.proxy.sent[-1]["input"]
    reasoning = [item for item in items if item.get("type") == "reasoning"]
    assert [r["encrypted_content"] for r in reasoning] == [encrypted]  # OpenAI's own blob, home again


def _responses_encrypted(raw: bytes, stream: bool) -> str:
    if stream:
        done = [json.loads(e.data) for e in SSEParser().feed(raw) if e.event == "response.completed"]
        output = done[0]["response"]["output"]
    else:
        output = json.loads(raw)["output"]
    return str(next(item["encrypted_content"] for item in output if item["type"] == "reasoning"))


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_chat_client_on_a_responses_upstream(rig: Rig, stream: bool) -> None:
    rig.use_mock(Protocol.OPENAI_RESPONSES)
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
    assert second.usage is not None and second.usage.prompt_tokens > 0
