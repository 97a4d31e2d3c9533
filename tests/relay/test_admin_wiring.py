"""The admin API mounted in the gateway, and its changes reaching the request path at once."""

from __future__ import annotations

import httpx
import openai
import pytest

from servers import ServerThread


def _login(gw: ServerThread) -> httpx.Client:
    client = httpx.Client(base_url=f"{gw.url}/api")
    resp = client.post("/auth/login", json={"username": "admin", "password": "admin-password-123"})
    assert resp.status_code == 200, resp.text
    client.headers["x-csrf-token"] = resp.json()["csrf_token"]
    return client


def test_docs_and_openapi_are_served_under_api(gateway: ServerThread) -> None:
    docs = httpx.get(f"{gateway.url}/api/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = httpx.get(f"{gateway.url}/api/openapi.json")
    assert spec.status_code == 200 and "/keys" in str(spec.json()["paths"])


def test_key_created_paused_and_revoked_through_the_api_applies_immediately(gateway: ServerThread) -> None:
    admin = _login(gateway)
    created = admin.post("/keys", json={"name": "fresh", "allowed_models": ["gpt-test"]})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0)
    chat = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "new key"}])
    assert chat.choices[0].message.content == "mock: new key"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="claude-test", messages=[{"role": "user", "content": "x"}])
    key_id = created.json()["id"]
    assert admin.post(f"/keys/{key_id}/pause").status_code == 200
    with pytest.raises(openai.AuthenticationError, match="paused"):
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert admin.post(f"/keys/{key_id}/resume").status_code == 200
    assert client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "y"}]
    ).choices
    assert admin.post(f"/keys/{key_id}/revoke").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
