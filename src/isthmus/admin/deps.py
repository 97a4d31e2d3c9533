"""FastAPI dependencies: the services, the authenticated caller (with CSRF for cookie auth), paging."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request

from isthmus.admin.schemas.common import DEFAULT_LIMIT, MAX_LIMIT, Page
from isthmus.admin.services import AdminServices
from isthmus.admin.services.auth import CSRF_HEADER, SESSION_COOKIE, Principal, authenticate
from isthmus.crypto import secrets_equal
from isthmus.errors import AuthenticationError, PermissionDeniedError
from isthmus.store.repos import Page as StorePage

T = TypeVar("T")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_services(request: Request) -> AdminServices:
    services: AdminServices = request.app.state.services
    return services


Services = Annotated[AdminServices, Depends(get_services)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "the Authorization header must be 'Bearer <admin token>'", code="bad_auth_header"
        )
    return token.strip()


async def current_principal(request: Request, services: Services) -> Principal:
    bearer = bearer_token(request)
    cookie = None if bearer else request.cookies.get(SESSION_COOKIE)
    async with services.changing(notify=False) as session:
        principal = await authenticate(session, bearer=bearer, session_token=cookie)
    if principal is None:
        message = "the admin token is invalid or expired" if bearer else "sign in first (no valid session)"
        raise AuthenticationError(message, code="unauthenticated", headers={"www-authenticate": "Bearer"})
    if principal.method == "session" and request.method not in SAFE_METHODS:
        # Double submit: a cross-site form can make the browser send the cookie, never this header.
        sent = request.headers.get(CSRF_HEADER)
        if not sent or principal.csrf_token is None or not secrets_equal(sent, principal.csrf_token):
            raise PermissionDeniedError(
                f"missing or wrong {CSRF_HEADER} header (send the csrf_token from login)", code="csrf"
            )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: CurrentPrincipal) -> Principal:
    if not principal.actor.is_admin:
        raise PermissionDeniedError("this needs the admin role", code="admin_only")
    return principal


AdminPrincipal = Annotated[Principal, Depends(admin_principal)]


@dataclass(frozen=True, slots=True)
class Paging:
    limit: int
    offset: int


def paging(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, description="items to skip")] = 0,
) -> Paging:
    return Paging(limit, offset)


PageParams = Annotated[Paging, Depends(paging)]


def page_out(result: StorePage[Any], items: Sequence[T]) -> Page[T]:
    """A store page re-shaped with converted items, for a response body."""
    return Page[T](items=list(items), total=result.total, limit=result.limit, offset=result.offset)
