"""``fetch_upstream_models`` against real HTTP servers on 127.0.0.1: each kind's path, auth and paging."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from admin.support import ANTHROPIC_IDS, GEMINI_IDS, OPENAI_IDS, UPSTREAM_SECRET, Upstream
from isthmus.errors import UpstreamConnectError, UpstreamError, UpstreamHTTPError, UpstreamTimeoutError
from isthmus.providers.catalog import fetch_upstream_models
from isthmus.providers.mock_wire import MOCK_MODELS
from services import free_port


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    session = aiohttp.ClientSession()
    try:
        yield session
    finally:
        await session.close()


async def test_each_provider_kind(upstream: Upstream, http: aiohttp.ClientSession) -> None:
    base = upstream.url
    assert await fetch_upstream_models(http, "openai", f"{base}/oai/v1", UPSTREAM_SECRET) == OPENAI_IDS
    assert await fetch_upstream_models(http, "azure", f"{base}/azv1", UPSTREAM_SECRET) == OPENAI_IDS
    classic = await fetch_upstream_models(
        http, "azure", f"{base}/az", UPSTREAM_SECRET, api_version="2024-10-21"
    )
    assert classic == OPENAI_IDS
    assert await fetch_upstream_models(http, "anthropic", f"{base}/ant", UPSTREAM_SECRET) == ANTHROPIC_IDS
    assert await fetch_upstream_models(http, "gemini", f"{base}/gem", UPSTREAM_SECRET) == GEMINI_IDS
    paths = [seen["path"] for seen in upstream.seen]
    # Anthropic and Gemini were followed page by page.
    assert sum(p.startswith("/ant/v1/models") for p in paths) == 3
    assert any("after_id=claude-1" in p for p in paths)
    assert sum(p.startswith("/gem/v1beta/models") for p in paths) == 3
    assert any("pageToken=2" in p for p in paths)
    anthropic_call = next(s for s in upstream.seen if s["path"].startswith("/ant/"))
    assert anthropic_call["anthropic-version"] == "2023-06-01"
    assert await fetch_upstream_models(http, "mock", None, "") == [m.id for m in MOCK_MODELS]


async def test_configured_headers_are_sent_but_cannot_replace_auth(
    upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    headers = {"OpenAI-Organization": "org-1", "Authorization": "Bearer wrong"}
    ids = await fetch_upstream_models(
        http, "openai", f"{upstream.url}/oai/v1", UPSTREAM_SECRET, headers=headers
    )
    assert ids == OPENAI_IDS
    assert upstream.seen[-1]["openai-organization"] == "org-1"


async def test_failures_become_upstream_errors(upstream: Upstream, http: aiohttp.ClientSession) -> None:
    with pytest.raises(UpstreamHTTPError) as denied:
        await fetch_upstream_models(http, "openai", f"{upstream.url}/oai/v1", "sk-wrong")
    assert denied.value.upstream_status == 401
    assert "invalid api key" in denied.value.message

    with pytest.raises(UpstreamHTTPError) as broken:
        await fetch_upstream_models(http, "openai", f"{upstream.url}/broken", UPSTREAM_SECRET)
    assert broken.value.upstream_status == 500

    with pytest.raises(UpstreamTimeoutError):
        await fetch_upstream_models(http, "openai", f"{upstream.url}/slow", UPSTREAM_SECRET, timeout=0.3)

    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamConnectError):
        await fetch_upstream_models(http, "gemini", closed, UPSTREAM_SECRET)

    with pytest.raises(UpstreamError):
        await fetch_upstream_models(http, "openai", None, UPSTREAM_SECRET)
