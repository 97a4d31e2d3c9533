"""Refusals through the running gateway: a rate limit and exhausted budgets answer 429 in the
caller's protocol, with ``retry-after`` (and ``x-ratelimit-*`` for limits), and still leave a usage
record with status ``refused`` that costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from accounting.e2e_gateway import (
    PRICE,
    PROTOCOLS,
    UsageApi,
    call,
    mock_gateway,
    mock_providers,
    money,
    request_id,
)
from servers import ServerThread

MODELS = {"openai-chat": "gpt-m", "openai-responses": "gpt-m", "anthropic": "claude-m", "gemini": "gemini-m"}
TEXT = "abcd" * 10


def _secret(name: str) -> str:
    return f"sk-isthmus-refusals-{name}-0123456789"


def _config(upstream: str) -> str:
    rpm_keys = "\n".join(
        f"  - {{name: rpm-{p}, secret: {_secret('rpm-' + p)}, limits: {{rpm: 2}}}}" for p in PROTOCOLS
    )
    return f"""
{mock_providers(upstream)}
models:
  - {{name: gpt-m, routes: [{{provider: oai, model: mock-gpt}}], price: {PRICE}}}
  - {{name: claude-m, routes: [{{provider: ant, model: mock-claude}}], price: {PRICE}}}
  - {{name: gemini-m, routes: [{{provider: gem, model: mock-gemini}}], price: {PRICE}}}
teams:
  - {{name: research, budget: {{daily_usd: 0.003}}}}
users:
  - {{username: alice, team: research}}
keys:
{rpm_keys}
  - {{name: budgeted, secret: {_secret("budgeted")}, budget: {{total_usd: 0.003}}}}
  - {{name: alice-laptop, user: alice, secret: {_secret("alice")}}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with mock_gateway(_config, tmp_path_factory.mktemp("refusals")) as server:
        yield server


def _error_message(protocol: str, resp: httpx.Response) -> str:
    """The refusal's message, checking it has the caller's protocol's error shape."""
    body: dict[str, Any] = resp.json()
    if protocol == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error", body
    elif protocol == "gemini":
        assert body["error"]["code"] == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED", body
    else:
        assert set(body["error"]) >= {"message", "type", "code"}, body
    message: str = body["error"]["message"]
    return message


def _check_refused_record(record: dict[str, Any], protocol: str, words: str) -> None:
    assert record["status"] == "refused" and record["http_status"] == 429
    assert record["protocol_in"] == protocol and record["attempts"] == 0
    assert words in (record["error"] or "")
    assert record["provider_name"] is None and record["upstream_model"] is None
    assert money(record["list_cost"]) == 0 and money(record["actual_cost"]) == 0
    assert record["input_tokens"] == record["output_tokens"] == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_third_request_within_a_minute_is_refused_by_rpm(
    protocol: str, gateway: ServerThread, usage: UsageApi
) -> None:
    key = _secret(f"rpm-{protocol}")
    for _ in range(2):
        assert call(gateway.url, protocol, MODELS[protocol], TEXT, key).status_code == 200
    rid = request_id(f"rpm-{protocol}")
    resp = call(gateway.url, protocol, MODELS[protocol], TEXT, key, rid=rid)
    assert resp.status_code == 429, resp.text
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert resp.headers["x-ratelimit-limit-requests"] == "2"
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert resp.headers["x-ratelimit-reset-requests"]
    assert resp.headers["x-request-id"] == rid
    limited = f"key 'rpm-{protocol}' is limited to 2 requests per minute"
    assert limited in _error_message(protocol, resp)
    _check_refused_record(usage.record(rid), protocol, limited)
    ok = usage.records(key_id=usage.record(rid)["key_id"], status="ok")
    assert len(ok) == 2  # the two served requests, billed as usual


def test_exhausted_key_budget_is_refused_naming_it(gateway: ServerThread, usage: UsageApi) -> None:
    """$0.003 in all. The first request reserves its estimate (about 38 prompt tokens at $3 and 100
    output tokens at the $20 reasoning rate: $0.002114) and, with 300 hidden cache-write tokens,
    spends 10×3 + 300×3.75 + 100×15 = 2655 per 1M = $0.002655. Nothing more fits."""
    key = _secret("budgeted")
    first = request_id("budget-first")
    knobs = {"cache_write": 300, "tokens": 100}
    assert call(gateway.url, "openai-chat", "gpt-m", TEXT, key, rid=first, knobs=knobs).status_code == 200
    assert money(usage.record(first)["actual_cost"]) == Decimal("0.002655")
    for protocol in PROTOCOLS:
        rid = request_id(f"budget-{protocol}")
        resp = call(gateway.url, protocol, MODELS[protocol], TEXT, key, rid=rid)
        assert resp.status_code == 429, resp.text
        message = _error_message(protocol, resp)
        assert "key 'budgeted' total budget of $0.003 is exhausted" in message
        assert "$0.002655 spent or reserved" in message
        assert "retry-after" not in resp.headers  # a total budget never renews
        _check_refused_record(usage.record(rid), protocol, "key 'budgeted' total budget")


def test_exhausted_team_budget_names_the_team(gateway: ServerThread, usage: UsageApi) -> None:
    key = _secret("alice")
    first = request_id("team-first")
    knobs = {"cache_write": 300, "tokens": 100}
    assert call(gateway.url, "anthropic", "claude-m", TEXT, key, rid=first, knobs=knobs).status_code == 200
    rid = request_id("team-refused")
    resp = call(gateway.url, "anthropic", "claude-m", TEXT, key, rid=rid)
    assert resp.status_code == 429, resp.text
    assert "team 'research' daily budget of $0.003 is exhausted" in _error_message("anthropic", resp)
    assert 1 <= int(resp.headers["retry-after"]) <= 86400  # until the next local midnight
    record = usage.record(rid)
    _check_refused_record(record, "anthropic", "team 'research' daily budget")
    assert record["team_id"] is not None and record["user_id"] is not None
