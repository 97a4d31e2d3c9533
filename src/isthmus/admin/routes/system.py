"""``/settings``, ``/audit`` and ``/health/keys`` (admin only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response

from isthmus.admin.deps import AdminPrincipal, PageParams, Services, page_out
from isthmus.admin.schemas.common import Page
from isthmus.admin.schemas.system import AuditOut, SettingIn, SettingOut
from isthmus.admin.services import system

router = APIRouter()


@router.get("/settings", response_model=list[SettingOut], tags=["settings"])
async def list_settings(principal: AdminPrincipal, services: Services) -> list[SettingOut]:
    async with services.reading() as session:
        rows = await system.list_settings(session, principal.actor)
    return [SettingOut.model_validate(r) for r in rows]


@router.get("/settings/{key}", response_model=SettingOut, tags=["settings"])
async def get_setting(key: str, principal: AdminPrincipal, services: Services) -> SettingOut:
    async with services.reading() as session:
        return SettingOut.model_validate(await system.get_setting(session, principal.actor, key))


@router.put("/settings/{key}", response_model=SettingOut, tags=["settings"])
async def put_setting(key: str, body: SettingIn, principal: AdminPrincipal, services: Services) -> SettingOut:
    """Any JSON value under ``{"value": …}``."""
    async with services.changing() as session:
        row = await system.put_setting(session, principal.actor, key, body.value)
    return SettingOut.model_validate(row)


@router.delete("/settings/{key}", status_code=204, tags=["settings"])
async def delete_setting(key: str, principal: AdminPrincipal, services: Services) -> Response:
    async with services.changing() as session:
        await system.delete_setting(session, principal.actor, key)
    return Response(status_code=204)


@router.get("/audit", response_model=Page[AuditOut], tags=["audit"])
async def list_audit(
    principal: AdminPrincipal,
    services: Services,
    page: PageParams,
    entity_type: str | None = None,
    entity_id: int | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditOut]:
    """Newest first. ``since`` is inclusive, ``until`` exclusive (ISO 8601; no zone means UTC)."""
    async with services.reading() as session:
        result = await system.list_audit(
            session,
            principal.actor,
            limit=page.limit,
            offset=page.offset,
            entity_type=entity_type,
            entity_id=entity_id,
            actor_name=actor,
            action=action,
            since=since,
            until=until,
        )
    return page_out(result, [AuditOut.model_validate(e) for e in result.items])


@router.get("/health/keys", tags=["health"])
async def key_health(principal: AdminPrincipal, services: Services) -> dict[str, Any]:
    """Health and circuit state of every provider key, as the running gateway sees it."""
    if services.health_statuses is None:
        return {"items": [], "available": False}
    return {"items": services.health_statuses(), "available": True}
