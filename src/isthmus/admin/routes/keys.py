"""``/keys``: gateway keys. Members see and manage only their own."""

from __future__ import annotations

from fastapi import APIRouter, Response

from isthmus.admin.deps import CurrentPrincipal, PageParams, Services, page_out
from isthmus.admin.schemas.common import Page
from isthmus.admin.schemas.keys import KeyCreate, KeyCreated, KeyOut, KeyStatusFilter, KeyUpdate
from isthmus.admin.services import keys
from isthmus.admin.services.keys import KeyAction, key_out

router = APIRouter(tags=["keys"])


@router.get("/keys", response_model=Page[KeyOut])
async def list_keys(
    principal: CurrentPrincipal,
    services: Services,
    page: PageParams,
    name: str | None = None,
    status: KeyStatusFilter | None = None,
    user_id: int | None = None,
    team_id: int | None = None,
) -> Page[KeyOut]:
    """``name`` matches a case-insensitive substring; ``status=active`` excludes expired keys and
    ``status=expired`` lists keys past their expiry whatever their status."""
    async with services.reading() as session:
        result = await keys.list_keys(
            session,
            principal.actor,
            limit=page.limit,
            offset=page.offset,
            name=name,
            status=status,
            user_id=user_id,
            team_id=team_id,
        )
    return page_out(result, [key_out(k) for k in result.items])


@router.post("/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, principal: CurrentPrincipal, services: Services) -> KeyCreated:
    """The answer carries the key's ``secret``; it is stored only as a SHA-256 hash and never shown again."""
    async with services.changing() as session:
        key, secret = await keys.create_key(session, principal.actor, body)
    return KeyCreated.model_validate({**key_out(key).model_dump(), "secret": secret})


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: int, principal: CurrentPrincipal, services: Services) -> KeyOut:
    async with services.reading() as session:
        return key_out(await keys.get_key(session, principal.actor, key_id))


@router.patch("/keys/{key_id}", response_model=KeyOut)
async def update_key(key_id: int, body: KeyUpdate, principal: CurrentPrincipal, services: Services) -> KeyOut:
    async with services.changing() as session:
        key = await keys.update_key(session, principal.actor, key_id, body)
    return key_out(key)


async def _status(key_id: int, action: KeyAction, principal: CurrentPrincipal, services: Services) -> KeyOut:
    async with services.changing() as session:
        key = await keys.change_status(session, principal.actor, key_id, action)
    return key_out(key)


@router.post("/keys/{key_id}/pause", response_model=KeyOut)
async def pause_key(key_id: int, principal: CurrentPrincipal, services: Services) -> KeyOut:
    """Requests with the key are refused until it is resumed."""
    return await _status(key_id, "pause", principal, services)


@router.post("/keys/{key_id}/resume", response_model=KeyOut)
async def resume_key(key_id: int, principal: CurrentPrincipal, services: Services) -> KeyOut:
    return await _status(key_id, "resume", principal, services)


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: int, principal: CurrentPrincipal, services: Services) -> KeyOut:
    """Permanent: a revoked key cannot be resumed."""
    return await _status(key_id, "revoke", principal, services)


@router.delete("/keys/{key_id}", status_code=204)
async def delete_key(key_id: int, principal: CurrentPrincipal, services: Services) -> Response:
    async with services.changing() as session:
        await keys.delete_key(session, principal.actor, key_id)
    return Response(status_code=204)
