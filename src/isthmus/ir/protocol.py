"""Names of the wire protocols and of the operations a front door serves."""

from __future__ import annotations

from enum import StrEnum


class Protocol(StrEnum):
    OPENAI_CHAT = "openai-chat"
    OPENAI_RESPONSES = "openai-responses"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


class Operation(StrEnum):
    """What the caller asked for. Generation operations route to models; the rest are auxiliary."""

    GENERATE = "generate"  # chat/completions, responses, messages, generateContent (stream or not)
    COUNT_TOKENS = "count_tokens"  # anthropic count_tokens, gemini countTokens
    EMBED = "embed"  # openai embeddings, gemini embedContent
    RESPONSE_GET = "response_get"  # GET /v1/responses/{id}
    RESPONSE_DELETE = "response_delete"  # DELETE /v1/responses/{id}
    LIST_MODELS = "list_models"
