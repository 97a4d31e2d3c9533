"""The official SDKs, through the gateway, to real HTTP upstreams of their own protocol."""

from __future__ import annotations

import re

import anthropic
import httpx
import openai
from google import genai
from google.genai import types as genai_types

from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread

from .conftest import GATEWAY_KEY

_TIMING = re.compile(r"^gateway;dur=\d+(\.\d+)?, upstream;dur=\d+(\.\d+)?$")


def _openai(gw: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


def test_openai_chat_sync_with_headers(gateway: ServerThread) -> None:
    raw = _openai(gateway).chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "mock: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-test"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert completion.usage.prompt_tokens > 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert _TIMING.match(raw.headers["server-timing"])


def test_openai_chat_keeps_client_request_id(gateway: ServerThread) -> None:
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=GATEWAY_KEY,
        max_retries=0,
        default_headers={"x-request-id": "abc-123"},
    )
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-request-id"] == "abc-123"


def test_openai_chat_stream_hides_usage_unless_asked(gateway: ServerThread) -> None:
    client = _openai(gateway)
    chunks = list(
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock: one two three"
    assert all(c.usage is None for c in chunks), "usage chunk must be hidden when not asked for"
    asked = list(
        client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usages = [c.usage for c in asked if c.usage is not None]
    assert len(usages) == 1 and usages[0].completion_tokens == 4


async def test_openai_chat_async_stream(gateway: ServerThread) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "async words"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "mock: async words"
    await client.close()


def test_openai_responses_sync_and_stream(gateway: ServerThread) -> None:
    client = _openai(gateway)
    response = client.responses.create(model="gpt-test", input="ping pong")
    assert response.output_text == "mock: ping pong"
    assert response.usage is not None and response.usage.output_tokens == 3
    events = list(client.responses.create(model="gpt-test", input="ping pong", stream=True))
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "mock: ping pong"
    with client.responses.stream(model="gpt-test", input="helper stream") as stream:
        final = stream.get_final_response()
    assert final.output_text == "mock: helper stream"


def test_openai_embeddings(gateway: ServerThread) -> None:
    result = _openai(gateway).embeddings.create(model="gpt-test", input=["a", "b"])
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0


def test_anthropic_messages_sync_stream_and_helper(gateway: ServerThread) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0)
    message = client.messages.create(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "bonjour monde"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "mock: bonjour monde"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3
    assert message.model == "claude-test"  # the name the client asked for, not the upstream's
    with client.messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "streamed words"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "mock: streamed words"
    assert final.usage.output_tokens == 3 and final.usage.input_tokens > 0
    assert final.model == "claude-test"
    count = client.messages.count_tokens(
        model="claude-test", messages=[{"role": "user", "content": "count me"}]
    )
    assert count.input_tokens > 0


def test_anthropic_sdk_with_bearer_auth(gateway: ServerThread) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, auth_token=GATEWAY_KEY, max_retries=0)
    message = client.messages.create(
        model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "bearer"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "mock: bearer"


async def test_anthropic_async(gateway: ServerThread) -> None:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0)
    message = await client.messages.create(
        model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "async hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "mock: async hi"
    await client.close()


def _genai(gw: ServerThread, api_version: str | None = None) -> genai.Client:
    options = (
        genai_types.HttpOptions(base_url=gw.url, api_version=api_version)
        if api_version
        else (genai_types.HttpOptions(base_url=gw.url))
    )
    return genai.Client(api_key=GATEWAY_KEY, http_options=options)


def test_gemini_generate_both_api_versions_and_stream(gateway: ServerThread) -> None:
    for version in (None, "v1beta"):
        client = _genai(gateway, version)
        result = client.models.generate_content(model="gemini-test", contents="gemini words")
        assert result.text == "mock: gemini words"
        assert result.usage_metadata is not None and result.usage_metadata.candidates_token_count == 3
    client = _genai(gateway)  # keep a reference: a collected client closes its HTTP pool
    chunks = list(client.models.generate_content_stream(model="gemini-test", contents="stream it"))
    assert "".join(c.text or "" for c in chunks) == "mock: stream it"
    assert chunks[-1].usage_metadata is not None
    tokens = client.models.count_tokens(model="gemini-test", contents="count")
    assert tokens.total_tokens is not None and tokens.total_tokens > 0
    embedded = client.models.embed_content(model="gemini-test", contents="embed me")
    assert embedded.embeddings and embedded.embeddings[0].values


async def test_gemini_async_stream(gateway: ServerThread) -> None:
    client = _genai(gateway)
    text = ""
    async for chunk in await client.aio.models.generate_content_stream(model="gemini-test", contents="aio"):
        text += chunk.text or ""
    assert text == "mock: aio"


def test_in_process_mock_provider_all_protocols(gateway: ServerThread) -> None:
    chat = _openai(gateway).chat.completions.create(
        model="inproc-test", messages=[{"role": "user", "content": "inside"}]
    )
    assert chat.choices[0].message.content == "mock: inside"
    msg = anthropic.Anthropic(base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0).messages.create(
        model="inproc-test", max_tokens=20, messages=[{"role": "user", "content": "inside"}]
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "mock: inside"
    gem_client = _genai(gateway)
    gem = gem_client.models.generate_content(model="inproc-test", contents="inside")
    assert gem.text == "mock: inside"


def test_passthrough_forwards_body_headers_and_query(
    gateway: ServerThread, mock_upstream: BackgroundMockServer
) -> None:
    body = {
        "model": "claude-test",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "keep me"}],
        "metadata": {"user_id": "u-1"},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "some_future_field": {"nested": [1, 2.5, "x", None, True]},
    }
    resp = httpx.post(
        f"{gateway.url}/v1/messages?beta=true",
        json=body,
        headers={
            "x-api-key": GATEWAY_KEY,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "interleaved-thinking-2025-05-14,context-management-2025-06-27",
            "x-app": "cli",
        },
    )
    assert resp.status_code == 200, resp.text
    last = httpx.get(f"{mock_upstream.url}/_mock/last").json()
    assert last["path"] == "/v1/messages"
    assert last["query"] == "beta=true"
    forwarded = httpx.Response(200, content=last["body"].encode()).json()
    assert forwarded == {**body, "model": "mock-claude-upstream"}
    headers = last["headers"]
    assert headers["x-api-key"] == "upstream-anthropic-secret"
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14,context-management-2025-06-27"
    assert headers["anthropic-version"] == "2023-06-01"
    assert GATEWAY_KEY not in str(headers)


def test_gemini_key_in_query_is_not_forwarded(
    gateway: ServerThread, mock_upstream: BackgroundMockServer
) -> None:
    resp = httpx.post(
        f"{gateway.url}/v1beta/models/gemini-test:generateContent?key={GATEWAY_KEY}",
        json={"contents": [{"role": "user", "parts": [{"text": "q"}]}]},
    )
    assert resp.status_code == 200, resp.text
    last = httpx.get(f"{mock_upstream.url}/_mock/last").json()
    assert last["path"] == "/v1beta/models/mock-gemini-upstream:generateContent"
    assert GATEWAY_KEY not in last["query"] and GATEWAY_KEY not in str(last["headers"])
    assert last["headers"]["x-goog-api-key"] == "upstream-gemini-secret"


def test_prefixed_paths(gateway: ServerThread) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/openai/v1", api_key=GATEWAY_KEY, max_retries=0)
    chat = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "pre"}])
    assert chat.choices[0].message.content == "mock: pre"
    msg = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=GATEWAY_KEY, max_retries=0)
    assert msg.messages.create(
        model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    ).content
    gem = genai.Client(
        api_key=GATEWAY_KEY, http_options=genai_types.HttpOptions(base_url=f"{gateway.url}/gemini")
    )
    assert gem.models.generate_content(model="gemini-test", contents="pre").text == "mock: pre"
