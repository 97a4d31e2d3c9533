"""The Responses API on an upstream without it: the gateway keeps the conversation."""

from __future__ import annotations

import openai
import pytest

from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread

from .conftest import GATEWAY_KEY, OTHER_KEY, GatewayFactory


@pytest.fixture
def gateway_on_anthropic(make_gateway: GatewayFactory, mock_upstream: BackgroundMockServer) -> ServerThread:
    return make_gateway(
        f"""
providers:
  - name: ant
    type: anthropic
    base_url: {mock_upstream.url}
    keys: [{{name: k, secret: upstream-secret}}]
models:
  - name: claude-via-responses
    routes: [{{provider: ant, model: mock-claude}}]
keys:
  - {{name: owner, secret: {GATEWAY_KEY}}}
  - {{name: other, secret: {OTHER_KEY}}}
"""
    )


def _client(gw: ServerThread, key: str = GATEWAY_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
def test_previous_response_id_get_input_items_and_delete(
    gateway_on_anthropic: ServerThread, stream: bool
) -> None:
    client = _client(gateway_on_anthropic)
    if stream:
        with client.responses.stream(model="claude-via-responses", input="first turn") as events:
            first = events.get_final_response()
    else:
        first = client.responses.create(model="claude-via-responses", input="first turn")
    assert first.output_text == "mock: first turn"
    second = client.responses.create(
        model="claude-via-responses", input="second turn", previous_response_id=first.id
    )
    assert second.output_text == "mock: second turn"
    fetched = client.responses.retrieve(first.id)
    assert fetched.id == first.id and fetched.output_text == "mock: first turn"
    items = client.responses.input_items.list(second.id, order="asc")
    texts = [
        part.text
        for item in items.data
        if item.type == "message"
        for part in item.content
        if hasattr(part, "text")
    ]
    assert texts == ["first turn", "mock: first turn", "second turn"]
    with pytest.raises(openai.NotFoundError):
        _client(gateway_on_anthropic, OTHER_KEY).responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        _client(gateway_on_anthropic, OTHER_KEY).responses.create(
            model="claude-via-responses", input="steal", previous_response_id=first.id
        )
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_store_false_keeps_nothing(gateway_on_anthropic: ServerThread) -> None:
    client = _client(gateway_on_anthropic)
    response = client.responses.create(model="claude-via-responses", input="ephemeral", store=False)
    assert response.output_text == "mock: ephemeral"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
