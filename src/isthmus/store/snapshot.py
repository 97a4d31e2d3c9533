"""Everything the request path keeps in memory, loaded in one read as plain frozen dataclasses.

The relay builds its routing, auth and pricing tables from a ``SnapshotRows`` and rebuilds them when
the admin API or the config changes the store. Nothing here is an ORM object, so the snapshot can be
shared freely between tasks and outlives the session that loaded it. Disabled, paused and revoked
entities are included (flagged), so the relay can tell "revoked key" from "unknown key".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.crypto import SecretBox
from isthmus.store.tables import (
    GatewayKey,
    Model,
    Price,
    Provider,
    ProviderEndpoint,
    ProviderKey,
    Route,
    Team,
    User,
    utcnow,
)


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Limits | None:
        if not value:
            return None
        return cls(
            rpm=_int(value.get("rpm")), tpm=_int(value.get("tpm")), concurrency=_int(value.get("concurrency"))
        )


@dataclass(frozen=True, slots=True)
class Budget:
    monthly_usd: float | None = None
    daily_usd: float | None = None
    total_usd: float | None = None
    monthly_tokens: int | None = None
    daily_tokens: int | None = None
    total_tokens: int | None = None

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Budget | None:
        if not value:
            return None
        return cls(
            monthly_usd=_float(value.get("monthly_usd")),
            daily_usd=_float(value.get("daily_usd")),
            total_usd=_float(value.get("total_usd")),
            monthly_tokens=_int(value.get("monthly_tokens")),
            daily_tokens=_int(value.get("daily_tokens")),
            total_tokens=_int(value.get("total_tokens")),
        )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; defaults match the config file's."""

    connect: float = 10.0
    first_byte: float = 60.0
    idle: float = 120.0
    total: float = 900.0

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Timeouts:
        base = cls()
        if not value:
            return base
        return cls(
            connect=_float(value.get("connect")) or base.connect,
            first_byte=_float(value.get("first_byte")) or base.first_byte,
            idle=_float(value.get("idle")) or base.idle,
            total=_float(value.get("total")) or base.total,
        )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


@dataclass(frozen=True, slots=True)
class EndpointRow:
    protocol: str
    base_url: str | None


@dataclass(frozen=True, slots=True)
class ProviderKeyRow:
    id: int
    name: str
    secret: str = field(repr=False)  # decrypted; never in logs or reprs
    priority: int
    weight: float
    capabilities: tuple[str, ...]
    cost_multiplier: float
    rpm: int | None
    tpm: int | None
    concurrency: int | None
    enabled: bool


@dataclass(frozen=True, slots=True)
class ProviderRow:
    id: int
    name: str
    type: str
    priority: int
    free_tier: bool
    enabled: bool
    headers: Mapping[str, str]
    api_version: str | None
    timeouts: Timeouts
    endpoints: tuple[EndpointRow, ...]
    keys: tuple[ProviderKeyRow, ...]

    def endpoint(self, protocol: str) -> EndpointRow | None:
        return next((e for e in self.endpoints if e.protocol == protocol), None)


@dataclass(frozen=True, slots=True)
class RouteRow:
    """One candidate. ``priority``/``weight`` None mean the provider's priority / weight 1."""

    id: int
    provider_id: int
    provider_name: str
    upstream_model: str
    priority: int | None
    weight: float | None
    key_names: tuple[str, ...] | None
    position: int


@dataclass(frozen=True, slots=True)
class PriceTierRow:
    above_tokens: int
    input: float | None
    output: float | None
    cache_read: float | None
    cache_write_5m: float | None
    cache_write_1h: float | None


@dataclass(frozen=True, slots=True)
class PriceRow:
    """USD per million tokens from ``effective_from``; None cache/reasoning rates mean input/output."""

    id: int
    effective_from: datetime
    input: float
    output: float
    cache_read: float | None
    cache_write_5m: float | None
    cache_write_1h: float | None
    reasoning: float | None
    per_request: float
    tiers: tuple[PriceTierRow, ...]


@dataclass(frozen=True, slots=True)
class ModelRow:
    id: int
    name: str
    capabilities: tuple[str, ...]
    context_window: int | None
    enabled: bool
    routes: tuple[RouteRow, ...]
    # The price in force at load time first (if any), then future ones in effective order.
    prices: tuple[PriceRow, ...]

    def price_at(self, at: datetime) -> PriceRow | None:
        """The price in force at ``at`` among those loaded (exact for ``at`` >= the snapshot time)."""
        current: PriceRow | None = None
        for price in self.prices:
            if price.effective_from <= at:
                current = price
        return current


@dataclass(frozen=True, slots=True)
class GatewayKeyRow:
    """The principal behind a presented key. ``team_id`` is the key's team, else its user's."""

    id: int
    name: str
    key_hash: str
    key_prefix: str
    user_id: int | None
    team_id: int | None
    allowed_models: tuple[str, ...] | None
    limits: Limits | None
    budget: Budget | None
    log_detail: str | None
    status: str
    expires_at: datetime | None

    def is_usable(self, at: datetime) -> bool:
        return self.status == "active" and (self.expires_at is None or self.expires_at > at)


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    username: str
    role: str
    team_id: int | None
    limits: Limits | None
    budget: Budget | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class TeamRow:
    id: int
    name: str
    limits: Limits | None
    budget: Budget | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class SnapshotRows:
    loaded_at: datetime
    providers: Mapping[int, ProviderRow]
    models: Mapping[str, ModelRow]  # by public name
    gateway_keys: Mapping[str, GatewayKeyRow]  # by key hash
    users: Mapping[int, UserRow]
    teams: Mapping[int, TeamRow]

    def same_content(self, other: SnapshotRows) -> bool:
        """The same rows, whenever each was read. Prices count as they stood at each read, so a price
        that has come into force since ``other`` was read makes them differ."""
        return (
            self.providers == other.providers
            and self.models == other.models
            and self.gateway_keys == other.gateway_keys
            and self.users == other.users
            and self.teams == other.teams
        )


def _tiers(value: Any) -> tuple[PriceTierRow, ...]:
    tiers = [
        PriceTierRow(
            above_tokens=int(t["above_tokens"]),
            input=_float(t.get("input")),
            output=_float(t.get("output")),
            cache_read=_float(t.get("cache_read")),
            cache_write_5m=_float(t.get("cache_write_5m")),
            cache_write_1h=_float(t.get("cache_write_1h")),
        )
        for t in value or ()
    ]
    return tuple(sorted(tiers, key=lambda t: t.above_tokens))


def _price_row(p: Price) -> PriceRow:
    return PriceRow(
        id=p.id,
        effective_from=p.effective_from,
        input=p.input,
        output=p.output,
        cache_read=p.cache_read,
        cache_write_5m=p.cache_write_5m,
        cache_write_1h=p.cache_write_1h,
        reasoning=p.reasoning,
        per_request=p.per_request,
        tiers=_tiers(p.tiers),
    )


async def load_snapshot_rows(
    session: AsyncSession, box: SecretBox, *, now: datetime | None = None
) -> SnapshotRows:
    """Read everything in a handful of queries (one per table) and decrypt provider keys.

    Run it in one transaction so the tables are read consistently (PostgreSQL: use REPEATABLE READ
    if the admin API may write concurrently; a missed change is picked up by the next reload anyway).
    """
    at = now or utcnow()

    async def rows(query: Any) -> list[Any]:
        return list((await session.scalars(query)).all())

    providers = await rows(select(Provider).order_by(Provider.id))
    endpoints = await rows(select(ProviderEndpoint).order_by(ProviderEndpoint.id))
    provider_keys = await rows(select(ProviderKey).order_by(ProviderKey.id))
    models = await rows(select(Model).order_by(Model.id))
    routes = await rows(select(Route).order_by(Route.model_id, Route.position, Route.id))
    prices = await rows(select(Price).order_by(Price.model_id, Price.effective_from, Price.id))
    keys = await rows(select(GatewayKey).order_by(GatewayKey.id))
    users = await rows(select(User).order_by(User.id))
    teams = await rows(select(Team).order_by(Team.id))

    endpoints_by_provider: dict[int, list[EndpointRow]] = defaultdict(list)
    for e in endpoints:
        endpoints_by_provider[e.provider_id].append(EndpointRow(protocol=e.protocol, base_url=e.base_url))
    keys_by_provider: dict[int, list[ProviderKeyRow]] = defaultdict(list)
    for k in provider_keys:
        keys_by_provider[k.provider_id].append(
            ProviderKeyRow(
                id=k.id,
                name=k.name,
                secret=box.decrypt(k.secret_encrypted),
                priority=k.priority,
                weight=k.weight,
                capabilities=_strings(k.capabilities),
                cost_multiplier=k.cost_multiplier,
                rpm=k.rpm,
                tpm=k.tpm,
                concurrency=k.concurrency,
                enabled=k.enabled,
            )
        )
    provider_rows = {
        p.id: ProviderRow(
            id=p.id,
            name=p.name,
            type=p.type,
            priority=p.priority,
            free_tier=p.free_tier,
            enabled=p.enabled,
            headers={str(k): str(v) for k, v in (p.headers or {}).items()},
            api_version=p.api_version,
            timeouts=Timeouts.from_json(p.timeouts),
            endpoints=tuple(endpoints_by_provider[p.id]),
            keys=tuple(keys_by_provider[p.id]),
        )
        for p in providers
    }

    routes_by_model: dict[int, list[RouteRow]] = defaultdict(list)
    for r in routes:
        routes_by_model[r.model_id].append(
            RouteRow(
                id=r.id,
                provider_id=r.provider_id,
                provider_name=provider_rows[r.provider_id].name,
                upstream_model=r.upstream_model,
                priority=r.priority,
                weight=r.weight,
                key_names=_strings(r.key_names) if r.key_names is not None else None,
                position=r.position,
            )
        )
    prices_by_model: dict[int, list[PriceRow]] = defaultdict(list)
    for p in prices:
        prices_by_model[p.model_id].append(_price_row(p))
    model_rows: dict[str, ModelRow] = {}
    for m in models:
        history = prices_by_model[m.id]
        past = [p for p in history if p.effective_from <= at]
        future = [p for p in history if p.effective_from > at]
        model_rows[m.name] = ModelRow(
            id=m.id,
            name=m.name,
            capabilities=_strings(m.capabilities),
            context_window=m.context_window,
            enabled=m.enabled,
            routes=tuple(routes_by_model[m.id]),
            prices=tuple(past[-1:] + future),
        )

    user_rows = {
        u.id: UserRow(
            id=u.id,
            username=u.username,
            role=u.role,
            team_id=u.team_id,
            limits=Limits.from_json(u.limits),
            budget=Budget.from_json(u.budget),
            disabled=u.disabled,
        )
        for u in users
    }
    team_rows = {
        t.id: TeamRow(
            id=t.id,
            name=t.name,
            limits=Limits.from_json(t.limits),
            budget=Budget.from_json(t.budget),
            disabled=t.disabled,
        )
        for t in teams
    }
    key_rows = {}
    for k in keys:
        owner = user_rows.get(k.user_id) if k.user_id is not None else None
        key_rows[k.key_hash] = GatewayKeyRow(
            id=k.id,
            name=k.name,
            key_hash=k.key_hash,
            key_prefix=k.key_prefix,
            user_id=k.user_id,
            team_id=k.team_id if k.team_id is not None else (owner.team_id if owner else None),
            allowed_models=_strings(k.allowed_models) if k.allowed_models is not None else None,
            limits=Limits.from_json(k.limits),
            budget=Budget.from_json(k.budget),
            log_detail=k.log_detail,
            status=k.status,
            expires_at=k.expires_at,
        )
    return SnapshotRows(
        loaded_at=at,
        providers=provider_rows,
        models=model_rows,
        gateway_keys=key_rows,
        users=user_rows,
        teams=team_rows,
    )
