"""Traces through the running gateway: every candidate of a request — skipped and why, tried with
its status, latency and error — stored with the usage record and read back by request id through
the admin API.

Model ``traced`` has three routes in priority order: ``limited`` answers 429 (retry after 60 s, so
its key cools down), ``broken`` answers 500 after 150 ms, ``healthy`` answers. The first request
tries all three; the next (from another gateway key, so cache affinity does not put the route that
served the first one in front) skips the cooling-down key, fails over once and is served.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from accounting.e2e_gateway import PRICE, UsageApi, call, mock_gateway, money, request_id
from servers import ServerThread

KEY = "sk-isthmus-traces-e2e-0123456789"
OTHER_KEY = "sk-isthmus-traces-e2e-other-01234"
LIMITED = "limited/main:mock-gpt+fail=429+retry_after=60"
BROKEN = "broken/main:mock-gpt+fail=500+latency=150"
HEALTHY = "healthy/main:mock-gpt"


def _config(upstream: str) -> str:
    providers = "\n".join(
        f"""  - name: {name}
    type: openai
    base_url: {upstream}/v1
    priority: {priority}
    keys: [{{name: main, secret: upstream-{name}-secret-0001}}]"""
        for priority, name in enumerate(("limited", "broken", "healthy"))
    )
    return f"""
providers:
{providers}
models:
  - name: traced
    routes:
      - {{provider: limited, model: "mock-gpt+fail=429+retry_after=60"}}
      - {{provider: broken, model: "mock-gpt+fail=500+latency=150"}}
      - {{provider: healthy, model: mock-gpt}}
    price: {PRICE}
keys:
  - {{name: tracer, secret: {KEY}}}
  - {{name: tracer-2, secret: {OTHER_KEY}}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with mock_gateway(_config, tmp_path_factory.mktemp("traces")) as server:
        yield server


def _steps(detail: dict[str, Any]) -> list[tuple[int, str, str, int | None]]:
    return [(a["attempt_no"], a["candidate"], a["status"], a["http_status"]) for a in detail["attempts"]]


def test_trace_of_skipped_failed_and_served_candidates(gateway: ServerThread) -> None:
    first, second = request_id("trace-first"), request_id("trace-second")
    for rid, key in ((first, KEY), (second, OTHER_KEY)):
        resp = call(gateway.url, "openai-chat", "traced", "abcd" * 10, key, rid=rid, knobs={"tokens": 3})
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"]
    with UsageApi(gateway.url) as usage:
        tried_all = usage.detail(first)
        detail = usage.detail(second)

    assert _steps(tried_all) == [
        (1, LIMITED, "failed", 429),
        (2, BROKEN, "failed", 500),
        (3, HEALTHY, "ok", 200),
    ], tried_all["attempts"]
    assert tried_all["record"]["attempts"] == 3

    assert _steps(detail) == [
        (1, LIMITED, "skipped", None),
        (2, BROKEN, "failed", 500),
        (3, HEALTHY, "ok", 200),
    ], detail["attempts"]
    skipped, failed, served = detail["attempts"]
    assert skipped["skipped"].startswith("cooling_down:rate_limited") and skipped["error"] is None
    assert failed["skipped"] is None and "500" in failed["error"]
    assert failed["latency_ms"] >= 150  # the upstream's own delay before its 500
    assert served["error"] is None and served["skipped"] is None and served["latency_ms"] >= 0
    assert [a["protocol"] for a in detail["attempts"]] == ["openai-chat"] * 3

    record = detail["record"]
    assert record["request_id"] == second and record["status"] == "ok"
    assert record["attempts"] == 2  # candidates actually tried; the skipped one is in the trace only
    assert record["provider_name"] == "healthy" and record["upstream_model"] == "mock-gpt"
    assert record["output_tokens"] == 3 and money(record["actual_cost"]) > 0
