"""Google Gemini (AI Studio): ``base_url`` is what google-genai takes
(``https://generativelanguage.googleapis.com``); the model is part of the URL, not the body."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from isthmus.ir.protocol import Operation
from isthmus.providers.base import UpstreamCall, UpstreamTarget
from isthmus.providers.http import HTTPProvider, join_url

API_VERSION = "v1beta"


def gemini_method(operation: Operation, stream: bool) -> str:
    if operation is Operation.GENERATE:
        return "streamGenerateContent" if stream else "generateContent"
    if operation is Operation.COUNT_TOKENS:
        return "countTokens"
    if operation is Operation.EMBED:
        return "embedContent"
    raise ValueError(f"Gemini has no {operation}")


class GeminiProvider(HTTPProvider):
    kind = "gemini"

    def url(self, call: UpstreamCall) -> str:
        method = call.action or gemini_method(call.operation, call.stream)
        query = call.query
        if call.stream and "alt=sse" not in query:
            query = f"{query}&alt=sse" if query else "alt=sse"
        model = quote(call.target.model.removeprefix("models/"), safe="-._~")
        return join_url(call.target.base_url, f"/{API_VERSION}/models/{model}:{method}", query)

    def auth_headers(self, target: UpstreamTarget) -> Mapping[str, str]:
        return {"x-goog-api-key": target.secret}
