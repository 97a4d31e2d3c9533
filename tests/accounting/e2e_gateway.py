"""Helpers for the accounting end-to-end tests: a running gateway's usage records read back through
its admin API, and the hand computation of what a request should cost.

The gateway under test is ``create_app`` served over real HTTP (``relay.conftest.make_gateway``) or
``isthmus serve`` in its own process (``relay.gateway_process.GatewayProcess``), in front of the mock
provider served over HTTP. Records are written by the gateway's background writer, so every read
polls until the record is there instead of sleeping a guessed time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson

from isthmus.app import create_app
from isthmus.config import Settings, parse_config
from isthmus.protocols.sse import SSEParser
from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-password-123"  # what make_gateway and GatewayProcess create
MILLION = Decimal(1_000_000)


PROTOCOLS = ("openai-chat", "openai-responses", "anthropic", "gemini")


def start_gateway(config_text: str, data_dir: Path) -> ServerThread:
    """``create_app`` from config text served over HTTP (SQLite in ``data_dir``); stop it after."""
    settings = Settings(
        data_dir=data_dir,
        secret_key="test-secret-key-material",
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,
    )
    return ServerThread(create_app(settings, parse_config(config_text))).start()


def mock_providers(upstream: str) -> str:
    """The config's ``providers:`` block: one OpenAI, Anthropic and Gemini provider on the mock."""
    return f"""providers:
  - {{name: oai, type: openai, base_url: {upstream}/v1, keys: [{{name: main, secret: oai-secret-0001}}]}}
  - {{name: ant, type: anthropic, base_url: {upstream}, keys: [{{name: main, secret: ant-secret-0001}}]}}
  - {{name: gem, type: gemini, base_url: {upstream}, keys: [{{name: main, secret: gem-secret-0001}}]}}"""


@contextmanager
def mock_gateway(config: Callable[[str], str], data_dir: Path) -> Iterator[ServerThread]:
    """A gateway in front of the mock provider served over HTTP; ``config`` gets the mock's URL."""
    with BackgroundMockServer() as upstream:
        server = start_gateway(config(upstream.url), data_dir)
        try:
            yield server
        finally:
            server.stop()


def generation(
    protocol: str,
    model: str,
    text: str | list[dict[str, Any]],
    *,
    stream: bool,
    max_tokens: int | None = 100,
) -> tuple[str, dict[str, Any]]:
    """(path, body) of a one-turn generation at ``protocol``'s front door.

    ``text`` is the user's message (for Anthropic it may be a list of content blocks). The mock
    counts ``ceil(len(text) / 4)`` prompt tokens for it in every protocol.
    """
    if protocol == "openai-chat":
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        path = "/v1/chat/completions"
    elif protocol == "openai-responses":
        body = {"model": model, "input": text}
        if max_tokens is not None:
            body["max_output_tokens"] = max_tokens
        path = "/v1/responses"
    elif protocol == "anthropic":
        body = {
            "model": model,
            "max_tokens": max_tokens or 1024,
            "messages": [{"role": "user", "content": text}],
        }
        path = "/v1/messages"
    elif protocol == "gemini":
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if max_tokens is not None:
            body["generationConfig"] = {"maxOutputTokens": max_tokens}
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{model}:{action}", body
    else:
        raise ValueError(protocol)
    if stream:
        body["stream"] = True
    return path, body


def auth_headers(protocol: str, key: str) -> dict[str, str]:
    """The credential header each protocol's official SDK sends."""
    if protocol == "anthropic":
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    if protocol == "gemini":
        return {"x-goog-api-key": key}
    return {"authorization": f"Bearer {key}"}


def call(
    base_url: str,
    protocol: str,
    model: str,
    text: str | list[dict[str, Any]],
    key: str,
    *,
    stream: bool = False,
    rid: str | None = None,
    knobs: Mapping[str, str | int] | None = None,
    max_tokens: int | None = 100,
    timeout: float = 30.0,
) -> httpx.Response:
    """One request at a front door; ``knobs`` become the mock's ``x-mock-*`` headers (the gateway
    forwards them upstream)."""
    path, body = generation(protocol, model, text, stream=stream, max_tokens=max_tokens)
    headers = {"content-type": "application/json", **auth_headers(protocol, key)}
    if rid is not None:
        headers["x-request-id"] = rid
    for name, value in (knobs or {}).items():
        headers[f"x-mock-{name.replace('_', '-')}"] = str(value)
    return httpx.post(base_url + path, content=orjson.dumps(body), headers=headers, timeout=timeout)


def sse_events(body: bytes) -> list[dict[str, Any]]:
    """The JSON data of every SSE event in a stream (``[DONE]`` and non-JSON data left out)."""
    events: list[dict[str, Any]] = []
    for event in SSEParser().feed(body + b"\n\n"):
        if event.data.startswith(b"{"):
            events.append(orjson.loads(event.data))
    return events


def request_id(label: str) -> str:
    """A fresh client request id (the gateway keeps a valid ``x-request-id``), so a test can find
    the record of each request it made."""
    return f"{label}-{uuid.uuid4().hex[:16]}"


class UsageApi:
    """A signed-in admin client for ``/api/usage``."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=f"{base_url}/api", timeout=30)
        resp = self.client.post("/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
        assert resp.status_code == 200, resp.text
        self.client.headers["x-csrf-token"] = resp.json()["csrf_token"]

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> UsageApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detail(self, rid: str, timeout: float = 20.0) -> dict[str, Any]:
        """``GET /usage/records/{rid}`` once the writer has stored it: record, attempts and log."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self.client.get(f"/usage/records/{rid}")
            if resp.status_code == 200:
                detail: dict[str, Any] = resp.json()
                return detail
            assert resp.status_code == 404, resp.text
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage record {rid!r} after {timeout:g}s")
            time.sleep(0.1)

    def record(self, rid: str, timeout: float = 20.0) -> dict[str, Any]:
        record: dict[str, Any] = self.detail(rid, timeout)["record"]
        return record

    def records(self, **filters: str | int) -> list[dict[str, Any]]:
        """Every record matching the filters (all pages), newest first."""
        items: list[dict[str, Any]] = []
        params: dict[str, str | int] = {**filters, "limit": 500}
        while True:
            resp = self.client.get("/usage/records", params=params)
            assert resp.status_code == 200, resp.text
            page = resp.json()
            items.extend(page["items"])
            if not page["next_cursor"]:
                return items
            params["cursor"] = page["next_cursor"]

    def wait_records(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0, **filters: str | int
    ) -> list[dict[str, Any]]:
        """Poll the listing until ``done(records)`` holds (e.g. the expected count has arrived)."""
        deadline = time.monotonic() + timeout
        while True:
            items = self.records(**filters)
            if done(items):
                return items
            if time.monotonic() > deadline:
                raise AssertionError(f"records never matched after {timeout:g}s; have {len(items)}")
            time.sleep(0.2)


def money(value: str | int | float | None) -> Decimal:
    """A money field as the API sends it (a decimal string), exactly."""
    assert isinstance(value, str), f"money must be a decimal string, got {value!r}"
    return Decimal(value)


@dataclass(frozen=True)
class Rates:
    """USD per 1M tokens, as configured in the test's price block."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal


@dataclass(frozen=True)
class Tokens:
    input: int = 0
    output: int = 0  # reasoning included, as every protocol counts it
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_write_5m + self.cache_write_1h


# The price every billed model is configured with in these tests (USD per 1M tokens).
BASE = Rates(
    input=Decimal(3),
    output=Decimal(15),
    cache_read=Decimal("0.3"),
    cache_write_5m=Decimal("3.75"),
    cache_write_1h=Decimal(6),
    reasoning=Decimal(20),
)
TIER_ABOVE = 1000
# In the long-context tier reasoning keeps its own (base) rate: it is priced apart.
TIER = Rates(
    input=Decimal(6),
    output=Decimal("22.5"),
    cache_read=Decimal("0.6"),
    cache_write_5m=Decimal("7.5"),
    cache_write_1h=Decimal(12),
    reasoning=Decimal(20),
)
PRICE = (
    "{input: 3, output: 15, cache_read: 0.3, cache_write_5m: 3.75, cache_write_1h: 6, reasoning: 20, "
    f"tiers: [{{above_tokens: {TIER_ABOVE}, input: 6, output: 22.5, cache_read: 0.6, "
    "cache_write_5m: 7.5, cache_write_1h: 12}]}"
)


def list_cost(tokens: Tokens, base: Rates, tier: Rates, tier_above: int) -> Decimal:
    """The list price of one request: every kind of token at its own rate, the long-context rates
    for the whole request once its prompt is above the tier's threshold, reasoning at its own rate."""
    rates = tier if tokens.prompt > tier_above else base
    plain_output = tokens.output - tokens.reasoning
    total = (
        tokens.input * rates.input
        + tokens.cache_read * rates.cache_read
        + tokens.cache_write_5m * rates.cache_write_5m
        + tokens.cache_write_1h * rates.cache_write_1h
        + plain_output * rates.output
        + tokens.reasoning * rates.reasoning
    )
    return total / MILLION


def assert_tokens(record: Mapping[str, Any], expected: Tokens) -> None:
    got = Tokens(
        input=record["input_tokens"],
        output=record["output_tokens"],
        cache_read=record["cache_read_tokens"],
        cache_write_5m=record["cache_write_5m_tokens"],
        cache_write_1h=record["cache_write_1h_tokens"],
        reasoning=record["reasoning_tokens"],
    )
    assert got == expected, f"record {record['request_id']}: tokens {got} != expected {expected}"


def content_deltas(protocol: str, events: list[dict[str, Any]]) -> int:
    """Text and reasoning deltas among a stream's events, as the client saw them. The mock sends one
    token per delta, so this is the least output a client that received them can be billed for."""
    count = 0
    for event in events:
        if protocol == "openai-chat":
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or {}
                count += bool(delta.get("content") or delta.get("reasoning_content"))
        elif protocol == "openai-responses":
            count += event.get("type") in (
                "response.output_text.delta",
                "response.reasoning_summary_text.delta",
            )
        elif protocol == "anthropic":
            delta = event.get("delta") or {}
            count += event.get("type") == "content_block_delta" and delta.get("type") in (
                "text_delta",
                "thinking_delta",
            )
        else:
            for candidate in event.get("candidates") or ():
                parts = (candidate.get("content") or {}).get("parts") or ()
                count += sum(1 for part in parts if part.get("text"))
    return count
