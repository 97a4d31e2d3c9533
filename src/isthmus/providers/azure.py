"""Azure OpenAI.

Two URL styles: with ``api_version`` set, the classic deployment URLs
(``{base_url}/openai/deployments/{deployment}/chat/completions?api-version=…``, where the upstream
model name is the deployment); without it, the v1 API (``base_url`` ending in ``/openai/v1``), which is
OpenAI's URL layout. Both authenticate with the ``api-key`` header.
"""

from __future__ import annotations

from collections.abc import Mapping

from isthmus.ir.protocol import Protocol
from isthmus.providers.base import UpstreamCall, UpstreamTarget
from isthmus.providers.http import HTTPProvider, join_url
from isthmus.providers.openai import openai_path


class AzureProvider(HTTPProvider):
    kind = "azure"

    def url(self, call: UpstreamCall) -> str:
        target = call.target
        path = openai_path(call)
        if not target.api_version:
            return join_url(target.base_url, path, call.query)
        query = f"api-version={target.api_version}"
        if call.query:
            query = f"{call.query}&{query}"
        base = (target.base_url or "").rstrip("/")
        if not base.endswith("/openai"):
            base += "/openai"
        if target.protocol is Protocol.OPENAI_RESPONSES:
            # The Responses API is not per deployment: the deployment goes in the body's "model".
            return join_url(base, path, query)
        return join_url(f"{base}/deployments/{target.model}", path, query)

    def auth_headers(self, target: UpstreamTarget) -> Mapping[str, str]:
        return {"api-key": target.secret}
