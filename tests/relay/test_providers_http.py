"""The HTTP providers against real upstreams: Azure URL layouts and auth, compressed answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from isthmus.protocols.sse import SSEParser
from servers import ServerThread

from .conftest import GATEWAY_KEY, GatewayFactory
from .upstreams import CompressedUpstream, ErrorUpstream, RecordingUpstream

API_VERSION = "2024-10-21"


@pytest.fixture
def recording() -> Iterator[tuple[RecordingUpstream, ServerThread]]:
    upstream = RecordingUpstream()
    with upstream.server() as server:
        yield upstream, server


def _azure_config(url: str) -> str:
    return f"""
providers:
  - name: az-classic
    type: azure
    base_url: {url}
    api_version: "{API_VERSION}"
    keys: [{{name: k, secret: azure-classic-secret}}]
  - name: az-classic-openai-suffix
    type: azure
    base_url: {url}/openai/
    api_version: "{API_VERSION}"
    keys: [{{name: k, secret: azure-suffix-secret}}]
  - name: az-v1
    type: azure
    base_url: {url}/openai/v1
    keys: [{{name: k, secret: azure-v1-secret}}]
models:
  - name: classic
    routes: [{{provider: az-classic, model: my-deployment}}]
  - name: classic-suffix
    routes: [{{provider: az-classic-openai-suffix, model: other-deployment}}]
  - name: v1
    routes: [{{provider: az-v1, model: gpt-4o-mini}}]
keys:
  - {{name: t, secret: {GATEWAY_KEY}}}
"""


def _client(gw: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


@pytest.mark.parametrize(
    ("model", "path", "secret", "deployment"),
    [
        (
            "classic",
            "/openai/deployments/my-deployment/chat/completions",
            "azure-classic-secret",
            "my-deployment",
        ),
        (
            "classic-suffix",
            "/openai/deployments/other-deployment/chat/completions",
            "azure-suffix-secret",
            "other-deployment",
        ),
    ],
)
def test_azure_deployment_urls_with_api_version(
    model: str,
    path: str,
    secret: str,
    deployment: str,
    make_gateway: GatewayFactory,
    recording: tuple[RecordingUpstream, ServerThread],
) -> None:
    upstream, server = recording
    gw = make_gateway(_azure_config(server.url))
    completion = _client(gw).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "deployment please"}]
    )
    assert completion.choices[0].message.content == "mock: deployment please"
    [seen] = upstream.requests
    assert (seen.method, seen.path, seen.query) == ("POST", path, f"api-version={API_VERSION}")
    assert seen.headers["api-key"] == secret
    assert "authorization" not in seen.headers  # Azure's key header only; no Bearer leak
    assert seen.json()["model"] == deployment


def test_azure_streamed_chat_with_api_version(
    make_gateway: GatewayFactory, recording: tuple[RecordingUpstream, ServerThread]
) -> None:
    upstream, server = recording
    gw = make_gateway(_azure_config(server.url))
    stream = _client(gw).chat.completions.create(
        model="classic", messages=[{"role": "user", "content": "one two"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "mock: one two"
    [seen] = upstream.requests
    assert seen.path == "/openai/deployments/my-deployment/chat/completions"
    assert seen.query == f"api-version={API_VERSION}"
    assert seen.json()["stream"] is True


def test_azure_responses_with_api_version_names_deployment_in_body(
    make_gateway: GatewayFactory, recording: tuple[RecordingUpstream, ServerThread]
) -> None:
    upstream, server = recording
    gw = make_gateway(_azure_config(server.url))
    response = _client(gw).responses.create(model="classic", input="respond please")
    assert response.output_text == "mock: respond please"
    [seen] = upstream.requests
    assert (seen.path, seen.query) == ("/openai/responses", f"api-version={API_VERSION}")
    assert seen.headers["api-key"] == "azure-classic-secret"
    assert seen.json()["model"] == "my-deployment"


def test_azure_v1_urls_without_api_version(
    make_gateway: GatewayFactory, recording: tuple[RecordingUpstream, ServerThread]
) -> None:
    upstream, server = recording
    gw = make_gateway(_azure_config(server.url))
    client = _client(gw)
    completion = client.chat.completions.create(model="v1", messages=[{"role": "user", "content": "v one"}])
    assert completion.choices[0].message.content == "mock: v one"
    response = client.responses.create(model="v1", input="v one responses")
    assert response.output_text == "mock: v one responses"
    chat, responses = upstream.requests
    assert (chat.path, chat.query) == ("/openai/v1/chat/completions", "")
    assert (responses.path, responses.query) == ("/openai/v1/responses", "")
    for seen in (chat, responses):
        assert seen.headers["api-key"] == "azure-v1-secret"
        assert "authorization" not in seen.headers
        assert seen.json()["model"] == "gpt-4o-mini"


# --- compressed upstream answers ----------------------------------------------------------------


@pytest.fixture
def compressed_gateway(make_gateway: GatewayFactory) -> Iterator[tuple[CompressedUpstream, ServerThread]]:
    upstream = CompressedUpstream()
    with upstream.server() as server:
        yield (
            upstream,
            make_gateway(
                f"""
providers:
  - name: squeezed
    type: openai
    base_url: {server.url}/v1
    keys: [{{name: k, secret: squeezed-secret}}]
models:
  - name: gz
    routes: [{{provider: squeezed, model: gzip}}]
  - name: br
    routes: [{{provider: squeezed, model: br}}]
keys:
  - {{name: t, secret: {GATEWAY_KEY}}}
"""
            ),
        )


def _post(gw: ServerThread, model: str, stream: bool) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "squeeze this text"}], "stream": stream}
    # The client accepts compression too: a stale content-encoding header would make it decode
    # plain bytes and fail, or hand compressed bytes to a client that cannot read them.
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "accept-encoding": "gzip, br"}
    with httpx.Client(timeout=30) as client:
        resp = client.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers)
    return resp


@pytest.mark.parametrize("model", ["gz", "br"])
def test_compressed_unary_answer_is_decoded(
    model: str, compressed_gateway: tuple[CompressedUpstream, ServerThread]
) -> None:
    upstream, gw = compressed_gateway
    resp = _post(gw, model, stream=False)
    assert resp.status_code == 200, resp.text
    assert "content-encoding" not in resp.headers
    assert resp.json()["choices"][0]["message"]["content"] == "mock: squeeze this text"
    assert int(resp.headers["content-length"]) == len(resp.content)
    assert {"gzip", "br"} <= {e.strip() for e in upstream.requests[0].headers["accept-encoding"].split(",")}


@pytest.mark.parametrize("model", ["gz", "br"])
def test_compressed_stream_is_decoded(
    model: str, compressed_gateway: tuple[CompressedUpstream, ServerThread]
) -> None:
    _, gw = compressed_gateway
    resp = _post(gw, model, stream=True)
    assert resp.status_code == 200, resp.text
    assert "content-encoding" not in resp.headers
    events = SSEParser().feed(resp.content)
    assert events[-1].data == b"[DONE]"
    chunks = [e.json() for e in events if e.data.startswith(b"{")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "mock: squeeze this text"
    assert all(c.get("usage") is None for c in chunks)  # the usage chunk the client did not ask for


# --- provider keys echoed back in upstream errors -------------------------------------------------


@pytest.mark.parametrize(("model", "status"), [("refused", 502), ("invalid", 400)])
@pytest.mark.parametrize("stream", [False, True])
def test_provider_key_echoed_by_upstream_error_never_reaches_the_client(
    model: str, status: int, stream: bool, make_gateway: GatewayFactory
) -> None:
    provider_secret = "echoed-provider-secret-0123456789"
    upstream = ErrorUpstream()
    with upstream.server() as server:
        gw = make_gateway(
            f"""
providers:
  - name: echoing
    type: openai
    base_url: {server.url}/v1
    keys: [{{name: k, secret: {provider_secret}}}]
models:
  - name: refused
    routes: [{{provider: echoing, model: status-401}}]
  - name: invalid
    routes: [{{provider: echoing, model: status-400}}]
keys:
  - {{name: t, secret: {GATEWAY_KEY}}}
"""
        )
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        resp = httpx.post(
            f"{gw.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {GATEWAY_KEY}"}
        )
    assert upstream.requests[0].headers["authorization"] == f"Bearer {provider_secret}"
    assert resp.status_code == status
    message = resp.json()["error"]["message"]
    assert "Incorrect API key provided" in message  # the upstream's message still tells what failed
    assert provider_secret not in resp.text
