"""Small constructors for routing test data (plain dataclasses, as the relay would build them)."""

from __future__ import annotations

from collections.abc import Iterable

from isthmus.ir.protocol import Protocol
from isthmus.routing.model import Endpoint, ModelEntry, ProviderKey, Route

OPENAI = frozenset({Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES})
ANTHROPIC = frozenset({Protocol.ANTHROPIC})
GEMINI = frozenset({Protocol.GEMINI})
ALL_PROTOCOLS = frozenset(Protocol)


def endpoint(
    provider_id: int,
    *,
    name: str | None = None,
    protocols: frozenset[Protocol] = OPENAI,
    priority: int = 0,
    enabled: bool = True,
    provider_type: str = "openai",
) -> Endpoint:
    return Endpoint(
        provider_id=provider_id,
        provider_name=name or f"p{provider_id}",
        provider_type=provider_type,
        protocols=protocols,
        base_urls={p: f"https://p{provider_id}.example/{p.value}" for p in protocols},
        priority=priority,
        enabled=enabled,
    )


def key(
    key_id: int,
    provider_id: int,
    *,
    name: str | None = None,
    priority: int = 0,
    weight: float = 1.0,
    capabilities: Iterable[str] = (),
    enabled: bool = True,
) -> ProviderKey:
    return ProviderKey(
        id=key_id,
        provider_id=provider_id,
        name=name or f"k{key_id}",
        secret=f"sk-test-{key_id}",
        priority=priority,
        weight=weight,
        capabilities=frozenset(capabilities),
        enabled=enabled,
    )


def model(name: str, *routes: Route, model_id: int = 1, enabled: bool = True) -> ModelEntry:
    numbered = tuple(
        Route(r.endpoint, r.upstream_model, r.priority, r.weight, r.key_names, position=i)
        for i, r in enumerate(routes)
    )
    return ModelEntry(id=model_id, name=name, routes=numbered, enabled=enabled)


def route(
    ep: Endpoint,
    upstream_model: str = "up-model",
    *,
    priority: int | None = None,
    weight: float = 1.0,
    keys: Iterable[str] | None = None,
) -> Route:
    return Route(ep, upstream_model, priority, weight, frozenset(keys) if keys is not None else None)
