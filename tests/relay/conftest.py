"""A real gateway for relay tests: ``create_app`` served by uvicorn on a free port, in front of the
mock provider served over real HTTP (as ``openai``, ``anthropic`` and ``gemini`` providers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from isthmus.app import create_app
from isthmus.config import Settings, parse_config
from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread

GATEWAY_KEY = "sk-isthmus-test-key-0123456789abcdef"
OTHER_KEY = "sk-isthmus-test-other-0123456789abcd"


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[BackgroundMockServer]:
    with BackgroundMockServer() as server:
        yield server


def passthrough_config(upstream: str, extra: str = "") -> str:
    """Providers of each real kind pointed at the mock server, and one model per protocol."""
    return f"""
providers:
  - name: oai
    type: openai
    base_url: {upstream}/v1
    keys: [{{name: main, secret: upstream-openai-secret}}]
  - name: ant
    type: anthropic
    base_url: {upstream}
    keys: [{{name: main, secret: upstream-anthropic-secret}}]
  - name: gem
    type: gemini
    base_url: {upstream}
    keys: [{{name: main, secret: upstream-gemini-secret}}]
  - name: inproc
    type: mock
models:
  - name: gpt-test
    routes: [{{provider: oai, model: mock-gpt-upstream}}]
  - name: claude-test
    routes: [{{provider: ant, model: mock-claude-upstream}}]
  - name: gemini-test
    routes: [{{provider: gem, model: mock-gemini-upstream}}]
  - name: inproc-test
    routes: [{{provider: inproc, model: mock-inproc}}]
{extra}
keys:
  - name: tester
    secret: {GATEWAY_KEY}
  - name: limited
    secret: {OTHER_KEY}
    models: [gpt-test]
"""


GatewayFactory = Callable[[str], ServerThread]


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start a gateway from config text (SQLite in ``tmp_path``); stopped after the test."""
    started: list[ServerThread] = []

    def start(config_text: str) -> ServerThread:
        data_dir = tmp_path / f"gw{len(started)}"
        settings = Settings(
            data_dir=data_dir,
            secret_key="test-secret-key-material",
            admin_username="admin",
            admin_password="admin-password-123",
        )
        app = create_app(settings, parse_config(config_text))
        server = ServerThread(app).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gateway(make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer) -> ServerThread:
    return make_gateway(passthrough_config(mock_upstream.url))
