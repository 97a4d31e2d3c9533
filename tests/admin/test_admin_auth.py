"""Console login, sessions, CSRF, bearer tokens, the login rate limit, roles, the first admin."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from admin.support import ADMIN_PASSWORD, ADMIN_USERNAME, AdminEnv
from isthmus.admin import ensure_first_admin
from isthmus.crypto import hash_token, verify_password
from isthmus.store.db import create_engine, session_factory
from isthmus.store.tables import AdminToken, ConsoleSession, User


def _set_cookie_headers(response: httpx.Response) -> dict[str, str]:
    out = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        out[name] = header.lower()
    return out


async def test_login_me_logout(admin_env: AdminEnv) -> None:
    client = admin_env.client()
    response = await client.post("/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["username"] == ADMIN_USERNAME
    assert body["user"]["role"] == "admin"
    cookies = _set_cookie_headers(response)
    assert "httponly" in cookies["isthmus_session"]
    assert "samesite=lax" in cookies["isthmus_session"]
    assert "httponly" not in cookies["isthmus_csrf"]
    assert client.cookies["isthmus_csrf"] == body["csrf_token"]

    session_token = client.cookies["isthmus_session"]
    async with admin_env.services.reading() as session:
        rows = (await session.scalars(select(ConsoleSession))).all()
    assert [r.token_hash for r in rows] == [hash_token(session_token)]
    assert all(r.token_hash != session_token for r in rows)

    me = await client.get("/auth/me")
    assert me.status_code == 200
    assert me.json()["auth"] == "session"
    assert me.json()["csrf_token"] == body["csrf_token"]

    out = await client.post("/auth/logout", headers={"x-csrf-token": body["csrf_token"]})
    assert out.status_code == 204
    async with admin_env.services.reading() as session:
        assert (await session.scalars(select(ConsoleSession))).all() == []
    # The old cookie is worthless now, even if a client kept it.
    replay = admin_env.client()
    replay.cookies.set("isthmus_session", session_token)
    after = await replay.get("/auth/me")
    assert after.status_code == 401
    assert after.json()["error"]["type"] == "authentication"


async def test_wrong_password_and_unknown_user_answer_alike(admin_env: AdminEnv) -> None:
    client = admin_env.client()
    wrong = await client.post("/auth/login", json={"username": ADMIN_USERNAME, "password": "nope-nope"})
    unknown = await client.post("/auth/login", json={"username": "ghost", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "isthmus_session" not in client.cookies


async def test_csrf_is_required_for_cookie_auth(admin_env: AdminEnv) -> None:
    client = await admin_env.login()
    csrf = client.headers.pop("x-csrf-token")
    missing = await client.post("/teams", json={"name": "t1"})
    assert missing.status_code == 403
    assert missing.json()["error"]["type"] == "permission"
    assert "csrf" in missing.json()["error"]["message"].lower()
    wrong = await client.post("/teams", json={"name": "t1"}, headers={"x-csrf-token": csrf[:-2] + "xx"})
    assert wrong.status_code == 403
    # Reads need no token; the write with the right token goes through.
    assert (await client.get("/teams")).status_code == 200
    ok = await client.post("/teams", json={"name": "t1"}, headers={"x-csrf-token": csrf})
    assert ok.status_code == 201
    listed = await client.get("/teams")
    assert [t["name"] for t in listed.json()["items"]] == ["t1"]


async def test_bearer_tokens_skip_csrf_and_are_stored_hashed(admin_env: AdminEnv) -> None:
    session_client = await admin_env.login()
    created = await session_client.post("/tokens", json={"name": "ci"})
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("ist-admin-")
    assert created.json()["token_prefix"].endswith("…")

    script = admin_env.client(authorization=f"Bearer {token}")
    response = await script.post("/teams", json={"name": "from-script"})
    assert response.status_code == 201, response.text
    assert (await script.get("/auth/me")).json()["auth"] == "token"

    async with admin_env.services.reading() as session:
        row = (await session.scalars(select(AdminToken))).one()
    assert row.token_hash == hash_token(token)
    listed = await session_client.get("/tokens")
    assert listed.json()["total"] == 1
    assert "token" not in listed.json()["items"][0]

    bad = admin_env.client(authorization="Bearer ist-admin-not-a-real-token")
    assert (await bad.get("/teams")).status_code == 401
    basic = admin_env.client(authorization="Basic cm9vdDpwdw==")
    assert (await basic.get("/teams")).status_code == 401

    deleted = await session_client.delete(f"/tokens/{row.id}")
    assert deleted.status_code == 204
    assert (await script.get("/teams")).status_code == 401


async def test_login_rate_limit_per_username_and_per_ip(admin_env: AdminEnv) -> None:
    attacker = admin_env.client()
    for _ in range(5):
        response = await attacker.post("/auth/login", json={"username": ADMIN_USERNAME, "password": "guess"})
        assert response.status_code == 401
    blocked = await attacker.post(
        "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert blocked.json()["error"]["type"] == "rate_limited"

    # The same IP trying another account is blocked too (per-IP count) …
    other_user = await attacker.post("/auth/login", json={"username": "someone", "password": "guess"})
    assert other_user.status_code == 429

    # … and the attacked username is blocked from another IP as well (per-username count).
    transport = httpx.ASGITransport(app=admin_env.app, client=("198.51.100.9", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver/api") as elsewhere:
        response = await elsewhere.post(
            "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
        )
        assert response.status_code == 429


async def test_member_sees_only_own_keys_and_nothing_else(
    admin_env: AdminEnv, admin: httpx.AsyncClient
) -> None:
    alice = await admin_env.create_user(admin, "alice")
    bob = await admin_env.create_user(admin, "bob")
    bobs_key = await admin.post("/keys", json={"name": "bob-key", "user_id": bob})
    assert bobs_key.status_code == 201

    member = await admin_env.login("alice", "alice-password-1")
    for path in ("/teams", "/users", "/providers", "/models", "/audit", "/settings", "/health/keys"):
        response = await member.get(path)
        assert response.status_code == 403, path
        assert response.json()["error"]["type"] == "permission"
    assert (await member.post("/teams", json={"name": "x"})).status_code == 403

    own = await member.post("/keys", json={"name": "alice-laptop"})
    assert own.status_code == 201, own.text
    assert own.json()["user_id"] == alice
    listed = await member.get("/keys")
    assert [k["name"] for k in listed.json()["items"]] == ["alice-laptop"]
    assert listed.json()["total"] == 1
    assert (await member.get("/keys", params={"user_id": bob})).status_code == 403

    other = bobs_key.json()["id"]
    assert (await member.get(f"/keys/{other}")).status_code == 404
    assert (await member.post(f"/keys/{other}/revoke")).status_code == 404
    assert (await member.delete(f"/keys/{other}")).status_code == 404

    for field, value in (("user_id", bob), ("limits", {"rpm": 5}), ("budget", {"monthly_usd": 1})):
        response = await member.post("/keys", json={"name": f"k-{field}", field: value})
        assert response.status_code == 403, field
        assert response.json()["error"]["field"] == field

    paused = await member.post(f"/keys/{own.json()['id']}/pause")
    assert paused.json()["status"] == "paused"
    # The admin still sees every key.
    assert (await admin.get("/keys")).json()["total"] == 2


async def test_disabling_a_user_ends_their_session(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    carol = await admin_env.create_user(admin, "carol")
    member = await admin_env.login("carol", "carol-password-1")
    assert (await member.get("/auth/me")).status_code == 200
    assert (await admin.patch(f"/users/{carol}", json={"disabled": True})).status_code == 200
    assert (await member.get("/auth/me")).status_code == 401
    denied = await admin_env.client().post(
        "/auth/login", json={"username": "carol", "password": "carol-password-1"}
    )
    assert denied.status_code == 401


async def test_change_own_password(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    await admin_env.create_user(admin, "dave")
    member = await admin_env.login("dave", "dave-password-1")
    wrong = await member.post(
        "/auth/password", json={"current_password": "x", "new_password": "new-password-9"}
    )
    assert wrong.status_code == 401
    changed = await member.post(
        "/auth/password", json={"current_password": "dave-password-1", "new_password": "new-password-9"}
    )
    assert changed.status_code == 204
    assert (await member.get("/auth/me")).status_code == 401  # sessions ended
    await admin_env.login("dave", "new-password-9")


async def test_first_admin_is_created_once(migrated_database_url: str) -> None:
    engine = create_engine(migrated_database_url)
    try:
        sessions = session_factory(engine)
        created = await ensure_first_admin(sessions, None, None)
        assert created is not None
        username, password = created
        assert username == "admin"
        assert len(password) >= 20
        async with sessions() as session:
            user = (await session.scalars(select(User))).one()
        assert user.role == "admin"
        assert verify_password(password, user.password_hash)
        assert user.password_hash != password
        assert await ensure_first_admin(sessions, "other", "other-password") is None
    finally:
        await engine.dispose()


async def test_openapi_and_docs_work_under_the_api_prefix(admin_env: AdminEnv) -> None:
    client = admin_env.client()
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["servers"] == [{"url": "/api"}]
    assert "/keys/{key_id}/revoke" in spec.json()["paths"]
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "/api/openapi.json" in docs.text
