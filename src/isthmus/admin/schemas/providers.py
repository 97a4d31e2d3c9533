"""Providers (upstreams), their endpoints and their keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from isthmus.admin.schemas.common import Body, Name, Out
from isthmus.config.schema import DEFAULT_PROTOCOLS, Capability, ProviderType, Timeouts
from isthmus.ir.protocol import Protocol

_SECRET_MAX = 8192


def _check_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) > 2048 or any(c.isspace() for c in value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    for name, header_value in value.items():
        if not name or any(not (c.isalnum() or c in "-_") for c in name):
            raise ValueError(f"{name!r} is not a valid header name")
        if "\r" in header_value or "\n" in header_value:
            raise ValueError(f"the value of header {name!r} contains a line break")
    return value


BaseUrl = Annotated[str, AfterValidator(_check_url)]
Headers = Annotated[dict[str, str], AfterValidator(_check_headers)]


class EndpointIn(Body):
    protocol: Protocol
    base_url: BaseUrl | None = None


class EndpointOut(Out):
    protocol: str
    base_url: str | None


class ProviderKeyCreate(Body):
    name: Name
    secret: str = Field(min_length=1, max_length=_SECRET_MAX)
    priority: int = 0
    weight: float = Field(1.0, gt=0)
    capabilities: list[Capability] = []
    cost_multiplier: float = Field(1.0, ge=0)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    enabled: bool = True


class ProviderKeyUpdate(Body):
    name: Name | None = None
    secret: str | None = Field(None, min_length=1, max_length=_SECRET_MAX)
    priority: int | None = None
    weight: float | None = Field(None, gt=0)
    capabilities: list[Capability] | None = None
    cost_multiplier: float | None = Field(None, ge=0)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    enabled: bool | None = None


class ProviderKeyOut(Out):
    id: int
    provider_id: int
    name: str
    secret_hint: str = Field(description="a masked hint; the secret itself is write-only")
    priority: int
    weight: float
    capabilities: list[str] | None
    cost_multiplier: float
    rpm: int | None
    tpm: int | None
    concurrency: int | None
    enabled: bool
    managed_by: str
    created_at: datetime
    updated_at: datetime


class _EndpointFields(Body):
    base_url: BaseUrl | None = None
    protocols: list[Protocol] | None = None
    endpoints: list[EndpointIn] | None = Field(
        None, description="one base URL per protocol; an alternative to base_url + protocols"
    )

    @model_validator(mode="after")
    def _one_way(self) -> _EndpointFields:
        if self.endpoints is not None and (self.base_url is not None or self.protocols is not None):
            raise ValueError("give either endpoints, or base_url with optional protocols, not both")
        if self.endpoints is not None:
            seen = [e.protocol for e in self.endpoints]
            if len(seen) != len(set(seen)):
                raise ValueError("each protocol may appear in endpoints only once")
        return self


class ProviderCreate(_EndpointFields):
    name: Name
    type: ProviderType
    priority: int = 0
    free_tier: bool = False
    enabled: bool = True
    headers: Headers = {}
    api_version: str | None = Field(None, max_length=64)
    timeouts: Timeouts = Timeouts()
    keys: list[ProviderKeyCreate] = Field([], description="keys to create with the provider")

    def endpoint_list(self) -> list[EndpointIn]:
        """The endpoints to store: as given, or one per protocol (default: the type's) at base_url."""
        if self.endpoints is not None:
            return list(self.endpoints)
        protocols = self.protocols or list(DEFAULT_PROTOCOLS[self.type])
        return [EndpointIn(protocol=p, base_url=self.base_url) for p in protocols]


class ProviderUpdate(_EndpointFields):
    name: Name | None = None
    priority: int | None = None
    free_tier: bool | None = None
    enabled: bool | None = None
    headers: Headers | None = None
    api_version: str | None = Field(None, max_length=64)
    timeouts: Timeouts | None = None


class ProviderOut(Out):
    id: int
    name: str
    type: str
    base_url: str | None
    endpoints: list[EndpointOut]
    priority: int
    free_tier: bool
    enabled: bool
    headers: dict[str, str]
    api_version: str | None
    timeouts: dict[str, float] | None
    key_count: int
    managed_by: str
    created_at: datetime
    updated_at: datetime


class ProviderTestIn(Body):
    key_id: int | None = Field(None, description="the key to test with; the first enabled key if omitted")


class ProviderTestOut(Out):
    ok: bool
    latency_ms: float
    status: int | None = Field(description="the upstream's HTTP status, when it answered")
    error: str | None
    key_id: int | None
    key_name: str | None
    model_count: int


class ModelSyncOut(Out):
    models: list[str] = Field(description="every model id the upstream lists")
    created: list[str] = Field(description="models created now (only with ?create=true)")
    existing: list[str] = Field(description="upstream ids that already exist as model names")
