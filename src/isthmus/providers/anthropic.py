"""Anthropic Messages: ``base_url`` is what the Anthropic SDK takes (``https://api.anthropic.com``)."""

from __future__ import annotations

from collections.abc import Mapping

from isthmus.ir.protocol import Operation
from isthmus.providers.base import UpstreamCall, UpstreamTarget
from isthmus.providers.http import HTTPProvider, join_url

DEFAULT_ANTHROPIC_VERSION = "2023-06-01"

_PATHS = {
    Operation.GENERATE: "/v1/messages",
    Operation.COUNT_TOKENS: "/v1/messages/count_tokens",
}


class AnthropicProvider(HTTPProvider):
    kind = "anthropic"

    def url(self, call: UpstreamCall) -> str:
        path = _PATHS.get(call.operation)
        if path is None:
            raise ValueError(f"Anthropic has no {call.operation}")
        return join_url(call.target.base_url, path, call.query)

    def auth_headers(self, target: UpstreamTarget) -> Mapping[str, str]:
        return {"x-api-key": target.secret}

    def request_headers(self, call: UpstreamCall) -> dict[str, str]:
        headers = super().request_headers(call)
        headers.setdefault("anthropic-version", DEFAULT_ANTHROPIC_VERSION)
        return headers
