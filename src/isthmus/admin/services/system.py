"""Settings (free-form JSON values by key) and the audit log."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.admin.services import Actor
from isthmus.admin.services.common import audit, require_admin
from isthmus.admin.validation import AdminValidationError
from isthmus.errors import NotFoundError, PermissionDeniedError
from isthmus.store import repos
from isthmus.store.canary import CANARY_SETTING
from isthmus.store.repos import Page
from isthmus.store.tables import AuditEntry, Setting

SETTING_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
# Internal bookkeeping rows in the settings table that no caller may read or overwrite.
RESERVED_SETTINGS = frozenset({CANARY_SETTING})


def _check_key(key: str) -> None:
    if not SETTING_KEY.match(key):
        raise AdminValidationError(
            "a setting key is 1-128 lower-case letters, digits, '_', '.' or '-'", param="path.key"
        )
    if key in RESERVED_SETTINGS:
        raise PermissionDeniedError(f"setting {key!r} is internal", code="reserved_setting")


async def list_settings(session: AsyncSession, actor: Actor) -> Sequence[Setting]:
    require_admin(actor, "view settings")
    query = select(Setting).where(Setting.key.not_in(list(RESERVED_SETTINGS))).order_by(Setting.key)
    return (await session.scalars(query)).all()


async def get_setting(session: AsyncSession, actor: Actor, key: str) -> Setting:
    require_admin(actor, "view settings")
    _check_key(key)
    row = await session.scalar(select(Setting).where(Setting.key == key))
    if row is None:
        raise NotFoundError(f"no setting {key!r}", code="not_found")
    return row


async def put_setting(session: AsyncSession, actor: Actor, key: str, value: Any) -> Setting:
    require_admin(actor, "change settings")
    _check_key(key)
    row = await session.scalar(select(Setting).where(Setting.key == key))
    before = None if row is None else {"value": row.value}
    await repos.set_setting(session, key, value)
    row = await session.scalar(select(Setting).where(Setting.key == key))
    assert row is not None
    if before is None or before["value"] != value:
        await audit(
            session,
            actor,
            "set",
            "setting",
            entity_id=row.id,
            entity_name=key,
            before=before,
            after={"value": value},
        )
    return row


async def delete_setting(session: AsyncSession, actor: Actor, key: str) -> None:
    row = await get_setting(session, actor, key)
    require_admin(actor, "change settings")
    await session.delete(row)
    await repos.flush_or_raise(session, "setting")
    await audit(
        session, actor, "delete", "setting", entity_id=row.id, entity_name=key, before={"value": row.value}
    )


async def list_audit(
    session: AsyncSession,
    actor: Actor,
    *,
    limit: int,
    offset: int,
    entity_type: str | None = None,
    entity_id: int | None = None,
    actor_name: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditEntry]:
    """Newest first."""
    require_admin(actor, "read the audit log")
    conditions: list[ColumnElement[bool]] = []
    if entity_type is not None:
        conditions.append(AuditEntry.entity_type == entity_type)
    if entity_id is not None:
        conditions.append(AuditEntry.entity_id == entity_id)
    if actor_name is not None:
        conditions.append(AuditEntry.actor == actor_name)
    if action is not None:
        conditions.append(AuditEntry.action == action)
    if since is not None:
        conditions.append(AuditEntry.at >= since)
    if until is not None:
        conditions.append(AuditEntry.at < until)
    total = await session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions))
    query = (
        select(AuditEntry)
        .where(*conditions)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = (await session.scalars(query)).all()
    return Page(items=list(rows), total=int(total or 0), limit=limit, offset=offset)
