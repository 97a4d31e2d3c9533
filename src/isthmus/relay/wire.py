"""Protocol-indexed access to the protocol modules' wire helpers, as tables rather than ifs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from isthmus.errors import IsthmusError
from isthmus.ir import Operation, Protocol, Usage
from isthmus.protocols import anthropic, gemini, openai_chat, openai_common, openai_responses
from isthmus.protocols.base import ModelInfo, StreamInspector

__all__ = [
    "StreamInspector",
    "encode_model_list",
    "error_body",
    "finish_reason",
    "new_inspector",
    "stream_error_event",
    "usage_from_response",
]

_ERROR_BODY: dict[Protocol, Callable[[IsthmusError], bytes]] = {
    Protocol.OPENAI_CHAT: openai_common.error_body,
    Protocol.OPENAI_RESPONSES: openai_common.error_body,
    Protocol.ANTHROPIC: anthropic.error_body,
    Protocol.GEMINI: gemini.error_body,
}

_STREAM_ERROR: dict[Protocol, Callable[[IsthmusError], bytes]] = {
    Protocol.OPENAI_CHAT: openai_chat.stream_error_event,
    Protocol.OPENAI_RESPONSES: openai_responses.stream_error_event,
    Protocol.ANTHROPIC: anthropic.stream_error_event,
    Protocol.GEMINI: gemini.stream_error_event,
}

_USAGE: dict[Protocol, Callable[[Mapping[str, Any]], Usage]] = {
    Protocol.OPENAI_CHAT: openai_chat.usage_from_response,
    Protocol.OPENAI_RESPONSES: openai_responses.usage_from_response,
    Protocol.ANTHROPIC: anthropic.usage_from_response,
    Protocol.GEMINI: gemini.usage_from_response,
}

_INSPECTORS: dict[Protocol, Callable[[], StreamInspector]] = {
    Protocol.OPENAI_CHAT: openai_chat.ChatStreamInspector,
    Protocol.OPENAI_RESPONSES: openai_responses.ResponsesStreamInspector,
    Protocol.ANTHROPIC: anthropic.AnthropicStreamInspector,
    Protocol.GEMINI: gemini.GeminiStreamInspector,
}

_MODEL_LIST: dict[Protocol, Callable[[Sequence[ModelInfo]], bytes]] = {
    Protocol.OPENAI_CHAT: openai_common.encode_model_list,
    Protocol.OPENAI_RESPONSES: openai_common.encode_model_list,
    Protocol.ANTHROPIC: anthropic.encode_model_list,
    Protocol.GEMINI: gemini.encode_model_list,
}


def _chat_finish(body: Mapping[str, Any]) -> str | None:
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return reason if isinstance(reason, str) else None
    return None


def _anthropic_finish(body: Mapping[str, Any]) -> str | None:
    reason = body.get("stop_reason")
    return reason if isinstance(reason, str) else None


def _gemini_finish(body: Mapping[str, Any]) -> str | None:
    candidates = body.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        reason = candidates[0].get("finishReason")
        return reason if isinstance(reason, str) else None
    return None


_FINISH: dict[Protocol, Callable[[Mapping[str, Any]], str | None]] = {
    Protocol.OPENAI_CHAT: _chat_finish,
    Protocol.OPENAI_RESPONSES: openai_responses.finish_reason_of,
    Protocol.ANTHROPIC: _anthropic_finish,
    Protocol.GEMINI: _gemini_finish,
}


def error_body(protocol: Protocol, err: IsthmusError) -> bytes:
    return _ERROR_BODY[protocol](err)


def stream_error_event(protocol: Protocol, err: IsthmusError) -> bytes:
    return _STREAM_ERROR[protocol](err)


def usage_from_response(protocol: Protocol, operation: Operation, body: Mapping[str, Any]) -> Usage:
    if operation is Operation.COUNT_TOKENS:
        return Usage()  # counting tokens is free upstream and costs nothing here
    return _USAGE[protocol](body)


def finish_reason(protocol: Protocol, body: Mapping[str, Any]) -> str | None:
    return _FINISH[protocol](body)


def new_inspector(protocol: Protocol) -> StreamInspector:
    return _INSPECTORS[protocol]()


def encode_model_list(protocol: Protocol, models: Sequence[ModelInfo]) -> bytes:
    return _MODEL_LIST[protocol](models)
