"""Anthropic codec behaviours the round-trip properties do not reach: what real clients send
(Claude Code's system messages, beta-only fields), the thinking rules the API enforces, what is
refused, and the stream framing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from isthmus import ir
from isthmus.errors import InvalidRequestError
from isthmus.ir import Protocol
from isthmus.protocols.anthropic_codec import decode_request, encode_request
from isthmus.protocols.anthropic_stream import AnthropicStreamDecoder, AnthropicStreamEncoder
from isthmus.protocols.convert import convert_request
from isthmus.protocols.sse import SSEParser

TOOL = {"name": "get", "input_schema": {"type": "object", "properties": {}}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}], **fields}


def encode(req: ir.Request, **kw: Any) -> dict[str, Any]:
    return encode_request(req, model="claude", stream=kw.get("stream", False))


def test_system_message_inside_messages_folds_after_the_system_prompt() -> None:
    raw = body(
        system=[{"type": "text", "text": "base", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "late rule"}]},
            {"role": "assistant", "content": "ok"},
        ],
    )
    req = decode_request(raw)
    assert [m.role for m in req.messages] == [ir.Role.USER, ir.Role.SYSTEM, ir.Role.ASSISTANT]
    out = encode(req)
    assert out["system"] == [
        {"type": "text", "text": "base", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "late rule"},
    ]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]


def test_beta_fields_ride_along_to_anthropic_only() -> None:
    raw = body(
        context_management={"edits": [{"type": "clear_tool_uses_20250919"}]},
        container="ctr_1",
        thinking={"type": "adaptive", "display": "omitted"},
        output_config={"effort": "max", "task_budget": 5},
        tools=[{**TOOL, "defer_loading": True}],
    )
    req = decode_request(raw)
    assert req.reasoning == ir.ReasoningConfig(mode=ir.ReasoningMode.ADAPTIVE, effort="max")
    out = encode(req)
    for key in ("context_management", "container", "thinking", "output_config"):
        assert out[key] == raw[key]
    assert out["tools"][0]["defer_loading"] is True
    chat = convert_request(Protocol.ANTHROPIC, Protocol.OPENAI_CHAT, raw, model="gpt", stream=False)
    assert not {"context_management", "container", "thinking", "output_config"} & set(chat)
    assert "defer_loading" not in json.dumps(chat["tools"])
    assert chat["reasoning_effort"] == "max"


def test_parallel_tool_use_flag_round_trips() -> None:
    req = decode_request(body(tools=[TOOL], tool_choice={"type": "any", "disable_parallel_tool_use": True}))
    assert req.tool_choice == ir.ToolChoice(mode=ir.ToolChoiceMode.REQUIRED)
    assert req.parallel_tool_calls is False
    chat = convert_request(
        Protocol.ANTHROPIC,
        Protocol.OPENAI_CHAT,
        body(tools=[TOOL], tool_choice={"type": "any", "disable_parallel_tool_use": True}),
        model="g",
        stream=False,
    )
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    back = convert_request(Protocol.OPENAI_CHAT, Protocol.ANTHROPIC, chat, model="c", stream=False)
    assert back["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def tool_turn(signed: bool) -> list[ir.Message]:
    assistant: list[ir.Part] = [ir.ToolCallPart(id="call_1", name="get", arguments="{}")]
    if signed:
        assistant.insert(0, ir.ThinkingPart(text="t", signature="sig", origin=Protocol.ANTHROPIC))
    return [
        ir.Message(role=ir.Role.USER, parts=[ir.TextPart(text="q")]),
        ir.Message(role=ir.Role.ASSISTANT, parts=assistant),
        ir.Message(
            role=ir.Role.USER, parts=[ir.ToolResultPart(call_id="call_1", content=[ir.TextPart(text="r")])]
        ),
    ]


@pytest.mark.parametrize("signed", [True, False])
def test_thinking_needs_a_signed_block_in_the_tool_turn(signed: bool) -> None:
    reasoning = ir.ReasoningConfig(mode=ir.ReasoningMode.ENABLED, effort="high")
    req = ir.Request(
        messages=tool_turn(signed), reasoning=reasoning, max_output_tokens=30000, temperature=0.3, top_k=5
    )
    out = encode(req)
    if signed:
        assert out["thinking"] == {"type": "enabled", "budget_tokens": 16384}
        assert "temperature" not in out and "top_k" not in out  # the API refuses them with thinking on
    else:
        assert "thinking" not in out  # rather than the upstream's 400
        assert out["temperature"] == 0.3 and out["top_k"] == 5


def test_thinking_budget_fits_the_output_cap() -> None:
    effort = ir.ReasoningConfig(mode=ir.ReasoningMode.ENABLED, effort="xhigh")
    uncapped = encode(ir.Request(messages=tool_turn(True)[:1], reasoning=effort))
    assert uncapped["thinking"]["budget_tokens"] == 32768 < uncapped["max_tokens"]
    capped = encode(ir.Request(messages=tool_turn(True)[:1], reasoning=effort, max_output_tokens=10000))
    assert capped["max_tokens"] == 10000 and capped["thinking"]["budget_tokens"] == 5000
    tiny = encode(ir.Request(messages=tool_turn(True)[:1], reasoning=effort, max_output_tokens=1500))
    assert "thinking" not in tiny


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (
            ir.Request(
                messages=[
                    ir.Message(
                        role=ir.Role.USER,
                        parts=[ir.AudioPart(source=ir.MediaSource(kind=ir.SourceKind.BASE64, data="AA=="))],
                    )
                ]
            ),
            "audio",
        ),
        (ir.Request(n=2), "n > 1"),
        (
            ir.Request(
                tools=[
                    ir.BuiltinTool(
                        kind="file_search", config={"type": "file_search"}, origin=Protocol.OPENAI_RESPONSES
                    )
                ]
            ),
            "'file_search' tool",
        ),
    ],
)
def test_meaning_changing_drops_are_refused(req: ir.Request, message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        encode(req)
    assert caught.value.status == 400 and message in caught.value.message


def test_foreign_web_search_maps_to_the_server_tool() -> None:
    tool = ir.BuiltinTool(
        kind="web_search",
        config={
            "type": "web_search",
            "filters": {"allowed_domains": ["python.org"]},
            "user_location": {"type": "approximate", "city": "Oslo"},
        },
        origin=Protocol.OPENAI_RESPONSES,
    )
    out = encode(ir.Request(tools=[tool]))
    assert out["tools"] == [
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "allowed_domains": ["python.org"],
            "user_location": {"type": "approximate", "city": "Oslo"},
        }
    ]


def test_vendor_tool_ids_are_made_safe_alike_for_call_and_result() -> None:
    chat = {
        "model": "kimi",
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "functions.get:0",
                        "type": "function",
                        "function": {"name": "get", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "functions.get:0", "content": "r"},
        ],
    }
    out = convert_request(Protocol.OPENAI_CHAT, Protocol.ANTHROPIC, chat, model="c", stream=False)
    assert out["messages"][1]["content"][0]["id"] == "functions_get_0"
    assert out["messages"][2]["content"][0]["tool_use_id"] == "functions_get_0"


def test_json_mode_without_schema_is_asked_for_in_words() -> None:
    out = encode(
        ir.Request(
            system=[ir.TextPart(text="s")],
            response_format=ir.ResponseFormat(kind=ir.ResponseFormatKind.JSON_OBJECT),
        )
    )
    assert out["system"][-1]["text"].startswith("Respond with a single JSON object")
    assert "output_config" not in out


def test_malformed_requests_are_400() -> None:
    with pytest.raises(InvalidRequestError):
        decode_request({"model": "c", "messages": "hi"})
    with pytest.raises(InvalidRequestError):
        decode_request(body(messages=[{"role": "tool", "content": "x"}]))


def sse(wire: bytes) -> list[tuple[str | None, Any]]:
    return [(e.event, json.loads(e.data)) for e in SSEParser().feed(wire)]


def test_stream_encoder_frames_like_the_api() -> None:
    encoder = AnthropicStreamEncoder(model="claude")
    wire = b"".join(
        encoder.encode(e)
        for e in [
            ir.MessageStart(id="msg_1", model="up"),
            ir.PartStart(index=0, part=ir.ImagePart(source=ir.MediaSource(kind=ir.SourceKind.URL, data="u"))),
            ir.PartStop(index=0),
            ir.PartStart(index=1, part=ir.TextPart(text="")),
            ir.TextDelta(index=1, text="hi"),
            ir.PartStop(index=1),
            ir.PartStart(index=2, part=ir.TextPart(text="")),
            ir.TextDelta(index=2, text="again"),
            ir.PartStop(index=2),
            ir.Finish(stop_reason=ir.StopReason.MAX_TOKENS, usage=ir.Usage(input_tokens=3, output_tokens=2)),
        ]
    )
    events = sse(wire)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [d["index"] for n, d in events if n == "content_block_start"] == [0, 1]  # the image was skipped
    assert events[0][1]["message"]["model"] == "claude"
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"]["input_tokens"] == 3 and events[-2][1]["usage"]["output_tokens"] == 2


def test_stream_decoder_reports_errors_with_their_status() -> None:
    decoder = AnthropicStreamDecoder()
    wire = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    (event,) = decoder.feed(SSEParser().feed(wire)[0])
    assert isinstance(event, ir.StreamError)
    assert event.error.message == "Overloaded" and getattr(event.error, "upstream_status", None) == 529
