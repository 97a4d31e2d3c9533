"""OpenAI Chat codec behaviours beyond the round-trip properties: legacy and vendor shapes, what is
refused or approximated, and stream quirks of compatible vendors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from isthmus import ir
from isthmus.errors import InvalidRequestError
from isthmus.ir import Protocol
from isthmus.protocols.openai_chat_codec import decode_request, encode_request
from isthmus.protocols.openai_chat_stream import ChatStreamDecoder, ChatStreamEncoder
from isthmus.protocols.sse import SSEParser


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "gpt", "messages": list(messages), **fields}


def test_leading_instructions_become_the_system_prompt_and_later_ones_stay_in_place() -> None:
    req = decode_request(
        chat(
            {"role": "developer", "content": "a"},
            {"role": "system", "content": [{"type": "text", "text": "b"}]},
            {"role": "user", "content": "q"},
            {"role": "developer", "content": "c"},
        )
    )
    assert [p.text for p in req.system] == ["a", "b"]
    assert req.messages[-1] == ir.Message(role=ir.Role.SYSTEM, parts=[ir.TextPart(text="c")])


def test_tool_messages_join_one_user_turn_and_learn_their_tool_name() -> None:
    req = decode_request(
        chat(
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "2"}]},
            {"role": "user", "content": "more"},
        )
    )
    results = req.messages[2]
    assert [(p.call_id, p.name) for p in results.parts if isinstance(p, ir.ToolResultPart)] == [
        ("a", "f"),
        ("b", "g"),
    ]
    assert req.messages[3].parts == [ir.TextPart(text="more")]


def test_legacy_functions_and_function_call() -> None:
    req = decode_request(
        chat(
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"x":1}'}},
            {"role": "function", "name": "f", "content": "done"},
            functions=[{"name": "f", "parameters": {"type": "object"}}],
            function_call={"name": "f"},
        )
    )
    assert req.tools == [ir.FunctionTool(name="f", parameters={"type": "object"})]
    assert req.tool_choice == ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name="f")
    call, result = req.messages[1].parts[0], req.messages[2].parts[0]
    assert isinstance(call, ir.ToolCallPart) and isinstance(result, ir.ToolResultPart)
    assert (call.id, call.arguments) == ("f", '{"x":1}') and (result.call_id, result.name) == ("f", "f")


def test_max_tokens_spelling_is_kept_for_chat_upstreams() -> None:
    req = decode_request(chat({"role": "user", "content": "q"}, max_tokens=50))
    assert req.max_output_tokens == 50
    assert encode_request(req, model="m", stream=False)["max_tokens"] == 50
    fresh = ir.Request(messages=req.messages, max_output_tokens=50)
    out = encode_request(fresh, model="m", stream=True)
    assert out["max_completion_tokens"] == 50 and out["stream_options"] == {"include_usage": True}


def test_long_user_ids_are_digested_stably() -> None:
    long_id = "user_" + "ab" * 60 + "_session_x"
    first = encode_request(ir.Request(user=long_id), model="m", stream=False)["user"]
    assert (
        len(first) == 64
        and first == encode_request(ir.Request(user=long_id), model="m", stream=False)["user"]
    )
    assert encode_request(ir.Request(user="short"), model="m", stream=False)["user"] == "short"


def test_non_base64_data_urls_are_read() -> None:
    req = decode_request(
        chat(
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/svg+xml,%3Csvg%2F%3E"}}],
            }
        )
    )
    image = req.messages[0].parts[0]
    assert isinstance(image, ir.ImagePart)
    assert image.source == ir.MediaSource(
        kind=ir.SourceKind.BASE64, data="PHN2Zy8+", media_type="image/svg+xml"
    )


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (ir.ImagePart(source=ir.MediaSource(kind=ir.SourceKind.FILE_ID, data="file_1")), "image"),
        (ir.DocumentPart(source=ir.MediaSource(kind=ir.SourceKind.URL, data="https://x/y.pdf")), "URL"),
        (ir.AudioPart(source=ir.MediaSource(kind=ir.SourceKind.URL, data="https://x/a.wav")), "audio"),
    ],
)
def test_inputs_chat_cannot_take_are_refused(part: ir.Part, message: str) -> None:
    req = ir.Request(messages=[ir.Message(role=ir.Role.USER, parts=[part])])
    with pytest.raises(InvalidRequestError) as caught:
        encode_request(req, model="m", stream=False)
    assert message in caught.value.message


def test_builtin_tools_from_other_protocols() -> None:
    custom = ir.BuiltinTool(
        kind="custom",
        name="patch",
        config={"type": "custom", "name": "patch", "description": "d"},
        origin=Protocol.OPENAI_RESPONSES,
    )
    out = encode_request(ir.Request(tools=[custom]), model="m", stream=False)
    assert out["tools"] == [{"type": "custom", "custom": {"name": "patch", "description": "d"}}]
    search = ir.BuiltinTool(
        kind="web_search", config={"type": "web_search_20250305"}, origin=Protocol.ANTHROPIC
    )
    with pytest.raises(InvalidRequestError, match="web_search"):
        encode_request(ir.Request(tools=[search]), model="m", stream=False)


def test_tool_result_media_follow_the_tool_messages() -> None:
    image = ir.ImagePart(source=ir.MediaSource(kind=ir.SourceKind.URL, data="https://x/i.png"))
    result = ir.ToolResultPart(call_id="c", content=[ir.TextPart(text="see"), image], is_error=True)
    msgs = encode_request(
        ir.Request(messages=[ir.Message(role=ir.Role.USER, parts=[result])]), model="m", stream=False
    )["messages"]
    assert msgs[0] == {"role": "tool", "tool_call_id": "c", "content": "Error: see"}
    assert msgs[1]["role"] == "user" and msgs[1]["content"][1]["image_url"]["url"] == "https://x/i.png"


def decode_stream(lines: list[str]) -> list[ir.StreamEvent]:
    decoder = ChatStreamDecoder()
    wire = "".join(f"data: {line}\n\n" for line in lines).encode()
    return [e for event in SSEParser().feed(wire) for e in decoder.feed(event)] + decoder.finish()


def test_stream_decoder_handles_vendor_quirks() -> None:
    """Calls without an index (sent whole), the ``reasoning`` field, and no ``[DONE]``."""
    base = {"id": "x", "model": "v", "created": 5}
    events = decode_stream(
        [
            json.dumps(
                {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning": "hmm"}}]}
            ),
            json.dumps(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "id": "a",
                                        "type": "function",
                                        "function": {"name": "f", "arguments": "{}"},
                                    },
                                    {
                                        "id": "b",
                                        "type": "function",
                                        "function": {"name": "g", "arguments": "{}"},
                                    },
                                ]
                            },
                        }
                    ],
                }
            ),
            json.dumps(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                    "usage": {"prompt_tokens": 4, "completion_tokens": 2},
                }
            ),
        ]
    )
    starts = [e.part for e in events if isinstance(e, ir.PartStart)]
    assert starts[0] == ir.ThinkingPart(text="", origin=Protocol.OPENAI_CHAT)
    assert [(p.id, p.name) for p in starts[1:] if isinstance(p, ir.ToolCallPart)] == [("a", "f"), ("b", "g")]
    finish = events[-1]
    assert isinstance(finish, ir.Finish) and finish.stop_reason is ir.StopReason.TOOL_USE
    assert finish.usage == ir.Usage(input_tokens=4, output_tokens=2)
    assert sum(isinstance(e, ir.PartStop) for e in events) == 3


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_encoder_usage_chunk_only_when_asked(include_usage: bool) -> None:
    encoder = ChatStreamEncoder(model="gw", include_usage=include_usage)
    usage = ir.Usage(input_tokens=10, cache_read_tokens=90, output_tokens=5)
    wire = b"".join(
        encoder.encode(e)
        for e in [
            ir.MessageStart(id="m", model="up", created=7),
            ir.PartStart(index=0, part=ir.TextPart(text="")),
            ir.TextDelta(index=0, text="hi"),
            ir.PartStop(index=0),
            ir.Finish(stop_reason=ir.StopReason.END_TURN, usage=usage),
        ]
    )
    events = SSEParser().feed(wire)
    assert events[-1].data == b"[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["model"] == "gw" and c["created"] == 7 for c in chunks)
    if include_usage:
        assert all("usage" in c for c in chunks)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 100
        assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 90
    else:
        assert not any("usage" in c for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
