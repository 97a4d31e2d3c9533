"""SSE framing: exact raw bytes, any chunking, both line endings, comments, multi-line data."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.protocols.sse import (
    DONE_EVENT,
    SSEEvent,
    SSEParser,
    block_start,
    count_blocks,
    encode_event,
    split_region,
)


def parse_all(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.flush()


def test_basic_events_and_raw_bytes() -> None:
    stream = (
        b'event: message_start\ndata: {"a":1}\n\n'
        b": keep-alive\n\n"
        b"data: first\ndata: second\n\n"
        b"data: [DONE]\n\n"
    )
    events = parse_all([stream])
    assert [(e.event, e.data) for e in events] == [
        ("message_start", b'{"a":1}'),
        (None, b""),
        (None, b"first\nsecond"),
        (None, b"[DONE]"),
    ]
    assert [e.raw for e in events] == [
        b'event: message_start\ndata: {"a":1}\n\n',
        b": keep-alive\n\n",
        b"data: first\ndata: second\n\n",
        b"data: [DONE]\n\n",
    ]
    assert events[0].json() == {"a": 1}


def test_crlf_and_field_spellings() -> None:
    stream = b"event:ping\r\ndata:no-space\r\nid: 7\r\nretry: 100\r\n\r\ndata\r\n\r\n"
    events = parse_all([stream])
    assert [(e.event, e.data) for e in events] == [("ping", b"no-space"), (None, b"")]
    assert b"".join(e.raw for e in events) == stream


def test_event_split_across_many_chunks_is_delivered_once() -> None:
    payload = b"data: " + b"x" * 10_000 + b"\n\n"
    parser = SSEParser()
    out: list[SSEEvent] = []
    for i in range(0, len(payload), 3):
        out += parser.feed(payload[i : i + 3])
        if i + 3 < len(payload):
            assert parser.pending > 0
    assert len(out) == 1
    assert out[0].data == b"x" * 10_000
    assert parser.pending == 0


def test_boundary_split_between_chunks() -> None:
    for cut in range(1, 5):
        first, second = (
            b"data: a\r\n\r\ndata: b\r\n\r\n"[: 9 + cut],
            b"data: a\r\n\r\ndata: b\r\n\r\n"[9 + cut :],
        )
        events = parse_all([first, second])
        assert [e.data for e in events] == [b"a", b"b"]


def test_flush_returns_trailing_event_without_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"done":true}') == []
    (event,) = parser.flush()
    assert event.data == b'{"done":true}'
    assert event.raw == b'data: {"done":true}'
    assert parser.flush() == []


def test_encode_event() -> None:
    assert encode_event({"type": "ping"}, "ping") == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert encode_event(b"line1\nline2") == b"data: line1\ndata: line2\n\n"
    assert DONE_EVENT == b"data: [DONE]\n\n"
    (event,) = parse_all([encode_event({"k": "v\nw"}, "x")])
    assert orjson.loads(event.data) == {"k": "v\nw"}


# --- properties -----------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=40)


@st.composite
def transcripts(draw: st.DrawFn) -> tuple[bytes, list[tuple[str | None, bytes]]]:
    """A stream and the (event, data) pairs a correct parser must find in it."""
    newline = draw(st.sampled_from(["\n", "\r\n", "mixed"]))
    blocks: list[str] = []
    expected: list[tuple[str | None, bytes]] = []
    for _ in range(draw(st.integers(1, 8))):
        lines: list[str] = []
        name = draw(st.one_of(st.none(), st.from_regex(r"[a-z_.]{1,20}", fullmatch=True)))
        data_lines = draw(st.lists(_text, max_size=3))
        if draw(st.booleans()):
            lines.append(": " + draw(_text))
        if name is not None:
            lines.append(f"event: {name}")
        lines += [f"data: {d}" for d in data_lines]
        if not lines:
            lines.append(":")
        ends = [draw(st.sampled_from(["\n", "\r\n"])) if newline == "mixed" else newline for _ in lines]
        blocks.append("".join(line + end for line, end in zip(lines, ends, strict=True)) + ends[-1])
        expected.append((name, "\n".join(data_lines).encode()))
    return "".join(blocks).encode(), expected


@settings(max_examples=300, deadline=None)
@given(transcripts(), st.data())
def test_any_chunking_gives_the_same_events(
    transcript: tuple[bytes, list[tuple[str | None, bytes]]], data: st.DataObject
) -> None:
    stream, expected = transcript
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    events = parse_all(chunks)
    assert b"".join(e.raw for e in events) == stream
    assert [(e.event, e.data) for e in events] == expected
    assert events == parse_all([stream])


def parse_by_regions(chunks: list[bytes]) -> tuple[list[bytes], list[SSEEvent]]:
    parser = SSEParser()
    regions = [parser.feed_region(chunk) for chunk in chunks]
    events = [event for region in regions for event in split_region(region)]
    return regions, events + parser.flush()


@settings(max_examples=300, deadline=None)
@given(transcripts(), st.data())
def test_regions_hold_whole_events_and_every_byte_once(
    transcript: tuple[bytes, list[tuple[str | None, bytes]]], data: st.DataObject
) -> None:
    stream, expected = transcript
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    regions, events = parse_by_regions(chunks)
    assert b"".join(regions) == stream  # every transcript ends on a boundary
    assert b"".join(e.raw for e in events) == stream
    assert [(e.event, e.data) for e in events if e.data or e.event] == [
        pair for pair in expected if pair[1] or pair[0]
    ]
    assert sum(count_blocks(region) for region in regions) == len(expected)
    # Counting the blocks before a point (a run's plain prefix) stops at that point.
    end = data.draw(st.integers(0, len(stream)))
    whole_blocks_before = [e for e in split_region(stream[: block_start(stream, end)]) if e.raw]
    assert count_blocks(stream, block_start(stream, end)) == len(whole_blocks_before)


def test_region_keeps_the_unfinished_tail() -> None:
    parser = SSEParser()
    assert parser.feed_region(b"data: 1\n\ndata: 2\n\ndata: ") == b"data: 1\n\ndata: 2\n\n"
    assert parser.pending == len(b"data: ")
    assert parser.feed_region(b"3") == b""
    assert parser.feed_region(b"\n") == b""
    assert parser.feed_region(b"\n") == b"data: 3\n\n"
    assert parser.pending == 0


def test_overlapping_boundaries_leave_no_byte_behind() -> None:
    # "\n\r\n\n": a left-to-right split ends the block at the CRLF boundary; the last LF is an empty
    # line, given back as a block without data rather than lost or delayed.
    region = SSEParser().feed_region(b"data: a\n\r\n\n")
    events = list(split_region(region))
    assert [(e.data, e.raw) for e in events] == [(b"a", b"data: a\n\r\n"), (b"", b"\n")]
