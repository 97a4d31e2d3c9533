"""The gateway side of the end-to-end tests: a real gateway (``create_app`` under uvicorn on 127.0.0.1)
in front of the mock upstream served over real HTTP as providers of each protocol, plus what a failing
test needs to print: every exchange the gateway served, what the upstream received, the gateway's log
and anything that tried to leave 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socketserver
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson

from isthmus.app import create_app
from isthmus.config import Settings, parse_config
from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread

GATEWAY_KEY = "sk-isthmus-e2e-0123456789abcdef0123"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-password-e2e-123"
# USD per million tokens; non-zero so usage records must show a cost.
# What the mock puts in the opaque reasoning fields it hands out (see isthmus.providers.mock_wire).
MOCK_SIGNATURE = b"mock-signature:"
MOCK_REASONING = b"mock-reasoning:"
PRICE = "{input: 3, output: 15, cache_read: 0.3, cache_write_5m: 3.75}"


@dataclass(frozen=True)
class Upstream:
    """One upstream protocol, served by the mock through a provider of a real kind."""

    protocol: str
    provider: str
    provider_yaml: str
    path_prefix: str  # where the mock receives its generation requests
    query_names: frozenset[str] = frozenset()  # query parameters this protocol's API takes


UPSTREAMS: dict[str, Upstream] = {
    "anthropic": Upstream(
        "anthropic",
        "up-anthropic",
        "type: anthropic\n    base_url: {url}",
        "/v1/messages",
        frozenset({"beta"}),
    ),
    "openai-chat": Upstream(
        "openai-chat",
        "up-openai-chat",
        "type: openai\n    base_url: {url}/v1\n    protocols: [openai-chat]",
        "/v1/chat/completions",
    ),
    "openai-responses": Upstream(
        "openai-responses",
        "up-openai-responses",
        "type: openai\n    base_url: {url}/v1\n    protocols: [openai-responses]",
        "/v1/responses",
    ),
    "gemini": Upstream(
        "gemini", "up-gemini", "type: gemini\n    base_url: {url}", "/v1beta/models/", frozenset({"alt"})
    ),
}


def upstream_model(public: str) -> str:
    return f"mock-{public}"


def gateway_config(mock_url: str, models: dict[str, str], knobs: str = "") -> str:
    """Providers of every kind pointed at the mock; ``models`` maps a public name to an upstream
    protocol (a key of :data:`UPSTREAMS`); ``knobs`` (e.g. ``+reasoning=3``) steer the mock's answers."""
    lines = ["providers:"]
    for up in UPSTREAMS.values():
        lines.append(f"  - name: {up.provider}\n    {up.provider_yaml.format(url=mock_url)}")
        lines.append(f"    keys: [{{name: main, secret: upstream-secret-{up.protocol}}}]")
    lines.append("models:")
    for public, protocol in models.items():
        provider = UPSTREAMS[protocol].provider
        lines.append(f"  - name: {public}")
        lines.append(f"    routes: [{{provider: {provider}, model: {upstream_model(public)}{knobs}}}]")
        lines.append(f"    price: {PRICE}")
    lines.append(f"keys:\n  - name: e2e\n    secret: {GATEWAY_KEY}")
    return "\n".join(lines) + "\n"


# --- what the gateway served ------------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    path: str
    query: str
    status: int | None = None
    request_id: str | None = None
    error_body: bytes = b""  # the start of a non-2xx answer

    def line(self) -> str:
        text = f"{self.method} {self.path}{'?' + self.query if self.query else ''} -> {self.status}"
        if self.request_id:
            text += f" [{self.request_id}]"
        if self.error_body:
            text += f"\n      {self.error_body[:1500].decode('utf-8', 'replace')}"
        return text


class RecordingApp:
    """Wraps the gateway's ASGI app to keep a line per HTTP exchange (the gateway-side view)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"))
        self.exchanges.append(exchange)

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":
                        exchange.request_id = value.decode("latin-1")
            elif (
                message["type"] == "http.response.body"
                and (exchange.status or 0) >= 400
                and len(exchange.error_body) < 4000
            ):
                exchange.error_body += message.get("body", b"")
            await send(message)

        await self.app(scope, receive, recording_send)


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            line = f"{record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info:
                # The last frames say where it broke; the whole traceback is in pytest's log capture.
                trace = logging.Formatter().formatException(record.exc_info).splitlines()
                line += "\n    " + "\n    ".join(trace[-12:])
            self.lines.append(line)


# --- the tripwire proxy -------------------------------------------------------------------------


class Tripwire:
    """An HTTP(S) proxy on 127.0.0.1 that forwards nothing: every connection is counted and closed.

    The CLIs get it as their proxy with only 127.0.0.1 exempt, so a request to any other host shows up
    here instead of leaving the machine. (Gemini CLI retries a refused proxy in a tight loop, hence the
    count and the short sample.)
    """

    def __init__(self) -> None:
        self.count = 0
        self.sample: list[str] = []
        self._lock = threading.Lock()
        tripwire = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(1.0)
                head = b""
                with contextlib.suppress(OSError):
                    head = self.request.recv(512)
                with tripwire._lock:
                    tripwire.count += 1
                    if len(tripwire.sample) < 10:
                        tripwire.sample.append(head.split(b"\r\n", 1)[0].decode("latin-1", "replace"))

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Tripwire:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.sample.clear()

    def report(self) -> str:
        with self._lock:
            if not self.count:
                return "nothing tried to leave 127.0.0.1"
            return f"{self.count} connection(s) tried to leave 127.0.0.1, e.g. " + "; ".join(self.sample)


# --- the gateway ---------------------------------------------------------------------------------


@dataclass
class E2EGateway:
    server: ServerThread
    recorder: RecordingApp
    mock: BackgroundMockServer
    logs: LogCapture
    models: dict[str, str]
    key: str = GATEWAY_KEY

    @property
    def url(self) -> str:
        return self.server.url

    def upstream_requests(self) -> list[dict[str, Any]]:
        """What the mock upstream received since this gateway started (it is cleared per gateway)."""
        response = httpx.get(f"{self.mock.url}/_mock/requests", timeout=10)
        response.raise_for_status()
        requests: list[dict[str, Any]] = response.json()
        return requests

    def exchanges(self, fragment: str = "") -> list[Exchange]:
        return [e for e in self.recorder.exchanges if fragment in e.path]

    def gateway_view(self, since: int = 0) -> str:
        """Exchanges served (from index ``since``), the upstream's log, the gateway's log."""
        lines = ["--- gateway served:"]
        served = self.recorder.exchanges[since:]
        lines += [f"  {e.line()}" for e in served] or ["  (no request reached the gateway)"]
        lines.append("--- upstream (mock) received:")
        try:
            requests = self.upstream_requests()
        except httpx.HTTPError as exc:
            requests = []
            lines.append(f"  (cannot read the mock's log: {exc})")
        lines += [f"  {describe_upstream_request(r)}" for r in requests] or ["  (nothing)"]
        lines += self.log_tail()
        return "\n".join(lines)

    def forget_upstream_requests(self) -> None:
        httpx.delete(f"{self.mock.url}/_mock/requests", timeout=10).raise_for_status()

    def log_tail(self) -> list[str]:
        if not self.logs.lines:
            return []
        return ["--- gateway log:", *(f"  {line}" for line in self.logs.lines[-40:])]


def describe_upstream_request(request: dict[str, Any]) -> str:
    text = f"{request['method']} {request['path']}"
    if request.get("query"):
        text += f"?{request['query']}"
    body = request.get("body") or ""
    try:
        parsed = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return text + f" ({len(body)} bytes, not JSON)"
    if isinstance(parsed, dict):
        if "model" in parsed:
            text += f" model={parsed['model']}"
        text += f" stream={parsed.get('stream', '-')} ({len(body)} bytes)"
        last = _last_turn(parsed)
        if last:
            text += f"\n      last turn: {last[:600]}"
    return text


def _last_turn(body: dict[str, Any]) -> str:
    for key in ("messages", "input", "contents"):
        value = body.get(key)
        if isinstance(value, list) and value:
            return orjson.dumps(value[-1]).decode()
        if isinstance(value, str):
            return value
    return ""


def foreign_query(request: dict[str, Any], upstream: Upstream) -> set[str]:
    """Query parameters an upstream request carries that its API does not take (a client's own flags,
    e.g. Claude Code's ``beta=true`` or Gemini's ``alt=sse``, leaking into another protocol; Google's
    APIs reject unknown query parameters)."""
    names = {part.partition("=")[0] for part in request.get("query", "").split("&") if part}
    return names - upstream.query_names


def request_model(request: dict[str, Any]) -> str | None:
    """The model an upstream request named (in the body, or in a Gemini path), without mock knobs."""
    path: str = request["path"]
    if path.startswith(("/v1beta/models/", "/v1/models/")):
        return path.split("/models/", 1)[1].split(":", 1)[0].split("+", 1)[0]
    body = request_body(request)
    model = body.get("model")
    return model.split("+", 1)[0] if isinstance(model, str) else None


def _is_mock_token(value: object, prefix: bytes) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return base64.b64decode(value, validate=True).startswith(prefix)
    except ValueError:
        return False


def missing_reasoning(first: dict[str, Any], second: dict[str, Any], upstream: str) -> str | None:
    """Why ``second`` (the request carrying a tool result) fails to hand the upstream back the reasoning
    it produced with the tool call in answer to ``first``, or None. Upstreams reject a tool turn whose
    reasoning is missing: Anthropic wants the signed thinking block, Gemini the function call's
    ``thoughtSignature``; a stateless Responses call wants the ``encrypted_content`` it was asked for."""
    body = request_body(second)
    if upstream == "anthropic":
        blocks = [
            block
            for message in body.get("messages") or ()
            if message.get("role") == "assistant" and isinstance(message.get("content"), list)
            for block in message["content"]
        ]
        if any(
            b.get("type") == "thinking" and _is_mock_token(b.get("signature"), MOCK_SIGNATURE) for b in blocks
        ):
            return None
        return f"no signed thinking block in the assistant turn: {blocks}"
    if upstream == "gemini":
        parts = [
            part
            for content in body.get("contents") or ()
            if content.get("role") == "model"
            for part in content.get("parts") or ()
        ]
        signed = [p for p in parts if "functionCall" in p or "function_call" in p]
        if signed and all(
            _is_mock_token(p.get("thoughtSignature") or p.get("thought_signature"), MOCK_SIGNATURE)
            for p in signed
        ):
            return None
        return f"function calls without their thoughtSignature: {parts}"
    if upstream == "openai-responses":
        if "reasoning.encrypted_content" not in (request_body(first).get("include") or ()):
            return None  # stored or not asked for: nothing to hand back
        items = [i for i in body.get("input") or () if isinstance(i, dict) and i.get("type") == "reasoning"]
        if any(_is_mock_token(i.get("encrypted_content"), MOCK_REASONING) for i in items):
            return None
        return f"no reasoning item with its encrypted_content in the input: {items}"
    return None  # Chat Completions has no way to hand reasoning back


def request_body(request: dict[str, Any]) -> dict[str, Any]:
    try:
        body = orjson.loads(request.get("body") or b"{}")
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def start_gateway(
    mock: BackgroundMockServer, models: dict[str, str], data_dir: Path, knobs: str = ""
) -> E2EGateway:
    """A gateway whose ``models`` (public name → upstream protocol) all route to the mock."""
    httpx.delete(f"{mock.url}/_mock/requests", timeout=10).raise_for_status()
    settings = Settings(
        data_dir=data_dir,
        secret_key="e2e-secret-key-material-0123456789",
        admin_username=ADMIN_USER,
        admin_password=ADMIN_PASSWORD,
    )
    recorder = RecordingApp(create_app(settings, parse_config(gateway_config(mock.url, models, knobs))))
    logs = LogCapture()
    logging.getLogger("isthmus").addHandler(logs)
    try:
        server = ServerThread(recorder).start()
    except BaseException:
        logging.getLogger("isthmus").removeHandler(logs)
        raise
    return E2EGateway(server, recorder, mock, logs, models)


def stop_gateway(gateway: E2EGateway) -> None:
    gateway.server.stop()
    logging.getLogger("isthmus").removeHandler(gateway.logs)


# --- usage records (admin API) -------------------------------------------------------------------

USAGE_RECORDS_PATH = "/api/usage/records"
PROMPT_TOKEN_FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens")


class UsageApiMissing(Exception):
    """The admin API does not serve usage records yet (the accounting work has not landed)."""


def admin_client(gateway: E2EGateway) -> httpx.Client:
    """An admin session on the gateway (one login per check, not per poll)."""
    client = httpx.Client(base_url=gateway.url, timeout=10)
    login = client.post("/api/auth/login", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
    login.raise_for_status()
    return client


def usage_records(client: httpx.Client) -> list[dict[str, Any]]:
    """The latest usage records, read through an :func:`admin_client`."""
    response = client.get(USAGE_RECORDS_PATH, params={"limit": 200})
    route_missing = ("no such admin API endpoint", '"detail":"Not Found"')
    if response.status_code == 404 and any(text in response.text for text in route_missing):
        raise UsageApiMissing(f"GET {USAGE_RECORDS_PATH} answers {response.status_code}: {response.text}")
    assert response.status_code == 200, f"GET {USAGE_RECORDS_PATH}: {response.status_code} {response.text}"
    data = response.json()
    items = data.get("items") if isinstance(data, dict) else data
    assert isinstance(items, list), f"unexpected usage records shape: {data}"
    return items


def _cost(record: dict[str, Any]) -> Decimal:
    for name in ("actual_cost", "cost", "list_cost"):
        value = record.get(name)
        if value is not None:
            return Decimal(str(value))
    return Decimal(0)


def wait_for_usage(
    gateway: E2EGateway, model: str, count: int, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """The usage records of ``model`` once there are at least ``count`` (records are written in
    batches after the response, so poll). Each must show tokens and a cost."""
    deadline = time.monotonic() + timeout
    records: list[dict[str, Any]] = []
    client = admin_client(gateway)
    try:
        while True:
            records = [r for r in usage_records(client) if r.get("model_requested") == model]
            if len(records) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        client.close()
    assert len(records) >= count, f"expected {count} usage record(s) for {model}, got {records}"
    for record in records:
        assert record.get("status") in (None, "ok"), f"usage record not ok: {record}"
        # Clients that mark cache breakpoints (Claude Code) may have every prompt token in a cache field.
        prompt = sum(int(record.get(name) or 0) for name in PROMPT_TOKEN_FIELDS)
        assert prompt > 0, f"no prompt tokens: {record}"
        assert int(record.get("output_tokens") or 0) > 0, f"no output tokens: {record}"
        assert _cost(record) > 0, f"no cost: {record}"
    return records
