"""Gateway keys: create (the secret is shown once), edit, pause/resume/revoke, delete.

Admins manage every key. A member sees and manages only keys whose ``user_id`` is their own, and may
not set what an admin controls about a key (owner, team, limits, budget, log detail).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.admin.schemas.keys import KeyCreate, KeyOut, KeyStatusFilter, KeyUpdate
from isthmus.admin.services import Actor
from isthmus.admin.services.common import (
    audit,
    audit_update,
    check_team,
    check_user,
    ensure_api_managed,
    plain,
    snapshot,
    updates,
)
from isthmus.admin.validation import AdminValidationError
from isthmus.crypto import hash_gateway_key
from isthmus.errors import ConflictError, NotFoundError, PermissionDeniedError
from isthmus.store import repos
from isthmus.store.repos import Page
from isthmus.store.tables import GatewayKey, Model, utcnow

KeyAction = Literal["pause", "resume", "revoke"]
# What only an admin may set on a key; a member's own keys inherit these from the user and team.
_ADMIN_FIELDS = ("user_id", "team_id", "limits", "budget", "log_detail")


def is_expired(key: GatewayKey, now: datetime | None = None) -> bool:
    return key.expires_at is not None and key.expires_at <= (now or utcnow())


def key_out(key: GatewayKey, now: datetime | None = None) -> KeyOut:
    return KeyOut.model_validate(
        {
            **{name: getattr(key, name) for name in KeyOut.model_fields if name != "expired"},
            "expired": is_expired(key, now),
        }
    )


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_keys(
    session: AsyncSession,
    actor: Actor,
    *,
    limit: int,
    offset: int,
    name: str | None = None,
    status: KeyStatusFilter | None = None,
    user_id: int | None = None,
    team_id: int | None = None,
) -> Page[GatewayKey]:
    conditions: list[ColumnElement[bool]] = []
    if not actor.is_admin:
        if user_id is not None and user_id != actor.user_id:
            raise PermissionDeniedError("members see only their own keys", code="admin_only")
        user_id = actor.user_id
        if user_id is None:
            raise PermissionDeniedError("members see only their own keys", code="admin_only")
    if name:
        conditions.append(func.lower(GatewayKey.name).like(_like(name), escape="\\"))
    if user_id is not None:
        conditions.append(GatewayKey.user_id == user_id)
    if team_id is not None:
        conditions.append(GatewayKey.team_id == team_id)
    now = utcnow()
    not_expired = GatewayKey.expires_at.is_(None) | (GatewayKey.expires_at > now)
    if status == "expired":
        conditions.append(GatewayKey.expires_at <= now)
    elif status == "active":
        conditions.extend([GatewayKey.status == "active", not_expired])
    elif status is not None:
        conditions.append(GatewayKey.status == status)
    total = await session.scalar(select(func.count()).select_from(GatewayKey).where(*conditions))
    query = select(GatewayKey).where(*conditions).order_by(GatewayKey.id).limit(limit).offset(offset)
    rows = (await session.scalars(query)).all()
    return Page(items=list(rows), total=int(total or 0), limit=limit, offset=offset)


async def get_key(session: AsyncSession, actor: Actor, key_id: int) -> GatewayKey:
    key = await session.get(GatewayKey, key_id)
    # Another user's key answers like a missing one, so members cannot probe which ids exist.
    if key is None or (not actor.is_admin and key.user_id != actor.user_id):
        raise NotFoundError(f"no gateway key with id {key_id}", code="not_found")
    return key


async def find_key(session: AsyncSession, actor: Actor, name_or_id: str) -> GatewayKey:
    """By exact name first, then by numeric id (the CLI's ``NAME_OR_ID``)."""
    key = await repos.gateway_keys.find_by_name(session, name_or_id)
    if key is not None and (actor.is_admin or key.user_id == actor.user_id):
        return key
    if name_or_id.isdigit():
        return await get_key(session, actor, int(name_or_id))
    raise NotFoundError(f"no gateway key named {name_or_id!r}", code="not_found")


async def _check_models(session: AsyncSession, names: Sequence[str] | None, field: str) -> None:
    if not names:
        return
    known = set((await session.scalars(select(Model.name).where(Model.name.in_(list(names))))).all())
    for index, model_name in enumerate(names):
        if model_name not in known:
            raise AdminValidationError(f"no model named {model_name!r}", param=f"{field}[{index}]")


def _check_expiry(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= utcnow():
        raise AdminValidationError("expires_at must be in the future", param="expires_at")


def _member_limits(actor: Actor, values: dict[str, Any]) -> None:
    if actor.is_admin:
        return
    for name in _ADMIN_FIELDS:
        value = values.get(name)
        if name == "user_id" and value == actor.user_id:
            continue
        if value is not None:
            raise PermissionDeniedError(f"only admins may set {name} on a key", code="admin_only", param=name)


async def create_key(session: AsyncSession, actor: Actor, body: KeyCreate) -> tuple[GatewayKey, str]:
    """Create a key; return it with its secret, which is never stored or shown again."""
    _member_limits(actor, body.model_dump(include=set(_ADMIN_FIELDS)))
    user_id = body.user_id if actor.is_admin else actor.user_id
    if not actor.is_admin and user_id is None:
        raise PermissionDeniedError("only admins may create keys that belong to no user", code="admin_only")
    await check_user(session, user_id)
    await check_team(session, body.team_id)
    await _check_models(session, body.allowed_models, "allowed_models")
    _check_expiry(body.expires_at)
    if body.secret is not None and await repos.find_key_by_hash(session, hash_gateway_key(body.secret)):
        raise ConflictError("another key already uses this secret", code="duplicate", param="secret")
    key, secret = await repos.create_gateway_key(
        session,
        name=body.name,
        secret=body.secret,
        user_id=user_id,
        team_id=body.team_id,
        allowed_models=body.allowed_models,
        limits=plain(body.limits),
        budget=plain(body.budget),
        log_detail=body.log_detail,
        expires_at=body.expires_at,
        status="active",
        managed_by="api",
    )
    await audit(
        session, actor, "create", "gateway_key", entity_id=key.id, entity_name=key.name, after=snapshot(key)
    )
    return key, secret


async def update_key(session: AsyncSession, actor: Actor, key_id: int, body: KeyUpdate) -> GatewayKey:
    key = await get_key(session, actor, key_id)
    ensure_api_managed(key, "gateway key", key.name)
    values = updates(body, required=("name",))
    _member_limits(actor, {k: v for k, v in values.items() if k in _ADMIN_FIELDS})
    if "user_id" in values:
        await check_user(session, values["user_id"])
    if "team_id" in values:
        await check_team(session, values["team_id"])
    if "allowed_models" in values:
        await _check_models(session, values["allowed_models"], "allowed_models")
    if values.get("expires_at") is not None:
        _check_expiry(values["expires_at"])
    changes = await repos.gateway_keys.update(session, key, **values)
    await audit_update(session, actor, "gateway_key", key, changes, name=key.name)
    return key


_TRANSITIONS: dict[KeyAction, tuple[str, ...]] = {
    # action: statuses it may start from (the target status itself is a no-op)
    "pause": ("active",),
    "resume": ("paused",),
    "revoke": ("active", "paused"),
}
_TARGET: dict[KeyAction, str] = {"pause": "paused", "resume": "active", "revoke": "revoked"}
_PAST: dict[KeyAction, str] = {"pause": "paused", "resume": "resumed", "revoke": "revoked"}


async def change_status(session: AsyncSession, actor: Actor, key_id: int, action: KeyAction) -> GatewayKey:
    key = await get_key(session, actor, key_id)
    ensure_api_managed(key, "gateway key", key.name)
    target = _TARGET[action]
    if key.status == target:
        return key
    if key.status not in _TRANSITIONS[action]:
        raise ConflictError(
            f"gateway key {key.name!r} is {key.status}; it cannot be {_PAST[action]}",
            code="invalid_status",
        )
    changes = await repos.gateway_keys.update(session, key, status=target)
    await audit_update(session, actor, "gateway_key", key, changes, name=key.name, action=action)
    return key


async def delete_key(session: AsyncSession, actor: Actor, key_id: int) -> None:
    key = await get_key(session, actor, key_id)
    ensure_api_managed(key, "gateway key", key.name)
    before = snapshot(key)
    await repos.gateway_keys.delete(session, key)
    await audit(
        session, actor, "delete", "gateway_key", entity_id=key_id, entity_name=key.name, before=before
    )
