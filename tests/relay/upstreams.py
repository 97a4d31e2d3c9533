"""Small real upstreams for relay tests, as raw ASGI apps served by uvicorn on 127.0.0.1.

Each records the requests it receives (method, path, query, headers, body) so tests can assert what
the gateway sent; most answer through the mock provider's core so the answers are realistic.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import brotli
import orjson

from isthmus.ir import Operation, Protocol
from isthmus.protocols.sse import SSEParser
from isthmus.providers.mock import mock_respond
from servers import ServerThread

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass
class Seen:
    """One request an upstream received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return orjson.loads(self.body)


class Upstream:
    """Base app: reads the request, records it, then lets the subclass answer."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = Seen(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=bytes(body),
        )
        self.requests.append(seen)
        await self.respond(seen, receive, send)

    async def respond(self, seen: Seen, receive: Any, send: Any) -> None:
        raise NotImplementedError

    def server(self) -> ServerThread:
        """A server for this app, not yet started (use it as a context manager)."""
        return ServerThread(self, lifespan="off")


async def send_whole(send: Any, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw = [(k.encode(), v.encode()) for k, v in (headers or {"content-type": "application/json"}).items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def openai_error(status: int, message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": None}})


class RecordingUpstream(Upstream):
    """An OpenAI-shaped upstream (any base path, so Azure URL layouts too) that answers Chat
    Completions and Responses through the mock provider, and stores created responses so
    ``GET``/``DELETE …/responses/{id}`` work as on the real API."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: dict[str, Any] = {}

    async def respond(self, seen: Seen, receive: Any, send: Any) -> None:
        path = seen.path
        if "/responses/" in path and seen.method in ("GET", "DELETE"):
            await self._resource(seen, path.rsplit("/", 1)[1], send)
            return
        if seen.method != "POST":
            await send_whole(send, 404, openai_error(404, f"no {seen.method} {path}"))
            return
        if path.endswith("/chat/completions"):
            protocol = Protocol.OPENAI_CHAT
        elif path.endswith("/responses"):
            protocol = Protocol.OPENAI_RESPONSES
        else:
            await send_whole(send, 404, openai_error(404, f"no POST {path}"))
            return
        body = seen.json()
        stream = body.get("stream") is True
        answer = await mock_respond(protocol, Operation.GENERATE, seen.body, {}, body["model"], stream)
        raw_headers = [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw_headers})
        sent = bytearray()
        async for chunk in answer.chunks:
            sent += chunk
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        if protocol is Protocol.OPENAI_RESPONSES and answer.status == 200:
            self._store(bytes(sent), stream)

    def _store(self, sent: bytes, stream: bool) -> None:
        if not stream:
            obj = orjson.loads(sent)
            self.responses[obj["id"]] = obj
            return
        for event in SSEParser().feed(sent):
            if event.event == "response.completed":
                obj = event.json()["response"]
                self.responses[obj["id"]] = obj

    async def _resource(self, seen: Seen, response_id: str, send: Any) -> None:
        obj = self.responses.get(response_id)
        if obj is None:
            await send_whole(send, 404, openai_error(404, f"No response found with id '{response_id}'."))
        elif seen.method == "GET":
            await send_whole(send, 200, orjson.dumps(obj))
        else:
            del self.responses[response_id]
            await send_whole(
                send, 200, orjson.dumps({"id": response_id, "object": "response", "deleted": True})
            )


def chat_chunk(content: str | None, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    """One Chat Completions stream event."""
    delta = {} if content is None else {"content": content}
    chunk: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-upstream",
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = usage
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_DONE = b"data: [DONE]\n\n"


class TrickleUpstream(Upstream):
    """A slow Chat Completions stream that notes when its client (the gateway) goes away.

    ``first_delay`` seconds pass before the first content chunk, then one chunk every ``interval``
    until ``count`` are sent. ``disconnected_at`` (monotonic) is set when the connection is lost.
    """

    def __init__(self, *, count: int = 100, interval: float = 0.1, first_delay: float = 0.0) -> None:
        super().__init__()
        self.count = count
        self.interval = interval
        self.first_delay = first_delay
        self.chunks_sent = 0
        self.disconnected_at: float | None = None
        self.completed = False

    async def respond(self, seen: Seen, receive: Any, send: Any) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected_at = time.monotonic()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": b": opening\n\n", "more_body": True})
            await asyncio.sleep(self.first_delay)
            for n in range(self.count):
                if watcher.done():
                    return
                await send({"type": "http.response.body", "body": chat_chunk(f"w{n} "), "more_body": True})
                self.chunks_sent += 1
                await asyncio.sleep(self.interval)
            await send({"type": "http.response.body", "body": chat_chunk(None, "stop") + _DONE})
            self.completed = True
        finally:
            watcher.cancel()


class BigStreamUpstream(Upstream):
    """A Chat Completions stream generated lazily, ``event_bytes`` per event, so the upstream itself
    holds one event at a time. Its size in bytes is the request's upstream model name."""

    def __init__(self, event_bytes: int = 4096) -> None:
        super().__init__()
        self.event_bytes = event_bytes

    async def respond(self, seen: Seen, receive: Any, send: Any) -> None:
        total_bytes = int(seen.json()["model"])
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        overhead = len(chat_chunk(""))
        sent = 0
        n = 0
        while sent < total_bytes:
            # Varied text, so nothing along the way can get away with sharing one buffer.
            text = (f"{n:08d}" * (self.event_bytes // 8))[: self.event_bytes - overhead]
            event = chat_chunk(text)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            sent += len(event)
            n += 1
        usage = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3}
        tail = chat_chunk(None, "stop") + chat_chunk(None, usage=usage) + _DONE
        await send({"type": "http.response.body", "body": tail})


class _Encoder:
    """Incremental compression, flushed after every piece so each arrives decodable on its own."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._gzip = zlib.compressobj(wbits=31) if encoding == "gzip" else None
        self._br = brotli.Compressor() if encoding == "br" else None

    def piece(self, data: bytes) -> bytes:
        if self._gzip is not None:
            return self._gzip.compress(data) + self._gzip.flush(zlib.Z_SYNC_FLUSH)
        assert self._br is not None
        out: bytes = self._br.process(data) + self._br.flush()
        return out

    def end(self) -> bytes:
        if self._gzip is not None:
            return self._gzip.flush(zlib.Z_FINISH)
        assert self._br is not None
        out: bytes = self._br.finish()
        return out


def compress_whole(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    out: bytes = brotli.compress(data)
    return out


class CompressedUpstream(Upstream):
    """Answers Chat Completions like the mock, compressed with the encoding named by the request's
    upstream model (``gzip`` or ``br``), streamed or not."""

    async def respond(self, seen: Seen, receive: Any, send: Any) -> None:
        body = seen.json()
        encoding = body["model"]
        stream = body.get("stream") is True
        answer = await mock_respond(
            Protocol.OPENAI_CHAT, Operation.GENERATE, seen.body, {}, "mock-gpt", stream
        )
        headers = {**answer.headers, "content-encoding": encoding}
        if not stream:
            payload = b"".join([c async for c in answer.chunks])
            await send_whole(send, answer.status, compress_whole(encoding, payload), headers)
            return
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        encoder = _Encoder(encoding)
        async for chunk in _paced(answer.chunks):
            await send({"type": "http.response.body", "body": encoder.piece(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": encoder.end()})


async def _paced(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # A short pause between events makes them separate TCP writes, so the gateway decodes a
    # compressed stream piece by piece rather than in one read.
    async for chunk in chunks:
        yield chunk
        await asyncio.sleep(0.005)


class ErrorUpstream(Upstream):
    """Answers every call with the HTTP status named by the request's upstream model
    (``status-401``), echoing the credential it was sent the way some vendors' error messages do."""

    async def respond(self, seen: Seen, receive: Any, send: Any) -> None:
        status = int(seen.json()["model"].removeprefix("status-"))
        presented = seen.headers.get("authorization", "").removeprefix("Bearer ")
        await send_whole(send, status, openai_error(status, f"Incorrect API key provided: {presented}"))


class ScriptedStreamUpstream(Upstream):
    """Answers every call with the same SSE stream, sent as the given chunks, each its own write."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self.chunks = chunks

    async def respond(self, seen: Seen, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.005)
        await send({"type": "http.response.body", "body": b""})
