"""Property tests: for generated IR within what a protocol can express, decoding what its encoder
wrote gives the IR back (requests, responses and streams), and foreign reasoning sealed into an
Anthropic answer comes back intact when the client returns it.

Each strategy generates exactly the subset its wire can carry (documented in docs/fidelity.md);
everything outside it is covered by the golden files and the targeted tests.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus import ir
from isthmus.ir import Protocol
from isthmus.protocols import anthropic_codec, openai_chat_codec
from isthmus.protocols.codec import dump_json
from isthmus.protocols.sse import SSEParser

ANTHROPIC = Protocol.ANTHROPIC
CHAT = Protocol.OPENAI_CHAT
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=40)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
ids = st.builds(lambda s: f"call_{s}", st.text(alphabet="abcdefXYZ0123456789_-", min_size=1, max_size=10))
b64 = st.binary(min_size=1, max_size=24).map(lambda b: base64.b64encode(b).decode())
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(words, json_values, max_size=4).map(dump_json)
schemas = st.fixed_dictionaries(
    {"type": st.just("object"), "properties": st.dictionaries(words, st.just({"type": "string"}), max_size=3)}
)
cache = st.none() | st.builds(ir.CacheControl, ttl=st.sampled_from([None, "5m", "1h"]))
usages = st.builds(
    ir.Usage,
    input_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**5),
    cache_read_tokens=st.integers(0, 10**6),
    cache_write_5m_tokens=st.integers(0, 10**5),
    cache_write_1h_tokens=st.integers(0, 10**5),
    reasoning_tokens=st.integers(0, 10**4),
)


def roundtrip_json(body: dict[str, Any]) -> Any:
    """What the other side of the wire parses (numbers and strings exactly as serialised)."""
    return orjson.loads(orjson.dumps(body))


def name_results(messages: list[ir.Message]) -> list[ir.Message]:
    """Give each tool result the name of the call it answers, as decoders do (or None)."""
    names: dict[str, str] = {}
    for m in messages:
        for p in m.parts:
            if isinstance(p, ir.ToolCallPart):
                names[p.id] = p.name
            elif isinstance(p, ir.ToolResultPart):
                p.name = names.get(p.call_id)
    return messages


# --- Anthropic ---------------------------------------------------------------------------------

a_sources_image = st.one_of(
    st.builds(ir.MediaSource, kind=st.just(ir.SourceKind.BASE64), data=b64, media_type=st.just("image/png")),
    st.builds(ir.MediaSource, kind=st.just(ir.SourceKind.URL), data=st.just("https://example.com/a.png")),
    st.builds(ir.MediaSource, kind=st.just(ir.SourceKind.FILE_ID), data=words),
)
a_sources_doc = st.one_of(
    st.builds(
        ir.MediaSource, kind=st.just(ir.SourceKind.BASE64), data=b64, media_type=st.just("application/pdf")
    ),
    st.builds(ir.MediaSource, kind=st.just(ir.SourceKind.TEXT), data=text, media_type=st.just("text/plain")),
    st.builds(ir.MediaSource, kind=st.just(ir.SourceKind.URL), data=st.just("https://example.com/a.pdf")),
)
a_text = st.builds(ir.TextPart, text=text, cache_control=cache)
a_image = st.builds(ir.ImagePart, source=a_sources_image, cache_control=cache)
a_doc = st.builds(
    ir.DocumentPart,
    source=a_sources_doc,
    title=st.none() | text,
    context=st.none() | text,
    citations=st.none() | st.booleans(),
    cache_control=cache,
)
a_result = st.builds(
    ir.ToolResultPart,
    call_id=ids,
    content=st.lists(a_text | a_image, max_size=3),
    is_error=st.booleans(),
    cache_control=cache,
)
a_call = st.builds(ir.ToolCallPart, id=ids, name=words, arguments=arguments, cache_control=cache)
a_thinking = st.builds(ir.ThinkingPart, text=text, signature=b64, origin=st.just(ANTHROPIC))
a_redacted = st.builds(ir.RedactedThinkingPart, data=b64, origin=st.just(ANTHROPIC))
a_opaque = st.builds(
    lambda i: ir.OpaquePart(
        type="server_tool_use",
        data={"type": "server_tool_use", "id": f"srvtoolu_{i}", "name": "web_search", "input": {"query": i}},
        origin=ANTHROPIC,
    ),
    words,
)
a_user = st.builds(
    ir.Message,
    role=st.just(ir.Role.USER),
    parts=st.lists(a_text | a_image | a_doc | a_result, min_size=1, max_size=4),
)
a_assistant = st.builds(
    ir.Message,
    role=st.just(ir.Role.ASSISTANT),
    parts=st.lists(a_thinking | a_redacted | a_text | a_call | a_opaque, min_size=1, max_size=4),
)
a_tools = st.lists(
    st.builds(
        ir.FunctionTool,
        name=words,
        description=st.none() | text,
        parameters=schemas,
        strict=st.none() | st.booleans(),
        cache_control=cache,
        extensions=st.sampled_from([{}, {ANTHROPIC: {"defer_loading": True}}]),
    )
    | st.just(
        ir.BuiltinTool(
            kind="web_search",
            name="web_search",
            config={"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            origin=ANTHROPIC,
        )
    ),
    max_size=3,
)
EFFORTS = ["low", "medium", "high", "xhigh", "max"]


@st.composite
def anthropic_requests(draw: st.DrawFn) -> ir.Request:
    messages = name_results(draw(st.lists(a_user | a_assistant, min_size=1, max_size=5)))
    tools = draw(a_tools)
    choice = None
    parallel = None
    if tools:
        mode = draw(st.none() | st.sampled_from(list(ir.ToolChoiceMode)))
        if mode is not None:
            choice = ir.ToolChoice(mode=mode, name=draw(words) if mode is ir.ToolChoiceMode.TOOL else None)
            if mode is not ir.ToolChoiceMode.NONE:
                parallel = draw(st.none() | st.booleans())
    max_tokens = draw(st.integers(1, 100_000))
    kind = draw(st.sampled_from(["none", "disabled", "adaptive", "enabled", "default"]))
    reasoning: ir.ReasoningConfig | None = None
    if kind == "disabled":
        reasoning = ir.ReasoningConfig(mode=ir.ReasoningMode.DISABLED)
    elif kind == "adaptive":
        effort = draw(st.none() | st.sampled_from(EFFORTS))
        reasoning = ir.ReasoningConfig(mode=ir.ReasoningMode.ADAPTIVE, effort=effort)
    elif kind == "enabled":
        max_tokens = max(max_tokens, 1025)
        budget = draw(st.integers(1024, max_tokens - 1))
        effort = draw(st.none() | st.sampled_from(EFFORTS))
        reasoning = ir.ReasoningConfig(mode=ir.ReasoningMode.ENABLED, budget_tokens=budget, effort=effort)
    elif kind == "default":
        reasoning = ir.ReasoningConfig(mode=ir.ReasoningMode.DEFAULT, effort=draw(st.sampled_from(EFFORTS)))
    thinking_on = kind in ("adaptive", "enabled")
    if thinking_on:
        # With thinking on, a tool-use turn must open with its (signed) thinking.
        last = next((m for m in reversed(messages) if m.role is ir.Role.ASSISTANT), None)
        if last is not None and not isinstance(last.parts[0], ir.ThinkingPart | ir.RedactedThinkingPart):
            last.parts.insert(0, draw(a_thinking))
    fmt = draw(
        st.none()
        | st.builds(ir.ResponseFormat, kind=st.just(ir.ResponseFormatKind.JSON_SCHEMA), schema=schemas)
    )
    return ir.Request(
        model="m",
        system=draw(st.lists(a_text, max_size=3)),
        messages=messages,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        response_format=fmt,
        temperature=None if thinking_on else draw(st.none() | st.floats(0, 1)),
        top_p=draw(st.none() | (st.floats(0.95, 1) if thinking_on else st.floats(0, 1))),
        top_k=None if thinking_on else draw(st.none() | st.integers(0, 500)),
        stop=draw(st.lists(text, max_size=3)),
        max_output_tokens=max_tokens,
        reasoning=reasoning,
        user=draw(st.none() | text),
        extensions=draw(
            st.sampled_from([{}, {ANTHROPIC: {"context_management": {"edits": []}, "speed": "fast"}}])
        ),
    )


@SETTINGS
@given(anthropic_requests())
def test_anthropic_request_round_trip(req: ir.Request) -> None:
    body = roundtrip_json(anthropic_codec.encode_request(req, model="m", stream=False))
    assert anthropic_codec.decode_request(body) == req


def responses(parts: Any, stops: list[ir.StopReason], usage: Any = usages) -> Any:
    return st.builds(
        ir.Response,
        id=ids,
        model=st.just("m"),
        parts=parts,
        stop_reason=st.sampled_from(stops),
        usage=usage,
    )


A_STOPS = [
    s
    for s in ir.StopReason
    if s not in (ir.StopReason.CONTENT_FILTER, ir.StopReason.ERROR, ir.StopReason.OTHER)
]
a_responses = responses(st.lists(a_thinking | a_redacted | a_text | a_call | a_opaque, max_size=4), A_STOPS)


@SETTINGS
@given(a_responses, st.none() | text)
def test_anthropic_response_round_trip(resp: ir.Response, stop_sequence: str | None) -> None:
    resp.stop_sequence = stop_sequence
    for p in resp.parts:
        if isinstance(p, ir.TextPart | ir.ToolCallPart):
            p.cache_control = None  # an answer carries no cache marks
    body = roundtrip_json(anthropic_codec.encode_response(resp, model="m"))
    assert anthropic_codec.decode_response(body) == resp


# Reasoning and signatures another protocol made, as an Anthropic client receives them.
foreign_origin = st.sampled_from([Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES, Protocol.GEMINI])
foreign_parts = st.lists(
    st.builds(ir.ThinkingPart, text=text, signature=st.none() | b64, origin=foreign_origin)
    | st.builds(ir.RedactedThinkingPart, data=b64, origin=foreign_origin)
    | st.builds(
        ir.EncryptedReasoningPart,
        id=st.none() | words,
        encrypted_content=st.none() | b64,
        summary=st.lists(text, max_size=2),
        content=st.lists(text, max_size=2),
    )
    | st.builds(ir.TextPart, text=text, thought_signature=st.none() | b64)
    | st.builds(ir.ToolCallPart, id=ids, name=words, arguments=arguments, thought_signature=st.none() | b64),
    min_size=1,
    max_size=5,
)


@SETTINGS
@given(foreign_parts, st.booleans())
def test_foreign_reasoning_returns_intact_through_anthropic_client(
    parts: list[ir.Part], stream: bool
) -> None:
    """Sealed into an answer (whole or streamed), handed back by the client on its next turn, the
    parts decode exactly as they were: origin, signatures and encrypted content included."""
    resp = ir.Response(id="msg_1", model="m", parts=parts, stop_reason=ir.StopReason.END_TURN)
    if stream:
        content = collect_stream(ANTHROPIC, resp).parts
        answer = anthropic_codec.encode_response(replace(resp, parts=content), model="m")
    else:
        answer = anthropic_codec.encode_response(resp, model="m")
    turn = roundtrip_json(
        {"max_tokens": 10, "messages": [{"role": "assistant", "content": answer["content"]}]}
    )
    assert anthropic_codec.decode_request(turn).messages[0].parts == parts


# --- OpenAI Chat -------------------------------------------------------------------------------

c_text = st.builds(ir.TextPart, text=text)
c_image = st.builds(
    ir.ImagePart,
    source=st.one_of(
        st.builds(
            ir.MediaSource,
            kind=st.just(ir.SourceKind.BASE64),
            data=b64,
            media_type=st.sampled_from(["image/png", "image/jpeg"]),
        ),
        st.builds(ir.MediaSource, kind=st.just(ir.SourceKind.URL), data=st.just("https://example.com/a.png")),
    ),
    detail=st.none() | st.sampled_from(["auto", "low", "high"]),
)
c_audio = st.sampled_from([("wav", "audio/wav"), ("mp3", "audio/mpeg")]).flatmap(
    lambda f: st.builds(
        ir.AudioPart,
        source=st.builds(
            ir.MediaSource, kind=st.just(ir.SourceKind.BASE64), data=b64, media_type=st.just(f[1])
        ),
        format=st.just(f[0]),
    )
)
c_doc = st.one_of(
    st.builds(
        ir.DocumentPart,
        source=st.builds(
            ir.MediaSource,
            kind=st.just(ir.SourceKind.BASE64),
            data=b64,
            media_type=st.just("application/pdf"),
        ),
        filename=words.map(lambda w: w + ".pdf"),
    ),
    st.builds(
        ir.DocumentPart, source=st.builds(ir.MediaSource, kind=st.just(ir.SourceKind.FILE_ID), data=words)
    ),
)
c_user = st.builds(
    ir.Message,
    role=st.just(ir.Role.USER),
    parts=st.lists(c_text | c_image | c_audio | c_doc, min_size=1, max_size=4),
)
c_results = st.builds(
    ir.Message,
    role=st.just(ir.Role.USER),
    parts=st.lists(
        st.builds(ir.ToolResultPart, call_id=ids, content=st.lists(c_text, min_size=1, max_size=1)),
        min_size=1,
        max_size=3,
    ),
)
c_system = st.builds(ir.Message, role=st.just(ir.Role.SYSTEM), parts=st.lists(c_text, min_size=1, max_size=2))
c_call = st.builds(
    ir.ToolCallPart,
    id=ids,
    name=words,
    arguments=arguments | text.filter(bool),
    kind=st.sampled_from(["function", "custom"]),
)


@st.composite
def c_assistant(draw: st.DrawFn) -> ir.Message:
    parts: list[ir.Part] = []
    if draw(st.booleans()):
        parts.append(ir.ThinkingPart(text=draw(text.filter(bool)), origin=CHAT))
    calls = draw(st.lists(c_call, max_size=3))
    if draw(st.booleans()) or not (parts or calls):
        parts.append(ir.TextPart(text=draw(text.filter(bool) if calls else text)))
    return ir.Message(role=ir.Role.ASSISTANT, parts=parts + calls)


@st.composite
def chat_messages(draw: st.DrawFn) -> list[ir.Message]:
    messages = [draw(c_user | c_assistant())]
    for _ in range(draw(st.integers(0, 5))):
        following_results = messages[-1].parts and isinstance(messages[-1].parts[0], ir.ToolResultPart)
        options = c_user | c_assistant() | c_system
        messages.append(draw(options if following_results else options | c_results))
    return name_results(messages)


C_EFFORTS = ["minimal", "low", "medium", "high", "xhigh"]


@st.composite
def chat_requests(draw: st.DrawFn) -> ir.Request:
    tools = draw(
        st.lists(
            st.builds(
                ir.FunctionTool,
                name=words,
                description=st.none() | text,
                parameters=st.none() | schemas,
                strict=st.none() | st.booleans(),
            )
            | st.builds(
                lambda n: ir.BuiltinTool(
                    kind="custom", name=n, config={"type": "custom", "custom": {"name": n}}, origin=CHAT
                ),
                words,
            ),
            max_size=3,
        )
    )
    choice = parallel = None
    if tools:
        mode = draw(st.none() | st.sampled_from(list(ir.ToolChoiceMode)))
        choice = mode and ir.ToolChoice(
            mode=mode, name=draw(words) if mode is ir.ToolChoiceMode.TOOL else None
        )
        parallel = draw(st.none() | st.booleans())
    fmt = draw(
        st.none()
        | st.builds(
            ir.ResponseFormat,
            kind=st.sampled_from([ir.ResponseFormatKind.TEXT, ir.ResponseFormatKind.JSON_OBJECT]),
        )
        | st.builds(
            ir.ResponseFormat,
            kind=st.just(ir.ResponseFormatKind.JSON_SCHEMA),
            schema=schemas,
            name=words,
            description=st.none() | text,
            strict=st.none() | st.booleans(),
        )
    )
    reasoning = draw(
        st.none()
        | st.builds(
            ir.ReasoningConfig, mode=st.just(ir.ReasoningMode.ENABLED), effort=st.sampled_from(C_EFFORTS)
        )
        | st.just(ir.ReasoningConfig(mode=ir.ReasoningMode.DISABLED, effort="none"))
    )
    unit = st.floats(0, 1)
    return ir.Request(
        model="m",
        system=draw(st.lists(c_text, max_size=3)),
        messages=draw(chat_messages()),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        response_format=fmt,
        temperature=draw(st.none() | st.floats(0, 2)),
        top_p=draw(st.none() | unit),
        seed=draw(st.none() | st.integers(0, 2**31)),
        n=draw(st.none() | st.integers(1, 4)),
        presence_penalty=draw(st.none() | st.floats(-2, 2)),
        frequency_penalty=draw(st.none() | st.floats(-2, 2)),
        stop=draw(st.lists(text, max_size=4)),
        max_output_tokens=draw(st.none() | st.integers(1, 10**5)),
        reasoning=reasoning,
        user=draw(st.none() | st.text(max_size=64)),
        metadata=draw(st.dictionaries(words, text, max_size=3)),
        extensions=draw(
            st.sampled_from([{}, {CHAT: {"logprobs": True, "top_logprobs": 2, "service_tier": "flex"}}])
        ),
    )


@SETTINGS
@given(chat_requests())
def test_chat_request_round_trip(req: ir.Request) -> None:
    body = roundtrip_json(openai_chat_codec.encode_request(req, model="m", stream=False))
    assert openai_chat_codec.decode_request(body) == req


C_STOPS = [
    ir.StopReason.END_TURN,
    ir.StopReason.MAX_TOKENS,
    ir.StopReason.TOOL_USE,
    ir.StopReason.CONTENT_FILTER,
]
c_usages = usages.map(
    lambda u: replace(
        u, cache_write_5m_tokens=u.cache_write_5m_tokens + u.cache_write_1h_tokens, cache_write_1h_tokens=0
    )
)
c_responses = st.builds(
    lambda resp, created, message: replace(resp, created=created, parts=message.parts),
    responses(st.just([]), C_STOPS, c_usages),
    st.integers(1, 2**31),
    c_assistant(),
)


@SETTINGS
@given(c_responses)
def test_chat_response_round_trip(resp: ir.Response) -> None:
    body = roundtrip_json(openai_chat_codec.encode_response(resp, model="m"))
    assert openai_chat_codec.decode_response(body) == resp


# --- streams: an answer streamed in a protocol and read back ------------------------------------


def stream_events(resp: ir.Response) -> list[ir.StreamEvent]:
    """The answer as IR stream events, each text cut in two deltas."""
    events: list[ir.StreamEvent] = [ir.MessageStart(id=resp.id, model=resp.model, created=resp.created)]
    for index, part in enumerate(resp.parts):
        if isinstance(part, ir.TextPart):
            events.append(ir.PartStart(index=index, part=replace(part, text="", thought_signature=None)))
            half = len(part.text) // 2
            events += [ir.TextDelta(index=index, text=t) for t in (part.text[:half], part.text[half:]) if t]
            if part.thought_signature:
                events.append(ir.SignatureDelta(index=index, signature=part.thought_signature))
        elif isinstance(part, ir.ThinkingPart):
            events.append(ir.PartStart(index=index, part=replace(part, text="", signature=None)))
            if part.text:
                events.append(ir.ThinkingDelta(index=index, text=part.text))
            if part.signature:
                events.append(ir.SignatureDelta(index=index, signature=part.signature))
        elif isinstance(part, ir.ToolCallPart):
            events.append(ir.PartStart(index=index, part=replace(part, arguments="")))
            half = len(part.arguments) // 2
            events += [
                ir.ToolArgumentsDelta(index=index, fragment=f)
                for f in (part.arguments[:half], part.arguments[half:])
                if f
            ]
        else:
            events.append(ir.PartStart(index=index, part=part))
        events.append(ir.PartStop(index=index, part=part))
    events.append(ir.Finish(stop_reason=resp.stop_reason, usage=resp.usage))
    return events


def collect(events: list[ir.StreamEvent]) -> ir.Response:
    """Fold decoded stream events back into an answer."""
    resp = ir.Response(id="", model="")
    parts: dict[int, ir.Part] = {}
    for e in events:
        if isinstance(e, ir.MessageStart):
            resp.id, resp.model, resp.created = e.id, e.model, e.created
        elif isinstance(e, ir.PartStart):
            parts[e.index] = replace(e.part)
        elif isinstance(e, ir.TextDelta):
            p = parts[e.index]
            assert isinstance(p, ir.TextPart)
            p.text += e.text
        elif isinstance(e, ir.ThinkingDelta):
            p = parts[e.index]
            assert isinstance(p, ir.ThinkingPart)
            p.text += e.text
        elif isinstance(e, ir.SignatureDelta):
            p = parts[e.index]
            if isinstance(p, ir.ThinkingPart):
                p.signature = e.signature
            elif isinstance(p, ir.TextPart | ir.ToolCallPart):
                p.thought_signature = e.signature
        elif isinstance(e, ir.ToolArgumentsDelta):
            p = parts[e.index]
            assert isinstance(p, ir.ToolCallPart)
            p.arguments += e.fragment
        elif isinstance(e, ir.Finish):
            resp.stop_reason = e.stop_reason
            resp.usage = e.usage or resp.usage
    resp.parts = [parts[i] for i in sorted(parts)]
    return resp


CODECS = {ANTHROPIC: anthropic_codec.CODEC, CHAT: openai_chat_codec.CODEC}


def collect_stream(protocol: Protocol, resp: ir.Response) -> ir.Response:
    encoder = CODECS[protocol].stream_encoder(model=resp.model, include_usage=True)
    wire = b"".join(encoder.encode(e) for e in stream_events(resp))
    decoder = CODECS[protocol].stream_decoder()
    parser = SSEParser()
    decoded = [
        d for event in parser.feed(wire) + parser.flush() for d in decoder.feed(event)
    ] + decoder.finish()
    return collect(decoded)


@SETTINGS
@given(a_responses)
def test_anthropic_stream_round_trip(resp: ir.Response) -> None:
    resp.parts = [p for p in resp.parts if not isinstance(p, ir.OpaquePart)]  # server tools stream apart
    for p in resp.parts:
        if isinstance(p, ir.TextPart | ir.ToolCallPart):
            p.cache_control = None
    resp.parts = [
        replace(p, arguments=p.arguments if p.arguments != "{}" else "")
        if isinstance(p, ir.ToolCallPart)
        else p
        for p in resp.parts
    ]
    assert collect_stream(ANTHROPIC, resp) == resp


@SETTINGS
@given(c_responses)
def test_chat_stream_round_trip(resp: ir.Response) -> None:
    # An empty text says nothing in a Chat stream (no delta), so none comes back.
    resp.parts = [p for p in resp.parts if not (isinstance(p, ir.TextPart) and not p.text)]
    assert collect_stream(CHAT, resp) == resp
