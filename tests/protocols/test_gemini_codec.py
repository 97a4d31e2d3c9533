"""The Gemini codec: Gemini CLI's request shapes, calls without ids, thought signatures, the mapping
tables, and round trips of requests, responses and streams through the IR (hypothesis)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.genai import types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus import ir
from isthmus.errors import InvalidRequestError
from isthmus.ir import Protocol
from isthmus.ir.reasoning import is_sealed
from isthmus.protocols import anthropic_codec
from isthmus.protocols import gemini_codec as codec
from isthmus.protocols.codec import dump_json
from isthmus.protocols.sse import SSEParser

from .test_openai_responses_codec import assemble

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = Path(__file__).parent / "fixtures"
GEMINI = Protocol.GEMINI
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cli_body() -> dict[str, Any]:
    return dict(json.loads((GOLDEN / "requests" / "gemini_cli.gemini.json").read_text()))


def test_gemini_cli_request_decodes_into_the_ir() -> None:
    req = codec.decode_request(cli_body())
    assert req.system == [
        ir.TextPart(text="You are an interactive CLI agent specializing in software engineering tasks.")
    ]
    call = req.messages[3].parts[0]
    assert isinstance(call, ir.ToolCallPart) and call.id == "call_gm_3_0"
    assert call.thought_signature == "CiQB0e2Kb7gemini-own-signature-bytes=="
    result = req.messages[4].parts[0]
    assert isinstance(result, ir.ToolResultPart) and result.call_id == call.id and result.name == "read_file"
    assert result.content == [ir.TextPart(text="buy milk\n")]
    text = req.messages[5].parts[0]
    assert isinstance(text, ir.TextPart) and text.thought_signature == "CiQB0e2Kb7text-signature=="
    assert req.reasoning == ir.ReasoningConfig(
        mode=ir.ReasoningMode.ENABLED, effort="high", include_thoughts=True
    )
    assert [t.name for t in req.tools] == ["read_file", "run_shell_command"]
    assert req.temperature == 0 and req.top_p == 1


def test_gemini_cli_request_round_trips() -> None:
    body = cli_body()
    again = codec.encode_request(codec.decode_request(body), model="gemini-3-pro", stream=True)
    assert again["contents"] == body["contents"]
    assert again["tools"] == body["tools"]
    assert again["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "HIGH", "includeThoughts": True}
    assert again["systemInstruction"]["parts"] == body["systemInstruction"]["parts"]


def test_results_without_ids_match_calls_by_name_and_order() -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "two files"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "read", "args": {"p": "a"}}},
                    {"functionCall": {"name": "ls", "args": {}}},
                    {"functionCall": {"name": "read", "args": {"p": "b"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "read", "response": {"output": "A"}}},
                    {"functionResponse": {"name": "read", "response": {"output": "B"}}},
                    {"functionResponse": {"name": "ls", "response": {"error": "denied"}}},
                ],
            },
        ]
    }
    req = codec.decode_request(body)
    calls = [p for p in req.messages[1].parts if isinstance(p, ir.ToolCallPart)]
    results = [p for p in req.messages[2].parts if isinstance(p, ir.ToolResultPart)]
    assert [r.call_id for r in results] == [calls[0].id, calls[2].id, calls[1].id]
    assert results[2].is_error and results[2].content == [ir.TextPart(text="denied")]
    # Toward Claude the pairs keep their ids; toward Gemini the made-up ids are left out again.
    claude = anthropic_codec.encode_request(req, model="c", stream=False)
    assert [b["tool_use_id"] for b in claude["messages"][2]["content"]] == [
        c.id for c in (calls[0], calls[2], calls[1])
    ]
    back = codec.encode_request(req, model="g", stream=False)
    assert back["contents"][1]["parts"][0]["functionCall"] == {"name": "read", "args": {"p": "a"}}
    assert back["contents"][2]["parts"][2]["functionResponse"] == {
        "name": "ls",
        "response": {"error": "denied"},
    }


def test_a_foreign_model_turn_gets_the_documented_dummy_signature() -> None:
    req = anthropic_codec.decode_request(
        {
            "model": "c",
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "plan", "signature": "anthropic-sig"},
                        {"type": "tool_use", "id": "toolu_1", "name": "a", "input": {}},
                        {"type": "tool_use", "id": "toolu_2", "name": "b", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "1"},
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "2"},
                    ],
                },
            ],
        }
    )
    body = codec.encode_request(req, model="g", stream=False)
    model_parts = body["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in model_parts] == [codec.DUMMY_SIGNATURE, None]
    assert "anthropic-sig" not in json.dumps(body) and "plan" not in json.dumps(body)
    results = [p["functionResponse"] for p in body["contents"][2]["parts"]]
    assert results == [
        {"id": "toolu_1", "name": "a", "response": {"output": "1"}},
        {"id": "toolu_2", "name": "b", "response": {"output": "2"}},
    ]


@pytest.mark.parametrize(
    ("wire", "reasoning"),
    [
        ({"thinkingBudget": 0}, ir.ReasoningConfig(mode=ir.ReasoningMode.DISABLED, include_thoughts=False)),
        (
            {"thinkingBudget": -1, "includeThoughts": True},
            ir.ReasoningConfig(mode=ir.ReasoningMode.ADAPTIVE, include_thoughts=True),
        ),
        (
            {"thinkingBudget": 4096},
            ir.ReasoningConfig(mode=ir.ReasoningMode.ENABLED, budget_tokens=4096, include_thoughts=False),
        ),
        (
            {"thinkingLevel": "LOW"},
            ir.ReasoningConfig(mode=ir.ReasoningMode.ENABLED, effort="low", include_thoughts=False),
        ),
        (
            {"include_thoughts": True, "thinking_budget": 2048},
            ir.ReasoningConfig(mode=ir.ReasoningMode.ENABLED, budget_tokens=2048, include_thoughts=True),
        ),
    ],
)
def test_thinking_config_table(wire: dict[str, Any], reasoning: ir.ReasoningConfig) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "generationConfig": {"thinkingConfig": wire},
    }
    req = codec.decode_request(body)
    assert req.reasoning == reasoning
    again = codec.encode_request(req, model="g", stream=False)["generationConfig"]["thinkingConfig"]
    camel = {"include_thoughts": "includeThoughts", "thinking_budget": "thinkingBudget"}
    expected = {camel.get(k, k): v for k, v in wire.items()}
    assert {k: v for k, v in again.items() if k != "includeThoughts"} == {
        k: v for k, v in expected.items() if k != "includeThoughts"
    }


def test_thinking_from_another_protocol_asks_to_see_thoughts() -> None:
    req = anthropic_codec.decode_request(
        {
            "model": "c",
            "max_tokens": 9000,
            "thinking": {"type": "enabled", "budget_tokens": 3000},
            "messages": [{"role": "user", "content": "x"}],
        }
    )
    config = codec.encode_request(req, model="g", stream=False)["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": 3000, "includeThoughts": True}
    assert config["maxOutputTokens"] == 9000


@pytest.mark.parametrize(
    ("reason", "called", "stop"),
    [
        ("STOP", False, ir.StopReason.END_TURN),
        ("STOP", True, ir.StopReason.TOOL_USE),
        ("MAX_TOKENS", False, ir.StopReason.MAX_TOKENS),
        ("SAFETY", False, ir.StopReason.CONTENT_FILTER),
        ("PROHIBITED_CONTENT", False, ir.StopReason.CONTENT_FILTER),
        ("RECITATION", False, ir.StopReason.OTHER),
        ("MALFORMED_FUNCTION_CALL", False, ir.StopReason.OTHER),
    ],
)
def test_finish_reason_table(reason: str, called: bool, stop: ir.StopReason) -> None:
    parts: list[dict[str, Any]] = [{"functionCall": {"name": "f", "args": {}}}] if called else [{"text": "t"}]
    body = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": reason}],
        "responseId": "r1",
    }
    assert codec.decode_response(body).stop_reason is stop


def test_a_blocked_prompt_is_a_content_filter_answer() -> None:
    body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 7}}
    resp = codec.decode_response(body)
    assert resp.stop_reason is ir.StopReason.CONTENT_FILTER and resp.parts == []
    assert resp.usage.input_tokens == 7


def test_structured_output_and_tools_toward_gemini() -> None:
    req = ir.Request(
        messages=[ir.Message(role=ir.Role.USER, parts=[ir.TextPart(text="x")])],
        tools=[
            ir.FunctionTool(name="f", parameters={"type": "object", "additionalProperties": False}),
            ir.BuiltinTool(
                kind="web_search", config={"type": "web_search"}, origin=Protocol.OPENAI_RESPONSES
            ),
        ],
        tool_choice=ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name="f"),
        response_format=ir.ResponseFormat(kind=ir.ResponseFormatKind.JSON_SCHEMA, schema={"type": "object"}),
        stop=["END"],
        n=1,
        seed=7,
    )
    body = codec.encode_request(req, model="g", stream=False)
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "f", "parametersJsonSchema": {"type": "object", "additionalProperties": False}}
            ]
        },
        {"googleSearch": {}},
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == {
        "type": "object"
    }
    assert config["stopSequences"] == ["END"] and config["seed"] == 7 and config["candidateCount"] == 1
    req.tools = [ir.BuiltinTool(kind="computer", config={}, origin=Protocol.ANTHROPIC)]
    with pytest.raises(InvalidRequestError, match="computer"):
        codec.encode_request(req, model="g", stream=False)


# --- round trips (hypothesis) --------------------------------------------------------------------

text = st.text(max_size=30)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)
b64 = st.binary(min_size=1, max_size=16).map(lambda b: base64.b64encode(b).decode())
arguments = st.dictionaries(words, st.integers(-(2**53), 2**53) | st.text(max_size=5), max_size=3).map(
    dump_json
)


@st.composite
def requests(draw: st.DrawFn) -> ir.Request:
    messages: list[ir.Message] = []
    for turn in range(draw(st.integers(1, 3))):
        user: list[ir.Part] = [ir.TextPart(text=draw(text.filter(bool)))]
        if draw(st.booleans()):
            source = ir.MediaSource(kind=ir.SourceKind.BASE64, data=draw(b64), media_type="image/jpeg")
            user.append(ir.ImagePart(source=source))
        messages.append(ir.Message(role=ir.Role.USER, parts=user))
        parts: list[ir.Part] = []
        if draw(st.booleans()):
            parts.append(
                ir.ThinkingPart(text=draw(text.filter(bool)), signature=draw(st.none() | b64), origin=GEMINI)
            )
        calls = [
            ir.ToolCallPart(
                id=f"call_{turn}_{i}",
                name=draw(words),
                arguments=draw(arguments),
                thought_signature=draw(b64) if i == 0 else None,
            )
            for i in range(draw(st.integers(0, 2)))
        ]
        if not calls:
            parts.append(ir.TextPart(text=draw(text.filter(bool)), thought_signature=draw(st.none() | b64)))
        parts.extend(calls)
        messages.append(ir.Message(role=ir.Role.ASSISTANT, parts=parts))
        if calls:
            results: list[ir.Part] = [
                ir.ToolResultPart(
                    call_id=c.id,
                    name=c.name,
                    content=[ir.TextPart(text=draw(text))],
                    is_error=draw(st.booleans()),
                )
                for c in calls
            ]
            messages.append(ir.Message(role=ir.Role.USER, parts=results))
    return ir.Request(
        model=None,
        system=[ir.TextPart(text=draw(text.filter(bool)))] if draw(st.booleans()) else [],
        messages=messages,
        tools=[
            ir.FunctionTool(name=n, description=draw(st.none() | text), parameters={"type": "object"})
            for n in sorted(draw(st.sets(words, max_size=2)))
        ],
        tool_choice=draw(
            st.none()
            | st.builds(
                ir.ToolChoice,
                mode=st.sampled_from(
                    [ir.ToolChoiceMode.AUTO, ir.ToolChoiceMode.NONE, ir.ToolChoiceMode.REQUIRED]
                ),
            )
        ),
        temperature=draw(st.none() | st.floats(0, 2)),
        top_k=draw(st.none() | st.integers(1, 100)),
        stop=draw(st.lists(words, max_size=2)),
        max_output_tokens=draw(st.none() | st.integers(1, 10**5)),
        reasoning=draw(
            st.none()
            | st.builds(
                ir.ReasoningConfig,
                mode=st.just(ir.ReasoningMode.ENABLED),
                budget_tokens=st.integers(1, 30000),
                include_thoughts=st.booleans(),
            )
        ),
    )


@SETTINGS
@given(req=requests())
def test_request_round_trip(req: ir.Request) -> None:
    body = orjson.loads(orjson.dumps(codec.encode_request(req, model="g", stream=False)))
    assert codec.decode_request(body) == req


foreign = (
    st.builds(ir.ThinkingPart, text=text, signature=b64, origin=st.just(Protocol.ANTHROPIC))
    | st.builds(ir.RedactedThinkingPart, data=b64, origin=st.just(Protocol.ANTHROPIC))
    | st.builds(
        ir.EncryptedReasoningPart,
        id=words,
        encrypted_content=b64,
        summary=st.lists(text.filter(bool), max_size=2),
    )
)


@st.composite
def answers(draw: st.DrawFn) -> ir.Response:
    """Answers a Gemini client can get: at most one foreign reasoning part before each call or text."""
    parts: list[ir.Part] = []
    for i in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            parts.append(draw(foreign))
        if draw(st.booleans()):
            parts.append(ir.ToolCallPart(id=f"call_{i}", name=draw(words), arguments=draw(arguments)))
        else:
            parts.append(ir.TextPart(text=draw(text.filter(bool))))
    called = any(isinstance(p, ir.ToolCallPart) for p in parts)
    stop = draw(st.sampled_from([ir.StopReason.MAX_TOKENS, ir.StopReason.CONTENT_FILTER]))
    if draw(st.booleans()):
        stop = ir.StopReason.TOOL_USE if called else ir.StopReason.END_TURN
    usage = ir.Usage(
        input_tokens=draw(st.integers(0, 10**5)),
        output_tokens=draw(st.integers(0, 10**4)),
        cache_read_tokens=draw(st.integers(0, 100)),
    )
    return ir.Response(id="r1", model="m", parts=parts, stop_reason=stop, usage=usage)


def client_view(parts: list[ir.Part]) -> list[ir.Part]:
    """What the gateway expects back when a Gemini client returns an answer: every foreign
    reasoning part restored exactly (from the sealed signatures), its visible thought text aside."""
    return [
        p
        for p in parts
        if not (isinstance(p, ir.ThinkingPart) and p.origin is GEMINI and p.signature is None)
    ]


@SETTINGS
@given(resp=answers())
def test_response_round_trip_and_sdk_types(resp: ir.Response) -> None:
    body = orjson.loads(orjson.dumps(codec.encode_response(resp, model="client")))
    types.GenerateContentResponse.model_validate(body)
    for part in body["candidates"][0]["content"]["parts"]:
        if "thoughtSignature" in part:
            assert is_sealed(part["thoughtSignature"])
    back = codec.decode_response(body)
    assert client_view(back.parts) == resp.parts
    assert back.stop_reason == resp.stop_reason and back.usage == resp.usage
    # The same parts sent back by the client as history restore the foreign parts for their owner.
    history = codec.decode_request(
        {"contents": [{"role": "model", "parts": body["candidates"][0]["content"]["parts"]}]}
    )
    assert client_view(history.messages[0].parts) == resp.parts


def stream_events(resp: ir.Response) -> list[ir.StreamEvent]:
    events: list[ir.StreamEvent] = [ir.MessageStart(id=resp.id, model=resp.model)]
    for index, part in enumerate(resp.parts):
        if isinstance(part, ir.TextPart):
            events.append(ir.PartStart(index=index, part=ir.TextPart(text="")))
            events.extend(
                ir.TextDelta(index=index, text=part.text[i : i + 3]) for i in range(0, len(part.text), 3)
            )
            events.append(ir.PartStop(index=index))
        elif isinstance(part, ir.ToolCallPart):
            events.append(ir.PartStart(index=index, part=ir.ToolCallPart(id=part.id, name=part.name)))
            events.append(ir.ToolArgumentsDelta(index=index, fragment=part.arguments))
            events.append(ir.PartStop(index=index))
        elif isinstance(part, ir.ThinkingPart):
            events.append(ir.PartStart(index=index, part=ir.ThinkingPart(text="", origin=part.origin)))
            events.append(ir.ThinkingDelta(index=index, text=part.text))
            if part.signature:
                events.append(ir.SignatureDelta(index=index, signature=part.signature))
            events.append(ir.PartStop(index=index))
        else:
            events.extend((ir.PartStart(index=index, part=part), ir.PartStop(index=index, part=part)))
    events.append(ir.UsageUpdate(usage=resp.usage))
    events.append(ir.Finish(stop_reason=resp.stop_reason))
    return events


@SETTINGS
@given(resp=answers())
def test_stream_carries_what_the_unary_answer_carries(resp: ir.Response) -> None:
    encoder = codec.CODEC.stream_encoder(model="client", include_usage=True)
    raw = b"".join(encoder.encode(e) for e in stream_events(resp))
    chunks = [orjson.loads(e.data) for e in SSEParser().feed(raw)]
    for chunk in chunks:
        types.GenerateContentResponse.model_validate(chunk)
    assert chunks[-1]["candidates"][0]["finishReason"] == codec.STOP_TO_WIRE[resp.stop_reason]
    merged: list[dict[str, Any]] = []  # chunks joined the way Gemini clients join them
    for part in (p for c in chunks for p in c["candidates"][0]["content"]["parts"] if p != {"text": ""}):
        last = merged[-1] if merged else {}
        joinable = "text" in part and "text" in last and "thoughtSignature" not in part
        if joinable and last.get("thought") == part.get("thought") and "thoughtSignature" not in last:
            last["text"] += part["text"]
        else:
            merged.append(dict(part))
    history = codec.decode_request({"contents": [{"role": "model", "parts": merged}]})
    if resp.parts:
        assert merge_texts(client_view(history.messages[0].parts)) == merge_texts(resp.parts)
    decoded = assemble(_decode(raw))
    assert decoded.stop_reason == resp.stop_reason and decoded.usage == resp.usage


def merge_texts(parts: list[ir.Part]) -> list[ir.Part]:
    """Adjacent text parts read as one on a Gemini stream (chunks carry no part boundaries)."""
    out: list[ir.Part] = []
    for part in parts:
        last = out[-1] if out else None
        if isinstance(part, ir.TextPart) and isinstance(last, ir.TextPart) and not part.thought_signature:
            out[-1] = ir.TextPart(text=last.text + part.text, thought_signature=last.thought_signature)
        else:
            out.append(part)
    return out


def _decode(raw: bytes) -> list[ir.StreamEvent]:
    decoder = codec.GeminiStreamDecoder()
    return [e for sse in SSEParser().feed(raw) for e in decoder.feed(sse)] + decoder.finish()


def test_decoder_reads_a_recorded_stream() -> None:
    events = _decode((FIXTURES / "gemini_text.sse").read_bytes())
    resp = assemble(events)
    kinds = [type(p).__name__ for p in resp.parts]
    assert kinds[0] == "ThinkingPart" and "TextPart" in kinds
    thinking = resp.parts[0]
    assert isinstance(thinking, ir.ThinkingPart) and thinking.signature == "CiQB0e2Kb6oh"
    assert isinstance(events[-1], ir.Finish) and resp.usage.cache_read_tokens == 8000


def test_decoder_reports_an_error_chunk() -> None:
    events = _decode((FIXTURES / "gemini_error.sse").read_bytes())
    errors = [e for e in events if isinstance(e, ir.StreamError)]
    assert len(errors) == 1 and errors[0].error.message.startswith("The model is overloaded")
