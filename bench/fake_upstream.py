"""The fake upstream in Python, used only when nginx is not installed (the smoke test's fallback).

Serves exactly what the nginx fake upstream serves (``harness/payloads.py``: fixed bodies by path).

    python bench/fake_upstream.py --port 9000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.payloads import UPSTREAM_ROUTES, payload


def build_app() -> Any:
    routes = {
        path.encode(): (payload(name), [(b"content-type", ctype.encode())])
        for path, (name, ctype) in UPSTREAM_ROUTES.items()
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        body, headers = routes.get(scope["path"].encode(), (b'{"error":"no such path"}', []))
        status = 200 if headers else 404
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        build_app(),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
