"""Failover inside one request, by the design's rule table, with real upstreams on 127.0.0.1."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread, free_port

from .conftest import GATEWAY_KEY, GatewayFactory


def _config(
    upstream: str, first: str, *, first_byte: float = 60, total: float = 900, dead_port: int = 0
) -> str:
    """Model ``m``: a first route that misbehaves as told, then a healthy one on another provider."""
    return f"""
providers:
  - name: bad
    type: openai
    base_url: {upstream}/v1
    priority: 0
    timeouts: {{first_byte: {first_byte}, total: {total}}}
    keys: [{{name: k, secret: bad-secret}}]
  - name: good
    type: openai
    base_url: {upstream}/v1
    priority: 1
    keys: [{{name: k, secret: good-secret}}]
  - name: dead
    type: openai
    base_url: http://127.0.0.1:{dead_port}/v1
    priority: 0
    timeouts: {{connect: 2}}
    keys: [{{name: k, secret: dead-secret}}]
models:
  - name: m
    routes: [{{provider: bad, model: "{first}"}}, {{provider: good, model: mock-gpt}}]
  - name: only-bad
    routes: [{{provider: bad, model: "{first}"}}]
  - name: dead-first
    routes: [{{provider: dead, model: mock-gpt}}, {{provider: good, model: mock-gpt}}]
keys:
  - {{name: t, secret: {GATEWAY_KEY}}}
  - {{name: t2, secret: {GATEWAY_KEY}-2}}
  - {{name: t3, secret: {GATEWAY_KEY}-3}}
"""


def _clear(mock: BackgroundMockServer) -> None:
    httpx.delete(f"{mock.url}/_mock/requests")


def _upstream_keys(mock: BackgroundMockServer) -> list[str]:
    """Which provider key each upstream request carried, oldest first."""
    requests: list[dict[str, Any]] = httpx.get(f"{mock.url}/_mock/requests").json()
    return [r["headers"]["authorization"].removeprefix("Bearer ").removesuffix("-secret") for r in requests]


def _chat(
    gw: ServerThread, model: str = "m", stream: bool = False, text: str = "hello", key: str = GATEWAY_KEY
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("status", [500, 502, 503, 529, 429, 401, 403, 402, 404])
def test_status_fails_over(
    status: int, make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, f"mock-gpt+fail={status}"))
    _clear(mock_upstream)
    resp = _chat(gw)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "mock: hello"
    assert _upstream_keys(mock_upstream) == ["bad", "good"]


@pytest.mark.parametrize("status", [400, 413, 422])
def test_client_errors_return_as_is(
    status: int, make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, f"mock-gpt+fail={status}"))
    _clear(mock_upstream)
    resp = _chat(gw)
    assert resp.status_code == status
    assert "mock failure" in resp.json()["error"]["message"]  # the upstream's own body
    assert _upstream_keys(mock_upstream) == ["bad"]


def test_connection_refused_fails_over(
    make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, "mock-gpt", dead_port=free_port()))
    _clear(mock_upstream)
    resp = _chat(gw, "dead-first")
    assert resp.status_code == 200 and _upstream_keys(mock_upstream) == ["good"]


def test_first_byte_timeout_fails_over_for_streams(
    make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, "mock-gpt+ttft=3000", first_byte=0.5))
    started = time.monotonic()
    resp = _chat(gw, stream=True)
    assert resp.status_code == 200, resp.text
    assert "hello" in resp.text
    assert time.monotonic() - started < 2.5


def test_total_timeout_fails_over_for_unary(
    make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, "mock-gpt+fail=timeout", total=0.5))
    resp = _chat(gw)
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "mock: hello"


@pytest.mark.parametrize("mode", ["stream_error", "empty"])
def test_bad_200_streams_fail_over(
    mode: str, make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, f"mock-gpt+fail={mode}"))
    _clear(mock_upstream)
    resp = _chat(gw, stream=True, text="alpha beta")
    assert resp.status_code == 200
    assert '"error"' not in resp.text and "alpha" in resp.text
    assert _upstream_keys(mock_upstream) == ["bad", "good"]


def test_cut_after_commit_is_not_retried(
    make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, "mock-gpt+fail=cut+tokens=20"))
    _clear(mock_upstream)
    resp = _chat(gw, stream=True)
    assert resp.status_code == 200
    assert '"error"' in resp.text  # a protocol-correct error chunk ends the stream
    assert _upstream_keys(mock_upstream) == ["bad"]


def test_all_candidates_fail_with_one_clear_error(
    make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, "mock-gpt+fail=503"))
    resp = _chat(gw, "only-bad")
    assert resp.status_code == 503
    message = resp.json()["error"]["message"]
    assert "all upstream attempts failed" in message and "503" in message


def test_rate_limited_key_cools_down_then_recovers(
    make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, "mock-gpt+fail=429+retry_after=1"))
    _clear(mock_upstream)
    assert _chat(gw).status_code == 200
    # Another caller (no cache affinity yet) skips the cooling key entirely.
    assert _chat(gw, key=f"{GATEWAY_KEY}-2").status_code == 200
    assert _upstream_keys(mock_upstream) == ["bad", "good", "good"]
    time.sleep(1.2)
    _clear(mock_upstream)
    assert _chat(gw, key=f"{GATEWAY_KEY}-3").status_code == 200
    assert _upstream_keys(mock_upstream) == ["bad", "good"]


def test_all_rate_limited_returns_429_with_retry_after(
    make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer
) -> None:
    gw = make_gateway(_config(mock_upstream.url, "mock-gpt+fail=429+retry_after=7"))
    resp = _chat(gw, "only-bad")
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
