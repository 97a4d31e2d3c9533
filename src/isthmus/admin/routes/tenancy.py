"""``/teams`` and ``/users`` (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from isthmus.admin.deps import AdminPrincipal, PageParams, Services, page_out
from isthmus.admin.schemas.common import Page
from isthmus.admin.schemas.tenancy import (
    PasswordSet,
    TeamCreate,
    TeamOut,
    TeamUpdate,
    UserCreate,
    UserOut,
    UserUpdate,
)
from isthmus.admin.services import tenancy
from isthmus.config.schema import Role
from isthmus.store.tables import User

router = APIRouter()


def user_out(user: User) -> UserOut:
    data = {name: getattr(user, name) for name in UserOut.model_fields if name != "has_password"}
    return UserOut.model_validate({**data, "has_password": user.password_hash is not None})


# --- Teams ----------------------------------------------------------------------------------------


@router.get("/teams", response_model=Page[TeamOut], tags=["teams"])
async def list_teams(
    principal: AdminPrincipal,
    services: Services,
    page: PageParams,
    name: str | None = None,
    disabled: bool | None = None,
) -> Page[TeamOut]:
    """``name`` matches a case-insensitive substring."""
    async with services.reading() as session:
        result = await tenancy.list_teams(
            session, principal.actor, limit=page.limit, offset=page.offset, name=name, disabled=disabled
        )
    return page_out(result, [TeamOut.model_validate(t) for t in result.items])


@router.post("/teams", status_code=201, response_model=TeamOut, tags=["teams"])
async def create_team(body: TeamCreate, principal: AdminPrincipal, services: Services) -> TeamOut:
    async with services.changing() as session:
        team = await tenancy.create_team(session, principal.actor, body)
    return TeamOut.model_validate(team)


@router.get("/teams/{team_id}", response_model=TeamOut, tags=["teams"])
async def get_team(team_id: int, principal: AdminPrincipal, services: Services) -> TeamOut:
    async with services.reading() as session:
        return TeamOut.model_validate(await tenancy.get_team(session, principal.actor, team_id))


@router.patch("/teams/{team_id}", response_model=TeamOut, tags=["teams"])
async def update_team(
    team_id: int, body: TeamUpdate, principal: AdminPrincipal, services: Services
) -> TeamOut:
    async with services.changing() as session:
        team = await tenancy.update_team(session, principal.actor, team_id, body)
    return TeamOut.model_validate(team)


@router.delete("/teams/{team_id}", status_code=204, tags=["teams"])
async def delete_team(team_id: int, principal: AdminPrincipal, services: Services) -> Response:
    """The team's users and keys stay, without a team."""
    async with services.changing() as session:
        await tenancy.delete_team(session, principal.actor, team_id)
    return Response(status_code=204)


# --- Users ----------------------------------------------------------------------------------------


@router.get("/users", response_model=Page[UserOut], tags=["users"])
async def list_users(
    principal: AdminPrincipal,
    services: Services,
    page: PageParams,
    name: str | None = None,
    role: Role | None = None,
    team_id: int | None = None,
    disabled: bool | None = None,
) -> Page[UserOut]:
    """``name`` matches a case-insensitive substring of the username."""
    async with services.reading() as session:
        result = await tenancy.list_users(
            session,
            principal.actor,
            limit=page.limit,
            offset=page.offset,
            name=name,
            role=role,
            team_id=team_id,
            disabled=disabled,
        )
    return page_out(result, [user_out(u) for u in result.items])


@router.post("/users", status_code=201, response_model=UserOut, tags=["users"])
async def create_user(body: UserCreate, principal: AdminPrincipal, services: Services) -> UserOut:
    """The password is stored as an Argon2 hash and never returned."""
    async with services.changing() as session:
        user = await tenancy.create_user(session, principal.actor, body)
    return user_out(user)


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"])
async def get_user(user_id: int, principal: AdminPrincipal, services: Services) -> UserOut:
    async with services.reading() as session:
        return user_out(await tenancy.get_user(session, principal.actor, user_id))


@router.patch("/users/{user_id}", response_model=UserOut, tags=["users"])
async def update_user(
    user_id: int, body: UserUpdate, principal: AdminPrincipal, services: Services
) -> UserOut:
    """Disabling a user ends their console sessions. The last enabled admin cannot be demoted or disabled."""
    async with services.changing() as session:
        user = await tenancy.update_user(session, principal.actor, user_id, body)
    return user_out(user)


@router.post("/users/{user_id}/password", response_model=UserOut, tags=["users"])
async def set_password(
    user_id: int, body: PasswordSet, principal: AdminPrincipal, services: Services
) -> UserOut:
    """Set or reset a user's password; their console sessions end."""
    async with services.changing() as session:
        user = await tenancy.set_password(session, principal.actor, user_id, body.password)
    return user_out(user)


@router.delete("/users/{user_id}", status_code=204, tags=["users"])
async def delete_user(user_id: int, principal: AdminPrincipal, services: Services) -> Response:
    """Deletes the user's gateway keys too."""
    async with services.changing() as session:
        await tenancy.delete_user(session, principal.actor, user_id)
    return Response(status_code=204)
