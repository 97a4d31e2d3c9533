"""One provider instance per upstream kind, sharing the process's HTTP pool."""

from __future__ import annotations

from isthmus.providers.anthropic import AnthropicProvider
from isthmus.providers.azure import AzureProvider
from isthmus.providers.base import BytesResponse, Provider, UpstreamCall, UpstreamResponse
from isthmus.providers.gemini import GeminiProvider
from isthmus.providers.h1 import H1Pool
from isthmus.providers.mock import mock_respond
from isthmus.providers.openai import OpenAIProvider


class MockProvider(Provider):
    """The mock answered in process: no socket, the same bytes the mock server would send."""

    kind = "mock"

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        answer = await mock_respond(
            call.target.protocol,
            call.operation,
            call.body or b"",
            call.headers,
            call.target.model,
            call.stream,
        )
        return BytesResponse(answer.status, answer.headers, answer.chunks)


def build_providers(pool: H1Pool) -> dict[str, Provider]:
    return {
        "openai": OpenAIProvider(pool),
        "azure": AzureProvider(pool),
        "anthropic": AnthropicProvider(pool),
        "gemini": GeminiProvider(pool),
        "mock": MockProvider(),
    }
