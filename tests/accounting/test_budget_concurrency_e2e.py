"""50 parallel requests against a small budget, through running gateways: spend overshoots the budget
by at most what the requests in flight at once underestimated — in one gateway (memory backends) and
in two ``isthmus serve`` processes sharing Redis and PostgreSQL.

The key's budget fits five reservations. Every reservation is the gateway's estimate (a quarter
token per request byte at the input rate, ``max_tokens`` at the dearer of the output and reasoning
rates). The mock answers after a delay, so the requests overlap. Either each answer costs less than
its reservation (spend can never pass the budget), or the upstream reports 400 cache-write tokens the
estimate could not know about, so each admitted request costs more than it reserved and the budget
may be passed by at most (requests in flight at once) × (that difference); at most five can be in
flight, since five reservations fill the budget.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from accounting.e2e_gateway import (
    BASE,
    MILLION,
    PRICE,
    TIER,
    TIER_ABOVE,
    Tokens,
    UsageApi,
    generation,
    list_cost,
    money,
    start_gateway,
)
from isthmus.providers.mock_server import BackgroundMockServer
from relay.gateway_process import GatewayProcess
from services import create_database, drop_database

KEY = "sk-isthmus-budget-e2e-0123456789abcd"
REQUESTS = 50
MAX_TOKENS = 50
TEXT = "abcd" * 10  # 10 prompt tokens as the mock counts them
BODY = orjson.dumps(generation("openai-chat", "budget-m", TEXT, stream=False, max_tokens=MAX_TOKENS)[1])
# The reservation: ceil(bytes / 4) prompt tokens at $3, max_tokens at the $20 reasoning rate.
ESTIMATE = (math.ceil(len(BODY) / 4) * BASE.input + MAX_TOKENS * max(BASE.output, BASE.reasoning)) / MILLION
BUDGET = (ESTIMATE * 5 + ESTIMATE / 2).quantize(Decimal("0.000001"))  # five reservations fit, six do not
# Two kinds of answer: 50 output tokens (cheaper than the reservation), or the same plus 400 cache writes.
CHEAP = Tokens(input=10, output=MAX_TOKENS)
DEAR = Tokens(input=10, output=MAX_TOKENS, cache_write_5m=400)
KNOBS = {"cheap": {"x-mock-tokens": "50"}, "dear": {"x-mock-tokens": "50", "x-mock-cache-write": "400"}}
COST = {"cheap": list_cost(CHEAP, BASE, TIER, TIER_ABOVE), "dear": list_cost(DEAR, BASE, TIER, TIER_ABOVE)}


def _config(upstream: str) -> str:
    return f"""
providers:
  - {{name: oai, type: openai, base_url: {upstream}/v1, keys: [{{name: main, secret: upstream-openai-0001}}]}}
models:
  - {{name: budget-m, routes: [{{provider: oai, model: mock-gpt}}], price: {PRICE}}}
keys:
  - {{name: budgeted, secret: {KEY}, budget: {{total_usd: {BUDGET}}}}}
"""


def test_premises() -> None:
    """The numbers the bounds below rest on."""
    assert 5 * ESTIMATE <= BUDGET < 6 * ESTIMATE
    assert COST["cheap"] < ESTIMATE < COST["dear"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundMockServer]:
    with BackgroundMockServer() as server:
        yield server


async def _fire(urls: list[str], kind: str) -> list[httpx.Response]:
    """REQUESTS requests spread over ~0.6 s across ``urls``; each answer takes 300 ms upstream."""
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    headers |= {**KNOBS[kind], "x-mock-latency": "300"}
    rng = random.Random(7)
    limits = httpx.Limits(max_connections=REQUESTS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(n: int) -> httpx.Response:
            await asyncio.sleep(rng.uniform(0, 0.6))
            url = urls[n % len(urls)] + "/v1/chat/completions"
            return await client.post(url, content=BODY, headers=headers)

        return await asyncio.gather(*(one(n) for n in range(REQUESTS)))


def _check(responses: list[httpx.Response], usage: UsageApi, kind: str) -> None:
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(served) + len(refused) == REQUESTS, [
        r.text for r in responses if r.status_code not in (200, 429)
    ]
    assert served and refused  # the budget really was the constraint
    assert all("key 'budgeted' total budget" in r.json()["error"]["message"] for r in refused)

    records = usage.wait_records(lambda items: len(items) >= REQUESTS)
    assert len(records) == REQUESTS  # one record per request, refused ones included
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == len(served)
    assert sum(1 for r in records if r["status"] == "refused") == len(refused)
    assert all(money(r["actual_cost"]) == COST[kind] for r in ok)
    spent = sum((money(r["actual_cost"]) for r in records), Decimal(0))
    in_flight_max = int(BUDGET // ESTIMATE)  # reservations that fit in the budget at once
    underestimate = max(COST[kind] - ESTIMATE, Decimal(0))
    assert spent <= BUDGET + in_flight_max * underestimate, (spent, len(ok))
    assert spent <= BUDGET + BUDGET  # never more than the budget plus every reservation it can hold
    assert spent > BUDGET / 2
    if kind == "cheap":
        assert spent <= BUDGET


@pytest.mark.parametrize("kind", ["cheap", "dear"])
async def test_one_gateway_with_memory_budgets(
    kind: str, upstream: BackgroundMockServer, tmp_path: Path
) -> None:
    server = start_gateway(_config(upstream.url), tmp_path / "gw")
    try:
        responses = await _fire([server.url], kind)
        with UsageApi(server.url) as usage:
            _check(responses, usage, kind)
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["cheap", "dear"])
async def test_two_processes_sharing_redis_and_postgresql(
    kind: str, upstream: BackgroundMockServer, tmp_path: Path, postgres_url: str, clean_redis_url: str
) -> None:
    database_url = create_database(postgres_url, prefix="budget_e2e")
    config = tmp_path / "isthmus.yaml"
    config.write_text(_config(upstream.url))
    env = {"ISTHMUS_DATABASE_URL": database_url, "ISTHMUS_REDIS_URL": clean_redis_url}
    first = GatewayProcess(config, tmp_path / "a", env)
    second = GatewayProcess(config, tmp_path / "b", env)
    try:
        # One after the other: both upsert the config file's entities into the shared database.
        first.start()
        second.start()
        responses = await _fire([first.url, second.url], kind)
        with UsageApi(second.url) as usage:  # either instance reads the shared database
            _check(responses, usage, kind)
    finally:
        first.stop()
        second.stop()
        drop_database(postgres_url, database_url)
