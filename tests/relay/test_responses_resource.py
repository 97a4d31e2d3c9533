"""GET/DELETE /v1/responses/{id}: reach the upstream that created the response, for its creator only."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from servers import ServerThread

from .conftest import GATEWAY_KEY, OTHER_KEY, GatewayFactory
from .upstreams import RecordingUpstream


@pytest.fixture
def setup(make_gateway: GatewayFactory) -> Iterator[tuple[RecordingUpstream, ServerThread]]:
    # Two providers on two upstreams: the resource calls must go to the one that created the object.
    creator, decoy = RecordingUpstream(), RecordingUpstream()
    with creator.server() as creator_server, decoy.server() as decoy_server:
        gw = make_gateway(
            f"""
providers:
  - name: creator
    type: openai
    base_url: {creator_server.url}/v1
    keys: [{{name: k, secret: creator-provider-secret}}]
  - name: decoy
    type: openai
    base_url: {decoy_server.url}/v1
    keys: [{{name: k, secret: decoy-provider-secret}}]
models:
  - name: resp-model
    routes: [{{provider: creator, model: upstream-resp-model}}]
  - name: decoy-model
    routes: [{{provider: decoy, model: decoy-upstream}}]
keys:
  - {{name: owner, secret: {GATEWAY_KEY}}}
  - {{name: stranger, secret: {OTHER_KEY}}}
"""
        )
        yield creator, gw
        assert decoy.requests == [], "a resource call went to an upstream that did not create it"


def _client(gw: ServerThread, key: str = GATEWAY_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
def test_retrieve_and_delete_reach_the_creating_upstream(
    stream: bool, setup: tuple[RecordingUpstream, ServerThread]
) -> None:
    upstream, gw = setup
    client = _client(gw)
    if stream:
        with client.responses.stream(model="resp-model", input="keep me") as events:
            created = events.get_final_response()
    else:
        created = client.responses.create(model="resp-model", input="keep me")
    assert created.output_text == "mock: keep me"

    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == "mock: keep me"
    get = upstream.requests[-1]
    assert (get.method, get.path) == ("GET", f"/v1/responses/{created.id}")
    assert get.headers["authorization"] == "Bearer creator-provider-secret"

    client.responses.delete(created.id)
    delete = upstream.requests[-1]
    assert (delete.method, delete.path) == ("DELETE", f"/v1/responses/{created.id}")
    assert delete.headers["authorization"] == "Bearer creator-provider-secret"
    assert created.id not in upstream.responses

    # Deleted: the gateway forgets the owner and answers 404 itself.
    before = len(upstream.requests)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    assert len(upstream.requests) == before


def test_another_key_gets_404_without_upstream_call(setup: tuple[RecordingUpstream, ServerThread]) -> None:
    upstream, gw = setup
    created = _client(gw).responses.create(model="resp-model", input="private")
    before = len(upstream.requests)
    for method in ("GET", "DELETE"):
        resp = httpx.request(
            method,
            f"{gw.url}/v1/responses/{created.id}",
            headers={"authorization": f"Bearer {OTHER_KEY}"},
        )
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"
    assert len(upstream.requests) == before
    assert created.id in upstream.responses  # the stranger's DELETE did not reach it
    # The owner still can.
    assert _client(gw).responses.retrieve(created.id).id == created.id


def test_unknown_id_gets_404(setup: tuple[RecordingUpstream, ServerThread]) -> None:
    upstream, gw = setup
    with pytest.raises(openai.NotFoundError) as caught:
        _client(gw).responses.retrieve("resp_does_not_exist")
    assert "resp_does_not_exist" in str(caught.value)
    assert upstream.requests == []


def test_resource_calls_need_a_valid_key(setup: tuple[RecordingUpstream, ServerThread]) -> None:
    upstream, gw = setup
    created = _client(gw).responses.create(model="resp-model", input="guarded")
    resp = httpx.get(
        f"{gw.url}/v1/responses/{created.id}", headers={"authorization": "Bearer sk-wrong-key-000"}
    )
    assert resp.status_code == 401
    assert [r.method for r in upstream.requests] == ["POST"]
