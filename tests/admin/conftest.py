"""The admin API on a freshly migrated database (SQLite and PostgreSQL), driven over ASGI.

The app is mounted the way the gateway mounts it: ``/api`` stripped from the path and put in
``root_path``. Upstreams for provider tests are real aiohttp servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from admin.support import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    ANTHROPIC_IDS,
    GEMINI_IDS,
    MAX_BODY,
    OPENAI_IDS,
    UPSTREAM_SECRET,
    AdminEnv,
    Upstream,
    mount_under_api,
    unauthorized,
)
from isthmus.admin import AdminServices, create_admin_api, ensure_first_admin
from isthmus.config import Settings
from isthmus.crypto import SecretBox
from isthmus.store.db import create_engine, session_factory


@pytest.fixture
async def admin_env(migrated_database_url: str) -> AsyncIterator[AdminEnv]:
    engine = create_engine(migrated_database_url)
    sessions = session_factory(engine)
    created = await ensure_first_admin(sessions, ADMIN_USERNAME, ADMIN_PASSWORD)
    assert created == (ADMIN_USERNAME, ADMIN_PASSWORD)
    changes: list[int] = []

    async def on_change() -> None:
        changes.append(1)

    services = AdminServices(
        session_factory=sessions,
        box=SecretBox(os.urandom(32)),
        settings=Settings(max_admin_body_bytes=MAX_BODY),
        on_change=on_change,
        health_statuses=lambda: [{"provider": "p", "key": "k", "state": "closed"}],
    )
    env = AdminEnv(services, engine, mount_under_api(create_admin_api(services)), changes)
    try:
        yield env
    finally:
        for client in env.clients:
            await client.aclose()
        await engine.dispose()


@pytest.fixture
async def admin(admin_env: AdminEnv) -> httpx.AsyncClient:
    return await admin_env.login()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """OpenAI at ``/oai/v1``, Anthropic at ``/ant`` and Gemini at ``/gem`` (both paging by 2), Azure v1
    at ``/azv1`` and classic at ``/az``; ``/broken`` answers 500 HTML, ``/slow`` takes 1.5 s."""
    seen: list[dict[str, str]] = []

    def record(request: web.Request) -> None:
        seen.append({"path": request.path_qs, **{k.lower(): v for k, v in request.headers.items()}})

    async def openai_models(request: web.Request) -> web.Response:
        record(request)
        if request.headers.get("authorization") != f"Bearer {UPSTREAM_SECRET}":
            return unauthorized()
        return web.json_response(
            {"object": "list", "data": [{"id": i, "object": "model"} for i in OPENAI_IDS]}
        )

    async def anthropic_models(request: web.Request) -> web.Response:
        record(request)
        if request.headers.get("x-api-key") != UPSTREAM_SECRET or "anthropic-version" not in request.headers:
            return unauthorized()
        after = request.query.get("after_id")
        start = ANTHROPIC_IDS.index(after) + 1 if after else 0
        page = ANTHROPIC_IDS[start : start + 2]
        return web.json_response(
            {
                "data": [{"id": i, "type": "model"} for i in page],
                "has_more": start + 2 < len(ANTHROPIC_IDS),
                "first_id": page[0],
                "last_id": page[-1],
            }
        )

    async def gemini_models(request: web.Request) -> web.Response:
        record(request)
        if request.headers.get("x-goog-api-key") != UPSTREAM_SECRET:
            return unauthorized()
        start = int(request.query.get("pageToken", "0"))
        body: dict[str, Any] = {"models": [{"name": f"models/{i}"} for i in GEMINI_IDS[start : start + 2]]}
        if start + 2 < len(GEMINI_IDS):
            body["nextPageToken"] = str(start + 2)
        return web.json_response(body)

    async def azure_models(request: web.Request) -> web.Response:
        record(request)
        if request.headers.get("api-key") != UPSTREAM_SECRET:
            return unauthorized()
        if request.path.startswith("/az/") and request.query.get("api-version") != "2024-10-21":
            return web.json_response({"error": {"message": "missing api-version"}}, status=404)
        return web.json_response({"object": "list", "data": [{"id": i} for i in OPENAI_IDS]})

    async def slow(request: web.Request) -> web.Response:
        record(request)
        await asyncio.sleep(1.5)
        return web.json_response({"data": []})

    async def broken(request: web.Request) -> web.Response:
        record(request)
        return web.Response(text="<html>oops</html>", status=500)

    app = web.Application()
    app.router.add_get("/oai/v1/models", openai_models)
    app.router.add_get("/ant/v1/models", anthropic_models)
    app.router.add_get("/gem/v1beta/models", gemini_models)
    app.router.add_get("/broken/models", broken)
    app.router.add_get("/azv1/models", azure_models)
    app.router.add_get("/az/openai/models", azure_models)
    app.router.add_get("/slow/models", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    port = server.sockets[0].getsockname()[1]
    try:
        yield Upstream(f"http://127.0.0.1:{port}", seen)
    finally:
        await runner.cleanup()
