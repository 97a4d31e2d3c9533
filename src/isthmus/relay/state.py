"""The in-memory snapshot the request path reads: keys, routes, models. Rebuilt on change, never
queried from the database per request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from isthmus.accounting import BuiltinPrices, PriceBook, Subject
from isthmus.accounting.request_logs import Redactor
from isthmus.config.schema import SchedulingMode, Timeouts
from isthmus.ir import Protocol
from isthmus.protocols.base import ModelInfo
from isthmus.relay.context import Principal
from isthmus.routing.affinity import AffinityCache
from isthmus.routing.health import HealthBackend
from isthmus.routing.model import Endpoint, ModelEntry, ProviderKey, Route
from isthmus.routing.router import Router, RoutingTable
from isthmus.store.snapshot import GatewayKeyRow, ProviderKeyRow, ProviderRow, SnapshotRows


@dataclass(slots=True)
class GatewayState:
    principals: Mapping[str, Principal]  # sha256 hex of the gateway key → principal
    router: Router
    models: Mapping[str, ModelEntry]
    model_infos: tuple[ModelInfo, ...]
    prices: PriceBook
    redactor: Redactor  # masks every provider secret of this snapshot in stored logs
    max_attempts: int = 3
    log_detail: str = "base"
    version: int = 0

    def visible_models(self, principal: Principal) -> list[ModelInfo]:
        allowed = principal.allowed_models
        return [m for m in self.model_infos if allowed is None or m.id in allowed]


class StateHolder:
    """One current snapshot, swapped atomically when the admin API or config changes something."""

    __slots__ = ("current",)

    def __init__(self, state: GatewayState) -> None:
        self.current = state

    def swap(self, state: GatewayState) -> None:
        state.version = self.current.version + 1
        self.current = state


def _principal(row: GatewayKeyRow, rows: SnapshotRows) -> Principal:
    user = rows.users.get(row.user_id) if row.user_id is not None else None
    team = rows.teams.get(row.team_id) if row.team_id is not None else None
    return Principal(
        key_id=row.id,
        key_name=row.name,
        user_id=row.user_id,
        team_id=row.team_id,
        allowed_models=frozenset(row.allowed_models) if row.allowed_models is not None else None,
        log_detail=row.log_detail,
        expires_at=row.expires_at.timestamp() if row.expires_at is not None else None,
        active=row.status == "active" and not (user is not None and user.disabled),
        route_hash=row.id,
        subject=Subject.from_rows(row, user, team),
    )


def _endpoint(row: ProviderRow) -> Endpoint:
    protocols = frozenset(Protocol(e.protocol) for e in row.endpoints)
    return Endpoint(
        provider_id=row.id,
        provider_name=row.name,
        provider_type=row.type,
        protocols=protocols,
        base_urls={Protocol(e.protocol): e.base_url for e in row.endpoints if e.base_url},
        priority=row.priority,
        free_tier=row.free_tier,
        timeouts=Timeouts(
            connect=row.timeouts.connect,
            first_byte=row.timeouts.first_byte,
            idle=row.timeouts.idle,
            total=row.timeouts.total,
        ),
        headers=dict(row.headers),
        api_version=row.api_version,
        enabled=row.enabled,
    )


def _key(provider_id: int, row: ProviderKeyRow) -> ProviderKey:
    return ProviderKey(
        id=row.id,
        provider_id=provider_id,
        name=row.name,
        secret=row.secret,
        priority=row.priority,
        weight=row.weight,
        capabilities=frozenset(row.capabilities),
        cost_multiplier=row.cost_multiplier,
        rpm=row.rpm,
        tpm=row.tpm,
        concurrency=row.concurrency,
        enabled=row.enabled,
    )


def build_state(
    rows: SnapshotRows,
    *,
    previous: Router | None,
    health: HealthBackend,
    affinity: AffinityCache,
    scheduling: SchedulingMode,
    max_attempts: int,
    log_detail: str,
    builtin: BuiltinPrices | None = None,
) -> GatewayState:
    """Turn store rows into the lookup tables of the request path (one pass, no I/O)."""
    endpoints = {pid: _endpoint(p) for pid, p in rows.providers.items()}
    keys_by_provider = {pid: [_key(pid, k) for k in p.keys] for pid, p in rows.providers.items()}
    entries: dict[str, ModelEntry] = {}
    infos: list[ModelInfo] = []
    for name, model in rows.models.items():
        routes = tuple(
            Route(
                endpoint=endpoints[r.provider_id],
                upstream_model=r.upstream_model,
                priority=r.priority,
                weight=r.weight if r.weight is not None else 1.0,
                key_names=frozenset(r.key_names) if r.key_names is not None else None,
                position=r.position,
            )
            for r in model.routes
            if r.provider_id in endpoints
        )
        entries[name] = ModelEntry(
            id=model.id,
            name=name,
            routes=routes,
            capabilities=frozenset(model.capabilities),
            context_window=model.context_window,
            enabled=model.enabled,
        )
        if model.enabled:
            infos.append(
                ModelInfo(
                    id=name, created=int(rows.loaded_at.timestamp()), context_window=model.context_window
                )
            )
    table = RoutingTable(entries.values(), keys_by_provider, scheduling)
    router = previous.with_table(table) if previous is not None else Router(table, health, affinity)
    return GatewayState(
        principals={h: _principal(k, rows) for h, k in rows.gateway_keys.items()},
        router=router,
        models={name: entry for name, entry in entries.items() if entry.enabled},
        model_infos=tuple(sorted(infos, key=lambda m: m.id)),
        prices=PriceBook.from_snapshot(rows, builtin),
        redactor=Redactor(k.secret for p in rows.providers.values() for k in p.keys),
        max_attempts=max_attempts,
        log_detail=log_detail,
    )
