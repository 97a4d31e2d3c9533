"""Usage normalisation from non-streamed responses: input excludes cache reads and writes."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus.ir.usage import Usage
from isthmus.protocols import anthropic, gemini, openai_chat, openai_responses


def test_openai_chat_subtracts_cached_and_keeps_reasoning() -> None:
    body = {
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 256},
        },
    }
    assert openai_chat.usage_from_response(body) == Usage(
        input_tokens=176, output_tokens=300, cache_read_tokens=1024, reasoning_tokens=256
    )


def test_openai_chat_cache_writes_and_vendor_fields() -> None:
    written = {
        "prompt_tokens": 500,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cache_write_tokens": 400},
    }
    assert openai_chat.usage_from_response({"usage": written}) == Usage(
        input_tokens=100, output_tokens=1, cache_write_5m_tokens=400
    )
    deepseek = {"prompt_tokens": 90, "completion_tokens": 9, "prompt_cache_hit_tokens": 64}
    assert openai_chat.usage_from_response({"usage": deepseek}) == Usage(
        input_tokens=26, output_tokens=9, cache_read_tokens=64
    )
    # A compatible vendor answering with Responses-style names.
    renamed = {"input_tokens": 10, "output_tokens": 4}
    assert openai_chat.usage_from_response({"usage": renamed}) == Usage(input_tokens=10, output_tokens=4)


def test_openai_chat_missing_or_null_usage() -> None:
    assert openai_chat.usage_from_response({}) == Usage()
    assert openai_chat.usage_from_response({"usage": None}) == Usage()
    nulls = {"prompt_tokens": 5, "completion_tokens": None, "prompt_tokens_details": None}
    assert openai_chat.usage_from_response({"usage": nulls}) == Usage(input_tokens=5)


def test_openai_responses_cached_writes_by_ttl_and_reasoning() -> None:
    body = {
        "object": "response",
        "usage": {
            "input_tokens": 12033,
            "input_tokens_details": {
                "cached_tokens": 11000,
                "cache_write_tokens": 900,
                "cache_write_tokens_details": {"ttl_30m_tokens": 600, "ttl_12h_tokens": 300},
            },
            "output_tokens": 44,
            "output_tokens_details": {"reasoning_tokens": 20},
            "total_tokens": 12077,
        },
    }
    assert openai_responses.usage_from_response(body) == Usage(
        input_tokens=133,
        output_tokens=44,
        cache_read_tokens=11000,
        cache_write_5m_tokens=600,
        cache_write_1h_tokens=300,
        reasoning_tokens=20,
    )
    # The same object nested in a lifecycle event.
    assert openai_responses.usage_from_response({"type": "response.completed", "response": body}) == (
        openai_responses.usage_from_response(body)
    )


def test_openai_responses_write_total_without_breakdown() -> None:
    usage = {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 60}}
    assert openai_responses.usage_from_response({"usage": usage}) == Usage(
        input_tokens=40, cache_write_5m_tokens=60
    )


def test_anthropic_cache_breakdown() -> None:
    body = {
        "type": "message",
        "usage": {
            "input_tokens": 50,
            "cache_creation_input_tokens": 3000,
            "cache_read_input_tokens": 20000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
            "output_tokens": 700,
            "output_tokens_details": {"thinking_tokens": 400},
        },
    }
    assert anthropic.usage_from_response(body) == Usage(
        input_tokens=50,
        output_tokens=700,
        cache_read_tokens=20000,
        cache_write_5m_tokens=1000,
        cache_write_1h_tokens=2000,
        reasoning_tokens=400,
    )


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # Older responses: no breakdown, every write is 5m.
        ({"input_tokens": 3, "cache_creation_input_tokens": 120, "output_tokens": 2}, (120, 0)),
        # A breakdown that misses some writes: the rest is billed as 5m.
        (
            {
                "input_tokens": 3,
                "cache_creation_input_tokens": 120,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100},
                "output_tokens": 2,
            },
            (20, 100),
        ),
    ],
)
def test_anthropic_cache_write_fallbacks(usage: dict[str, Any], expected: tuple[int, int]) -> None:
    result = anthropic.usage_from_response({"usage": usage})
    assert (result.cache_write_5m_tokens, result.cache_write_1h_tokens) == expected
    assert result.input_tokens == 3


def test_anthropic_message_start_event() -> None:
    event = {"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}
    assert anthropic.usage_from_response(event) == Usage(input_tokens=9, output_tokens=1)


def test_gemini_cached_thoughts_and_tool_prompt() -> None:
    body = {
        "usageMetadata": {
            "promptTokenCount": 5000,
            "cachedContentTokenCount": 4096,
            "candidatesTokenCount": 80,
            "thoughtsTokenCount": 300,
            "toolUsePromptTokenCount": 20,
            "totalTokenCount": 5400,
        }
    }
    assert gemini.usage_from_response(body) == Usage(
        input_tokens=924, output_tokens=380, cache_read_tokens=4096, reasoning_tokens=300
    )
    snake = {"usage_metadata": {"prompt_token_count": 10, "candidates_token_count": 2}}
    assert gemini.usage_from_response(snake) == Usage(input_tokens=10, output_tokens=2)


@pytest.mark.parametrize(
    "module", [openai_chat, openai_responses, anthropic, gemini], ids=lambda m: m.__name__.rsplit(".", 1)[-1]
)
def test_usage_round_trips_through_each_wire(module: Any) -> None:
    usage = Usage(input_tokens=120, output_tokens=40, cache_read_tokens=1000, reasoning_tokens=10)
    if module is not gemini:  # Gemini reports no cache writes
        usage.cache_write_5m_tokens = 30
        if module is not openai_chat:  # Chat reports writes without a TTL split
            usage.cache_write_1h_tokens = 7
    assert module.usage_from_wire(module.usage_to_wire(usage)) == usage
