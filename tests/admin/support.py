"""Helpers for the admin API tests: the gateway-style ``/api`` mount, a signed-in client, upstream data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from isthmus.admin import AdminServices

ADMIN_USERNAME = "root"
ADMIN_PASSWORD = "root-password-123"
MAX_BODY = 64 * 1024

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]


def mount_under_api(admin: ASGI) -> ASGI:
    """What the gateway does for ``/api/...``: strip the prefix into ``root_path``."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (scope["path"] == "/api" or scope["path"].startswith("/api/")):
            child = dict(scope)
            child["root_path"] = scope.get("root_path", "") + "/api"
            child["path"] = scope["path"][4:] or "/"
            child["raw_path"] = child["path"].encode()
            await admin(child, receive, send)
            return
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not the admin API"})

    return app


@dataclass
class AdminEnv:
    services: AdminServices
    engine: AsyncEngine
    app: ASGI
    changes: list[int] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=("203.0.113.7", 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver/api", headers=headers)
        self.clients.append(client)
        return client

    async def login(
        self, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD
    ) -> httpx.AsyncClient:
        """A client signed in with a session cookie, sending the CSRF header like the console does."""
        client = self.client()
        response = await client.post("/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        client.headers["x-csrf-token"] = response.json()["csrf_token"]
        return client

    async def bearer(
        self, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD
    ) -> httpx.AsyncClient:
        """A client authenticated only by an admin token (no cookies, no CSRF header)."""
        session_client = await self.login(username, password)
        response = await session_client.post("/tokens", json={"name": f"script-{len(self.clients)}"})
        assert response.status_code == 201, response.text
        return self.client(authorization=f"Bearer {response.json()['token']}")

    async def create_user(
        self, admin: httpx.AsyncClient, username: str, role: str = "member", **extra: Any
    ) -> int:
        body = {"username": username, "password": f"{username}-password-1", "role": role, **extra}
        response = await admin.post("/users", json=body)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])


# --- A real upstream that lists models ----------------------------------------------------------

UPSTREAM_SECRET = "sk-upstream-good-secret-0123456789"
OPENAI_IDS = ["gpt-a", "gpt-b", "gpt-c"]
ANTHROPIC_IDS = [f"claude-{i}" for i in range(5)]
GEMINI_IDS = [f"gemini-{i}" for i in range(5)]


@dataclass
class Upstream:
    url: str
    seen: list[dict[str, str]]


def unauthorized() -> web.Response:
    return web.json_response({"error": {"message": "invalid api key", "type": "auth"}}, status=401)
