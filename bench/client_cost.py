"""CPU per upstream call of the relay's HTTP/1.1 client, against aiohttp set up as Isthmus had it.

    .venv/bin/python bench/client_cost.py [--requests 20000] [--connections 32] [--rounds 3]

Starts the benchmark's fake upstream (nginx when installed, as in ``run.py``), then, in this process
pinned to its own core, sends the bench's ~1 KB chat request to ``/unary/v1/chat/completions`` over
``--connections`` concurrent keep-alive connections and reads each whole answer, once with each
client per round. CPU is ``time.process_time`` per request; the first pass of each client warms its
pool and is not counted. Both clients are measured on uvloop, as the gateway runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import procs
from harness.servers import BENCH_DIR, Lab

from isthmus.providers.h1 import H1Pool, Timeouts

PATH = "/unary/v1/chat/completions"
HEADERS = {"authorization": "Bearer sk-upstream", "content-type": "application/json"}

Send = Callable[[], Awaitable[bytes]]


async def _cpu_per_request(send: Send, requests: int, connections: int) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await send()

    per_worker = requests // connections
    await asyncio.gather(*(worker(per_worker // 4) for _ in range(connections)))  # warm the pool
    started = time.process_time()
    await asyncio.gather(*(worker(per_worker) for _ in range(connections)))
    return (time.process_time() - started) / (per_worker * connections) * 1e6


async def with_aiohttp(url: str, body: bytes, requests: int, connections: int) -> float:
    """The session and per-call arguments of ``providers/http.py`` before it had its own client."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300)
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",), trust_env=False
    )
    timeout = aiohttp.ClientTimeout(total=900, sock_connect=10, sock_read=None)

    async def send() -> bytes:
        headers = {**HEADERS, "accept-encoding": "gzip, deflate, br"}
        resp = await session.request(
            "POST", url + PATH, data=body, headers=headers, timeout=timeout, allow_redirects=False
        )
        try:
            return await resp.read()
        finally:
            resp.close()

    try:
        return await _cpu_per_request(send, requests, connections)
    finally:
        await session.close()


async def with_h1(url: str, body: bytes, requests: int, connections: int) -> float:
    pool = H1Pool()
    timeouts = Timeouts(connect=10, total=900, idle=None)

    async def send() -> bytes:
        resp = await pool.request("POST", url + PATH, HEADERS, body, timeouts, "bench")
        try:
            return await resp.read()
        finally:
            await resp.aclose()

    try:
        return await _cpu_per_request(send, requests, connections)
    finally:
        await pool.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    body = (BENCH_DIR / "payloads" / "openai_chat_request.json").read_bytes()
    pinning = procs.Pinning.for_machine()
    lab = Lab(Path(tempfile.mkdtemp(prefix="isthmus-client-cost-")), pinning)
    results: dict[str, list[float]] = {"aiohttp": [], "h1": []}
    try:
        lab.start_upstream()
        if pinning.target is not None:
            os.sched_setaffinity(0, pinning.target)
        for _ in range(args.rounds):
            for name, run in (("aiohttp", with_aiohttp), ("h1", with_h1)):
                cost = uvloop.run(run(lab.upstream_url, body, args.requests, args.connections))
                results[name].append(cost)
                print(f"{name:8} {cost:6.1f} µs/request", flush=True)
    finally:
        lab.stop_all()
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"median of {args.rounds} rounds: aiohttp {medians['aiohttp']:.1f} µs, "
        f"h1 {medians['h1']:.1f} µs per request ({medians['aiohttp'] / medians['h1']:.1f}×)"
    )


if __name__ == "__main__":
    main()
