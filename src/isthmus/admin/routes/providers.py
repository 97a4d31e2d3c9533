"""``/providers`` with nested ``/providers/{id}/keys``, plus upstream test and model sync (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from isthmus.admin.deps import AdminPrincipal, PageParams, Services, page_out
from isthmus.admin.schemas.common import Page
from isthmus.admin.schemas.providers import (
    ModelSyncOut,
    ProviderCreate,
    ProviderKeyCreate,
    ProviderKeyOut,
    ProviderKeyUpdate,
    ProviderOut,
    ProviderTestIn,
    ProviderTestOut,
    ProviderUpdate,
)
from isthmus.admin.services import models, providers
from isthmus.admin.services.providers import load_details, provider_key_out, provider_out
from isthmus.config.schema import ProviderType
from isthmus.store.tables import Provider

router = APIRouter(tags=["providers"])


async def _out(services: Services, provider: Provider) -> ProviderOut:
    async with services.reading() as session:
        details = await load_details(session, [provider])
    return provider_out(provider, details[provider.id])


@router.get("/providers", response_model=Page[ProviderOut])
async def list_providers(
    principal: AdminPrincipal,
    services: Services,
    page: PageParams,
    name: str | None = None,
    type: ProviderType | None = None,
    enabled: bool | None = None,
) -> Page[ProviderOut]:
    async with services.reading() as session:
        result = await providers.list_providers(
            session,
            principal.actor,
            limit=page.limit,
            offset=page.offset,
            name=name,
            provider_type=type,
            enabled=enabled,
        )
        details = await load_details(session, result.items)
    return page_out(result, [provider_out(p, details[p.id]) for p in result.items])


@router.post("/providers", status_code=201, response_model=ProviderOut)
async def create_provider(body: ProviderCreate, principal: AdminPrincipal, services: Services) -> ProviderOut:
    """Give ``base_url`` (and optionally ``protocols``; default by type) or ``endpoints``. Key secrets
    are write-only: answers show a masked hint."""
    async with services.changing() as session:
        provider = await providers.create_provider(session, principal.actor, services.box, body)
    return await _out(services, provider)


@router.get("/providers/{provider_id}", response_model=ProviderOut)
async def get_provider(provider_id: int, principal: AdminPrincipal, services: Services) -> ProviderOut:
    async with services.reading() as session:
        provider = await providers.get_provider(session, principal.actor, provider_id)
    return await _out(services, provider)


@router.patch("/providers/{provider_id}", response_model=ProviderOut)
async def update_provider(
    provider_id: int, body: ProviderUpdate, principal: AdminPrincipal, services: Services
) -> ProviderOut:
    """``endpoints``, ``base_url`` or ``protocols`` replace the provider's endpoints."""
    async with services.changing() as session:
        provider = await providers.update_provider(session, principal.actor, provider_id, body)
    return await _out(services, provider)


@router.delete("/providers/{provider_id}", status_code=204)
async def delete_provider(provider_id: int, principal: AdminPrincipal, services: Services) -> Response:
    """Removes the provider's endpoints, keys, and every route that uses it."""
    async with services.changing() as session:
        await providers.delete_provider(session, principal.actor, provider_id)
    return Response(status_code=204)


@router.post("/providers/{provider_id}/test", response_model=ProviderTestOut)
async def test_provider(
    provider_id: int, principal: AdminPrincipal, services: Services, body: ProviderTestIn | None = None
) -> ProviderTestOut:
    """Lists the upstream's models with one key (the first enabled one unless ``key_id`` is given) and
    reports whether it worked, the latency, the upstream status and its error."""
    async with services.reading() as session:
        access = await providers.upstream_access(
            session, principal.actor, services.box, provider_id, body.key_id if body else None
        )
    return await providers.test_upstream(access, services.http)


@router.post("/providers/{provider_id}/sync-models", response_model=ModelSyncOut)
async def sync_models(
    provider_id: int, principal: AdminPrincipal, services: Services, create: bool = False
) -> ModelSyncOut:
    """Fetches the upstream's model list. With ``create=true``, every id that is not yet a model name
    becomes a model with one route to this provider (same name on both sides)."""
    async with services.reading() as session:
        access = await providers.upstream_access(session, principal.actor, services.box, provider_id)
    upstream = await providers.list_upstream_models(access, services.http)
    if create:
        async with services.changing() as session:
            created, existing = await models.create_models_for_upstream(
                session, principal.actor, provider_id, upstream
            )
    else:
        async with services.reading() as session:
            existing = await models.existing_model_names(session, upstream)
        created = []
    return ModelSyncOut(models=upstream, created=created, existing=existing)


# --- Provider keys ---------------------------------------------------------------------------------


@router.get("/providers/{provider_id}/keys", response_model=Page[ProviderKeyOut])
async def list_provider_keys(
    provider_id: int,
    principal: AdminPrincipal,
    services: Services,
    page: PageParams,
    name: str | None = None,
    enabled: bool | None = None,
) -> Page[ProviderKeyOut]:
    async with services.reading() as session:
        result = await providers.list_provider_keys(
            session,
            principal.actor,
            provider_id,
            limit=page.limit,
            offset=page.offset,
            name=name,
            enabled=enabled,
        )
    return page_out(result, [provider_key_out(services.box, k) for k in result.items])


@router.post("/providers/{provider_id}/keys", status_code=201, response_model=ProviderKeyOut)
async def create_provider_key(
    provider_id: int, body: ProviderKeyCreate, principal: AdminPrincipal, services: Services
) -> ProviderKeyOut:
    async with services.changing() as session:
        key = await providers.create_provider_key(session, principal.actor, services.box, provider_id, body)
    return provider_key_out(services.box, key)


@router.get("/providers/{provider_id}/keys/{key_id}", response_model=ProviderKeyOut)
async def get_provider_key(
    provider_id: int, key_id: int, principal: AdminPrincipal, services: Services
) -> ProviderKeyOut:
    async with services.reading() as session:
        key = await providers.get_provider_key(session, principal.actor, provider_id, key_id)
    return provider_key_out(services.box, key)


@router.patch("/providers/{provider_id}/keys/{key_id}", response_model=ProviderKeyOut)
async def update_provider_key(
    provider_id: int, key_id: int, body: ProviderKeyUpdate, principal: AdminPrincipal, services: Services
) -> ProviderKeyOut:
    """A new ``secret`` replaces the stored one; the old one cannot be read back."""
    async with services.changing() as session:
        key = await providers.update_provider_key(
            session, principal.actor, services.box, provider_id, key_id, body
        )
    return provider_key_out(services.box, key)


@router.delete("/providers/{provider_id}/keys/{key_id}", status_code=204)
async def delete_provider_key(
    provider_id: int, key_id: int, principal: AdminPrincipal, services: Services
) -> Response:
    async with services.changing() as session:
        await providers.delete_provider_key(session, principal.actor, services.box, provider_id, key_id)
    return Response(status_code=204)
