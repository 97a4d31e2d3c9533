"""Streams go through the gateway as they are produced, and a client that leaves stops the upstream."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from servers import ServerThread

from .conftest import GATEWAY_KEY, GatewayFactory
from .upstreams import ScriptedStreamUpstream, TrickleUpstream, chat_chunk

# (path, body, terminal marker) per protocol; the user text is echoed as "mock: zebra …".
_STREAMS: dict[str, tuple[str, dict[str, Any], bytes]] = {
    "openai-chat": (
        "/v1/chat/completions",
        {"model": "gpt-test", "messages": [{"role": "user", "content": "zebra"}], "stream": True},
        b"data: [DONE]",
    ),
    "openai-responses": (
        "/v1/responses",
        {"model": "gpt-test", "input": "zebra", "stream": True},
        b"event: response.completed",
    ),
    "anthropic": (
        "/v1/messages",
        {
            "model": "claude-test",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "zebra"}],
            "stream": True,
        },
        b"event: message_stop",
    ),
    "gemini": (
        "/v1beta/models/gemini-test:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "zebra"}]}]},
        b'"finishReason"',
    ),
    "in-process-mock": (
        "/v1/chat/completions",
        {"model": "inproc-test", "messages": [{"role": "user", "content": "zebra"}], "stream": True},
        b"data: [DONE]",
    ),
}


@pytest.mark.parametrize("kind", list(_STREAMS))
def test_stream_is_relayed_as_it_is_produced(kind: str, gateway: ServerThread) -> None:
    path, body, terminal = _STREAMS[kind]
    # 15 deltas at 5 per second: the upstream needs ~2.8 s to finish.
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "x-mock-tps": "5", "x-mock-tokens": "15"}
    # One unpaced call first, so a cold start (first connection, lazy set-up) on a busy machine is
    # not mistaken for buffering.
    warm = httpx.post(gateway.url + path, json=body, headers={"authorization": headers["authorization"]})
    assert warm.status_code == 200 and terminal in warm.content
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with httpx.stream("POST", gateway.url + path, json=body, headers=headers, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for chunk in resp.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    content_times = [t for t, chunk in arrivals if b"mock:" in chunk]
    everything = b"".join(chunk for _, chunk in arrivals)
    # "mock:" and "zebra" alternate over the 15 words: 8 paced deltas carry "mock:".
    assert len(content_times) >= 8
    assert terminal in everything
    assert content_times[0] < 1.0, f"first content after {content_times[0]:.2f}s: the stream was held back"
    assert arrivals[-1][0] > 2.0, "the upstream paces 15 deltas over ~2.8s; the stream ended too early"
    # The deltas arrive spread over the stream, not in one burst at the end.
    assert content_times[-1] - content_times[0] > 2.0


_TRICKLE_CONFIG = """
providers:
  - name: slow
    type: openai
    base_url: {url}/v1
    keys: [{{name: k, secret: slow-secret}}]
models:
  - name: slow
    routes: [{{provider: slow, model: slow-upstream}}]
keys:
  - {{name: t, secret: {key}}}
"""


def _chat_request(gw: ServerThread, stream: bool = True) -> tuple[str, dict[str, Any], dict[str, str]]:
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return f"{gw.url}/v1/chat/completions", body, {"authorization": f"Bearer {GATEWAY_KEY}"}


def _wait_for_disconnect(upstream: TrickleUpstream, limit: float) -> float | None:
    deadline = time.monotonic() + limit
    while upstream.disconnected_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return upstream.disconnected_at


def test_client_disconnect_mid_stream_cancels_upstream(make_gateway: GatewayFactory) -> None:
    upstream = TrickleUpstream(count=100, interval=0.1)  # a 10 s stream unless cut
    with upstream.server() as server:
        gw = make_gateway(_TRICKLE_CONFIG.format(url=server.url, key=GATEWAY_KEY))
        url, body, headers = _chat_request(gw)
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", url, json=body, headers=headers) as resp:
                assert resp.status_code == 200
                for chunk in resp.iter_raw():
                    if b'"content"' in chunk:
                        break
            left_at = time.monotonic()  # leaving the block closed the unfinished connection
        gone = _wait_for_disconnect(upstream, 3.0)
        assert gone is not None, "the upstream never saw the gateway hang up"
        assert gone - left_at < 2.0
        assert not upstream.completed and upstream.chunks_sent < 40


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_before_the_answer_cancels_upstream(
    stream: bool, make_gateway: GatewayFactory
) -> None:
    # Streamed: the upstream opens the stream at once but holds back content, so the gateway is
    # still reading ahead (nothing committed to the client) when the client gives up. Not streamed:
    # the gateway is still collecting the upstream's body.
    upstream = TrickleUpstream(count=5, interval=0.1, first_delay=10.0)
    with upstream.server() as server:
        gw = make_gateway(_TRICKLE_CONFIG.format(url=server.url, key=GATEWAY_KEY))
        url, body, headers = _chat_request(gw, stream)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=body, headers=headers, timeout=httpx.Timeout(30, read=0.5))
        left_at = time.monotonic()
        gone = _wait_for_disconnect(upstream, 3.0)
        assert gone is not None, "the upstream never saw the gateway hang up"
        assert gone - left_at < 2.0
        assert upstream.chunks_sent == 0


def _chat_transcript() -> tuple[bytes, bytes]:
    """A Chat Completions stream as an upstream sends it with usage asked for, and its usage chunk."""
    usage = chat_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    body = b"".join(chat_chunk(f"w{n} ") for n in range(6)) + chat_chunk(None, "stop")
    return body + usage + b"data: [DONE]\n\n", usage


@pytest.mark.parametrize("asked_for_usage", [True, False])
@pytest.mark.parametrize("cut", ["whole", "events", "mid-event"])
@pytest.mark.parametrize("member", [b'"model":', b'"model": '])
def test_passthrough_stream_renames_every_event_and_hides_usage_only_when_unasked(
    asked_for_usage: bool, cut: str, member: bytes, make_gateway: GatewayFactory
) -> None:
    """Runs of deltas go out unparsed once committed; whatever the chunking, every event must still
    carry the public model name, and the usage chunk the gateway asked for on the client's behalf
    must not reach a client that did not ask for it. The name is found however the upstream's
    serializer spells the member (the relay learns the spelling from the first event)."""
    transcript, usage = (part.replace(b'"model":', member) for part in _chat_transcript())
    if cut == "whole":
        chunks = [transcript]
    elif cut == "events":
        chunks = [block + b"\n\n" for block in transcript.split(b"\n\n") if block]
    else:
        chunks = [transcript[i : i + 37] for i in range(0, len(transcript), 37)]
    upstream = ScriptedStreamUpstream(chunks)
    with upstream.server() as server:
        gw = make_gateway(_TRICKLE_CONFIG.format(url=server.url, key=GATEWAY_KEY))
        url, body, headers = _chat_request(gw)
        if asked_for_usage:
            body["stream_options"] = {"include_usage": True}
        resp = httpx.post(url, json=body, headers=headers, timeout=30)
    assert resp.status_code == 200
    renamed = transcript.replace(member + b'"test-upstream"', member + b'"slow"')
    expected = renamed if asked_for_usage else renamed.replace(usage.replace(b"test-upstream", b"slow"), b"")
    assert resp.content == expected
    assert upstream.requests[0].json()["stream_options"] == {"include_usage": True}


def test_error_in_the_chunk_that_brought_the_first_content_still_fails_over(
    make_gateway: GatewayFactory,
) -> None:
    """Nothing has reached the client while the first chunk is read, so an error event later in that
    same chunk is a failed attempt, not a cut answer."""
    error = b'data: {"error":{"message":"overloaded","type":"server_error","code":"overloaded"}}\n\n'
    bad = ScriptedStreamUpstream([chat_chunk("partial ") + chat_chunk("more ") + error])
    good = ScriptedStreamUpstream([_chat_transcript()[0]])
    with bad.server() as bad_server, good.server() as good_server:
        config = f"""
providers:
  - {{name: bad, type: openai, base_url: {bad_server.url}/v1, priority: 0, keys: [{{name: k, secret: b}}]}}
  - {{name: good, type: openai, base_url: {good_server.url}/v1, priority: 1, keys: [{{name: k, secret: g}}]}}
models:
  - name: slow
    routes: [{{provider: bad, model: up}}, {{provider: good, model: up}}]
keys:
  - {{name: t, secret: {GATEWAY_KEY}}}
"""
        gw = make_gateway(config)
        url, body, headers = _chat_request(gw)
        resp = httpx.post(url, json=body, headers=headers, timeout=30)
    assert resp.status_code == 200
    assert b"partial" not in resp.content and b"error" not in resp.content
    assert b"w5 " in resp.content and resp.content.endswith(b"data: [DONE]\n\n")
    assert len(bad.requests) == 1 and len(good.requests) == 1
