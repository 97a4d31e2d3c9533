"""Server-sent events: incremental framing for the relay's hot path, and encoding.

The parser keeps every byte it is given: each :class:`SSEEvent` carries the exact bytes of its block
(``raw``, terminator included), so a passthrough relay forwards upstream bytes unchanged while still
seeing each event's name and data. Blocks that dispatch nothing under the SSE spec (comments such as
``: keep-alive``, stray blank lines) are returned too, with ``data == b""``, so keep-alives can be
forwarded and ``b"".join(e.raw for e in events)`` always equals the input.

Lines may end in ``\\n`` or ``\\r\\n`` (mixed freely); a lone ``\\r`` line ending (allowed by the spec,
sent by no API we talk to) is not recognised.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

_LF2 = b"\n\n"
_LFCRLF = b"\n\r\n"  # also the tail of "\r\n\r\n"
_LF2_RUNS = re.compile(_LF2)


class SSEEvent:
    __slots__ = ("data", "event", "raw")

    def __init__(self, event: str | None, data: bytes, raw: bytes) -> None:
        self.event = event
        self.data = data  # data lines joined with "\n"; b"" when the block had none
        self.raw = raw  # exact bytes of the block, including its terminating blank line

    def json(self) -> Any:
        return orjson.loads(self.data)

    def __repr__(self) -> str:
        return f"SSEEvent(event={self.event!r}, data={self.data[:80]!r}, raw_len={len(self.raw)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return self.event == other.event and self.data == other.data and self.raw == other.raw

    __hash__ = None  # type: ignore[assignment]


def _parse_block(body: bytes, raw: bytes) -> SSEEvent:
    """Parse one block; ``body`` is the block without its terminating blank line."""
    # Fast paths for the two shapes every API sends: "data: X" and "event: E\ndata: X".
    if body.startswith(b"data: "):
        if body.find(b"\n") < 0:
            return SSEEvent(None, body[6:].rstrip(b"\r"), raw)
    elif body.startswith(b"event: "):
        nl = body.find(b"\n")
        if nl > 0 and body.startswith(b"data: ", nl + 1) and body.find(b"\n", nl + 1) < 0:
            name = body[7:nl].rstrip(b"\r")
            return SSEEvent(name.decode("utf-8", "replace") or None, body[nl + 7 :].rstrip(b"\r"), raw)
    event: str | None = None
    data_lines: list[bytes] = []
    for line in body.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line or line[0] == 0x3A:  # empty, or ":" comment
            continue
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value.startswith(b" "):
                value = value[1:]
        if field == b"data":
            data_lines.append(value)
        elif field == b"event":
            event = value.decode("utf-8", "replace") or None
    return SSEEvent(event, b"\n".join(data_lines), raw)


def _blocks(buf: bytes) -> Iterator[SSEEvent]:
    """The complete blocks of ``buf``, left to right (an unfinished rest is not returned)."""
    pos = 0
    lf2 = buf.find(_LF2)
    # A stream without a "\r" (most APIs') would otherwise be searched end to end for "\n\r\n" by
    # every caller that only wants its first events; one memchr rules that out.
    lfcrlf = buf.find(_LFCRLF) if b"\r" in buf else -1
    while lf2 >= 0 or lfcrlf >= 0:
        if lfcrlf < 0 or 0 <= lf2 < lfcrlf:
            body_end, end = lf2, lf2 + 2
        else:
            body_end, end = lfcrlf, lfcrlf + 3
        yield _parse_block(buf[pos:body_end], buf[pos:end])
        pos = end
        # Each pattern is searched again only once passed, so the scan stays linear.
        if 0 <= lf2 < pos:
            lf2 = buf.find(_LF2, pos)
        if 0 <= lfcrlf < pos:
            lfcrlf = buf.find(_LFCRLF, pos)


def split_region(region: bytes) -> Iterator[SSEEvent]:
    """The events of bytes returned by :meth:`SSEParser.feed_region`.

    A region ends on a boundary, but where boundaries overlap (``"\\n\\r\\n\\n"``) a
    left-to-right split can stop a line ending short of it; those bytes come back as a block without
    data, so that every byte is still accounted for.
    """
    pos = 0
    for event in _blocks(region):
        pos += len(event.raw)
        yield event
    if pos < len(region):
        yield SSEEvent(None, b"", region[pos:])


def count_blocks(region: bytes, end: int | None = None) -> int:
    """How many blocks ``region[:end]`` holds, without parsing them."""
    if end is None:
        end = len(region)
    if b"\r" not in region:  # a quick memchr spares the slower second count
        # The regular expression engine finds a literal this short twice as fast as bytes.count
        # (3.3 vs 6.7 µs over the benchmark's 9 KB stream); it counts the same non-overlapping runs.
        return len(_LF2_RUNS.findall(region, 0, end))
    return region.count(_LF2, 0, end) + region.count(_LFCRLF, 0, end)


def block_start(buf: bytes, pos: int) -> int:
    """Where the block holding ``buf[pos]`` begins: just past the last boundary before ``pos``."""
    lf2 = buf.rfind(_LF2, 0, pos)
    if b"\r" not in buf:  # a quick memchr spares scanning for the other line ending
        return lf2 + 2 if lf2 >= 0 else 0
    lfcrlf = buf.rfind(_LFCRLF, 0, pos)
    return max(lf2 + 2 if lf2 >= 0 else 0, lfcrlf + 3 if lfcrlf >= 0 else 0)


class SSEParser:
    """Incremental SSE framing. ``feed`` each chunk as it arrives; ``flush`` at end of stream."""

    __slots__ = ("_parts", "_tail")

    def __init__(self) -> None:
        self._parts: list[bytes] = []  # bytes of an unfinished block, never containing a boundary
        self._tail = b""  # last two bytes of _parts, to spot a boundary split across chunks

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._join(chunk)
        if buf is None:
            return []
        events = list(_blocks(buf))
        self._keep(buf, sum(len(event.raw) for event in events))
        return events

    def feed_region(self, chunk: bytes) -> bytes:
        """The bytes of the blocks this chunk completes (empty when none), for callers that look at
        whole runs of events at once; :func:`split_region` parses them when needed. The unfinished
        tail is kept, as by :meth:`feed`."""
        buf = self._join(chunk)
        if buf is None:
            return b""
        end = block_start(buf, len(buf))
        self._keep(buf, end)
        return buf[:end]

    def _join(self, chunk: bytes) -> bytes | None:
        """The buffer to split, or None while the pending block cannot be complete yet."""
        if not chunk:
            return None
        if not self._parts:
            return chunk
        # Join only when this chunk can complete the pending block; a large event arriving in many
        # small reads is then copied once instead of once per read.
        joint = self._tail + chunk[:2]
        self._parts.append(chunk)
        if (
            chunk.find(_LF2) < 0
            and chunk.find(_LFCRLF) < 0
            and joint.find(_LF2) < 0
            and joint.find(_LFCRLF) < 0
        ):
            self._tail = (self._tail + chunk)[-2:]
            return None
        buf = b"".join(self._parts)
        self._parts = []
        return buf

    def _keep(self, buf: bytes, pos: int) -> None:
        if pos < len(buf):
            rest = buf[pos:]
            self._parts = [rest]
            self._tail = rest[-2:]
        else:
            self._tail = b""

    def flush(self) -> list[SSEEvent]:
        """The trailing block of a stream that ended without a blank line, if any."""
        if not self._parts:
            return []
        raw = b"".join(self._parts)
        self._parts = []
        self._tail = b""
        return [_parse_block(raw.rstrip(b"\r\n"), raw)]

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished block."""
        return sum(len(p) for p in self._parts)


def encode_event(data: bytes | dict[str, Any], event: str | None = None) -> bytes:
    """One SSE block. Dicts are serialised compactly with orjson, as the real APIs send them."""
    payload = orjson.dumps(data) if isinstance(data, dict) else data
    if b"\n" in payload:
        payload = payload.replace(b"\r\n", b"\n").replace(b"\n", b"\ndata: ")
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"
