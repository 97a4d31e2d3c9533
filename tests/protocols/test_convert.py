"""The conversion façade: codec discovery, cached-token accounting across protocols, and the stream
translator's billing facts and error handling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from isthmus.errors import InvalidRequestError, UpstreamStreamError
from isthmus.ir import Protocol, Usage
from isthmus.protocols import anthropic, convert, openai_chat
from isthmus.protocols.convert import StreamTranslator, can_convert, codec, convert_response
from isthmus.protocols.sse import SSEParser

GOLDEN = Path(__file__).parent / "golden"
ANTHROPIC, CHAT = Protocol.ANTHROPIC, Protocol.OPENAI_CHAT


@pytest.fixture
def without_gemini_codec(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    convert._load.cache_clear()
    monkeypatch.setitem(convert.CODEC_MODULES, Protocol.GEMINI, "isthmus.protocols.no_such_codec")
    yield
    convert._load.cache_clear()


def test_pairs_with_codecs_convert() -> None:
    for src in (ANTHROPIC, CHAT):
        for dst in (ANTHROPIC, CHAT):
            assert can_convert(src, dst)
    assert codec(ANTHROPIC).protocol is ANTHROPIC


@pytest.mark.usefixtures("without_gemini_codec")
def test_a_protocol_without_codec_cannot_convert() -> None:
    assert not can_convert(ANTHROPIC, Protocol.GEMINI)
    with pytest.raises(InvalidRequestError, match="gemini"):
        convert.convert_request(ANTHROPIC, Protocol.GEMINI, {"messages": []}, model="m", stream=False)


def test_cached_tokens_are_neither_double_counted_nor_lost() -> None:
    """Anthropic counts cache reads and writes beside input_tokens, Chat inside prompt_tokens: the
    same request must cost the same after conversion, both ways."""
    upstream = {
        "id": "msg_1",
        "model": "c",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 50,
            "cache_read_input_tokens": 8000,
            "cache_creation_input_tokens": 1200,
            "output_tokens": 7,
        },
    }
    as_chat = convert_response(ANTHROPIC, CHAT, upstream, model="gw")
    assert as_chat["usage"]["prompt_tokens"] == 9250
    assert as_chat["usage"]["prompt_tokens_details"]["cached_tokens"] == 8000
    back = convert_response(CHAT, ANTHROPIC, as_chat, model="gw")
    assert anthropic.usage_from_response(back) == anthropic.usage_from_response(upstream)
    assert openai_chat.usage_from_response(as_chat) == anthropic.usage_from_response(upstream)


def replay(
    src: Protocol, dst: Protocol, name: str, *, include_usage: bool = True
) -> tuple[StreamTranslator, list[bytes]]:
    translator = StreamTranslator(src, dst, model="gw", include_usage=include_usage)
    outputs = [translator.feed(e) for e in SSEParser().feed((GOLDEN / "streams" / name).read_bytes())]
    outputs.append(translator.finish())
    return translator, outputs


@pytest.mark.parametrize("dst", [ANTHROPIC, CHAT])
def test_translator_tracks_billing_facts(dst: Protocol) -> None:
    translator, _ = replay(ANTHROPIC, dst, "thinking_text_tool.anthropic.sse")
    assert translator.completed and translator.saw_content and translator.upstream_error is None
    assert translator.finish_reason == "tool_use"
    assert translator.usage == Usage(
        input_tokens=20, output_tokens=89, cache_read_tokens=4000, cache_write_1h_tokens=300
    )
    assert translator.model == "claude-sonnet-4-5"

    translator, _ = replay(CHAT, dst, "length.openai-chat.sse")
    assert translator.finish_reason == "max_tokens"  # an incomplete answer, for the usage record
    assert translator.usage == Usage(input_tokens=10, output_tokens=3)


def test_translator_commits_only_on_content() -> None:
    translator = StreamTranslator(ANTHROPIC, CHAT, model="gw", include_usage=False)
    events = SSEParser().feed((GOLDEN / "streams" / "thinking_text_tool.anthropic.sse").read_bytes())
    translator.feed(events[0])  # message_start
    assert not translator.saw_content and not translator.completed
    translator.feed(events[1])  # the first block opens
    assert translator.saw_content


@pytest.mark.parametrize("dst", [ANTHROPIC, CHAT])
def test_upstream_error_mid_stream(dst: Protocol) -> None:
    translator, outputs = replay(ANTHROPIC, dst, "overloaded.anthropic.sse")
    assert isinstance(translator.upstream_error, UpstreamStreamError)
    assert translator.upstream_error.upstream_status == 529 and not translator.completed
    assert b"Overloaded" in outputs[-2]  # the client got the error in its own protocol
    assert outputs[-1] == b""


def test_cut_stream_is_not_completed_and_error_is_protocol_shaped() -> None:
    raw = (GOLDEN / "streams" / "reasoning_parallel_tools.openai-chat.sse").read_bytes()
    cut = raw[: raw.index(b'"finish_reason":"tool_calls"')]
    translator = StreamTranslator(CHAT, ANTHROPIC, model="gw", include_usage=False)
    parser = SSEParser()
    for event in parser.feed(cut):
        translator.feed(event)
    translator.finish()
    assert translator.saw_content and not translator.completed
    error = translator.error(UpstreamStreamError("upstream stream ended before its terminal event"))
    assert error.startswith(b"event: error\n") and b'"type":"api_error"' in error
