"""Which front door a request came in by: protocol, operation and path parameters.

The table is data, resolved with one dict lookup for fixed paths, so adding a door is one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from isthmus.ir import Operation, Protocol


@dataclass(frozen=True, slots=True)
class Door:
    protocol: Protocol
    operation: Operation
    model: str | None = None  # from the path (Gemini)
    resource_id: str | None = None  # from the path (GET/DELETE /v1/responses/{id})
    stream: bool | None = None  # decided by the path (Gemini) rather than the body
    action: str | None = None  # Gemini's ":method" when the operation alone does not say it


_POST: dict[str, Door] = {
    "/v1/chat/completions": Door(Protocol.OPENAI_CHAT, Operation.GENERATE),
    "/chat/completions": Door(Protocol.OPENAI_CHAT, Operation.GENERATE),
    "/v1/responses": Door(Protocol.OPENAI_RESPONSES, Operation.GENERATE),
    "/responses": Door(Protocol.OPENAI_RESPONSES, Operation.GENERATE),
    "/v1/embeddings": Door(Protocol.OPENAI_CHAT, Operation.EMBED),
    "/embeddings": Door(Protocol.OPENAI_CHAT, Operation.EMBED),
    "/v1/messages": Door(Protocol.ANTHROPIC, Operation.GENERATE),
    "/v1/messages/count_tokens": Door(Protocol.ANTHROPIC, Operation.COUNT_TOKENS),
}

_GEMINI_METHODS: dict[str, tuple[Operation, bool]] = {
    "generateContent": (Operation.GENERATE, False),
    "streamGenerateContent": (Operation.GENERATE, True),
    "countTokens": (Operation.COUNT_TOKENS, False),
    "embedContent": (Operation.EMBED, False),
    "batchEmbedContents": (Operation.EMBED, False),
}

_GEMINI_MODEL_PREFIXES = ("/v1beta/models/", "/v1/models/", "/v1alpha/models/")

PREFIX_HINTS: dict[str, Protocol] = {
    "/openai": Protocol.OPENAI_CHAT,
    "/anthropic": Protocol.ANTHROPIC,
    "/gemini": Protocol.GEMINI,
}


def split_prefix(path: str) -> tuple[str, Protocol | None]:
    """Strip an ``/openai``, ``/anthropic`` or ``/gemini`` prefix, returning the protocol it hints."""
    if path.startswith(("/openai/", "/anthropic/", "/gemini/")):
        cut = path.index("/", 1)
        return path[cut:], PREFIX_HINTS[path[:cut]]
    return path, None


def resolve_post(path: str) -> Door | None:
    door = _POST.get(path)
    if door is not None:
        return door
    for prefix in _GEMINI_MODEL_PREFIXES:
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            model, sep, method = rest.rpartition(":")
            if not sep or not model:
                return None
            found = _GEMINI_METHODS.get(method)
            if found is None:
                return None
            operation, stream = found
            action = method if method == "batchEmbedContents" else None
            return Door(Protocol.GEMINI, operation, model=unquote(model), stream=stream, action=action)
    return None


def resolve_response_resource(method: str, path: str) -> Door | None:
    """GET/DELETE ``/v1/responses/{id}`` and GET ``/v1/responses/{id}/input_items``."""
    for prefix in ("/v1/responses/", "/responses/"):
        if path.startswith(prefix):
            rid, _, sub = path[len(prefix) :].partition("/")
            if not rid or (sub and (sub != "input_items" or method != "GET")):
                return None
            op = Operation.RESPONSE_GET if method == "GET" else Operation.RESPONSE_DELETE
            return Door(Protocol.OPENAI_RESPONSES, op, resource_id=rid, action=sub or None)
    return None


def list_models_shape(path: str, headers: dict[str, str], query: str, hint: Protocol | None) -> Protocol:
    """Which protocol's shape a model list answers in (the design's rule)."""
    if path.startswith(("/v1beta/", "/v1alpha/")) or hint is Protocol.GEMINI:
        return Protocol.GEMINI
    if hint is not None:
        return hint
    if "x-goog-api-key" in headers or query.startswith("key=") or "&key=" in query:
        return Protocol.GEMINI
    if "x-api-key" in headers or "anthropic-version" in headers:
        return Protocol.ANTHROPIC
    return Protocol.OPENAI_CHAT
