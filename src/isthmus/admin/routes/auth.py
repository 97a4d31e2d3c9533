"""``/auth/*`` (console login) and ``/tokens`` (admin bearer tokens for scripts)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from isthmus.admin.deps import CurrentPrincipal, PageParams, Services, page_out
from isthmus.admin.schemas.common import Page
from isthmus.admin.schemas.system import LoginIn, LoginOut, MeOut, TokenCreate, TokenCreated, TokenOut
from isthmus.admin.schemas.tenancy import PasswordChange
from isthmus.admin.services import auth
from isthmus.admin.services.auth import CSRF_COOKIE, SESSION_COOKIE, SESSION_TTL, Principal
from isthmus.admin.services.tenancy import change_own_password

router = APIRouter(tags=["auth"])


def _me(principal: Principal) -> MeOut:
    user = principal.user
    return MeOut(
        id=user.id,
        username=user.username,
        role=user.role,
        team_id=user.team_id,
        auth=principal.method,
        csrf_token=principal.csrf_token,
    )


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.post("/auth/login", response_model=LoginOut, summary="Sign in to the console")
async def login(body: LoginIn, request: Request, response: Response, services: Services) -> LoginOut:
    """Sets an HTTP-only session cookie and a readable CSRF cookie. Send the CSRF token back as the
    ``x-csrf-token`` header on every POST/PUT/PATCH/DELETE made with the cookie."""
    client_ip = request.client.host if request.client else None
    async with services.changing(notify=False) as session:
        result = await auth.login(session, services.login_limiter, body.username, body.password, client_ip)
    max_age = int(SESSION_TTL.total_seconds())
    secure = _secure(request)
    response.set_cookie(
        SESSION_COOKIE,
        result.session_token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure,
    )
    # Readable by the console's script on purpose: that is how it learns what to echo in the header.
    response.set_cookie(
        CSRF_COOKIE,
        result.csrf_token,
        max_age=max_age,
        path="/",
        httponly=False,
        samesite="lax",
        secure=secure,
    )
    principal = Principal(auth.actor_for(result.user), result.user, "session", result.csrf_token)
    return LoginOut(user=_me(principal), csrf_token=result.csrf_token, expires_at=result.expires_at)


@router.post("/auth/logout", status_code=204, summary="End this console session")
async def logout(request: Request, principal: CurrentPrincipal, services: Services) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if principal.method == "session" and token:
        async with services.changing(notify=False) as session:
            await auth.logout(session, token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(request))
    response.delete_cookie(CSRF_COOKIE, path="/", samesite="lax", secure=_secure(request))
    return response


@router.get("/auth/me", response_model=MeOut, summary="Who am I")
async def me(principal: CurrentPrincipal) -> MeOut:
    return _me(principal)


@router.post("/auth/password", status_code=204, summary="Change my own password")
async def change_password(body: PasswordChange, principal: CurrentPrincipal, services: Services) -> Response:
    """Ends every console session of the user, this one included."""
    async with services.changing(notify=False) as session:
        await change_own_password(session, principal.actor, body.current_password, body.new_password)
    return Response(status_code=204)


@router.post("/tokens", status_code=201, response_model=TokenCreated, tags=["tokens"])
async def create_token(body: TokenCreate, principal: CurrentPrincipal, services: Services) -> TokenCreated:
    """A bearer token that acts as you. The token is in this answer only; it is stored hashed."""
    async with services.changing(notify=False) as session:
        row, token = await auth.create_token(session, principal.actor, body)
    return TokenCreated.model_validate({**TokenOut.model_validate(row).model_dump(), "token": token})


@router.get("/tokens", response_model=Page[TokenOut], tags=["tokens"])
async def list_tokens(
    principal: CurrentPrincipal, services: Services, page: PageParams, all_users: bool = False
) -> Page[TokenOut]:
    """Your tokens; admins may pass ``all_users=true`` to see everyone's."""
    async with services.reading() as session:
        result = await auth.list_tokens(
            session, principal.actor, limit=page.limit, offset=page.offset, all_users=all_users
        )
    return page_out(result, [TokenOut.model_validate(row) for row in result.items])


@router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
async def delete_token(token_id: int, principal: CurrentPrincipal, services: Services) -> Response:
    async with services.changing(notify=False) as session:
        await auth.delete_token(session, principal.actor, token_id)
    return Response(status_code=204)
