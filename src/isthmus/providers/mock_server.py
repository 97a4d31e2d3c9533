"""The mock provider over HTTP, at each protocol's official paths (a raw ASGI app).

Run it with ``python -m isthmus.providers.mock_server --port 9000``; point an SDK or a gateway
provider at it (OpenAI base URL ``http://127.0.0.1:9000/v1``, Anthropic and Gemini
``http://127.0.0.1:9000``). Behaviour and knobs are documented in ``isthmus.providers.mock``.

Paths: ``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/responses/input_tokens``,
``/v1/embeddings``, ``/v1/messages``, ``/v1/messages/count_tokens``,
``/v1beta/models/{model}:generateContent|streamGenerateContent|countTokens|embedContent|
batchEmbedContents`` (also under ``/v1/models/``, google-genai's default), ``GET|DELETE
/v1/responses/{id}`` (always 404: nothing is stored), ``GET /v1/models`` (Gemini's shape with
``x-goog-api-key`` or ``?key=``, Anthropic's with ``x-api-key`` or ``anthropic-version``, else
OpenAI's), ``GET /v1beta/models``, ``GET /healthz``.

For tests: ``GET /_mock/last`` returns the last request received (method, path, query, headers,
body as text) and ``GET /_mock/requests`` the recent ones; ``DELETE /_mock/requests`` forgets them.
:class:`BackgroundMockServer` runs the app with uvicorn in a thread on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import orjson

from isthmus.errors import NotFoundError
from isthmus.ir.protocol import Operation, Protocol
from isthmus.protocols import gemini
from isthmus.protocols.sse import SSEParser
from isthmus.providers.mock import MockResponse, mock_respond
from isthmus.providers.mock_wire import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_GEMINI_ACTIONS: dict[str, tuple[Operation, bool]] = {
    "generateContent": (Operation.GENERATE, False),
    "streamGenerateContent": (Operation.GENERATE, True),
    "countTokens": (Operation.COUNT_TOKENS, False),
    "embedContent": (Operation.EMBED, False),
    "batchEmbedContents": (Operation.EMBED, False),
}
_POST_ROUTES: dict[str, tuple[Protocol, Operation]] = {
    "/v1/chat/completions": (Protocol.OPENAI_CHAT, Operation.GENERATE),
    "/v1/responses": (Protocol.OPENAI_RESPONSES, Operation.GENERATE),
    "/v1/responses/input_tokens": (Protocol.OPENAI_RESPONSES, Operation.COUNT_TOKENS),
    "/v1/embeddings": (Protocol.OPENAI_CHAT, Operation.EMBED),
    "/v1/messages": (Protocol.ANTHROPIC, Operation.GENERATE),
    "/v1/messages/count_tokens": (Protocol.ANTHROPIC, Operation.COUNT_TOKENS),
}


def _models_protocol(headers: dict[str, str], query: dict[str, list[str]]) -> Protocol:
    if "x-goog-api-key" in headers or "key" in query:
        return Protocol.GEMINI
    if "x-api-key" in headers or "anthropic-version" in headers:
        return Protocol.ANTHROPIC
    return Protocol.OPENAI_CHAT


async def _json_array(response: MockResponse) -> MockResponse:
    """``streamGenerateContent`` without ``alt=sse`` answers one JSON array of the chunks."""
    parser = SSEParser()
    items = [event.data async for chunk in response.chunks for event in parser.feed(chunk) if event.data]
    body = b"[" + b",\r\n".join(items) + b"]"

    async def once() -> Any:
        yield body

    return MockResponse(response.status, {"content-type": "application/json"}, once())


class MockServer:
    """ASGI app serving :func:`mock_respond`; keeps the last ``history`` requests for tests."""

    def __init__(self, history: int = 100) -> None:
        self.requests: deque[dict[str, Any]] = deque(maxlen=history)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
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
        work = asyncio.ensure_future(self._handle(scope, bytes(body), send))
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        # A client that gives up (timeouts, cut tests) cancels the answer instead of leaving it hanging.
        done, pending = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if work in done:
            with contextlib.suppress(OSError):
                work.result()

    async def _handle(self, scope: Scope, body: bytes, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        raw_query: str = scope.get("query_string", b"").decode("latin-1")
        query = parse_qs(raw_query)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if path == "/healthz":
            await _send_json(send, 200, b'{"status":"ok"}')
            return
        if path.startswith("/_mock/"):
            await self._control(method, path, send)
            return
        self.requests.append(
            {
                "method": method,
                "path": path,
                "query": raw_query,
                "headers": headers,
                "body": body.decode("utf-8", "replace"),
            }
        )
        response = await self._route(method, path, query, headers, body)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()],
            }
        )
        async for chunk in response.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _route(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> MockResponse:
        if method == "POST" and path in _POST_ROUTES:
            protocol, operation = _POST_ROUTES[path]
            parsed = _lenient_json(body)
            model = parsed.get("model")
            stream = operation is Operation.GENERATE and parsed.get("stream") is True
            return await mock_respond(
                protocol, operation, body, headers, model if isinstance(model, str) else "", stream
            )
        for prefix in ("/v1beta/models/", "/v1/models/"):
            if method == "POST" and path.startswith(prefix):
                split = gemini.split_model_action(path[len(prefix) :])
                if split is not None and split[1] in _GEMINI_ACTIONS:
                    model, action = split
                    operation, stream = _GEMINI_ACTIONS[action]
                    response = await mock_respond(Protocol.GEMINI, operation, body, headers, model, stream)
                    if stream and response.status == 200 and query.get("alt") != ["sse"]:
                        return await _json_array(response)
                    return response
        if method == "GET" and path in ("/v1/models", "/v1beta/models"):
            protocol = Protocol.GEMINI if path == "/v1beta/models" else _models_protocol(headers, query)
            return await mock_respond(protocol, Operation.LIST_MODELS, b"", headers, "", False)
        if method in ("GET", "DELETE") and path.startswith("/v1/responses/"):
            operation = Operation.RESPONSE_GET if method == "GET" else Operation.RESPONSE_DELETE
            return await mock_respond(Protocol.OPENAI_RESPONSES, operation, b"", headers, "", False)
        protocol = Protocol.GEMINI if path.startswith("/v1beta/") else Protocol.OPENAI_CHAT
        payload = error_body(protocol, NotFoundError(f"the mock serves no {method} {path}"))
        return MockResponse(404, {"content-type": "application/json"}, _single(payload))

    async def _control(self, method: str, path: str, send: Send) -> None:
        if path == "/_mock/last" and method == "GET":
            if not self.requests:
                await _send_json(send, 404, b'{"error":"no request yet"}')
            else:
                await _send_json(send, 200, orjson.dumps(self.requests[-1]))
        elif path == "/_mock/requests" and method == "GET":
            await _send_json(send, 200, orjson.dumps(list(self.requests)))
        elif path == "/_mock/requests" and method == "DELETE":
            self.requests.clear()
            await _send_json(send, 200, b"{}")
        else:
            await _send_json(send, 404, b'{"error":"unknown mock control path"}')


async def _single(payload: bytes) -> Any:
    yield payload


def _lenient_json(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_json(send: Send, status: int, payload: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": payload})


class BackgroundMockServer:
    """Run a :class:`MockServer` with uvicorn in a daemon thread on 127.0.0.1 and a free port.

    Use as a context manager (``with BackgroundMockServer() as mock: mock.url``) or call
    ``start()``/``stop()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = MockServer()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1, access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundMockServer:
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return self
            if not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        raise RuntimeError("the mock server did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> BackgroundMockServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the Isthmus mock provider over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    uvicorn.run(MockServer(), host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
