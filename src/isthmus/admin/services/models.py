"""Public models, their routes, and their prices (append-only, effective-dated)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.admin.schemas.models import (
    ModelCreate,
    ModelOut,
    ModelUpdate,
    PriceCreate,
    PriceIn,
    PriceOut,
    RouteIn,
    RouteOut,
)
from isthmus.admin.services import Actor
from isthmus.admin.services.common import (
    audit,
    audit_update,
    ensure_api_managed,
    plain,
    require_admin,
    snapshot,
    updates,
)
from isthmus.admin.validation import AdminValidationError
from isthmus.errors import ConflictError
from isthmus.store import repos
from isthmus.store.repos import Page
from isthmus.store.tables import Model, Price, Provider, ProviderKey, Route, utcnow

# --- Output -----------------------------------------------------------------------------------------


async def model_outputs(session: AsyncSession, models: Sequence[Model]) -> list[ModelOut]:
    """Models with their routes and the price in force now, in three queries for the whole page."""
    ids = [m.id for m in models]
    if not ids:
        return []
    routes: dict[int, list[tuple[Route, str]]] = {i: [] for i in ids}
    route_query = (
        select(Route, Provider.name)
        .join(Provider, Provider.id == Route.provider_id)
        .where(Route.model_id.in_(ids))
        .order_by(Route.position, Route.id)
    )
    for route, provider_name in (await session.execute(route_query)).all():
        routes[route.model_id].append((route, provider_name))
    now = utcnow()
    price_query = (
        select(Price)
        .where(Price.model_id.in_(ids), Price.effective_from <= now)
        .order_by(Price.model_id, Price.effective_from.desc(), Price.id.desc())
    )
    current: dict[int, Price] = {}
    for row in (await session.scalars(price_query)).all():
        current.setdefault(row.model_id, row)
    out = []
    for model in models:
        price = current.get(model.id)
        out.append(
            ModelOut(
                id=model.id,
                name=model.name,
                capabilities=model.capabilities,
                context_window=model.context_window,
                enabled=model.enabled,
                managed_by=model.managed_by,
                routes=[_route_out(r, name) for r, name in routes[model.id]],
                price=PriceOut.model_validate(price) if price is not None else None,
                created_at=model.created_at,
                updated_at=model.updated_at,
            )
        )
    return out


def _route_out(route: Route, provider_name: str) -> RouteOut:
    return RouteOut(
        id=route.id,
        provider_id=route.provider_id,
        provider_name=provider_name,
        upstream_model=route.upstream_model,
        priority=route.priority,
        weight=route.weight,
        key_names=route.key_names,
        position=route.position,
    )


def _routes_snapshot(routes: Sequence[Route]) -> list[dict[str, Any]]:
    return [
        {
            "provider_id": r.provider_id,
            "upstream_model": r.upstream_model,
            "priority": r.priority,
            "weight": r.weight,
            "key_names": r.key_names,
        }
        for r in routes
    ]


# --- Models -------------------------------------------------------------------------------------


async def list_models(
    session: AsyncSession,
    actor: Actor,
    *,
    limit: int,
    offset: int,
    name: str | None = None,
    enabled: bool | None = None,
) -> Page[Model]:
    require_admin(actor, "list models")
    filters: dict[str, Any] = {}
    if enabled is not None:
        filters["enabled"] = enabled
    return await repos.models.list(session, limit=limit, offset=offset, filters=filters, search=name)


async def get_model(session: AsyncSession, actor: Actor, model_id: int) -> Model:
    require_admin(actor, "view models")
    return await repos.models.get(session, model_id)


async def _resolve_routes(session: AsyncSession, routes: Sequence[RouteIn]) -> list[Route]:
    """Route rows for the given inputs (not yet added), each provider and key name checked."""
    out: list[Route] = []
    for index, route in enumerate(routes):
        field = f"routes[{index}]"
        provider: Provider | None
        if route.provider_id is not None:
            provider = await session.get(Provider, route.provider_id)
            if provider is None:
                raise AdminValidationError(
                    f"no provider with id {route.provider_id}", param=f"{field}.provider_id"
                )
            if route.provider is not None and provider.name != route.provider:
                raise AdminValidationError(
                    f"provider {route.provider_id} is named {provider.name!r}, not {route.provider!r}",
                    param=f"{field}.provider",
                )
        elif route.provider is not None:
            provider = await repos.providers.find_by_name(session, route.provider)
            if provider is None:
                raise AdminValidationError(f"no provider named {route.provider!r}", param=f"{field}.provider")
        else:
            raise AdminValidationError(
                "give the route's provider_id or provider name", param=f"{field}.provider_id"
            )
        if route.key_names:
            names = (
                await session.scalars(select(ProviderKey.name).where(ProviderKey.provider_id == provider.id))
            ).all()
            for key_index, key_name in enumerate(route.key_names):
                if key_name not in names:
                    raise AdminValidationError(
                        f"provider {provider.name!r} has no key named {key_name!r}",
                        param=f"{field}.key_names[{key_index}]",
                    )
        out.append(
            Route(
                provider_id=provider.id,
                upstream_model=route.upstream_model,
                priority=route.priority,
                weight=route.weight,
                key_names=route.key_names,
                position=index,
                managed_by="api",
            )
        )
    return out


async def create_model(session: AsyncSession, actor: Actor, body: ModelCreate) -> Model:
    require_admin(actor, "create models")
    routes = await _resolve_routes(session, body.routes)
    model = await repos.models.create(
        session,
        name=body.name,
        capabilities=list(body.capabilities),
        context_window=body.context_window,
        enabled=body.enabled,
        managed_by="api",
    )
    for route in routes:
        route.model_id = model.id
    await repos.flush_or_raise(session, "route", lambda: session.add_all(routes))
    after = snapshot(model, routes=_routes_snapshot(routes))
    await audit(session, actor, "create", "model", entity_id=model.id, entity_name=model.name, after=after)
    if body.price is not None:
        await _append_price(session, actor, model, body.price, None)
    return model


async def update_model(session: AsyncSession, actor: Actor, model_id: int, body: ModelUpdate) -> Model:
    require_admin(actor, "edit models")
    model = await repos.models.get(session, model_id)
    ensure_api_managed(model, "model", model.name)
    values = updates(body, required=("name", "enabled"), exclude=("routes",))
    changes = await repos.models.update(session, model, **values)
    if body.routes is not None:
        new_routes = await _resolve_routes(session, body.routes)
        old_routes = list(await repos.list_routes(session, model.id))
        before, after = _routes_snapshot(old_routes), _routes_snapshot(new_routes)
        if before != after:
            for old in old_routes:
                await session.delete(old)
            for route in new_routes:
                route.model_id = model.id
            await repos.flush_or_raise(session, "route", lambda: session.add_all(new_routes))
            changes["routes"] = (before, after)
    await audit_update(session, actor, "model", model, changes, name=model.name)
    return model


async def delete_model(session: AsyncSession, actor: Actor, model_id: int) -> None:
    require_admin(actor, "delete models")
    model = await repos.models.get(session, model_id)
    ensure_api_managed(model, "model", model.name)
    before = snapshot(model, routes=_routes_snapshot(await repos.list_routes(session, model.id)))
    await repos.models.delete(session, model)
    await audit(session, actor, "delete", "model", entity_id=model_id, entity_name=model.name, before=before)


# --- Prices ---------------------------------------------------------------------------------------


async def list_prices(session: AsyncSession, actor: Actor, model_id: int) -> list[Price]:
    """Every price the model ever had, newest first."""
    require_admin(actor, "view prices")
    await repos.models.get(session, model_id)
    return list(reversed(await repos.price_history(session, model_id)))


async def add_price(session: AsyncSession, actor: Actor, model_id: int, body: PriceCreate) -> Price:
    require_admin(actor, "set prices")
    model = await repos.models.get(session, model_id)
    ensure_api_managed(model, "model", model.name)
    return await _append_price(session, actor, model, body, body.effective_from)


async def _append_price(
    session: AsyncSession, actor: Actor, model: Model, body: PriceIn, effective_from: datetime | None
) -> Price:
    when = effective_from or utcnow()
    newest = await session.scalar(
        select(Price).where(Price.model_id == model.id).order_by(Price.effective_from.desc()).limit(1)
    )
    if newest is not None and when <= newest.effective_from:
        # Inserting before the newest price would change which price applied in the past.
        raise ConflictError(
            f"model {model.name!r} already has a price effective from {newest.effective_from.isoformat()}; "
            "a new price must start after it (price history is never rewritten)",
            code="price_history",
            param="effective_from",
        )
    rates = {name: plain(getattr(body, name)) for name in repos.PRICE_FIELDS}
    price = await repos.add_price(session, model.id, effective_from=when, managed_by="api", **rates)
    await audit(
        session,
        actor,
        "add_price",
        "model",
        entity_id=model.id,
        entity_name=model.name,
        after=snapshot(price),
    )
    return price


# --- Models from an upstream's list -----------------------------------------------------------------


async def create_models_for_upstream(
    session: AsyncSession, actor: Actor, provider_id: int, upstream_ids: Sequence[str]
) -> tuple[list[str], list[str]]:
    """A model plus one route (same name both sides) for each id not yet a model. → (created, existing)."""
    require_admin(actor, "create models")
    provider = await repos.providers.get(session, provider_id)
    known = set((await session.scalars(select(Model.name).where(Model.name.in_(list(upstream_ids))))).all())
    created: list[str] = []
    existing: list[str] = []
    for upstream_id in upstream_ids:
        if upstream_id in known:
            existing.append(upstream_id)
            continue
        if len(upstream_id) > 128 or not upstream_id.isprintable():
            continue
        model = await repos.models.create(session, name=upstream_id, capabilities=[], managed_by="api")
        route = Route(
            model_id=model.id,
            provider_id=provider.id,
            upstream_model=upstream_id,
            position=0,
            managed_by="api",
        )
        await repos.flush_or_raise(session, "route", partial(session.add, route))
        after = snapshot(
            model, routes=_routes_snapshot([route]), source=f"sync from provider {provider.name}"
        )
        await audit(
            session, actor, "create", "model", entity_id=model.id, entity_name=model.name, after=after
        )
        known.add(upstream_id)
        created.append(upstream_id)
    return created, existing


async def existing_model_names(session: AsyncSession, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are already model names, in the given order."""
    known = set((await session.scalars(select(Model.name).where(Model.name.in_(list(names))))).all())
    return [n for n in names if n in known]
