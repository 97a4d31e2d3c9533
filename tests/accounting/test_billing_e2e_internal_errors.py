"""A bug inside the gateway, through the running gateway: the caller gets a 500 in its own protocol's
error shape (or, once a stream has started, an error event that ends it), never a plain-text page or
a traceback, and the usage record says ``internal_error`` instead of keeping the status the request
had when the bug struck.

The bug is made by replacing one of the relay's own steps with a function that raises; everything
else (HTTP in and out, the mock upstream, the writer and the database) is real.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

import httpx
import pytest

from accounting.e2e_gateway import (
    PROTOCOLS,
    UsageApi,
    call,
    mock_gateway,
    mock_providers,
    request_id,
    sse_events,
)
from isthmus.relay import pipeline, wire
from servers import ServerThread

MODELS = {"openai-chat": "gpt-m", "openai-responses": "gpt-m", "anthropic": "claude-m", "gemini": "gemini-m"}
KEY = "sk-isthmus-internal-errors-0123456789"
TEXT = "abcd" * 10


def _config(upstream: str) -> str:
    return f"""
{mock_providers(upstream)}
models:
  - {{name: gpt-m, routes: [{{provider: oai, model: mock-gpt}}]}}
  - {{name: claude-m, routes: [{{provider: ant, model: mock-claude}}]}}
  - {{name: gemini-m, routes: [{{provider: gem, model: mock-gemini}}]}}
keys:
  - {{name: tester, secret: {KEY}}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with mock_gateway(_config, tmp_path_factory.mktemp("internal-errors")) as server:
        yield server


def _bug(*args: Any, **kwargs: Any) -> NoReturn:
    raise RuntimeError("a bug in the gateway, with sk-secret-details in its message")


def _check_record(record: dict[str, Any], protocol: str, http_status: int) -> None:
    assert record["status"] == "internal_error" and record["http_status"] == http_status
    assert record["protocol_in"] == protocol
    assert record["request_id"] in record["error"]
    assert "sk-secret-details" not in record["error"]  # the exception's text stays in the log


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_bug_before_the_answer_is_a_500_in_the_callers_protocol(
    protocol: str, gateway: ServerThread, usage: UsageApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "usage_from_response", _bug)  # runs on every unary answer
    rid = request_id(f"bug-{protocol}")
    resp = call(gateway.url, protocol, MODELS[protocol], TEXT, KEY, rid=rid)
    assert resp.status_code == 500, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["x-request-id"] == rid
    body = resp.json()
    if protocol == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "api_error", body
    elif protocol == "gemini":
        assert body["error"]["code"] == 500 and body["error"]["status"] == "INTERNAL", body
    else:
        assert body["error"]["type"] == "server_error", body
    assert rid in body["error"]["message"] and "sk-secret-details" not in resp.text
    _check_record(usage.record(rid), protocol, 500)
    assert rid in {r["request_id"] for r in usage.records(status="internal_error")}  # a filter value


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_bug_after_a_stream_started_ends_it_with_an_error_event(
    protocol: str, gateway: ServerThread, usage: UsageApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline.Relay, "_relay_rest", _bug)  # runs once the stream is committed
    rid = request_id(f"stream-bug-{protocol}")
    resp = call(gateway.url, protocol, MODELS[protocol], TEXT, KEY, rid=rid, stream=True)
    assert resp.status_code == 200  # already sent when the bug struck
    last = sse_events(resp.content)[-1]
    error = last.get("error") or last.get("response", {}).get("error")
    assert error is not None and rid in error["message"], last
    assert "sk-secret-details" not in resp.text
    _check_record(usage.record(rid), protocol, 200)


def test_the_gateway_keeps_serving_after_a_bug(gateway: ServerThread, usage: UsageApi) -> None:
    rid = request_id("after-bug")
    assert call(gateway.url, "openai-chat", "gpt-m", TEXT, KEY, rid=rid).status_code == 200
    assert usage.record(rid)["status"] == "ok"


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/v1/models", {"authorization": f"Bearer {KEY}"}), ("/v1beta/models", {"x-goog-api-key": KEY})],
)
def test_a_bug_while_listing_models_is_a_500_in_the_callers_protocol(
    path: str, headers: dict[str, str], gateway: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "encode_model_list", _bug)
    resp = httpx.get(gateway.url + path, headers=headers, timeout=10)
    assert resp.status_code == 500 and resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert resp.headers["x-request-id"] in error["message"] and "sk-secret-details" not in resp.text
    if path.startswith("/v1beta"):
        assert error["status"] == "INTERNAL"
    else:
        assert error["type"] == "server_error"
