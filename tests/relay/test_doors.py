"""Front doors: authentication, error shapes per protocol, model lists, sizes and bad input."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from servers import ServerThread

from .conftest import GATEWAY_KEY, OTHER_KEY


def _post(gw: ServerThread, path: str, body: bytes | dict[str, object], **headers: str) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.post(f"{gw.url}{path}", json=body, headers=headers)
    return httpx.post(
        f"{gw.url}{path}", content=body, headers={"content-type": "application/json", **headers}
    )


CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}
MESSAGES = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}


def test_openai_error_shape_for_bad_key(gateway: ServerThread) -> None:
    resp = _post(gateway, "/v1/chat/completions", CHAT, authorization="Bearer wrong")
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["type"] == "authentication_error" and "invalid API key" in error["message"]
    assert resp.headers["x-request-id"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="nope", max_retries=0).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}]
        )


def test_anthropic_error_shape_for_missing_key(gateway: ServerThread) -> None:
    resp = _post(gateway, "/v1/messages", MESSAGES)
    assert resp.status_code == 401
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "authentication_error"


def test_gemini_error_shape(gateway: ServerThread) -> None:
    resp = _post(gateway, "/v1beta/models/gemini-test:generateContent", GEMINI, **{"x-goog-api-key": "bad"})
    assert resp.status_code == 401
    assert resp.json()["error"]["status"] == "UNAUTHENTICATED" and resp.json()["error"]["code"] == 401
    client = genai.Client(api_key="bad", http_options=genai_types.HttpOptions(base_url=gateway.url))
    with pytest.raises(genai_errors.ClientError):
        client.models.generate_content(model="gemini-test", contents="x")


def test_model_not_allowed_and_unknown(gateway: ServerThread) -> None:
    resp = _post(gateway, "/v1/messages", MESSAGES, **{"x-api-key": OTHER_KEY})
    assert resp.status_code == 403 and resp.json()["error"]["type"] == "permission_error"
    resp = _post(
        gateway, "/v1/chat/completions", {**CHAT, "model": "nope"}, authorization=f"Bearer {GATEWAY_KEY}"
    )
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    with pytest.raises(anthropic.NotFoundError):
        anthropic.Anthropic(base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0).messages.create(
            model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_invalid_json_and_missing_model(gateway: ServerThread) -> None:
    auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
    resp = _post(gateway, "/v1/chat/completions", b"{not json", **auth)
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]["message"]
    resp = _post(gateway, "/v1/chat/completions", b"[1,2]", **auth)
    assert resp.status_code == 400
    resp = _post(gateway, "/v1/chat/completions", {"messages": []}, **auth)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"


def test_too_large_body(gateway: ServerThread) -> None:
    big = b'{"model":"gpt-test","pad":"' + b"x" * (33 * 1024 * 1024) + b'"}'
    resp = _post(gateway, "/v1/chat/completions", big, authorization=f"Bearer {GATEWAY_KEY}")
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "invalid_request_error"


def test_model_lists_in_each_shape(gateway: ServerThread) -> None:
    oai = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    ids = [m.id for m in oai.models.list()]
    assert ids == ["claude-test", "gemini-test", "gpt-test", "inproc-test"]
    limited = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=OTHER_KEY, max_retries=0)
    assert [m.id for m in limited.models.list()] == ["gpt-test"]
    ant = anthropic.Anthropic(base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0)
    assert [m.id for m in ant.models.list()] == ids
    gem = genai.Client(api_key=GATEWAY_KEY, http_options=genai_types.HttpOptions(base_url=gateway.url))
    names = [m.name for m in gem.models.list()]
    assert names == [f"models/{i}" for i in ids]
    resp = httpx.get(f"{gateway.url}/v1/models?key={GATEWAY_KEY}")
    assert "models" in resp.json()


def test_unknown_path_and_health(gateway: ServerThread) -> None:
    resp = httpx.post(f"{gateway.url}/v1/nothing-here", json={})
    assert resp.status_code == 404 and "error" in resp.json()
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert httpx.head(f"{gateway.url}/").status_code == 200
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert "isthmus_requests_total" in metrics
