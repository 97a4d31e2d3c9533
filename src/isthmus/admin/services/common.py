"""Guards and audit helpers every admin service uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.admin.services import Actor
from isthmus.admin.validation import AdminValidationError
from isthmus.errors import ConflictError, PermissionDeniedError
from isthmus.store import repos
from isthmus.store.tables import Base, Team, User


def require_admin(actor: Actor, what: str = "do this") -> None:
    if not actor.is_admin:
        raise PermissionDeniedError(f"only admins may {what}", code="admin_only")


def ensure_api_managed(row: Any, entity: str, name: str) -> None:
    """File-managed rows are owned by the config file; the API editing them would be undone at restart."""
    if getattr(row, "managed_by", "api") == "file":
        raise ConflictError(
            f"{entity} {name!r} is declared in the config file; change or remove it there "
            "(the admin API does not edit file-managed entries)",
            code="file_managed",
        )


def plain(value: Any) -> Any:
    """A pydantic value as stored in a JSON column (None fields dropped)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def updates(
    body: BaseModel, *, required: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The fields the caller actually sent. An explicit null clears a nullable field; for a ``required``
    one it is an error naming the field."""
    values: dict[str, Any] = {}
    for name in body.model_fields_set:
        if name in exclude:
            continue
        value = getattr(body, name)
        if value is None and name in required:
            raise AdminValidationError(f"{name} may not be null", param=name)
        values[name] = plain(value)
    return values


def snapshot(row: Base, **extra: Any) -> dict[str, Any]:
    """A row as the audit log stores it: every column, secrets masked, plus derived fields."""
    data = repos.row_to_dict(row)
    data.update(extra)
    return data


async def audit(
    session: AsyncSession,
    actor: Actor,
    action: str,
    entity_type: str,
    *,
    entity_id: int | None,
    entity_name: str | None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    await repos.record_audit(
        session,
        actor=actor.name,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        entity_name=entity_name,
        before=before,
        after=after,
    )


async def audit_update(
    session: AsyncSession,
    actor: Actor,
    entity_type: str,
    row: Any,
    changes: Mapping[str, tuple[Any, Any]],
    *,
    name: str,
    action: str = "update",
) -> None:
    if not changes:
        return
    before, after = repos.changes_to_audit(changes)
    await audit(
        session, actor, action, entity_type, entity_id=row.id, entity_name=name, before=before, after=after
    )


async def check_team(session: AsyncSession, team_id: int | None, field: str = "team_id") -> Team | None:
    if team_id is None:
        return None
    team = await session.get(Team, team_id)
    if team is None:
        raise AdminValidationError(f"no team with id {team_id}", param=field)
    return team


async def check_user(session: AsyncSession, user_id: int | None, field: str = "user_id") -> User | None:
    if user_id is None:
        return None
    user = await session.get(User, user_id)
    if user is None:
        raise AdminValidationError(f"no user with id {user_id}", param=field)
    return user
