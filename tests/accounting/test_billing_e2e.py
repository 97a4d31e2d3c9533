"""Billing through the running gateway, per front door, against hand-computed amounts.

A real gateway (``create_app`` over HTTP, SQLite) in front of the mock provider served over HTTP as
an ``openai``, an ``anthropic`` and a ``gemini`` provider. The mock's knobs (sent as ``x-mock-*``
headers, which the gateway forwards) make it report cache reads, 5-minute and 1-hour cache writes,
reasoning tokens and an exact number of output tokens; a long prompt crosses the price's long-context
tier. Each usage record, read back through the admin API once the writer has flushed it, must hold
exactly the tokens the upstream reported and the cost worked out here by hand.

What the upstream can report depends on its protocol, and the expectations say so: Chat Completions
has one cache-write count without a TTL (billed as 5-minute writes), Gemini reports no cache writes
at all (they come back as plain prompt tokens).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
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
    generation,
    list_cost,
    mock_gateway,
    money,
    request_id,
)
from servers import ServerThread

KEY = "sk-isthmus-billing-e2e-0123456789"

# Provider → (its key's cost multiplier, free tier).
PROVIDERS = {"oai": (Decimal("0.8"), False), "ant": (Decimal("1.25"), False), "gem": (Decimal("0.5"), False)}
PROVIDERS |= {"oaichat": (Decimal(1), False), "free": (Decimal("0.8"), True)}
# Front door → (public model, provider) for same-protocol passthrough.
PASSTHROUGH = {
    "openai-chat": ("gpt-m", "oai"),
    "openai-responses": ("gpt-m", "oai"),
    "anthropic": ("claude-m", "ant"),
    "gemini": ("gemini-m", "gem"),
}


def _config(upstream: str) -> str:
    return f"""
providers:
  - name: oai
    type: openai
    base_url: {upstream}/v1
    keys: [{{name: main, secret: upstream-openai-secret-0001, cost_multiplier: 0.8}}]
  - name: oaichat
    type: openai
    base_url: {upstream}/v1
    protocols: [openai-chat]
    keys: [{{name: main, secret: upstream-openai-secret-0002}}]
  - name: ant
    type: anthropic
    base_url: {upstream}
    keys:
      - {{name: main, secret: upstream-anthropic-secret-01, cost_multiplier: 1.25, capabilities: [cache_1h]}}
  - name: gem
    type: gemini
    base_url: {upstream}
    keys: [{{name: main, secret: upstream-gemini-secret-0001, cost_multiplier: 0.5}}]
  - name: free
    type: openai
    base_url: {upstream}/v1
    free_tier: true
    keys: [{{name: main, secret: upstream-free-secret-00001, cost_multiplier: 0.8}}]
models:
  - {{name: gpt-m, routes: [{{provider: oai, model: mock-gpt}}], price: {PRICE}}}
  - {{name: gpt-chat-only, routes: [{{provider: oaichat, model: mock-gpt}}], price: {PRICE}}}
  - {{name: claude-m, routes: [{{provider: ant, model: mock-claude}}], price: {PRICE}}}
  - {{name: gemini-m, routes: [{{provider: gem, model: mock-gemini}}], price: {PRICE}}}
  - {{name: free-m, routes: [{{provider: free, model: mock-gpt}}], price: {PRICE}}}
keys:
  - {{name: billing, secret: {KEY}}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with mock_gateway(_config, tmp_path_factory.mktemp("billing")) as server:
        yield server


@dataclass(frozen=True)
class Scenario:
    """What the mock is told to report for one request."""

    text: str  # the user's message: ceil(len / 4) prompt tokens
    cache_read: int
    cache_write: int
    cache_ttl: str
    reasoning: int
    tokens: int  # visible output words, one token each

    def knobs(self) -> dict[str, str | int]:
        return {
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "cache_ttl": self.cache_ttl,
            "reasoning": self.reasoning,
            "tokens": self.tokens,
        }

    def reported(self, upstream_protocol: str) -> Tokens:
        """The usage the upstream reports, as its protocol can carry it."""
        prompt = math.ceil(len(self.text) / 4)
        output = self.tokens + self.reasoning
        common = {"output": output, "cache_read": self.cache_read, "reasoning": self.reasoning}
        if upstream_protocol == "openai-chat":
            # One cache-write count and no TTL in Chat Completions usage: billed as 5-minute writes.
            return Tokens(input=prompt, cache_write_5m=self.cache_write, **common)
        if upstream_protocol == "gemini":
            # Gemini reports no cache writes; the written prompt is billed as plain input.
            return Tokens(input=prompt + self.cache_write, **common)
        if self.cache_ttl == "1h":
            return Tokens(input=prompt, cache_write_1h=self.cache_write, **common)
        return Tokens(input=prompt, cache_write_5m=self.cache_write, **common)


SCENARIOS = {
    # 10 + 200 + 300 = 510 prompt tokens: base rates.
    "cache-5m": Scenario(
        "abcd" * 10, cache_read=200, cache_write=300, cache_ttl="5m", reasoning=7, tokens=12
    ),
    # 1100 + 50 + 80 = 1230 prompt tokens: above the 1000-token tier, every rate from the tier.
    "long-1h": Scenario("wxyz" * 1100, cache_read=50, cache_write=80, cache_ttl="1h", reasoning=3, tokens=5),
}


def _check_record(
    record: dict[str, Any],
    expected: Tokens,
    *,
    provider: str,
    protocol_in: str,
    protocol_out: str,
    stream: bool,
) -> None:
    multiplier, free = PROVIDERS[provider]
    assert record["status"] == "ok" and record["http_status"] == 200
    assert (record["protocol_in"], record["protocol_out"]) == (protocol_in, protocol_out)
    assert record["provider_name"] == provider and record["provider_key_name"] == "main"
    assert record["stream"] is stream
    assert record["attempts"] == 1 and record["estimated"] is False
    assert_tokens(record, expected)
    expected_list = list_cost(expected, BASE, TIER, TIER_ABOVE)
    assert money(record["list_cost"]) == expected_list
    assert money(record["actual_cost"]) == (Decimal(0) if free else expected_list * multiplier)
    prices = record["prices"]
    assert prices["source"] == "config" and prices["ref"].startswith("price:")
    assert [Decimal(prices[k]) for k in ("input", "output", "reasoning")] == [3, 15, 20]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_passthrough_is_billed_exactly(
    protocol: str, stream: bool, scenario: str, gateway: ServerThread, usage: UsageApi
) -> None:
    case = SCENARIOS[scenario]
    model, provider = PASSTHROUGH[protocol]
    rid = request_id(f"bill-{protocol}")
    resp = call(gateway.url, protocol, model, case.text, KEY, stream=stream, rid=rid, knobs=case.knobs())
    assert resp.status_code == 200, resp.text
    record = usage.record(rid)
    _check_record(
        record,
        case.reported(protocol),
        provider=provider,
        protocol_in=protocol,
        protocol_out=protocol,
        stream=stream,
    )


def test_hand_computed_amounts(gateway: ServerThread, usage: UsageApi) -> None:
    """The two scenarios on Responses (which carries every kind of token), worked out on paper."""
    short, long = request_id("paper-short"), request_id("paper-long")
    for rid, case in ((short, SCENARIOS["cache-5m"]), (long, SCENARIOS["long-1h"])):
        resp = call(gateway.url, "openai-responses", "gpt-m", case.text, KEY, rid=rid, knobs=case.knobs())
        assert resp.status_code == 200, resp.text
    # 10×3 + 200×0.3 + 300×3.75 + (19−7)×15 + 7×20 = 30 + 60 + 1125 + 180 + 140 = 1535 per 1M tokens.
    record = usage.record(short)
    assert money(record["list_cost"]) == Decimal("0.001535")
    assert money(record["actual_cost"]) == Decimal("0.001228")  # × 0.8
    # Tier: 1100×6 + 50×0.6 + 80×12 + (8−3)×22.5 + 3×20 = 6600 + 30 + 960 + 112.5 + 60 = 7762.5.
    record = usage.record(long)
    assert money(record["list_cost"]) == Decimal("0.0077625")
    assert money(record["actual_cost"]) == Decimal("0.00621")


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("hit", [False, True], ids=["write", "read"])
def test_anthropic_cache_control_marks(
    stream: bool, hit: bool, gateway: ServerThread, usage: UsageApi
) -> None:
    """Prompt caching as Claude Code uses it: a 1-hour mark on the system prompt and a 5-minute
    mark on the last user block. Written, the prefix up to each mark is billed at its TTL's rate;
    read back (``cache=hit``), all of it at the cache-read rate."""
    system = "s" * 400  # 100 tokens up to the 1h mark
    text = "u" * 200  # 50 more up to the 5m mark
    body_blocks = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
    rid = request_id("marks")
    path, body = generation("anthropic", "claude-m", body_blocks, stream=stream)
    body["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    headers = {**auth_headers("anthropic", KEY), "x-request-id": rid, "x-mock-tokens": "4"}
    if hit:
        headers["x-mock-cache"] = "hit"
    resp = httpx.post(gateway.url + path, json=body, headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    expected = (
        Tokens(cache_read=150, output=4) if hit else Tokens(cache_write_1h=100, cache_write_5m=50, output=4)
    )
    _check_record(
        usage.record(rid),
        expected,
        provider="ant",
        protocol_in="anthropic",
        protocol_out="anthropic",
        stream=stream,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(
    ("door", "model", "provider", "upstream_protocol", "scenario"),
    [
        ("openai-chat", "claude-m", "ant", "anthropic", "long-1h"),
        ("anthropic", "gpt-chat-only", "oaichat", "openai-chat", "cache-5m"),
        ("gemini", "claude-m", "ant", "anthropic", "cache-5m"),
        ("openai-responses", "gemini-m", "gem", "gemini", "long-1h"),
    ],
)
def test_converted_request_is_billed_from_the_upstream_report(
    door: str,
    model: str,
    provider: str,
    upstream_protocol: str,
    scenario: str,
    stream: bool,
    gateway: ServerThread,
    usage: UsageApi,
) -> None:
    case = SCENARIOS[scenario]
    rid = request_id(f"convert-{door}")
    resp = call(gateway.url, door, model, case.text, KEY, stream=stream, rid=rid, knobs=case.knobs())
    assert resp.status_code == 200, resp.text
    _check_record(
        usage.record(rid),
        case.reported(upstream_protocol),
        provider=provider,
        protocol_in=door,
        protocol_out=upstream_protocol,
        stream=stream,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_free_tier_provider_costs_nothing(stream: bool, gateway: ServerThread, usage: UsageApi) -> None:
    case = SCENARIOS["cache-5m"]
    rid = request_id("free")
    resp = call(
        gateway.url, "openai-chat", "free-m", case.text, KEY, stream=stream, rid=rid, knobs=case.knobs()
    )
    assert resp.status_code == 200, resp.text
    record = usage.record(rid)
    _check_record(
        record,
        case.reported("openai-chat"),
        provider="free",
        protocol_in="openai-chat",
        protocol_out="openai-chat",
        stream=stream,
    )
    assert money(record["list_cost"]) > 0 and money(record["actual_cost"]) == 0
