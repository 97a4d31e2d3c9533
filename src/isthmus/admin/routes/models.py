"""``/models`` with routes and effective-dated prices (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from isthmus.admin.deps import AdminPrincipal, PageParams, Services, page_out
from isthmus.admin.schemas.common import Page
from isthmus.admin.schemas.models import ModelCreate, ModelOut, ModelUpdate, PriceCreate, PriceOut
from isthmus.admin.services import models
from isthmus.store.tables import Model

router = APIRouter(tags=["models"])


async def _out(services: Services, model: Model) -> ModelOut:
    async with services.reading() as session:
        return (await models.model_outputs(session, [model]))[0]


@router.get("/models", response_model=Page[ModelOut])
async def list_models(
    principal: AdminPrincipal,
    services: Services,
    page: PageParams,
    name: str | None = None,
    enabled: bool | None = None,
) -> Page[ModelOut]:
    """Each model with its routes and the price in force now. ``name`` matches a substring."""
    async with services.reading() as session:
        result = await models.list_models(
            session, principal.actor, limit=page.limit, offset=page.offset, name=name, enabled=enabled
        )
        items = await models.model_outputs(session, result.items)
    return page_out(result, items)


@router.post("/models", status_code=201, response_model=ModelOut)
async def create_model(body: ModelCreate, principal: AdminPrincipal, services: Services) -> ModelOut:
    """Routes name their provider by ``provider_id`` or ``provider`` (name). ``price`` starts now."""
    async with services.changing() as session:
        model = await models.create_model(session, principal.actor, body)
    return await _out(services, model)


@router.get("/models/{model_id}", response_model=ModelOut)
async def get_model(model_id: int, principal: AdminPrincipal, services: Services) -> ModelOut:
    async with services.reading() as session:
        model = await models.get_model(session, principal.actor, model_id)
    return await _out(services, model)


@router.patch("/models/{model_id}", response_model=ModelOut)
async def update_model(
    model_id: int, body: ModelUpdate, principal: AdminPrincipal, services: Services
) -> ModelOut:
    """``routes``, when given, replace every route of the model. Prices change only through
    ``POST /models/{id}/prices``."""
    async with services.changing() as session:
        model = await models.update_model(session, principal.actor, model_id, body)
    return await _out(services, model)


@router.delete("/models/{model_id}", status_code=204)
async def delete_model(model_id: int, principal: AdminPrincipal, services: Services) -> Response:
    async with services.changing() as session:
        await models.delete_model(session, principal.actor, model_id)
    return Response(status_code=204)


@router.get("/models/{model_id}/prices", response_model=Page[PriceOut])
async def list_prices(model_id: int, principal: AdminPrincipal, services: Services) -> Page[PriceOut]:
    """The whole price history, newest first (including prices scheduled for the future)."""
    async with services.reading() as session:
        rows = await models.list_prices(session, principal.actor, model_id)
    items = [PriceOut.model_validate(p) for p in rows]
    return Page[PriceOut](items=items, total=len(items), limit=len(items), offset=0)


@router.post("/models/{model_id}/prices", status_code=201, response_model=PriceOut)
async def add_price(
    model_id: int, body: PriceCreate, principal: AdminPrincipal, services: Services
) -> PriceOut:
    """Adds a price from ``effective_from`` (default now), which must be after the newest existing one.
    Existing prices are never changed, so past costs stay as they were billed."""
    async with services.changing() as session:
        price = await models.add_price(session, principal.actor, model_id, body)
    return PriceOut.model_validate(price)
