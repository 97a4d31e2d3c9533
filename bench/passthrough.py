"""The Python floor: one key check, forward the body, stream the answer back. Nothing else.

Same stack as Isthmus (uvicorn + uvloop + httptools in, one pooled aiohttp session out), so the gap
between the two is what Isthmus's own work costs. The request path is kept as is, which makes this a
generic proxy for whatever the fake upstream serves.

    python bench/passthrough.py --port 9002 --upstream http://127.0.0.1:9000 --key sk-bench
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn


def build_app(upstream: str, key: str, upstream_key: str) -> Any:
    expected = f"Bearer {key}".encode()
    forward_auth = {"authorization": f"Bearer {upstream_key}", "content-type": "application/json"}
    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
                    state["http"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["http"].close()
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
        url = upstream + scope["path"]
        async with state["http"].post(url, data=b"".join(chunks), headers=forward_auth) as resp:
            ctype = resp.headers.get("content-type", "application/json").encode()
            await send(
                {"type": "http.response.start", "status": resp.status, "headers": [(b"content-type", ctype)]}
            )
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream, no trailing slash")
    parser.add_argument("--key", required=True, help="the one client key accepted")
    parser.add_argument("--upstream-key", default="sk-upstream")
    args = parser.parse_args()
    app = build_app(args.upstream.rstrip("/"), args.key, args.upstream_key)
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
