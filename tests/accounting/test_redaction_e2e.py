"""Redaction through the running gateway: at the ``full`` log level — the gateway's setting, or a
key's own override while the gateway logs at ``base`` — requests whose headers and bodies carry the
gateway key, provider secrets, credential headers and ``?key=`` are stored without any of them, while
the rest of each body is kept.

Every place a secret could land is read back: the admin API's record detail (log, record error,
attempt errors), every row of the request-log, usage and attempt tables read straight from the
database, and finally the raw bytes of every file in the gateway's data directory (database, WAL,
spool), so nothing stored anywhere holds a secret in clear.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa

from accounting.e2e_gateway import UsageApi, auth_headers, generation, request_id, start_gateway
from isthmus.providers.mock_server import BackgroundMockServer
from isthmus.store.usage_tables import RequestLogRow, UsageAttemptRow, UsageRecordRow
from relay.upstreams import ErrorUpstream
from servers import ServerThread

LOGGED_KEY = "sk-isthmus-redaction-logged-0123456789abcdef"
QUIET_KEY = "sk-isthmus-redaction-quiet-0123456789abcdef"
PROVIDER_SECRETS = {
    "oai": "prov-openai-secret-7f3a9c1e5b",
    "ant": "prov-anthropic-secret-2d8e4f6a0c",
    "gem": "prov-gemini-secret-9b1c3e5d7f",
    "echo": "prov-echoed-secret-4a6c8e0b2d",
}
# Credentials a client may send or paste that the gateway cannot know in advance: masked by shape.
HEADER_API_KEY = "hdr-x-api-key-value-31415926"
HEADER_GOOG_KEY = "hdr-goog-key-value-27182818"
PASTED_API_KEY = "pasted-x-api-key-value-1618033"
PASTED_GOOG_KEY = "pasted-goog-key-value-1414213"
PASTED_QUERY_KEY = "pasted-query-key-value-1732050"
MARKER = "keep-this-visible-marker"

MODELS = {"openai-chat": "gpt-m", "openai-responses": "gpt-m", "anthropic": "claude-m", "gemini": "gemini-m"}


def _all_secrets() -> list[str]:
    return [
        LOGGED_KEY,
        QUIET_KEY,
        *PROVIDER_SECRETS.values(),
        HEADER_API_KEY,
        HEADER_GOOG_KEY,
        PASTED_API_KEY,
        PASTED_GOOG_KEY,
        PASTED_QUERY_KEY,
    ]


def _prompt() -> str:
    """A user message quoting every kind of secret, each as one word (the mock echoes word by word,
    so each arrives whole in one stream event), and a marker that must survive."""
    return " ".join(
        [
            f"{MARKER} my gateway key is {LOGGED_KEY} and another tenant's is {QUIET_KEY};",
            "the providers' are",
            *(PROVIDER_SECRETS[name] for name in ("oai", "ant", "gem")),
            f"x-api-key:{PASTED_API_KEY}",
            f'"x-goog-api-key":"{PASTED_GOOG_KEY}"',
            f"https://generativelanguage.googleapis.com/v1beta/models?key={PASTED_QUERY_KEY}",
            f"Authorization: Bearer {LOGGED_KEY}",
            "end",
        ]
    )


def _config(upstream: str, errors: str, gateway_level: str) -> str:
    kinds = {"oai": ("openai", f"{upstream}/v1"), "ant": ("anthropic", upstream), "gem": ("gemini", upstream)}
    kinds["echo"] = ("openai", f"{errors}/v1")
    providers = "\n".join(
        f"  - {{name: {name}, type: {kind}, base_url: {url}, keys: [{{name: k, secret: {secret}}}]}}"
        for name, (kind, url) in kinds.items()
        for secret in [PROVIDER_SECRETS[name]]
    )
    return f"""
log_detail: {gateway_level}
providers:
{providers}
models:
  - {{name: gpt-m, routes: [{{provider: oai, model: mock-gpt}}]}}
  - {{name: claude-m, routes: [{{provider: ant, model: mock-claude}}]}}
  - {{name: gemini-m, routes: [{{provider: gem, model: mock-gemini}}]}}
  - {{name: echo-401, routes: [{{provider: echo, model: status-401}}]}}
  - {{name: echo-400, routes: [{{provider: echo, model: status-400}}]}}
keys:
  - {{name: logged, secret: {LOGGED_KEY}, log_detail: full}}
  - {{name: quiet, secret: {QUIET_KEY}}}
"""


@dataclass
class Gateway:
    server: ServerThread
    data_dir: Path
    level: str  # the gateway's own log_detail


@pytest.fixture(scope="module", params=["full", "base"], ids=["gateway-full", "key-override"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``full`` for everyone, or ``base`` with the ``logged`` key overriding it to ``full``."""
    level: str = request.param
    errors = ErrorUpstream()
    data_dir = tmp_path_factory.mktemp(f"redaction-{level}")
    with BackgroundMockServer() as upstream, errors.server() as error_server:
        server = start_gateway(_config(upstream.url, error_server.url, level), data_dir)
        try:
            yield Gateway(server, data_dir, level)
        finally:
            server.stop()


def _send(gw: Gateway, protocol: str, model: str, *, stream: bool, rid: str) -> httpx.Response:
    path, body = generation(protocol, model, _prompt(), stream=stream)
    headers = {
        "content-type": "application/json",
        **auth_headers(protocol, LOGGED_KEY),
        "x-request-id": rid,
        "x-note": f"forwarded-for {MARKER} with {LOGGED_KEY} and {PROVIDER_SECRETS['oai']}",
    }
    # Credential headers the gateway reads after this door's own (Bearer, then x-api-key, then
    # x-goog-api-key), so they are sent but unused: still never stored.
    if protocol in ("openai-chat", "openai-responses"):
        headers["x-api-key"] = HEADER_API_KEY
    if protocol != "gemini":
        headers["x-goog-api-key"] = HEADER_GOOG_KEY
    url = gw.server.url + path
    if protocol == "gemini":
        # The key in the query, as google-genai can send it, beside the header.
        url += ("&" if "?" in url else "?") + f"key={LOGGED_KEY}"
    return httpx.post(url, content=orjson.dumps(body), headers=headers, timeout=30)


def _no_secret(where: str, text: str | None) -> None:
    if text:
        leaked = [s for s in _all_secrets() if s in text]
        assert not leaked, f"{where} holds {leaked}: {text[:2000]}"


def _stored_text(data_dir: Path) -> list[tuple[str, str]]:
    """Every stored request log, usage record error and attempt error, read from the database."""
    engine = sa.create_engine(f"sqlite:///{data_dir / 'isthmus.db'}")
    out: list[tuple[str, str]] = []
    try:
        with engine.connect() as conn:
            for row in conn.execute(sa.select(RequestLogRow.__table__)).mappings():
                for column in ("request_headers", "response_headers", "request_body", "response_body"):
                    value = row[column]
                    if value is not None:
                        text = value if isinstance(value, str) else orjson.dumps(value).decode()
                        out.append((f"request_logs.{column} of {row['request_id']}", text))
            for name, model in (("usage_records", UsageRecordRow), ("usage_attempts", UsageAttemptRow)):
                for row in conn.execute(sa.select(model.__table__)).mappings():
                    if row["error"]:
                        out.append((f"{name}.error of {row['request_id']}", row["error"]))
    finally:
        engine.dispose()
    return out


PROTOCOL_CASES = [(p, s) for p in MODELS for s in (False, True)]


def test_no_secret_is_stored_at_the_full_level(gateway: Gateway) -> None:
    rids: dict[str, tuple[str, bool]] = {}
    for protocol, stream in PROTOCOL_CASES:
        rid = request_id(f"redact-{protocol}-{'stream' if stream else 'unary'}")
        resp = _send(gateway, protocol, MODELS[protocol], stream=stream, rid=rid)
        assert resp.status_code == 200, resp.text
        assert LOGGED_KEY in resp.text  # the client itself gets its echo unredacted
        rids[rid] = (protocol, stream)
    failing = {}
    for model, status in (("echo-401", 502), ("echo-400", 400)):
        rid = request_id(model)
        resp = _send(gateway, "openai-chat", model, stream=False, rid=rid)
        assert resp.status_code in (status, 401), resp.text
        failing[rid] = model

    with UsageApi(gateway.server.url) as usage:
        for rid, (protocol, stream) in rids.items():
            detail = usage.detail(rid)
            log = detail["log"]
            assert log is not None and log["level"] == "full", (protocol, stream)
            request_body, response_body = log["request_body"], log["response_body"]
            for name, text in (("request body", request_body), ("response body", response_body)):
                _no_secret(f"{rid} {name}", text)
                assert MARKER in text, f"{rid} {name} lost the rest of the body: {text[:500]}"
            assert "[redacted]" in request_body and "[redacted]" in response_body
            assert orjson.loads(request_body)["model" if protocol != "gemini" else "contents"]
            headers = log["request_headers"]
            _no_secret(f"{rid} request headers", orjson.dumps(headers).decode())
            assert headers["x-goog-api-key" if protocol != "anthropic" else "x-api-key"] == "[redacted]"
            assert MARKER in headers["x-note"]
            assert log["response_headers"]["x-request-id"] == rid
        for rid, model in failing.items():
            detail = usage.detail(rid)
            record = detail["record"]
            assert record["status"] in ("upstream_error", "client_error") and record["error"], record
            _no_secret(f"{rid} record error", record["error"])
            assert "[redacted]" in " ".join(a["error"] or "" for a in detail["attempts"]), model
            for attempt in detail["attempts"]:
                _no_secret(f"{rid} attempt error", attempt["error"])
            _no_secret(f"{rid} response body", detail["log"]["response_body"])

    stored = _stored_text(gateway.data_dir)
    assert len([w for w, _ in stored if w.startswith("request_logs.request_body")]) >= len(rids)
    for where, text in stored:
        _no_secret(where, text)


def test_base_level_keeps_no_log_unless_the_key_asks(gateway: Gateway) -> None:
    rid = request_id("quiet")
    path, body = generation("openai-chat", "gpt-m", _prompt(), stream=False)
    headers = {**auth_headers("openai-chat", QUIET_KEY), "x-request-id": rid}
    assert httpx.post(gateway.server.url + path, json=body, headers=headers, timeout=30).status_code == 200
    with UsageApi(gateway.server.url) as usage:
        log = usage.detail(rid)["log"]
    if gateway.level == "base":
        assert log is None  # the quiet key has no override: nothing beyond the usage record
    else:
        assert log is not None and MARKER in log["request_body"]
        _no_secret(f"{rid} request body", log["request_body"])
        _no_secret(f"{rid} response body", log["response_body"])


def test_no_secret_in_any_file_of_the_data_directory(gateway: Gateway) -> None:
    """After the requests above are written: no byte sequence of a secret anywhere on disk (the
    database keeps provider secrets encrypted and gateway keys hashed)."""
    with UsageApi(gateway.server.url) as usage:
        usage.wait_records(lambda items: len(items) >= len(PROTOCOL_CASES) + 3)
    files = [p for p in gateway.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "isthmus.db" for p in files)
    for path in files:
        data = path.read_bytes()
        leaked = [s for s in _all_secrets() if s.encode() in data]
        assert not leaked, f"{path.relative_to(gateway.data_dir)} holds {leaked}"
