"""OpenAI and every OpenAI-compatible vendor: ``base_url`` is what the OpenAI SDK takes (``…/v1``)."""

from __future__ import annotations

from collections.abc import Mapping

from isthmus.ir.protocol import Operation, Protocol
from isthmus.providers.base import UpstreamCall, UpstreamTarget
from isthmus.providers.http import HTTPProvider, join_url

_PATHS: dict[tuple[Protocol, Operation], str] = {
    (Protocol.OPENAI_CHAT, Operation.GENERATE): "/chat/completions",
    (Protocol.OPENAI_RESPONSES, Operation.GENERATE): "/responses",
    (Protocol.OPENAI_RESPONSES, Operation.RESPONSE_GET): "/responses/{id}",
    (Protocol.OPENAI_RESPONSES, Operation.RESPONSE_DELETE): "/responses/{id}",
    (Protocol.OPENAI_CHAT, Operation.EMBED): "/embeddings",
    (Protocol.OPENAI_RESPONSES, Operation.EMBED): "/embeddings",
}


def openai_path(call: UpstreamCall) -> str:
    path = _PATHS.get((call.target.protocol, call.operation))
    if path is None:
        raise ValueError(f"OpenAI has no {call.operation} for {call.target.protocol}")
    path = path.replace("{id}", call.resource_id or "")
    return f"{path}/{call.action}" if call.action else path


class OpenAIProvider(HTTPProvider):
    kind = "openai"

    def url(self, call: UpstreamCall) -> str:
        return join_url(call.target.base_url, openai_path(call), call.query)

    def auth_headers(self, target: UpstreamTarget) -> Mapping[str, str]:
        return {"authorization": f"Bearer {target.secret}"}
