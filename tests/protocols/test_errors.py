"""Error bodies and in-stream error events per protocol, checked against the SDKs' own types."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types.shared.error_response import ErrorResponse as AnthropicErrorResponse
from openai.types.responses import ResponseErrorEvent, ResponseFailedEvent
from openai.types.shared.error_object import ErrorObject as OpenAIErrorObject
from pydantic import TypeAdapter

from isthmus.errors import (
    AuthenticationError,
    BudgetExceededError,
    ErrorKind,
    InvalidRequestError,
    IsthmusError,
    NoCandidateError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeoutError,
)
from isthmus.protocols import anthropic, gemini, openai_chat, openai_common, openai_responses
from isthmus.protocols.anthropic import AnthropicStreamInspector
from isthmus.protocols.base import EventClass, error_kind
from isthmus.protocols.gemini import GeminiStreamInspector
from isthmus.protocols.openai_chat import ChatStreamInspector
from isthmus.protocols.openai_responses import ResponsesStreamInspector
from isthmus.protocols.sse import SSEParser

# (error, OpenAI type, Anthropic type, Gemini status)
TABLE: list[tuple[IsthmusError, str, str, str]] = [
    (InvalidRequestError("bad"), "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    (AuthenticationError("who"), "authentication_error", "authentication_error", "UNAUTHENTICATED"),
    (PermissionDeniedError("no"), "permission_error", "permission_error", "PERMISSION_DENIED"),
    (NotFoundError("gone"), "not_found_error", "not_found_error", "NOT_FOUND"),
    (PayloadTooLargeError("big"), "invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    (RateLimitedError("slow", retry_after=3), "rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    (BudgetExceededError("budget"), "rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    (NoCandidateError("none"), "server_error", "overloaded_error", "UNAVAILABLE"),
    (UpstreamError("up"), "server_error", "api_error", "UNAVAILABLE"),
    (
        UpstreamTimeoutError("slow up", phase="first_byte"),
        "server_error",
        "timeout_error",
        "DEADLINE_EXCEEDED",
    ),
    (IsthmusError("boom"), "server_error", "api_error", "INTERNAL"),
    # Generic upstream errors re-raised with the upstream's status take that status's kind.
    (UpstreamHTTPError("limited", status=429), "rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    (UpstreamHTTPError("busy", status=529), "server_error", "overloaded_error", "UNAVAILABLE"),
    (
        UpstreamHTTPError("bad", status=400),
        "invalid_request_error",
        "invalid_request_error",
        "INVALID_ARGUMENT",
    ),
    (UpstreamHTTPError("pay", status=402), "permission_error", "billing_error", "PERMISSION_DENIED"),
]


@pytest.mark.parametrize(("err", "openai_type", "anthropic_type", "gemini_status"), TABLE)
def test_error_bodies(err: IsthmusError, openai_type: str, anthropic_type: str, gemini_status: str) -> None:
    body = orjson.loads(openai_chat.error_body(err))
    assert body == {
        "error": {"message": err.message, "type": openai_type, "param": None, "code": body["error"]["code"]}
    }
    OpenAIErrorObject.model_validate(body["error"])
    assert openai_responses.error_body(err) == openai_chat.error_body(err)

    body = orjson.loads(anthropic.error_body(err))
    assert body == {"type": "error", "error": {"type": anthropic_type, "message": err.message}}
    if anthropic_type != "request_too_large":  # documented, but absent from the SDK's union
        AnthropicErrorResponse.model_validate(body)

    body = orjson.loads(gemini.error_body(err))
    assert body["error"]["code"] == err.status
    assert body["error"]["message"] == err.message
    assert body["error"]["status"] == gemini_status


def test_openai_codes() -> None:
    assert (
        orjson.loads(openai_common.error_body(RateLimitedError("x")))["error"]["code"]
        == "rate_limit_exceeded"
    )
    assert orjson.loads(openai_common.error_body(InvalidRequestError("x", code="context_length_exceeded")))[
        "error"
    ]["code"] == ("context_length_exceeded")
    assert orjson.loads(openai_common.error_body(InvalidRequestError("x", param="messages")))["error"][
        "param"
    ] == ("messages")


def test_gemini_retry_info() -> None:
    body = orjson.loads(gemini.error_body(RateLimitedError("slow", retry_after=2.4)))
    assert body["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}
    ]


def test_error_kind_keeps_specific_kinds() -> None:
    assert error_kind(NotFoundError("x", status=410)) is ErrorKind.NOT_FOUND
    assert error_kind(UpstreamError("x", status=599)) is ErrorKind.UPSTREAM


def _single_events(payload: bytes) -> list[Any]:
    parser = SSEParser()
    events = parser.feed(payload) + parser.flush()
    assert b"".join(e.raw for e in events) == payload
    return events


OVERLOADED = UpstreamHTTPError("Overloaded", status=529)


def test_chat_stream_error_event_is_seen_by_inspector() -> None:
    (event,) = _single_events(openai_chat.stream_error_event(OVERLOADED))
    assert orjson.loads(event.data)["error"]["type"] == "server_error"
    inspector = ChatStreamInspector()
    assert inspector.inspect(event) is EventClass.ERROR
    assert inspector.error is not None and inspector.error.upstream_status == 529


def test_responses_stream_error_events_match_sdk_types() -> None:
    payload = openai_responses.stream_error_event(
        RateLimitedError("slow down"), sequence_number=7, response_id="resp_1", model="gpt-x"
    )
    error_event, failed_event = _single_events(payload)
    assert error_event.event == "error" and failed_event.event == "response.failed"
    parsed_error = ResponseErrorEvent.model_validate(orjson.loads(error_event.data))
    assert (parsed_error.code, parsed_error.message, parsed_error.sequence_number) == (
        "rate_limit_exceeded",
        "slow down",
        7,
    )
    parsed_failed = ResponseFailedEvent.model_validate(orjson.loads(failed_event.data))
    assert parsed_failed.sequence_number == 8
    assert parsed_failed.response.id == "resp_1"
    assert parsed_failed.response.error is not None
    assert parsed_failed.response.error.code == "rate_limit_exceeded"
    inspector = ResponsesStreamInspector()
    assert [inspector.inspect(e) for e in (error_event, failed_event)] == [EventClass.ERROR] * 2
    assert inspector.error is not None and inspector.error.upstream_status == 429


def test_anthropic_stream_error_event() -> None:
    (event,) = _single_events(anthropic.stream_error_event(OVERLOADED))
    assert event.event == "error"
    TypeAdapter(AnthropicErrorResponse).validate_python(orjson.loads(event.data))
    inspector = AnthropicStreamInspector()
    assert inspector.inspect(event) is EventClass.ERROR
    assert inspector.error is not None
    assert (inspector.error.upstream_status, inspector.error.code) == (529, "overloaded_error")


def test_gemini_stream_error_event() -> None:
    (event,) = _single_events(gemini.stream_error_event(OVERLOADED))
    # google-genai spots error chunks by their text starting with '{"error":'.
    assert event.data.startswith(b'{"error":')
    inspector = GeminiStreamInspector()
    assert inspector.inspect(event) is EventClass.ERROR
    assert inspector.error is not None and inspector.error.upstream_status == 529
