"""The Python floor: one key check, forward the body, stream the answer back. Nothing else.

Same stack as Isthmus (uvicorn + uvloop + httptools in, one pooled aiohttp session out), so the gap
between the two is what Isthmus's own work costs. The request path is kept as is, which makes this a
generic proxy for whatever the fake upstream serves.

    python bench/passthrough.py --port 9002 --upstream http://127.0.0.1:9000 --key sk-bench

``--server granian`` and ``--client httpx`` swap one side of the stack, to measure those choices on
the same program rather than assume them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import uvicorn

Forward = Callable[[str, bytes], Awaitable[tuple[int, bytes, AsyncIterator[bytes], Callable[[], Any]]]]


@asynccontextmanager
async def aiohttp_client(headers: dict[str, str]) -> AsyncIterator[Forward]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def forward(
            url: str, body: bytes
        ) -> tuple[int, bytes, AsyncIterator[bytes], Callable[[], Any]]:
            resp = await session.post(url, data=body, headers=headers)
            ctype = resp.headers.get("content-type", "application/json").encode()
            return resp.status, ctype, resp.content.iter_any(), resp.release

        yield forward


@asynccontextmanager
async def httpx_client(headers: dict[str, str]) -> AsyncIterator[Forward]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000, keepalive_expiry=60)
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:

        async def forward(
            url: str, body: bytes
        ) -> tuple[int, bytes, AsyncIterator[bytes], Callable[[], Any]]:
            request = client.build_request("POST", url, content=body, headers=headers)
            resp = await client.send(request, stream=True)
            ctype = resp.headers.get("content-type", "application/json").encode()
            return resp.status_code, ctype, resp.aiter_raw(), resp.aclose

        yield forward


CLIENTS = {"aiohttp": aiohttp_client, "httpx": httpx_client}


def build_app(upstream: str, key: str, upstream_key: str, client: str = "aiohttp") -> Any:
    expected = f"Bearer {key}".encode()
    forward_headers = {"authorization": f"Bearer {upstream_key}", "content-type": "application/json"}
    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["client"] = CLIENTS[client](forward_headers)
                    state["forward"] = await state["client"].__aenter__()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["client"].__aexit__(None, None, None)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b'{"error":{"message":"bad key"}}'})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        status, ctype, body, close = await state["forward"](upstream + scope["path"], b"".join(chunks))
        try:
            await send(
                {"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]}
            )
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await close()
        await send({"type": "http.response.body", "body": b""})

    return app


def app_from_env() -> Any:
    """Factory for granian, which takes an import path rather than an app object."""
    env = os.environ
    return build_app(env["PT_UPSTREAM"], env["PT_KEY"], env["PT_UPSTREAM_KEY"], env["PT_CLIENT"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream, no trailing slash")
    parser.add_argument("--key", required=True, help="the one client key accepted")
    parser.add_argument("--upstream-key", default="sk-upstream")
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="aiohttp")
    args = parser.parse_args()
    if args.server == "granian":
        os.environ.update(
            PT_UPSTREAM=args.upstream.rstrip("/"),
            PT_KEY=args.key,
            PT_UPSTREAM_KEY=args.upstream_key,
            PT_CLIENT=args.client,
        )
        argv = [
            "granian", "--interface", "asgi", "--host", args.host, "--port", str(args.port),
            "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--no-ws",
            "--log-level", "warning", "--factory", "passthrough:app_from_env",
        ]  # fmt: skip
        os.execvp(os.path.join(os.path.dirname(sys.executable), "granian"), argv)
    app = build_app(args.upstream.rstrip("/"), args.key, args.upstream_key, args.client)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
