"""A small HTTP/1.1 keep-alive client (asyncio + httptools) that times each phase of an answer.

Used for the answer checks, the paced low-load latency runs (total time and time to the first body
byte, which for a stream is the first SSE event) and, when wrk is missing, as a closed-loop load.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httptools


def build_request(port: int, path: str, key: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nAccept-Encoding: identity\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Timing:
    status: int
    total_s: float
    first_body_s: float
    body: bytes
    server_timing: str = ""


class _Connection(asyncio.Protocol):
    def __init__(self, keep_body: bool) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._keep_body = keep_body
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Timing] | None = None
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._now = 0.0
        self._reset(0.0)

    def _reset(self, sent_at: float) -> None:
        self._sent_at = sent_at
        self._first_body = 0.0
        self._chunks: list[bytes] = []
        self._server_timing = ""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._now = time.perf_counter()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("connection closed by the server"))
        if not self._lost.done():
            self._lost.set_result(None)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing":
            self._server_timing = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if not self._first_body:
            self._first_body = self._now
        if self._keep_body:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            first = self._first_body or self._now
            waiter.set_result(
                Timing(
                    status=self._parser.get_status_code(),
                    total_s=self._now - self._sent_at,
                    first_body_s=first - self._sent_at,
                    body=b"".join(self._chunks),
                    server_timing=self._server_timing,
                )
            )

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def request(self, raw: bytes) -> Timing:
        assert self._transport is not None
        if self._transport.is_closing():
            raise ConnectionError("connection closed by the server")
        self._waiter = asyncio.get_running_loop().create_future()
        self._reset(time.perf_counter())
        self._transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def connect(port: int, keep_body: bool) -> _Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: _Connection(keep_body), "127.0.0.1", port)
    return conn


async def fetch(port: int, raw: bytes, limit_s: float = 30.0) -> Timing:
    conn = await connect(port, keep_body=True)
    try:
        return await asyncio.wait_for(conn.request(raw), limit_s)
    finally:
        conn.close()


async def paced(port: int, raw: bytes, count: int, rate: float, limit_s: float = 30.0) -> list[Timing]:
    """``count`` requests on one keep-alive connection, one every ``1/rate`` s (never overlapping)."""
    conn = await connect(port, keep_body=False)
    interval = 1.0 / rate
    out: list[Timing] = []
    try:
        next_at = time.perf_counter()
        for _ in range(count):
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            out.append(await asyncio.wait_for(conn.request(raw), limit_s))
    finally:
        conn.close()
    return out


@dataclass
class LoadResult:
    requests: int
    errors: int
    non_2xx: int
    seconds: float


async def closed_loop(port: int, raw: bytes, connections: int, seconds: float) -> LoadResult:
    """wrk's model in Python (fallback only: far slower than wrk, so it may be the bottleneck)."""
    result = LoadResult(0, 0, 0, 0.0)
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        conn: _Connection | None = None
        while time.perf_counter() < deadline:
            try:
                if conn is None:
                    conn = await connect(port, keep_body=False)
                timing = await asyncio.wait_for(conn.request(raw), 30)
                result.requests += 1
                if not 200 <= timing.status < 300:
                    result.non_2xx += 1
            except (OSError, TimeoutError):
                result.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result
