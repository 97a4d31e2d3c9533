"""Public models, their routes (candidates) and their effective-dated prices."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from isthmus.admin.schemas.common import Body, Name, Out, UpstreamModelName, UTCTime
from isthmus.config.schema import Capability, PriceTier


class RouteIn(Body):
    provider_id: int | None = Field(None, description="the provider, by id…")
    provider: str | None = Field(None, description="…or by name")
    upstream_model: UpstreamModelName
    priority: int | None = Field(None, description="lower is tried first; the provider's when omitted")
    weight: float | None = Field(None, gt=0)
    key_names: list[str] | None = Field(None, description="restrict this route to some provider keys")


class RouteOut(Out):
    id: int
    provider_id: int
    provider_name: str
    upstream_model: str
    priority: int | None
    weight: float | None
    key_names: list[str] | None
    position: int


class PriceIn(Body):
    """USD per million tokens. Omitted cache/reasoning rates bill at the input/output rate."""

    input: float = Field(0, ge=0)
    output: float = Field(0, ge=0)
    cache_read: float | None = Field(None, ge=0)
    cache_write_5m: float | None = Field(None, ge=0)
    cache_write_1h: float | None = Field(None, ge=0)
    reasoning: float | None = Field(None, ge=0)
    per_request: float = Field(0, ge=0)
    tiers: list[PriceTier] = []


class PriceCreate(PriceIn):
    effective_from: UTCTime | None = Field(
        None, description="when the price starts to apply; now when omitted. Never before the newest one."
    )


class PriceOut(Out):
    id: int
    model_id: int
    effective_from: datetime
    input: float
    output: float
    cache_read: float | None
    cache_write_5m: float | None
    cache_write_1h: float | None
    reasoning: float | None
    per_request: float
    tiers: list[dict[str, object]] | None
    managed_by: str
    created_at: datetime


class ModelCreate(Body):
    name: Name
    routes: list[RouteIn] = []
    price: PriceIn | None = Field(None, description="the first price, effective now")
    capabilities: list[Capability] = []
    context_window: int | None = Field(None, gt=0)
    enabled: bool = True


class ModelUpdate(Body):
    name: Name | None = None
    routes: list[RouteIn] | None = Field(None, description="replaces every route when given")
    capabilities: list[Capability] | None = None
    context_window: int | None = Field(None, gt=0)
    enabled: bool | None = None


class ModelOut(Out):
    id: int
    name: str
    capabilities: list[str] | None
    context_window: int | None
    enabled: bool
    managed_by: str
    routes: list[RouteOut]
    price: PriceOut | None = Field(description="the price in force now")
    created_at: datetime
    updated_at: datetime
