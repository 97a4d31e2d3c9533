"""Passthrough helpers: model rewrite keeps every other byte, usage opt-in for chat streams,
model lists in each protocol's shape."""

from __future__ import annotations

import json

import orjson
import pytest
from anthropic.types import ModelInfo as AnthropicModelInfo
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types import Model as OpenAIModel

from isthmus.errors import InvalidRequestError
from isthmus.protocols import anthropic, gemini, openai_chat, openai_common
from isthmus.protocols.base import ModelInfo, extract_model, rewrite_json_model
from isthmus.protocols.openai_chat import ensure_include_usage, rewrite_request


def test_rewrite_splices_only_the_model_value() -> None:
    body = b'{ "model" :  "claude-x", "max_tokens": 1.50, "n": 12345678901234567890123, "x": [1,2]}'
    assert rewrite_json_model(body, "claude-y") == body.replace(b'"claude-x"', b'"claude-y"')


def test_rewrite_with_nested_model_key_reserialises_exactly() -> None:
    body = b'{"model":"a","metadata":{"model":"a"},"big":123456789012345678901234567890}'
    out = rewrite_json_model(body, "b")
    assert json.loads(out) == {
        "model": "b",
        "metadata": {"model": "a"},
        "big": 123456789012345678901234567890,
    }


def test_rewrite_handles_escapes_and_missing_model() -> None:
    escaped = b'{"\\u006dodel":"a","other":{"model":"a"}}'
    assert json.loads(rewrite_json_model(escaped, "b")) == {"model": "b", "other": {"model": "a"}}
    assert json.loads(rewrite_json_model(b'{"messages":[]}', "b")) == {"messages": [], "model": "b"}
    unicode = '{"model":"mödel/ä","x":"✓"}'.encode()
    assert json.loads(rewrite_json_model(unicode, "ß")) == {"model": "ß", "x": "✓"}
    same = b'{"model":"a", "x":1}'
    assert rewrite_json_model(same, "a") is same


@pytest.mark.parametrize("bad", [b"", b"[1]", b"{not json", b'"model"'])
def test_rewrite_rejects_non_objects(bad: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        rewrite_json_model(bad, "m")


def test_extract_model() -> None:
    assert extract_model(b'{"model":"gpt-4o","messages":[]}') == "gpt-4o"
    assert extract_model(b'{"model":7}') is None
    assert extract_model(b"{}") is None


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=5), st.text(max_size=12), st.booleans())
def test_rewrite_property(fields: dict[str, object], new_model: str, compact: bool) -> None:
    body_obj = {"model": "old-model", **fields}
    separators = (",", ":") if compact else (", ", ": ")
    body = json.dumps(body_obj, separators=separators, ensure_ascii=False).encode()
    assert json.loads(rewrite_json_model(body, new_model)) == {**body_obj, "model": new_model}


def test_ensure_include_usage() -> None:
    body: dict[str, object] = {"model": "m"}
    assert ensure_include_usage(body) is False
    assert body["stream_options"] == {"include_usage": True}
    body = {"stream_options": {"include_usage": True}}
    assert ensure_include_usage(body) is True
    body = {"stream_options": {"include_usage": False, "include_obfuscation": False}}
    assert ensure_include_usage(body) is False
    assert body["stream_options"] == {"include_usage": True, "include_obfuscation": False}


@pytest.mark.parametrize(
    ("body", "stream", "asked", "expected"),
    [
        (b'{"model":"a","stream":true,"x":1}', True, False, None),
        (b'{"model":"a","stream":true,"stream_options":{"include_usage":true}}', True, True, None),
        (b'{"model":"a","stream":true,"stream_options":null}', True, False, None),
        (b'{"model":"a","stream":true,"stream_options":{"include_usage":false}}', True, False, None),
        (b'{"model":"a"}', False, True, b'{"model":"gpt"}'),
    ],
)
def test_rewrite_request(body: bytes, stream: bool, asked: bool, expected: bytes | None) -> None:
    new_body, client_asked = rewrite_request(body, "gpt", stream=stream)
    assert client_asked is asked
    parsed = orjson.loads(new_body)
    assert parsed["model"] == "gpt"
    if stream:
        assert parsed["stream_options"]["include_usage"] is True
    if expected is not None:
        assert new_body == expected
    others = {k: v for k, v in orjson.loads(body).items() if k not in ("model", "stream_options")}
    assert {k: v for k, v in parsed.items() if k not in ("model", "stream_options")} == others


def test_rewrite_request_reserialises_exactly() -> None:
    body = b'{"model":"a","stream":true,"stream_options":{},"seed":123456789012345678901234567890}'
    new_body, asked = rewrite_request(body, "b", stream=True)
    assert not asked
    assert json.loads(new_body) == {
        "model": "b",
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 123456789012345678901234567890,
    }


def test_rewrite_request_keeps_client_bytes_when_splicing() -> None:
    body = b'{"model": "a", "stream": true, "temperature": 0.70}'
    new_body, asked = rewrite_request(body, "b", stream=True)
    assert not asked
    assert (
        new_body
        == b'{"model": "b", "stream": true, "temperature": 0.70,"stream_options":{"include_usage":true}}'
    )


MODELS = [
    ModelInfo("gpt-4o", 1_715_367_049, "openai", context_window=128_000, max_output_tokens=16_384),
    ModelInfo("claude-sonnet", 1_700_000_000, "anthropic", display_name="Claude Sonnet"),
]


def test_openai_model_list() -> None:
    body = orjson.loads(openai_common.encode_model_list(MODELS))
    assert body["object"] == "list"
    models = [OpenAIModel.model_validate(m) for m in body["data"]]
    assert [(m.id, m.created, m.owned_by) for m in models] == [
        ("gpt-4o", 1_715_367_049, "openai"),
        ("claude-sonnet", 1_700_000_000, "anthropic"),
    ]
    assert openai_chat.encode_model_list is openai_common.encode_model_list


def test_anthropic_model_list() -> None:
    body = orjson.loads(anthropic.encode_model_list(MODELS))
    assert (body["has_more"], body["first_id"], body["last_id"]) == (False, "gpt-4o", "claude-sonnet")
    infos = [AnthropicModelInfo.model_validate(m) for m in body["data"]]
    assert [i.display_name for i in infos] == ["gpt-4o", "Claude Sonnet"]
    assert int(infos[0].created_at.timestamp()) == 1_715_367_049
    assert infos[0].max_input_tokens == 128_000
    assert orjson.loads(anthropic.encode_model_list([])) == {
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }


def test_gemini_model_list_and_paths() -> None:
    body = orjson.loads(gemini.encode_model_list(MODELS))
    first = body["models"][0]
    assert first["name"] == "models/gpt-4o"
    assert (first["inputTokenLimit"], first["outputTokenLimit"]) == (128_000, 16_384)
    assert "generateContent" in first["supportedGenerationMethods"]
    assert "inputTokenLimit" not in body["models"][1]
    assert gemini.split_model_action("gemini-2.5-flash:streamGenerateContent") == (
        "gemini-2.5-flash",
        "streamGenerateContent",
    )
    assert gemini.split_model_action("models/tunedModels/x:generateContent") == (
        "tunedModels/x",
        "generateContent",
    )
    assert gemini.split_model_action("no-action") is None
