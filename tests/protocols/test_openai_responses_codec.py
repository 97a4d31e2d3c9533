"""The OpenAI Responses codec: Codex's request shapes, round trips of requests, responses and streams
through the IR (hypothesis), the event sequence the SDK and Codex need, and what must not cross."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from isthmus import ir
from isthmus.errors import InvalidRequestError, UpstreamStreamError
from isthmus.ir import Protocol
from isthmus.ir.reasoning import is_sealed
from isthmus.protocols import anthropic_codec, gemini_codec, openai_chat_codec
from isthmus.protocols import openai_responses_codec as codec
from isthmus.protocols.codec import dump_json
from isthmus.protocols.sse import SSEParser

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = Path(__file__).parent / "fixtures"
RESPONSES = Protocol.OPENAI_RESPONSES
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def codex_body() -> dict[str, Any]:
    return dict(json.loads((GOLDEN / "requests" / "responses_codex.openai-responses.json").read_text()))


# --- Codex's request ------------------------------------------------------------------------------


def test_codex_request_decodes_into_the_ir() -> None:
    body = codex_body()
    body["tools"].append({"type": "web_search", "external_web_access": False})
    req = codec.decode_request(body)
    assert req.system[0].text.startswith("You are Codex")
    roles = [m.role.value for m in req.messages]
    assert roles == [
        "user",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    reasoning, shell = req.messages[2].parts
    assert isinstance(reasoning, ir.EncryptedReasoningPart) and reasoning.id == "rs_0a1b2c"
    assert reasoning.encrypted_content == "gAAAAABo-opaque-openai-reasoning-blob=="
    assert isinstance(shell, ir.ToolCallPart) and shell.id == "call_shell_1"
    patch = req.messages[4].parts[0]
    assert isinstance(patch, ir.ToolCallPart) and json.loads(patch.arguments)["input"].startswith("*** Begin")
    mcp = req.messages[6].parts[0]
    assert isinstance(mcp, ir.ToolCallPart) and mcp.name == "mcp__github__list_issues"
    result = req.messages[7].parts[0]
    assert isinstance(result, ir.ToolResultPart) and result.name == "mcp__github__list_issues"
    names = [t.name for t in req.tools]
    assert names == ["shell", "apply_patch", "mcp__github__list_issues", None]
    web = req.tools[3]
    assert isinstance(web, ir.BuiltinTool) and web.kind == "web_search" and web.origin is RESPONSES
    assert req.reasoning == ir.ReasoningConfig(mode=ir.ReasoningMode.ENABLED, effort="medium", summary="auto")
    assert req.parallel_tool_calls is False
    ext = req.extensions[RESPONSES]
    assert ext["store"] is False and ext["include"] == ["reasoning.encrypted_content"]
    assert ext["prompt_cache_key"] and ext["text"] == {"verbosity": "medium"}
    image = req.messages[9].parts[1]
    assert isinstance(image, ir.ImagePart) and image.source.media_type == "image/png"


def test_codex_request_survives_a_round_trip() -> None:
    req = codec.decode_request(codex_body())
    again = codec.decode_request(
        orjson.loads(orjson.dumps(codec.encode_request(req, model="gpt-5-codex", stream=True)))
    )
    assert again == req


@pytest.mark.parametrize(
    "target", [anthropic_codec, openai_chat_codec, gemini_codec], ids=["anthropic", "chat", "gemini"]
)
def test_openai_reasoning_never_leaves_the_openai_family(target: Any) -> None:
    req = codec.decode_request(codex_body())
    req.tools = [t for t in req.tools if isinstance(t, ir.FunctionTool)]
    sent = json.dumps(target.encode_request(req, model="m", stream=False))
    assert "gAAAAABo-opaque" not in sent and "rs_0a1b2c" not in sent
    assert "Inspecting the repository" not in sent


def test_custom_tool_is_offered_as_a_one_string_function() -> None:
    req = codec.decode_request(codex_body())
    patch = req.tools[1]
    assert isinstance(patch, ir.FunctionTool) and patch.parameters is not None
    assert patch.parameters["required"] == ["input"]
    assert "lark grammar" in patch.parameters["properties"]["input"]["description"]
    req.tools = [t for t in req.tools if isinstance(t, ir.FunctionTool)]
    chat_tools = openai_chat_codec.encode_request(req, model="m", stream=False)["tools"]
    assert chat_tools[1]["function"]["name"] == "apply_patch"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n": 2}, "one choice"),
        (
            {
                "tools": [
                    ir.BuiltinTool(
                        kind="computer", config={"type": "computer_20250124"}, origin=Protocol.ANTHROPIC
                    )
                ]
            },
            "computer",
        ),
    ],
)
def test_what_responses_cannot_express_is_refused(change: dict[str, Any], message: str) -> None:
    req = ir.Request(messages=[ir.Message(role=ir.Role.USER, parts=[ir.TextPart(text="hi")])])
    for key, value in change.items():
        setattr(req, key, value)
    with pytest.raises(InvalidRequestError, match=message):
        codec.encode_request(req, model="m", stream=False)


def test_a_foreign_conversation_keeps_nothing_at_openai() -> None:
    req = anthropic_codec.decode_request(
        {
            "model": "claude",
            "max_tokens": 100,
            "thinking": {"type": "enabled", "budget_tokens": 4000},
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "web_search", "type": "web_search_20250305"}],
        }
    )
    body = codec.encode_request(req, model="gpt-5", stream=True)
    assert body["store"] is False and body["include"] == ["reasoning.encrypted_content"]
    assert body["reasoning"] == {"effort": "low"} and body["tools"] == [{"type": "web_search"}]


# --- round trips (hypothesis) --------------------------------------------------------------------

text = st.text(max_size=30)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)
call_ids = st.text(alphabet="abcdef0123456789", min_size=4, max_size=8).map(lambda s: f"call_{s}")
arguments = st.dictionaries(words, st.integers(-(2**53), 2**53) | st.text(max_size=5), max_size=3).map(
    dump_json
)
b64 = st.binary(min_size=1, max_size=16).map(lambda b: base64.b64encode(b).decode())
images = st.builds(
    lambda data, url: ir.ImagePart(
        source=ir.MediaSource(kind=ir.SourceKind.BASE64, data=data, media_type="image/png")
        if url is None
        else ir.MediaSource(kind=ir.SourceKind.URL, data=url),
        detail="auto",
    ),
    b64,
    st.none() | st.just("https://example.com/cat.png"),
)
user_parts = st.lists(st.builds(ir.TextPart, text=text) | images, min_size=1, max_size=3)
openai_reasoning = st.builds(
    ir.EncryptedReasoningPart,
    id=words.map(lambda w: f"rs_{w}"),
    encrypted_content=b64,
    summary=st.lists(text, max_size=2),
)
assistant_parts = st.lists(
    st.builds(ir.TextPart, text=text)
    | st.builds(ir.ToolCallPart, id=call_ids, name=words, arguments=arguments)
    | openai_reasoning,
    min_size=1,
    max_size=4,
)


@st.composite
def requests(draw: st.DrawFn) -> ir.Request:
    messages: list[ir.Message] = []
    for turn in range(draw(st.integers(1, 3))):
        messages.append(ir.Message(role=ir.Role.USER, parts=draw(user_parts)))
        parts = draw(assistant_parts)
        messages.append(ir.Message(role=ir.Role.ASSISTANT, parts=parts))
        calls = [p for p in parts if isinstance(p, ir.ToolCallPart)]
        for position, call in enumerate(calls):
            call.id = f"call_{turn}_{position}"  # ids are unique within a conversation
        if calls:
            results: list[ir.Part] = [
                ir.ToolResultPart(call_id=c.id, name=c.name, content=[ir.TextPart(text=draw(text))])
                for c in calls
            ]
            messages.append(ir.Message(role=ir.Role.USER, parts=results))
        if turn == 0 and draw(st.booleans()):
            messages.append(ir.Message(role=ir.Role.SYSTEM, parts=[ir.TextPart(text=draw(text))]))
    tools: list[ir.Tool] = [
        ir.FunctionTool(
            name=name, description=draw(st.none() | text), parameters={"type": "object", "properties": {}}
        )
        for name in sorted(draw(st.sets(words, max_size=3)))
    ]
    fmt = draw(
        st.none()
        | st.builds(
            ir.ResponseFormat,
            kind=st.just(ir.ResponseFormatKind.JSON_SCHEMA),
            schema=st.just({"type": "object"}),
            name=words,
            strict=st.booleans(),
        )
    )
    return ir.Request(
        model="m",
        system=[ir.TextPart(text=draw(text.filter(bool)))] if draw(st.booleans()) else [],
        messages=messages,
        tools=tools,
        tool_choice=draw(
            st.none() | st.builds(ir.ToolChoice, mode=st.sampled_from(list(ir.ToolChoiceMode)[:3]))
        ),
        parallel_tool_calls=draw(st.none() | st.booleans()),
        response_format=fmt,
        temperature=draw(st.none() | st.floats(0, 2)),
        max_output_tokens=draw(st.none() | st.integers(1, 10**5)),
        reasoning=draw(
            st.none()
            | st.builds(
                ir.ReasoningConfig,
                mode=st.just(ir.ReasoningMode.ENABLED),
                effort=st.sampled_from(["low", "medium", "high"]),
                summary=st.none() | st.just("auto"),
            )
        ),
        user=draw(st.none() | words),
        metadata=draw(st.dictionaries(words, words, max_size=2)),
        extensions={RESPONSES: {"prompt_cache_key": "k", "store": False}},
    )


@SETTINGS
@given(req=requests())
def test_request_round_trip(req: ir.Request) -> None:
    body = orjson.loads(orjson.dumps(codec.encode_request(req, model="m", stream=False)))
    assert codec.decode_request(body) == req


foreign_reasoning = (
    st.builds(ir.ThinkingPart, text=text, signature=b64, origin=st.just(Protocol.ANTHROPIC))
    | st.builds(ir.RedactedThinkingPart, data=b64, origin=st.just(Protocol.ANTHROPIC))
    | st.builds(
        ir.ThinkingPart, text=text.filter(bool), signature=st.none(), origin=st.just(Protocol.OPENAI_CHAT)
    )
)


def answer_parts(signatures: st.SearchStrategy[str | None]) -> st.SearchStrategy[list[ir.Part]]:
    return st.lists(
        st.builds(ir.TextPart, text=text, thought_signature=signatures)
        | st.builds(
            ir.ToolCallPart, id=call_ids, name=words, arguments=arguments, thought_signature=signatures
        )
        | foreign_reasoning
        | openai_reasoning,
        max_size=5,
    )


@st.composite
def answers(draw: st.DrawFn, *, gemini_signatures: bool = True) -> ir.Response:
    parts = draw(answer_parts(st.none() | b64 if gemini_signatures else st.none()))
    called = any(isinstance(p, ir.ToolCallPart) for p in parts)
    stop = draw(st.sampled_from([ir.StopReason.MAX_TOKENS, ir.StopReason.CONTENT_FILTER]))
    if draw(st.booleans()):
        stop = ir.StopReason.TOOL_USE if called else ir.StopReason.END_TURN
    usage = ir.Usage(
        input_tokens=draw(st.integers(0, 10**5)),
        output_tokens=draw(st.integers(0, 10**4)),
        cache_read_tokens=draw(st.integers(0, 10**4)),
        reasoning_tokens=draw(st.integers(0, 100)),
    )
    return ir.Response(
        id="resp_x", model="m", parts=parts, stop_reason=stop, usage=usage, created=1_700_000_000
    )


@SETTINGS
@given(resp=answers())
def test_response_round_trip(resp: ir.Response) -> None:
    body = orjson.loads(orjson.dumps(codec.encode_response(resp, model="client")))
    SDKResponse.model_validate(body)
    back = codec.decode_response(body)
    assert back.parts == resp.parts
    assert back.stop_reason == resp.stop_reason and back.usage == resp.usage
    for item in body["output"]:
        if item["type"] == "reasoning" and not item["id"].startswith("rs_x_"):
            continue  # OpenAI's own item, as it came
        if item["type"] == "reasoning":
            assert is_sealed(item["encrypted_content"])  # never posing as OpenAI's encrypted content


def stream_of(resp: ir.Response) -> list[ir.StreamEvent]:
    events: list[ir.StreamEvent] = [ir.MessageStart(id=resp.id, model=resp.model, created=resp.created)]
    for index, part in enumerate(resp.parts):
        if isinstance(part, ir.TextPart):
            events.append(ir.PartStart(index=index, part=ir.TextPart(text="")))
            events.extend(
                ir.TextDelta(index=index, text=part.text[i : i + 4]) for i in range(0, len(part.text), 4)
            )
            if part.thought_signature:
                events.append(ir.SignatureDelta(index=index, signature=part.thought_signature))
            events.append(ir.PartStop(index=index))
        elif isinstance(part, ir.ToolCallPart):
            events.append(
                ir.PartStart(
                    index=index,
                    part=ir.ToolCallPart(
                        id=part.id, name=part.name, thought_signature=part.thought_signature
                    ),
                )
            )
            events.extend(
                ir.ToolArgumentsDelta(index=index, fragment=part.arguments[i : i + 5])
                for i in range(0, len(part.arguments), 5)
            )
            events.append(ir.PartStop(index=index))
        elif isinstance(part, ir.ThinkingPart):
            events.append(ir.PartStart(index=index, part=ir.ThinkingPart(text="", origin=part.origin)))
            if part.text:
                events.append(ir.ThinkingDelta(index=index, text=part.text))
            if part.signature:
                events.append(ir.SignatureDelta(index=index, signature=part.signature))
            events.append(ir.PartStop(index=index))
        else:
            events.append(ir.PartStart(index=index, part=part))
            events.append(ir.PartStop(index=index, part=part))
    events.append(ir.Finish(stop_reason=resp.stop_reason, usage=resp.usage))
    return events


def assemble(events: list[ir.StreamEvent]) -> ir.Response:
    """An IR stream folded back into a Response."""
    parts: dict[int, ir.Part] = {}
    resp = ir.Response(id="", model="")
    for event in events:
        if isinstance(event, ir.MessageStart):
            resp.id, resp.model = event.id, event.model
        elif isinstance(event, ir.PartStart):
            parts[event.index] = event.part
        elif isinstance(event, ir.TextDelta):
            part = parts[event.index]
            assert isinstance(part, ir.TextPart)
            part.text += event.text
        elif isinstance(event, ir.ThinkingDelta):
            part = parts[event.index]
            if isinstance(part, ir.ThinkingPart):
                part.text += event.text
        elif isinstance(event, ir.ToolArgumentsDelta):
            part = parts[event.index]
            assert isinstance(part, ir.ToolCallPart)
            part.arguments += event.fragment
        elif isinstance(event, ir.SignatureDelta):
            part = parts[event.index]
            if isinstance(part, ir.ThinkingPart):
                part.signature = event.signature
            elif isinstance(part, ir.TextPart | ir.ToolCallPart):
                part.thought_signature = event.signature
        elif isinstance(event, ir.PartStop) and event.part is not None:
            parts[event.index] = event.part
        elif isinstance(event, ir.Finish):
            resp.stop_reason = event.stop_reason
            resp.usage = event.usage or resp.usage
    resp.parts = [parts[i] for i in sorted(parts)]
    return resp


def encode_stream(events: list[ir.StreamEvent], request: ir.Request | None = None) -> tuple[bytes, Any]:
    encoder = codec.stream_encoder(model="client", request=request)
    return b"".join(encoder.encode(e) for e in events), encoder


def decode_stream(raw: bytes) -> list[ir.StreamEvent]:
    decoder = codec.ResponsesStreamDecoder()
    parser = SSEParser()
    events = [e for sse in parser.feed(raw) for e in decoder.feed(sse)]
    return events + decoder.finish()


@SETTINGS
@given(resp=answers(gemini_signatures=False))
def test_stream_round_trip_and_event_contract(resp: ir.Response) -> None:
    """(Gemini signatures ride in items the client sends back as input, never in an upstream
    Responses stream: the request and response round trips cover them.)"""
    raw, encoder = encode_stream(stream_of(resp))
    sse = SSEParser().feed(raw)
    payloads = [orjson.loads(e.data) for e in sse]
    assert [e.event for e in sse] == [p["type"] for p in payloads]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    for payload in payloads:
        EVENTS.validate_python(payload)
    assert payloads[0]["type"] == "response.created" and payloads[1]["type"] == "response.in_progress"
    terminal = payloads[-1]
    assert terminal["type"] in ("response.completed", "response.incomplete")
    assert isinstance(terminal["response"]["created_at"], int)
    assert terminal["response"] == encoder.response
    unary = codec.encode_response(resp, model="client")
    assert [i["id"] for i in terminal["response"]["output"]] == [i["id"] for i in unary["output"]]
    back = assemble(decode_stream(raw))
    assert back.parts == resp.parts
    assert back.stop_reason == resp.stop_reason and back.usage == resp.usage


def test_stream_error_after_output_fails_the_response() -> None:
    err = UpstreamStreamError("overloaded", upstream_status=529)
    events: list[ir.StreamEvent] = [
        ir.MessageStart(id="msg_1", model="m"),
        ir.PartStart(index=0, part=ir.TextPart(text="")),
        ir.TextDelta(index=0, text="Hel"),
        ir.StreamError(error=err),
    ]
    raw, _ = encode_stream(events)
    payloads = [orjson.loads(e.data) for e in SSEParser().feed(raw)]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert [p["type"] for p in payloads][-2:] == ["error", "response.failed"]
    assert payloads[-1]["response"]["status"] == "failed"
    assert payloads[-1]["response"]["id"] == payloads[0]["response"]["id"]
    for payload in payloads:
        EVENTS.validate_python(payload)


def test_custom_tool_call_streams_its_input_whole() -> None:
    req = codec.decode_request(codex_body())
    events: list[ir.StreamEvent] = [
        ir.MessageStart(id="msg_1", model="m"),
        ir.PartStart(index=0, part=ir.ToolCallPart(id="toolu_1", name="apply_patch")),
        ir.ToolArgumentsDelta(index=0, fragment='{"input":"*** Begin'),
        ir.ToolArgumentsDelta(index=0, fragment=' Patch\\n"}'),
        ir.PartStop(index=0),
        ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
    ]
    raw, encoder = encode_stream(events, request=req)
    kinds = [orjson.loads(e.data)["type"] for e in SSEParser().feed(raw)]
    assert (
        "response.custom_tool_call_input.done" in kinds
        and "response.function_call_arguments.delta" not in kinds
    )
    item = encoder.response["output"][0]
    assert item == {
        "id": item["id"],
        "type": "custom_tool_call",
        "status": "completed",
        "call_id": "toolu_1",
        "name": "apply_patch",
        "input": "*** Begin Patch\n",
    }


@pytest.mark.parametrize(
    ("fixture", "stop", "kinds"),
    [
        ("openai_responses_text.sse", None, None),
        ("openai_responses_tool.sse", ir.StopReason.MAX_TOKENS, ["ToolCallPart"]),
    ],
)
def test_decoder_reads_recorded_streams(
    fixture: str, stop: ir.StopReason | None, kinds: list[str] | None
) -> None:
    events = decode_stream((FIXTURES / fixture).read_bytes())
    resp = assemble(events)
    assert isinstance(events[0], ir.MessageStart) and isinstance(events[-1], ir.Finish)
    if stop is not None:
        assert resp.stop_reason == stop
    if kinds is not None:
        assert [type(p).__name__ for p in resp.parts] == kinds
    assert resp.usage.prompt_tokens > 0


def test_decoder_reports_a_failed_stream() -> None:
    events = decode_stream((FIXTURES / "openai_responses_failed.sse").read_bytes())
    errors = [e for e in events if isinstance(e, ir.StreamError)]
    assert len(errors) == 1 and errors[0].error.message
    assert not any(isinstance(e, ir.Finish) for e in events)
