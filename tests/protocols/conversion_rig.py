"""A converting proxy for SDK conformance tests of every (client protocol, upstream protocol) pair.

The proxy serves all four front-door paths over real HTTP, converts each request through the IR to
the chosen upstream protocol (the mock provider, or a canned server replaying recorded bytes) and
converts the answer back, streamed or not, as the relay does. It records what it sent upstream and
what the upstream answered, so tests can check that opaque payloads made the round trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from isthmus.errors import UpstreamStreamError
from isthmus.ir import Protocol
from isthmus.protocols.convert import StreamTranslator, codec, convert_request, convert_response
from isthmus.protocols.gemini import split_model_action
from isthmus.protocols.sse import SSEParser
from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread

PATHS = {
    Protocol.ANTHROPIC: "/v1/messages",
    Protocol.OPENAI_CHAT: "/v1/chat/completions",
    Protocol.OPENAI_RESPONSES: "/v1/responses",
}
CLIENT_OF_PATH = {v: k for k, v in PATHS.items()}
GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send: Any, status: int, content_type: str, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class CannedUpstream:
    """Answers every request with the next queued (content type, body)."""

    replies: list[tuple[str, bytes]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        content_type, body = self.replies.pop(0)
        await respond(send, 200, content_type, body)


def upstream_url(base: str, protocol: Protocol, model: str, stream: bool) -> str:
    if protocol is Protocol.GEMINI:
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base}/v1beta/models/{model}:{action}"
    return base + PATHS[protocol]


@dataclass
class ConvertingProxy:
    upstream_url: str = ""
    upstream: Protocol = Protocol.OPENAI_CHAT
    upstream_model: str = "mock"
    sent: list[dict[str, Any]] = field(default_factory=list)  # converted upstream request bodies
    received: list[bytes] = field(default_factory=list)  # raw upstream answers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        body = json.loads(await read_body(receive))
        if path in CLIENT_OF_PATH:
            client = CLIENT_OF_PATH[path]
            model = str(body.get("model", ""))
            stream = body.get("stream") is True
        else:
            prefix = next(p for p in GEMINI_PREFIXES if path.startswith(p))
            split = split_model_action(path[len(prefix) :])
            assert split is not None, path
            client, (model, action) = Protocol.GEMINI, split
            stream = action == "streamGenerateContent"
        request = codec(client).decode_request(body)
        upstream_body = convert_request(client, self.upstream, body, model=self.upstream_model, stream=stream)
        self.sent.append(upstream_body)
        url = upstream_url(self.upstream_url, self.upstream, self.upstream_model, stream)
        headers = {"x-api-key": "test", "authorization": "Bearer test", "x-goog-api-key": "test"}
        async with httpx.AsyncClient(timeout=30) as http:
            if not stream:
                reply = await http.post(url, json=upstream_body, headers=headers)
                self.received.append(reply.content)
                answer = convert_response(self.upstream, client, reply.json(), model=model, request=request)
                await respond(send, 200, "application/json", json.dumps(answer).encode())
                return
            options = body.get("stream_options") or {}
            translator = StreamTranslator(
                self.upstream,
                client,
                model=model,
                include_usage=options.get("include_usage") is True,
                request=request,
            )
            parser = SSEParser()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            raw = b""
            async with http.stream("POST", url, json=upstream_body, headers=headers) as reply:
                async for chunk in reply.aiter_bytes():
                    raw += chunk
                    out = b"".join(translator.feed(event) for event in parser.feed(chunk))
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
            self.received.append(raw)
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


def start_rig() -> Iterator[Rig]:
    proxy = ConvertingProxy()
    canned = CannedUpstream()
    with (
        BackgroundMockServer() as mock,
        ServerThread(proxy, lifespan="off") as front,
        ServerThread(canned, lifespan="off") as replay,
    ):
        yield Rig(proxy, front.url, mock.url, canned, replay.url)
