"""Stream inspectors on real-shaped transcripts (tests/protocols/fixtures/*.sse).

Each fixture is fed through the SSE parser in small chunks, as it would arrive from a socket; the
expected classes, usage and stop reasons are written out by hand from the fixture's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from isthmus.ir.usage import Usage
from isthmus.protocols.anthropic import AnthropicStreamInspector
from isthmus.protocols.base import EventClass, StreamInspector
from isthmus.protocols.gemini import GeminiStreamInspector
from isthmus.protocols.openai_chat import ChatStreamInspector
from isthmus.protocols.openai_responses import ResponsesStreamInspector
from isthmus.protocols.sse import SSEEvent, SSEParser, count_blocks, split_region

FIXTURES = Path(__file__).parent / "fixtures"
M, C, U, E, D = (
    EventClass.META,
    EventClass.CONTENT,
    EventClass.USAGE_ONLY,
    EventClass.ERROR,
    EventClass.DONE,
)


def events_of(name: str, chunk_size: int = 7) -> list[SSEEvent]:
    data = (FIXTURES / name).read_bytes()
    parser = SSEParser()
    events: list[SSEEvent] = []
    for start in range(0, len(data), chunk_size):
        events += parser.feed(data[start : start + chunk_size])
    events += parser.flush()
    assert b"".join(e.raw for e in events) == data
    # Blank-data blocks (keep-alive comments) are forwarded, but carry nothing to inspect.
    return events


@dataclass
class Case:
    fixture: str
    inspector: type[StreamInspector]
    classes: list[EventClass]
    usage: Usage
    finish_reason: str | None
    model: str | None
    completed: bool
    error_status: int | None = None
    error_code: str | None = None


CASES = [
    Case(
        "openai_chat_text.sse",
        ChatStreamInspector,
        [M, C, C, M, U, D],
        # prompt_tokens 2006 includes 1920 cached; reasoning is inside completion_tokens.
        Usage(input_tokens=86, output_tokens=300, cache_read_tokens=1920, reasoning_tokens=192),
        "stop",
        "gpt-4o-2024-08-06",
        True,
    ),
    Case(
        "openai_chat_tool.sse",
        ChatStreamInspector,
        [C, C, C, M, D],
        Usage(input_tokens=80, output_tokens=17),
        "tool_calls",
        "gpt-4.1-mini",
        True,
    ),
    Case(
        "openai_chat_error.sse",
        ChatStreamInspector,
        [M, E],
        Usage(),
        None,
        "gpt-4o",
        False,
        error_status=429,
        error_code="rate_limit_exceeded",
    ),
    Case(
        "openai_chat_empty.sse",
        ChatStreamInspector,
        [M, M, M, D],
        Usage(),
        "stop",
        "gpt-4o-mini",
        True,
    ),
    Case(
        "openai_responses_text.sse",
        ResponsesStreamInspector,
        [M, M, M, C, C, C, C, C, C, C, C, D],
        Usage(input_tokens=129, output_tokens=544, cache_read_tokens=11904, reasoning_tokens=512),
        "completed",
        "gpt-5-2025-08-07",
        True,
    ),
    Case(
        "openai_responses_tool.sse",
        ResponsesStreamInspector,
        [M, C, C, C, C, D],
        # 3000 input = 500 plain + 1000 cached + 500 written for 30m + 1000 written for 12h.
        Usage(
            input_tokens=500,
            output_tokens=20,
            cache_read_tokens=1000,
            cache_write_5m_tokens=500,
            cache_write_1h_tokens=1000,
        ),
        "max_output_tokens",
        "gpt-4.1",
        True,
    ),
    Case(
        "openai_responses_failed.sse",
        ResponsesStreamInspector,
        [M, M, E],
        Usage(),
        "failed",
        "gpt-5-codex",
        False,
        error_status=500,
        error_code="server_error",
    ),
    Case(
        "anthropic_text.sse",
        AnthropicStreamInspector,
        [M, M, M, C, C, C, M, D],
        Usage(
            input_tokens=25,
            output_tokens=15,
            cache_read_tokens=10000,
            cache_write_5m_tokens=1000,
            cache_write_1h_tokens=2000,
        ),
        "end_turn",
        "claude-sonnet-4-5-20250929",
        True,
    ),
    Case(
        "anthropic_tool.sse",
        AnthropicStreamInspector,
        [M, M, C, C, C, C, C, C, C, C, M, D],
        # message_delta adds 100 cache-write tokens without a TTL breakdown: billed as 5m.
        Usage(input_tokens=472, output_tokens=89, cache_write_5m_tokens=100, reasoning_tokens=40),
        "tool_use",
        "claude-opus-4-1",
        True,
    ),
    Case(
        "anthropic_overloaded.sse",
        AnthropicStreamInspector,
        [M, M, E],
        Usage(input_tokens=10, output_tokens=1),
        None,
        "claude-sonnet-4-5",
        False,
        error_status=529,
        error_code="overloaded_error",
    ),
    Case(
        "anthropic_empty.sse",
        AnthropicStreamInspector,
        [M, M, D],
        Usage(input_tokens=7),
        "end_turn",
        "claude-haiku-4-5",
        True,
    ),
    Case(
        "gemini_text.sse",
        GeminiStreamInspector,
        [C, M, C, C],
        # prompt 9000 includes 8000 cached; tool-use prompt (48) is extra input; thoughts are output.
        Usage(input_tokens=1048, output_tokens=112, cache_read_tokens=8000, reasoning_tokens=100),
        "STOP",
        "gemini-2.5-flash",
        True,
    ),
    Case(
        "gemini_error.sse",
        GeminiStreamInspector,
        [M, E],
        Usage(input_tokens=12),
        None,
        "gemini-2.5-pro",
        False,
        error_status=503,
        error_code="UNAVAILABLE",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.fixture for c in CASES])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_inspector_on_transcript(case: Case, chunk_size: int) -> None:
    inspector = case.inspector()
    classes = [inspector.inspect(event) for event in events_of(case.fixture, chunk_size)]
    assert classes == case.classes
    assert inspector.usage == case.usage
    assert inspector.finish_reason == case.finish_reason
    assert inspector.model == case.model
    assert inspector.completed is case.completed
    if case.error_status is None:
        assert inspector.error is None
    else:
        assert inspector.error is not None
        assert inspector.error.upstream_status == case.error_status
        assert inspector.error.code == case.error_code
        assert inspector.error.message


def test_chat_fast_path_still_sees_late_usage_and_finish() -> None:
    """After content, chunks are classified from their bytes; usage and finish must not be missed,
    whatever spacing the upstream's JSON uses."""
    inspector = ChatStreamInspector()
    head = b'{"id":"x","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
    assert inspector.inspect(SSEEvent(None, head, b"")) is C
    spaced = (
        b'{"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], '
        b'"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}'
    )
    assert inspector.inspect(SSEEvent(None, spaced, b"")) is M
    assert inspector.finish_reason == "length"
    assert inspector.usage == Usage(input_tokens=10, output_tokens=5)


def test_gemini_prompt_blocked_is_an_answer() -> None:
    inspector = GeminiStreamInspector()
    blocked = b'{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":5}}'
    assert inspector.inspect(SSEEvent(None, blocked, b"")) is C
    assert inspector.finish_reason == "SAFETY"
    assert inspector.completed
    assert inspector.usage == Usage(input_tokens=5)


def test_responses_error_event_then_failed_keeps_first_error() -> None:
    inspector = ResponsesStreamInspector()
    err = (
        b'{"type":"error","code":"rate_limit_exceeded","message":"slow down",'
        b'"param":null,"sequence_number":3}'
    )
    failed = (
        b'{"type":"response.failed","sequence_number":4,"response":{"id":"r","status":"failed",'
        b'"error":{"code":"server_error","message":"failed"}}}'
    )
    assert inspector.inspect(SSEEvent("error", err, b"")) is E
    assert inspector.inspect(SSEEvent("response.failed", failed, b"")) is E
    assert inspector.error is not None
    assert inspector.error.upstream_status == 429
    assert inspector.error.message == "slow down"


@pytest.mark.parametrize("case", CASES, ids=[c.fixture for c in CASES])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
def test_runs_of_plain_content_skip_parsing_but_miss_no_billing_fact(case: Case, chunk_size: int) -> None:
    """The relay's way: event by event until the first content, then each chunk's whole events as
    one region whose plain prefix is counted unparsed and the rest inspected event by event. The
    billing facts must come out as when inspecting every event, and so must the content count."""
    data = (FIXTURES / case.fixture).read_bytes()
    inspector = case.inspector()
    parser = SSEParser()
    content = skipped = 0
    for start in range(0, len(data), chunk_size):
        region = parser.feed_region(data[start : start + chunk_size])
        while region and not content:  # reading ahead to the first content
            event = next(split_region(region))
            content += inspector.inspect(event) is C
            region = region[len(event.raw) :]
        end = inspector.plain_prefix(region)
        assert end == 0 or region[:end].endswith(b"\n\n")
        content += count_blocks(region, end)
        skipped += count_blocks(region, end)
        for event in split_region(region[end:]):
            content += inspector.inspect(event) is C
    for event in parser.flush():
        content += inspector.inspect(event) is C
    assert content == case.classes.count(C)
    assert inspector.usage == case.usage
    assert inspector.finish_reason == case.finish_reason
    assert inspector.model == case.model
    assert inspector.completed is case.completed
    assert (inspector.error is None) is (case.error_status is None)
    if case.inspector is not GeminiStreamInspector and case.classes.count(C) > 3:
        assert skipped  # the point of it: some deltas went by unparsed


def test_plain_prefix_stops_at_the_first_event_that_carries_a_billing_fact() -> None:
    chat = ChatStreamInspector()
    delta = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],"usage":null}\n\n'
    assert chat.plain_prefix(delta) == 0  # nothing seen yet: the first content must be parsed
    assert chat.inspect(SSEEvent(None, delta[6:-2], delta)) is C
    assert chat.plain_prefix(delta * 3) == len(delta) * 3
    spaced = delta.replace(b":null", b": null")  # the other null spelling is just as plain
    assert chat.plain_prefix(spaced + delta) == len(spaced) + len(delta)
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
    odd = b'data: {"choices":[],"usage" : {"prompt_tokens":1}}\n\n'  # unknown spelling: inspected
    error = b'data: {"error":{"message":"boom"}}\n\n'
    for tail in (finish, usage, odd, error, b"data: [DONE]\n\n"):
        assert chat.plain_prefix(delta * 2 + tail + delta) == len(delta) * 2
    anthropic = AnthropicStreamInspector()
    block = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0}\n\n'
    assert anthropic.inspect(SSEEvent("content_block_delta", b"{}", block)) is C
    assert anthropic.plain_prefix(block * 2) == len(block) * 2
    assert anthropic.plain_prefix(block + b"event: message_delta\ndata: {}\n\n") == len(block)
    assert anthropic.plain_prefix(b"event: error\ndata: {}\n\n" + block) == 0
    assert GeminiStreamInspector().plain_prefix(b'data: {"candidates":[]}\n\n') == 0
