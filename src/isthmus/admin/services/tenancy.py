"""Teams and users."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.admin.schemas.tenancy import TeamCreate, TeamUpdate, UserCreate, UserUpdate
from isthmus.admin.services import Actor
from isthmus.admin.services.common import (
    audit,
    audit_update,
    check_team,
    ensure_api_managed,
    plain,
    require_admin,
    snapshot,
    updates,
)
from isthmus.crypto import hash_password, verify_password
from isthmus.errors import AuthenticationError, ConflictError
from isthmus.store import repos
from isthmus.store.repos import Page
from isthmus.store.tables import Team, User

# --- Teams ----------------------------------------------------------------------------------------


async def list_teams(
    session: AsyncSession,
    actor: Actor,
    *,
    limit: int,
    offset: int,
    name: str | None = None,
    disabled: bool | None = None,
) -> Page[Team]:
    require_admin(actor, "list teams")
    filters: dict[str, Any] = {}
    if disabled is not None:
        filters["disabled"] = disabled
    return await repos.teams.list(session, limit=limit, offset=offset, filters=filters, search=name)


async def get_team(session: AsyncSession, actor: Actor, team_id: int) -> Team:
    require_admin(actor, "view teams")
    return await repos.teams.get(session, team_id)


async def create_team(session: AsyncSession, actor: Actor, body: TeamCreate) -> Team:
    require_admin(actor, "create teams")
    team = await repos.teams.create(
        session,
        name=body.name,
        budget=plain(body.budget),
        limits=plain(body.limits),
        disabled=body.disabled,
        managed_by="api",
    )
    await audit(
        session, actor, "create", "team", entity_id=team.id, entity_name=team.name, after=snapshot(team)
    )
    return team


async def update_team(session: AsyncSession, actor: Actor, team_id: int, body: TeamUpdate) -> Team:
    require_admin(actor, "edit teams")
    team = await repos.teams.get(session, team_id)
    ensure_api_managed(team, "team", team.name)
    values = updates(body, required=("name", "disabled"))
    changes = await repos.teams.update(session, team, **values)
    await audit_update(session, actor, "team", team, changes, name=team.name)
    return team


async def delete_team(session: AsyncSession, actor: Actor, team_id: int) -> None:
    require_admin(actor, "delete teams")
    team = await repos.teams.get(session, team_id)
    ensure_api_managed(team, "team", team.name)
    before = snapshot(team)
    await repos.teams.delete(session, team)
    await audit(session, actor, "delete", "team", entity_id=team_id, entity_name=team.name, before=before)


# --- Users ----------------------------------------------------------------------------------------


def user_snapshot(user: User) -> dict[str, Any]:
    return snapshot(user, has_password=user.password_hash is not None)


async def list_users(
    session: AsyncSession,
    actor: Actor,
    *,
    limit: int,
    offset: int,
    name: str | None = None,
    role: str | None = None,
    team_id: int | None = None,
    disabled: bool | None = None,
) -> Page[User]:
    require_admin(actor, "list users")
    filters: dict[str, Any] = {}
    if role is not None:
        filters["role"] = role
    if team_id is not None:
        filters["team_id"] = team_id
    if disabled is not None:
        filters["disabled"] = disabled
    return await repos.users.list(session, limit=limit, offset=offset, filters=filters, search=name)


async def get_user(session: AsyncSession, actor: Actor, user_id: int) -> User:
    require_admin(actor, "view users")
    return await repos.users.get(session, user_id)


async def create_user(session: AsyncSession, actor: Actor, body: UserCreate) -> User:
    require_admin(actor, "create users")
    await check_team(session, body.team_id)
    user = await repos.users.create(
        session,
        username=body.username,
        password_hash=hash_password(body.password) if body.password else None,
        role=body.role,
        team_id=body.team_id,
        budget=plain(body.budget),
        limits=plain(body.limits),
        disabled=body.disabled,
        managed_by="api",
    )
    await audit(
        session,
        actor,
        "create",
        "user",
        entity_id=user.id,
        entity_name=user.username,
        after=user_snapshot(user),
    )
    return user


async def _active_admins(session: AsyncSession) -> int:
    query = select(func.count()).select_from(User).where(User.role == "admin", User.disabled.is_(False))
    return int(await session.scalar(query) or 0)


async def _keep_an_admin(session: AsyncSession, user: User, *, removing: bool) -> None:
    """Refuse a change that would leave no enabled admin (nobody could administer the gateway)."""
    if user.role == "admin" and not user.disabled and removing and await _active_admins(session) <= 1:
        raise ConflictError(
            f"user {user.username!r} is the last enabled admin; create or enable another admin first",
            code="last_admin",
        )


async def update_user(session: AsyncSession, actor: Actor, user_id: int, body: UserUpdate) -> User:
    require_admin(actor, "edit users")
    user = await repos.users.get(session, user_id)
    ensure_api_managed(user, "user", user.username)
    values = updates(body, required=("username", "role", "disabled"))
    if "team_id" in values:
        await check_team(session, values["team_id"])
    demoted = values.get("role", user.role) != "admin" or values.get("disabled", user.disabled)
    await _keep_an_admin(session, user, removing=bool(demoted))
    changes = await repos.users.update(session, user, **values)
    if "disabled" in changes and user.disabled:
        # A disabled user's console sessions end now, not when they expire.
        await repos.delete_console_sessions(session, user_id=user.id)
    await audit_update(session, actor, "user", user, changes, name=user.username)
    return user


async def set_password(session: AsyncSession, actor: Actor, user_id: int, password: str) -> User:
    """An admin sets or resets a user's password; the user's console sessions end."""
    require_admin(actor, "set passwords")
    user = await repos.users.get(session, user_id)
    ensure_api_managed(user, "user", user.username)
    await _store_password(session, actor, user, password)
    return user


async def change_own_password(
    session: AsyncSession, actor: Actor, current_password: str, new_password: str
) -> User:
    if actor.user_id is None:
        raise AuthenticationError("only a signed-in user has a password to change")
    user = await repos.users.get(session, actor.user_id)
    if not verify_password(current_password, user.password_hash):
        raise AuthenticationError("the current password is wrong", code="wrong_password")
    await _store_password(session, actor, user, new_password)
    return user


async def _store_password(session: AsyncSession, actor: Actor, user: User, password: str) -> None:
    had_password = user.password_hash is not None
    await repos.users.update(session, user, password_hash=hash_password(password))
    await repos.delete_console_sessions(session, user_id=user.id)
    await audit(
        session,
        actor,
        "set_password",
        "user",
        entity_id=user.id,
        entity_name=user.username,
        before={"has_password": had_password},
        after={"has_password": True},
    )


async def delete_user(session: AsyncSession, actor: Actor, user_id: int) -> None:
    require_admin(actor, "delete users")
    user = await repos.users.get(session, user_id)
    ensure_api_managed(user, "user", user.username)
    await _keep_an_admin(session, user, removing=True)
    before = user_snapshot(user)
    await repos.users.delete(session, user)
    await audit(session, actor, "delete", "user", entity_id=user_id, entity_name=user.username, before=before)
