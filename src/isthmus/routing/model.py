"""Plain routing data, built by the relay from the database snapshot.

Everything here is immutable: a snapshot is shared by every request until the next rebuild, and the
router precomputes its candidates from it once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from isthmus.config.schema import Timeouts
from isthmus.ir.protocol import Protocol

CAPABILITY_CONTEXT_1M = "context_1m"
CAPABILITY_CACHE_1H = "cache_1h"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One configured provider: where it lives and which protocols it speaks."""

    provider_id: int
    provider_name: str
    provider_type: str  # "openai" | "azure" | "anthropic" | "gemini" | "mock"
    protocols: frozenset[Protocol]
    base_urls: Mapping[Protocol, str] = field(default_factory=dict)  # mock may have none
    priority: int = 0  # lower is tried first
    free_tier: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: Mapping[str, str] = field(default_factory=dict)
    api_version: str | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ProviderKey:
    """One upstream credential. ``secret`` is plaintext in memory only and never shown by ``repr``."""

    id: int
    provider_id: int
    name: str
    secret: str = field(default="", repr=False)
    priority: int = 0  # lower is tried first
    weight: float = 1.0
    capabilities: frozenset[str] = frozenset()
    cost_multiplier: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a public model: a provider endpoint and the model name it knows.

    ``priority`` None means the provider's priority; ``key_names`` None means all of its keys.
    """

    endpoint: Endpoint
    upstream_model: str
    priority: int | None = None
    weight: float = 1.0
    key_names: frozenset[str] | None = None
    position: int = 0  # order within the model's routes, for deterministic tie-breaking

    @property
    def effective_priority(self) -> int:
        return self.endpoint.priority if self.priority is None else self.priority


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A public model name clients send, and its routes."""

    id: int
    name: str
    routes: tuple[Route, ...]
    capabilities: frozenset[str] = frozenset()
    context_window: int | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True, repr=False)
class Candidate:
    """One concrete upstream attempt: endpoint, key, upstream model and the protocol to speak."""

    endpoint: Endpoint
    key: ProviderKey
    upstream_model: str
    protocol: Protocol  # the upstream protocol to use
    route_priority: int
    weight: float  # route weight × key weight

    @property
    def label(self) -> str:
        return f"{self.endpoint.provider_name}/{self.key.name}:{self.upstream_model}"

    @property
    def base_url(self) -> str | None:
        return self.endpoint.base_urls.get(self.protocol)

    def has_capability(self, capability: str) -> bool:
        return capability in self.key.capabilities

    def __repr__(self) -> str:
        return f"Candidate({self.label} via {self.protocol.value})"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A candidate the plan left out, and why (for traces and ``NoCandidateError`` messages)."""

    candidate: Candidate
    reason: str


def passthrough_only(client: Protocol, upstream: Protocol) -> bool:
    """The ``can_convert`` to use until protocol conversion exists: only same-protocol passthrough."""
    return client == upstream


@dataclass(frozen=True, slots=True)
class Requirements:
    """What one request needs from its upstream.

    ``can_convert(client_protocol, upstream_protocol)`` says whether the relay can translate between
    the two. Pass a long-lived function (not a fresh lambda per request): the router memoizes the
    protocol choice per (client protocol, function), so a new function object each time forfeits
    that cache (results stay correct).
    """

    client_protocol: Protocol
    needs_context_1m: bool = False
    needs_cache_1h: bool = False
    can_convert: Callable[[Protocol, Protocol], bool] = passthrough_only
