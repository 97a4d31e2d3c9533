"""Streams that do not end normally, billed through the running gateway: cut by the upstream after
the commit point, abandoned by the client, and retried after a failed attempt.

Completed streams are covered with the unary calls in ``test_billing_e2e``. Here the upstream's final
usage never arrives (cut, abandoned), so the record keeps what the upstream did report (Anthropic's
``message_start`` and Gemini's chunks carry the prompt) and estimates the rest — the prompt from the
request's size, the output from the content relayed — and says so with ``estimated``. A request that
failed over is billed once, for the attempt that answered, at that provider key's multiplier.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from accounting.e2e_gateway import (
    BASE,
    PRICE,
    PROTOCOLS,
    TIER,
    TIER_ABOVE,
    Tokens,
    UsageApi,
    assert_tokens,
    auth_headers,
    call,
    content_deltas,
    generation,
    list_cost,
    mock_gateway,
    money,
    request_id,
    sse_events,
)
from isthmus.protocols.sse import SSEParser
from servers import ServerThread

KEY = "sk-isthmus-streams-e2e-0123456789"
MULTIPLIER = {"oai": Decimal("0.8"), "ant": Decimal("1.25"), "gem": Decimal("0.5"), "good": Decimal("0.5")}
MODELS = {"openai-chat": "gpt-m", "openai-responses": "gpt-m", "anthropic": "claude-m", "gemini": "gemini-m"}
PROVIDER = {"openai-chat": "oai", "openai-responses": "oai", "anthropic": "ant", "gemini": "gem"}
TEXT = "abcd" * 10  # 10 prompt tokens


def _config(upstream: str) -> str:
    bad = "\n".join(
        f"""  - name: {name}
    type: openai
    base_url: {upstream}/v1
    priority: 0
    keys: [{{name: main, secret: upstream-{name}-secret-0001, cost_multiplier: 3}}]"""
        for name in ("bad1", "bad2", "bad3")
    )
    return f"""
providers:
  - name: oai
    type: openai
    base_url: {upstream}/v1
    keys: [{{name: main, secret: upstream-openai-secret-0001, cost_multiplier: 0.8}}]
  - name: ant
    type: anthropic
    base_url: {upstream}
    keys: [{{name: main, secret: upstream-anthropic-secret-01, cost_multiplier: 1.25}}]
  - name: gem
    type: gemini
    base_url: {upstream}
    keys: [{{name: main, secret: upstream-gemini-secret-0001, cost_multiplier: 0.5}}]
  - name: good
    type: openai
    base_url: {upstream}/v1
    priority: 1
    keys: [{{name: main, secret: upstream-good-secret-0001, cost_multiplier: 0.5}}]
{bad}
models:
  - {{name: gpt-m, routes: [{{provider: oai, model: mock-gpt}}], price: {PRICE}}}
  - {{name: claude-m, routes: [{{provider: ant, model: mock-claude}}], price: {PRICE}}}
  - {{name: gemini-m, routes: [{{provider: gem, model: mock-gemini}}], price: {PRICE}}}
  - name: retry-unary
    routes: [{{provider: bad1, model: "mock-gpt+fail=500"}}, {{provider: good, model: mock-gpt}}]
    price: {PRICE}
  - name: retry-stream
    routes: [{{provider: bad2, model: "mock-gpt+fail=500"}}, {{provider: good, model: mock-gpt}}]
    price: {PRICE}
  - name: retry-empty
    routes: [{{provider: bad3, model: "mock-gpt+fail=empty"}}, {{provider: good, model: mock-gpt}}]
    price: {PRICE}
keys:
  - {{name: streams, secret: {KEY}}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with mock_gateway(_config, tmp_path_factory.mktemp("streams")) as server:
        yield server


def _reported_prompt(protocol: str, body_bytes: int) -> Tokens:
    """The prompt side of a stream whose final usage never came: what the upstream reported up
    front, or else the gateway's estimate of a quarter token per request byte."""
    if protocol == "anthropic":  # message_start carries the whole prompt usage
        return Tokens(input=10, cache_read=200, cache_write_5m=300)
    if protocol == "gemini":  # every chunk carries the prompt; cache writes come back as input
        return Tokens(input=310, cache_read=200)
    return Tokens(input=body_bytes // 4)  # Chat and Responses report usage only at the end


def _check_partial(record: dict[str, Any], protocol: str, body_bytes: int, seen: int, full: int) -> None:
    """An unfinished stream: the prompt as reported (or estimated), the output estimated from the
    content relayed — at least what the client saw, at most the whole answer."""
    prompt = _reported_prompt(protocol, body_bytes)
    assert record["estimated"] is True
    assert seen <= record["output_tokens"] <= full, (seen, record["output_tokens"], full)
    assert record["reasoning_tokens"] <= record["output_tokens"]
    billed = Tokens(
        input=prompt.input,
        output=record["output_tokens"],
        cache_read=prompt.cache_read,
        cache_write_5m=prompt.cache_write_5m,
        reasoning=record["reasoning_tokens"],
    )
    assert_tokens(record, billed)
    expected_list = list_cost(billed, BASE, TIER, TIER_ABOVE)
    assert money(record["list_cost"]) == expected_list
    assert money(record["actual_cost"]) == expected_list * MULTIPLIER[PROVIDER[protocol]]


def _assert_billed_once(usage: UsageApi, rid: str) -> None:
    """One record for the request, and the key's hourly rollup (what budgets and dashboards add up)
    equals the sum of the key's records: nothing was counted twice."""
    record = usage.record(rid)
    resp = usage.client.get("/usage/breakdown", params={"by": "key", "key_id": record["key_id"]})
    assert resp.status_code == 200, resp.text
    rolled = money(resp.json()["total"]["actual_cost"])
    records = usage.records(key_id=record["key_id"])
    assert sum(1 for r in records if r["request_id"] == rid) == 1
    assert rolled == sum((money(r["actual_cost"]) for r in records), Decimal(0))


CUT_KNOBS: dict[str, str | int] = {
    "cache_read": 200,
    "cache_write": 300,
    "reasoning": 6,
    "tokens": 20,
    "fail": "cut",
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stream_cut_by_the_upstream(protocol: str, gateway: ServerThread, usage: UsageApi) -> None:
    rid = request_id(f"cut-{protocol}")
    resp = call(gateway.url, protocol, MODELS[protocol], TEXT, KEY, stream=True, rid=rid, knobs=CUT_KNOBS)
    assert resp.status_code == 200  # committed before the cut: the error arrives as a stream event
    events = sse_events(resp.content)
    seen = content_deltas(protocol, events)
    assert seen > 0
    assert "ended before its terminal event" in resp.text
    record = usage.record(rid)
    assert record["status"] == "cut" and record["http_status"] == 200
    assert "terminal event" in (record["error"] or "")
    _check_partial(record, protocol, len(resp.request.content), seen, full=26)
    _assert_billed_once(usage, rid)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stream_abandoned_by_the_client(protocol: str, gateway: ServerThread, usage: UsageApi) -> None:
    """The client reads a few deltas of a slow stream (100 tokens at 20 a second) and hangs up."""
    rid = request_id(f"gone-{protocol}")
    path, body = generation(protocol, MODELS[protocol], TEXT, stream=True, max_tokens=200)
    raw = orjson.dumps(body)
    headers = {
        "content-type": "application/json",
        **auth_headers(protocol, KEY),
        "x-request-id": rid,
        "x-mock-tokens": "100",
        "x-mock-tps": "20",
        "x-mock-cache-read": "200",
        "x-mock-cache-write": "300",
    }
    parser = SSEParser()
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", gateway.url + path, content=raw, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        for chunk in resp.iter_raw():
            events.extend(orjson.loads(e.data) for e in parser.feed(chunk) if e.data.startswith(b"{"))
            if content_deltas(protocol, events) >= 5:
                break  # leaving the block closes the unfinished connection
    assert time.monotonic() - started < 4  # left well before the 5 s answer was done
    seen = content_deltas(protocol, events)
    record = usage.record(rid)
    assert record["status"] == "disconnected"
    _check_partial(record, protocol, len(raw), seen, full=100)
    _assert_billed_once(usage, rid)


@pytest.mark.parametrize(("model", "stream"), [("retry-unary", False), ("retry-stream", True)])
def test_retry_after_a_failed_attempt_bills_only_the_answer(
    model: str, stream: bool, gateway: ServerThread, usage: UsageApi
) -> None:
    rid = request_id(model)
    knobs = {"cache_read": 200, "reasoning": 7, "tokens": 12}
    resp = call(gateway.url, "openai-chat", model, TEXT, KEY, stream=stream, rid=rid, knobs=knobs)
    assert resp.status_code == 200, resp.text
    detail = usage.detail(rid)
    record = detail["record"]
    assert record["status"] == "ok" and record["attempts"] == 2
    assert record["provider_name"] == "good" and record["estimated"] is False
    expected = Tokens(input=10, output=19, cache_read=200, reasoning=7)
    assert_tokens(record, expected)
    expected_list = list_cost(expected, BASE, TIER, TIER_ABOVE)
    assert money(record["list_cost"]) == expected_list
    assert money(record["actual_cost"]) == expected_list * MULTIPLIER["good"]  # not the failed key's 3×
    trace = [(a["candidate"], a["status"], a["http_status"]) for a in detail["attempts"]]
    bad = "bad1" if model == "retry-unary" else "bad2"
    assert trace == [(f"{bad}/main:mock-gpt+fail=500", "failed", 500), ("good/main:mock-gpt", "ok", 200)]
    assert "500" in (detail["attempts"][0]["error"] or "")
    _assert_billed_once(usage, rid)


def test_retry_after_an_empty_stream_does_not_bill_the_empty_attempt(
    gateway: ServerThread, usage: UsageApi
) -> None:
    """The first upstream answers 200 with no content but reports the prompt's usage; the gateway
    fails over before committing, and only the second attempt's usage is billed."""
    rid = request_id("retry-empty")
    knobs = {"cache_read": 200, "tokens": 12}
    resp = call(gateway.url, "openai-chat", "retry-empty", TEXT, KEY, stream=True, rid=rid, knobs=knobs)
    assert resp.status_code == 200, resp.text
    detail = usage.detail(rid)
    record = detail["record"]
    assert [a["status"] for a in detail["attempts"]] == ["failed", "ok"]
    expected = Tokens(input=10, output=12, cache_read=200)
    assert_tokens(record, expected)
    assert money(record["actual_cost"]) == list_cost(expected, BASE, TIER, TIER_ABOVE) * MULTIPLIER["good"]
    _assert_billed_once(usage, rid)


@pytest.mark.parametrize(
    ("protocol", "stream"), [(p, True) for p in PROTOCOLS] + [("anthropic", False), ("gemini", False)]
)
def test_answer_stopped_by_max_tokens_is_billed_as_incomplete(
    protocol: str, stream: bool, gateway: ServerThread, usage: UsageApi
) -> None:
    """20 words asked of the mock, 5 allowed by ``max_tokens``: the upstream reports 5 and stops
    with its length reason; the record says ``incomplete`` and bills what was reported."""
    rid = request_id(f"incomplete-{protocol}")
    resp = call(
        gateway.url,
        protocol,
        MODELS[protocol],
        TEXT,
        KEY,
        stream=stream,
        rid=rid,
        knobs={"tokens": 20, "cache_read": 200},
        max_tokens=5,
    )
    assert resp.status_code == 200, resp.text
    record = usage.record(rid)
    assert record["status"] == "incomplete" and record["estimated"] is False
    expected = Tokens(input=10, output=5, cache_read=200)
    assert_tokens(record, expected)
    expected_list = list_cost(expected, BASE, TIER, TIER_ABOVE)
    assert money(record["list_cost"]) == expected_list
    assert money(record["actual_cost"]) == expected_list * MULTIPLIER[PROVIDER[protocol]]


@pytest.mark.parametrize(("protocol", "stream"), [("openai-chat", True), ("anthropic", False)])
def test_client_gone_before_the_answer_costs_nothing(
    protocol: str, stream: bool, gateway: ServerThread, usage: UsageApi
) -> None:
    """The client gives up while the gateway still waits for the first content (a stream's
    read-ahead, or a whole answer): nothing reached it, nothing is billed, and the trace shows the
    attempt abandoned rather than served."""
    rid = request_id(f"early-{protocol}")
    knobs = {"ttft": 3000} if stream else {"latency": 3000}
    with pytest.raises(httpx.ReadTimeout):
        call(
            gateway.url,
            protocol,
            MODELS[protocol],
            TEXT,
            KEY,
            stream=stream,
            rid=rid,
            knobs=knobs,
            timeout=0.5,
        )
    detail = usage.detail(rid)
    record = detail["record"]
    assert record["status"] == "disconnected" and record["http_status"] == 499
    assert_tokens(record, Tokens())
    assert money(record["list_cost"]) == 0 and money(record["actual_cost"]) == 0
    [attempt] = detail["attempts"]
    assert attempt["status"] == "failed" and attempt["error"] == "client disconnected"
    assert attempt["latency_ms"] >= 400  # it waited for the upstream until the client left
    _assert_billed_once(usage, rid)
