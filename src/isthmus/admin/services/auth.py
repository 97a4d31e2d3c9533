"""Console logins, sessions, admin bearer tokens, and the first admin at start-up.

A session is a random token in an HTTP-only cookie; only its SHA-256 hash is stored, with the CSRF
token the console must echo in ``x-csrf-token``. A bearer token (for scripts) is also stored hashed and
needs no CSRF token, since browsers never attach it on their own.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.admin.login_limiter import LoginLimiter, ip_key, username_key
from isthmus.admin.schemas.system import TokenCreate
from isthmus.admin.services import SYSTEM_ACTOR, Actor
from isthmus.admin.services.common import audit, snapshot
from isthmus.admin.services.tenancy import user_snapshot
from isthmus.admin.validation import AdminValidationError
from isthmus.crypto import hash_password, password_needs_rehash, verify_password
from isthmus.errors import AuthenticationError, ConflictError, NotFoundError, RateLimitedError
from isthmus.store import repos
from isthmus.store.repos import Page
from isthmus.store.tables import AdminToken, User, utcnow

log = logging.getLogger("isthmus.admin")

SESSION_COOKIE = "isthmus_session"
CSRF_COOKIE = "isthmus_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL = timedelta(hours=12)
# "Last seen/used" timestamps are refreshed at most this often, so reads do not turn into writes.
_TOUCH_INTERVAL = timedelta(minutes=1)
DEFAULT_ADMIN_USERNAME = "admin"
GENERATED_PASSWORD_BYTES = 18

WRONG_CREDENTIALS = "wrong username or password"


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: User
    session_token: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller of the admin API."""

    actor: Actor
    user: User
    method: Literal["session", "token"]
    csrf_token: str | None = None
    session_id: int | None = None


def actor_for(user: User) -> Actor:
    return Actor(name=user.username, user_id=user.id, role=user.role)


async def login(
    session: AsyncSession, limiter: LoginLimiter, username: str, password: str, client_ip: str | None
) -> LoginResult:
    keys = (username_key(username), ip_key(client_ip))
    wait = limiter.retry_after(*keys)
    if wait is not None:
        raise RateLimitedError(
            f"too many failed logins; try again in {max(1, round(wait))} seconds",
            code="login_rate_limited",
            retry_after=wait,
        )
    user = await repos.users.find_by_name(session, username)
    # verify_password checks a dummy hash when there is none, so unknown users cost the same time.
    valid = verify_password(password, user.password_hash if user is not None else None)
    if user is None or not valid or user.disabled:
        limiter.record_failure(*keys)
        raise AuthenticationError(WRONG_CREDENTIALS, code="wrong_credentials")
    limiter.reset(keys[0])
    if user.password_hash is not None and password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    await repos.delete_console_sessions(session, user_id=user.id, expired=True)
    session_token = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    expires_at = utcnow() + SESSION_TTL
    await repos.create_console_session(
        session, user_id=user.id, token=session_token, csrf_token=csrf_token, expires_at=expires_at
    )
    return LoginResult(user, session_token, csrf_token, expires_at)


async def logout(session: AsyncSession, session_token: str) -> None:
    await repos.delete_console_sessions(session, token=session_token)


async def authenticate(
    session: AsyncSession, *, bearer: str | None, session_token: str | None
) -> Principal | None:
    """The caller behind a bearer token or a session cookie (bearer wins), or None. Touches timestamps;
    the caller commits."""
    now = utcnow()
    if bearer:
        token_row = await repos.find_admin_token(session, bearer)
        if token_row is None:
            return None
        user = await session.get(User, token_row.user_id)
        if user is None or user.disabled:
            return None
        if token_row.last_used_at is None or now - token_row.last_used_at > _TOUCH_INTERVAL:
            token_row.last_used_at = now
        return Principal(actor_for(user), user, "token")
    if session_token:
        session_row = await repos.find_console_session(session, session_token)
        if session_row is None:
            return None
        user = await session.get(User, session_row.user_id)
        if user is None or user.disabled:
            return None
        if session_row.last_seen_at is None or now - session_row.last_seen_at > _TOUCH_INTERVAL:
            session_row.last_seen_at = now
        return Principal(actor_for(user), user, "session", session_row.csrf_token, session_row.id)
    return None


# --- Admin tokens -----------------------------------------------------------------------------------


async def create_token(session: AsyncSession, actor: Actor, body: TokenCreate) -> tuple[AdminToken, str]:
    """A bearer token acting as ``actor``'s user; the token itself is returned once."""
    if actor.user_id is None:
        raise AuthenticationError("tokens belong to a user; sign in first")
    if body.expires_at is not None and body.expires_at <= utcnow():
        raise AdminValidationError("expires_at must be in the future", param="expires_at")
    row, token = await repos.create_admin_token(
        session, user_id=actor.user_id, name=body.name, expires_at=body.expires_at
    )
    await audit(
        session, actor, "create", "admin_token", entity_id=row.id, entity_name=row.name, after=snapshot(row)
    )
    return row, token


async def list_tokens(
    session: AsyncSession, actor: Actor, *, limit: int, offset: int, all_users: bool = False
) -> Page[AdminToken]:
    """The caller's own tokens; an admin may ask for everyone's."""
    filters: dict[str, Any] = {}
    if not (all_users and actor.is_admin):
        filters["user_id"] = actor.user_id
    return await repos.admin_tokens.list(session, limit=limit, offset=offset, filters=filters)


async def delete_token(session: AsyncSession, actor: Actor, token_id: int) -> None:
    row = await session.get(AdminToken, token_id)
    if row is None or (not actor.is_admin and row.user_id != actor.user_id):
        raise NotFoundError(f"no admin token with id {token_id}", code="not_found")
    before = snapshot(row)
    await repos.admin_tokens.delete(session, row)
    await audit(
        session, actor, "delete", "admin_token", entity_id=token_id, entity_name=row.name, before=before
    )


# --- Start-up --------------------------------------------------------------------------------------


async def ensure_first_admin(
    session_factory: async_sessionmaker[AsyncSession], username: str | None, password: str | None
) -> tuple[str, str] | None:
    """Make sure someone can log in: if there is no admin, create one and return ``(username, password)``
    for the caller to print once (the password is generated when not given). None if an admin exists.

    When ``username`` names an existing non-admin user, that user is promoted and given the password.
    Several workers may race here; the losers see the winner's admin and return None.
    """
    name = (username or "").strip() or DEFAULT_ADMIN_USERNAME
    chosen = password or secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
    try:
        async with session_factory() as session, session.begin():
            admins = await session.scalar(select(func.count()).select_from(User).where(User.role == "admin"))
            if admins:
                return None
            user = await repos.users.find_by_name(session, name)
            if user is None:
                user = await repos.users.create(
                    session,
                    username=name,
                    password_hash=hash_password(chosen),
                    role="admin",
                    managed_by="api",
                )
                await audit(
                    session,
                    SYSTEM_ACTOR,
                    "create",
                    "user",
                    entity_id=user.id,
                    entity_name=name,
                    after=user_snapshot(user),
                )
            else:
                before = user_snapshot(user)
                await repos.users.update(
                    session, user, role="admin", disabled=False, password_hash=hash_password(chosen)
                )
                await audit(
                    session,
                    SYSTEM_ACTOR,
                    "promote_first_admin",
                    "user",
                    entity_id=user.id,
                    entity_name=name,
                    before=before,
                    after=user_snapshot(user),
                )
    except (IntegrityError, ConflictError):
        log.info("another process created the first admin at the same time")
        return None
    return name, chosen
