"""Conformance through the official SDKs: a converting proxy (the façade, over real HTTP) sits
between an ``anthropic``/``openai`` client and an upstream of another protocol, and the SDK must build
its typed objects from what comes back, streamed and not.

Upstreams are the mock provider (live answers, tool calls, thinking with signatures) and a canned
server replaying the golden upstream transcripts (reasoning from a Chat vendor, errors mid-stream).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from isthmus.errors import UpstreamStreamError
from isthmus.ir import Protocol
from isthmus.protocols.convert import StreamTranslator, convert_request, convert_response
from isthmus.protocols.sse import SSEParser
from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread

from .conversion_rig import read_body, respond

GOLDEN = Path(__file__).parent / "golden"
PATHS = {Protocol.ANTHROPIC: "/v1/messages", Protocol.OPENAI_CHAT: "/v1/chat/completions"}
CLIENT_OF_PATH = {v: k for k, v in PATHS.items()}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@dataclass
class CannedUpstream:
    """Answers every request with the bytes queued in ``replies`` (content type, body), in order."""

    replies: list[tuple[str, bytes]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        content_type, body = self.replies.pop(0)
        await respond(send, 200, content_type, body)


@dataclass
class ConvertingProxy:
    """A client-protocol front door that converts to ``upstream`` protocol and back, as the relay does."""

    upstream_url: str = ""
    upstream: Protocol = Protocol.OPENAI_CHAT
    upstream_model: str = "mock"
    sent: list[dict[str, Any]] = field(default_factory=list)  # converted upstream request bodies

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        client = CLIENT_OF_PATH[scope["path"]]
        body = json.loads(await read_body(receive))
        stream = body.get("stream") is True
        upstream_body = convert_request(client, self.upstream, body, model=self.upstream_model, stream=stream)
        self.sent.append(upstream_body)
        url = self.upstream_url + PATHS[self.upstream]
        headers = {"x-api-key": "test", "authorization": "Bearer test"}
        async with httpx.AsyncClient(timeout=30) as http:
            if not stream:
                reply = await http.post(url, json=upstream_body, headers=headers)
                answer = convert_response(self.upstream, client, reply.json(), model=body["model"])
                await respond(send, 200, "application/json", json.dumps(answer).encode())
                return
            options = body.get("stream_options") or {}
            translator = StreamTranslator(
                self.upstream, client, model=body["model"], include_usage=options.get("include_usage") is True
            )
            parser = SSEParser()
            start = {"type": "http.response.start", "status": 200}
            await send({**start, "headers": [(b"content-type", b"text/event-stream")]})
            async with http.stream("POST", url, json=upstream_body, headers=headers) as reply:
                async for chunk in reply.aiter_bytes():
                    out = b"".join(translator.feed(event) for event in parser.feed(chunk))
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
            tail = b"".join(translator.feed(event) for event in parser.flush()) + translator.finish()
            if not translator.completed and translator.upstream_error is None:
                tail += translator.error(UpstreamStreamError("upstream stream ended early"))
            await send({"type": "http.response.body", "body": tail})


@dataclass
class Rig:
    proxy: ConvertingProxy
    proxy_url: str
    mock_url: str
    canned: CannedUpstream
    canned_url: str

    def use_mock(self, upstream: Protocol, model: str = "mock") -> None:
        self.proxy.upstream_url, self.proxy.upstream, self.proxy.upstream_model = (
            self.mock_url,
            upstream,
            model,
        )

    def use_canned(self, upstream: Protocol, *replies: tuple[str, bytes]) -> None:
        self.proxy.upstream_url, self.proxy.upstream = self.canned_url, upstream
        self.canned.replies[:] = list(replies)

    def claude(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.proxy_url, api_key="k", max_retries=0)

    def oai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proxy_url + "/v1", api_key="k", max_retries=0)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    proxy = ConvertingProxy()
    canned = CannedUpstream()
    with (
        BackgroundMockServer() as mock,
        ServerThread(proxy, lifespan="off") as front,
        ServerThread(canned, lifespan="off") as replay,
    ):
        yield Rig(proxy, front.url, mock.url, canned, replay.url)


PAIRS = [
    pytest.param(c, u, id=f"{c}<-{u}")
    for c in (Protocol.ANTHROPIC, Protocol.OPENAI_CHAT)
    for u in (Protocol.ANTHROPIC, Protocol.OPENAI_CHAT)
]

# --- tool-use round trips against the live mock -------------------------------------------------


def _anthropic_tool_round_trip(
    client: anthropic.Anthropic, stream: bool, between: Callable[[], None] = lambda: None
) -> tuple[Any, Any]:
    tools: Any = [{"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": "please use tool get_weather"}]

    def ask() -> anthropic.types.Message:
        if stream:
            with client.messages.stream(model="gw", max_tokens=512, messages=messages, tools=tools) as s:
                return s.get_final_message()
        return client.messages.create(model="gw", max_tokens=512, messages=messages, tools=tools)

    first = ask()
    call = next(b for b in first.content if b.type == "tool_use")
    messages.append({"role": "assistant", "content": first.content})
    messages.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21C"}]}
    )
    between()
    return first, ask()


def _chat_tool_round_trip(client: openai.OpenAI, stream: bool) -> tuple[Any, Any]:
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    messages: list[Any] = [{"role": "user", "content": "please use tool get_weather"}]

    def ask() -> Any:
        if stream:
            with client.chat.completions.stream(
                model="gw", messages=messages, tools=tools, stream_options={"include_usage": True}
            ) as s:
                return s.get_final_completion()
        return client.chat.completions.create(model="gw", messages=messages, tools=tools)

    first = ask()
    message = first.choices[0].message
    call = message.tool_calls[0]
    messages.append({"role": "assistant", "content": message.content, "tool_calls": [call.model_dump()]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "21C"})
    return first, ask()


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(("client_protocol", "upstream"), PAIRS)
def test_tool_use_round_trip(rig: Rig, client_protocol: Protocol, upstream: Protocol, stream: bool) -> None:
    rig.use_mock(upstream)
    if client_protocol is Protocol.ANTHROPIC:
        first, second = _anthropic_tool_round_trip(rig.claude(), stream)
        call = next(b for b in first.content if b.type == "tool_use")
        assert (
            first.stop_reason == "tool_use" and call.name == "get_weather" and call.input == {"city": "mock"}
        )
        assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
        assert second.stop_reason == "end_turn"
        assert [b.text for b in second.content if b.type == "text"] == ["mock: tool result: 21C"]
    else:
        first, second = _chat_tool_round_trip(rig.oai(), stream)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "mock"}
        assert first.usage is not None and first.usage.prompt_tokens > 0
        assert second.choices[0].message.content == "mock: tool result: 21C"
    # The upstream saw the call and its result under the same id, in its own protocol's shape.
    sent = json.dumps(rig.proxy.sent[-1])
    assert (
        sent.count(call.id if client_protocol is Protocol.ANTHROPIC else choice.message.tool_calls[0].id) == 2
    )


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_anthropic_thinking_signature_survives_conversion(rig: Rig, stream: bool) -> None:
    """Claude Code's thinking turn through the IR to an Anthropic upstream: the signed block goes back
    byte for byte on the next request, as the API demands during tool use."""
    rig.use_mock(Protocol.ANTHROPIC, "mock+reasoning=4")
    first, second = _anthropic_tool_round_trip(rig.claude(), stream)
    thinking = first.content[0]
    assert thinking.type == "thinking" and thinking.signature and thinking.thinking
    assert second.content[-1].type == "text"
    returned = rig.proxy.sent[-1]["messages"][1]["content"][0]
    assert returned == {"type": "thinking", "thinking": thinking.thinking, "signature": thinking.signature}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_foreign_reasoning_travels_home_through_an_anthropic_client(rig: Rig, stream: bool) -> None:
    """A Chat vendor's reasoning reaches an Anthropic client as a thinking block with a sealed
    signature; when the client sends it back, the Chat upstream gets its ``reasoning_content``."""
    name = "reasoning_parallel_tools.openai-chat.sse" if stream else "reasoning_tools.openai-chat.json"
    kind = ("text/event-stream", "streams") if stream else ("application/json", "responses")
    rig.use_canned(Protocol.OPENAI_CHAT, (kind[0], (GOLDEN / kind[1] / name).read_bytes()))
    first, second = _anthropic_tool_round_trip(
        rig.claude(), stream, between=lambda: rig.use_mock(Protocol.OPENAI_CHAT)
    )
    assert second.content[-1].type == "text"
    assert [b.type for b in first.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert first.content[0].thinking == "Two cities, two calls."
    assert first.usage.cache_read_input_tokens == 1024 and first.usage.input_tokens == 1117 - 1024
    # The second turn went to the mock's Chat endpoint: the vendor's reasoning is back in place.
    assistant = rig.proxy.sent[-1]["messages"][1]
    assert assistant["reasoning_content"] == "Two cities, two calls."
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_abc123", "call_def456"]


# --- golden upstream transcripts parsed by the client SDKs ---------------------------------------


def _chat_stream_parse(client: openai.OpenAI) -> Any:
    with client.chat.completions.stream(
        model="gw", messages=[{"role": "user", "content": "hi"}], stream_options={"include_usage": True}
    ) as s:
        try:
            return s.get_final_completion()
        except openai.LengthFinishReasonError as exc:  # the helper refuses to parse a cut answer
            return exc.completion


def _anthropic_stream_parse(client: anthropic.Anthropic) -> anthropic.types.Message:
    with client.messages.stream(model="gw", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
        return s.get_final_message()


@pytest.mark.parametrize("client_protocol", [Protocol.ANTHROPIC, Protocol.OPENAI_CHAT])
@pytest.mark.parametrize(
    "name",
    [
        "thinking_text_tool.anthropic.sse",
        "reasoning_parallel_tools.openai-chat.sse",
        "length.openai-chat.sse",
    ],
)
def test_sdk_parses_converted_golden_streams(rig: Rig, name: str, client_protocol: Protocol) -> None:
    upstream = Protocol(name.split(".")[1])
    rig.use_canned(upstream, ("text/event-stream", (GOLDEN / "streams" / name).read_bytes()))
    if client_protocol is Protocol.ANTHROPIC:
        message = _anthropic_stream_parse(rig.claude())
        kinds = [b.type for b in message.content]
        assert kinds[-1] in ("tool_use", "text") and message.usage.output_tokens > 0
        for block in message.content:
            if block.type == "tool_use":
                assert isinstance(block.input, dict) and block.input
            if block.type == "thinking":
                assert block.signature
        assert message.stop_reason in ("tool_use", "max_tokens")
    else:
        completion = _chat_stream_parse(rig.oai())
        choice = completion.choices[0]
        assert choice.finish_reason in ("tool_calls", "length")
        for call in choice.message.tool_calls or []:
            assert isinstance(call.function.parsed_arguments, dict) or json.loads(call.function.arguments)
        assert completion.usage is not None and completion.usage.total_tokens > 0


@pytest.mark.parametrize("client_protocol", [Protocol.ANTHROPIC, Protocol.OPENAI_CHAT])
@pytest.mark.parametrize("name", ["overloaded.anthropic.sse", "server_error.openai-chat.sse"])
def test_sdk_raises_on_converted_error_events(rig: Rig, name: str, client_protocol: Protocol) -> None:
    upstream = Protocol(name.split(".")[1])
    rig.use_canned(upstream, ("text/event-stream", (GOLDEN / "streams" / name).read_bytes()))
    if client_protocol is Protocol.ANTHROPIC:
        with pytest.raises(anthropic.APIStatusError) as caught:
            _anthropic_stream_parse(rig.claude())
        assert caught.value.body is not None
    else:
        with pytest.raises(openai.APIError) as raised:
            _chat_stream_parse(rig.oai())
        assert raised.value.message


@pytest.mark.parametrize("client_protocol", [Protocol.ANTHROPIC, Protocol.OPENAI_CHAT])
@pytest.mark.parametrize(
    "name", ["thinking_tool.anthropic.json", "reasoning_tools.openai-chat.json", "length.openai-chat.json"]
)
def test_sdk_parses_converted_golden_responses(rig: Rig, name: str, client_protocol: Protocol) -> None:
    upstream = Protocol(name.split(".")[1])
    upstream_body = json.loads((GOLDEN / "responses" / name).read_text())
    rig.use_canned(upstream, ("application/json", json.dumps(upstream_body).encode()))
    if client_protocol is Protocol.ANTHROPIC:
        message = rig.claude().messages.create(
            model="gw", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.model == "gw" and message.content
        assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 0
    else:
        completion = rig.oai().chat.completions.create(
            model="gw", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.model == "gw" and completion.choices[0].finish_reason
        assert completion.usage is not None and completion.usage.prompt_tokens > 0
