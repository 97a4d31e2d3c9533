"""Teams and users: CRUD, pagination, filters, conflicts, file-managed rows, audit, the last admin."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from admin.support import ADMIN_USERNAME, AdminEnv
from isthmus.crypto import verify_password
from isthmus.store.tables import Team, User


async def test_team_crud_pagination_and_filters(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    names = [f"team-{i:02d}" for i in range(7)] + ["Research", "research-eu"]
    for name in names:
        response = await admin.post("/teams", json={"name": name, "budget": {"monthly_usd": 10}})
        assert response.status_code == 201, response.text
    assert len(admin_env.changes) == len(names)

    first = await admin.get("/teams", params={"limit": 3, "offset": 0})
    second = await admin.get("/teams", params={"limit": 3, "offset": 3})
    assert first.json()["total"] == second.json()["total"] == len(names)
    assert first.json()["limit"] == 3 and second.json()["offset"] == 3
    page_names = [t["name"] for t in first.json()["items"] + second.json()["items"]]
    assert page_names == names[:6]

    found = await admin.get("/teams", params={"name": "RESEARCH"})
    assert sorted(t["name"] for t in found.json()["items"]) == ["Research", "research-eu"]

    team_id = found.json()["items"][0]["id"]
    patched = await admin.patch(f"/teams/{team_id}", json={"disabled": True, "limits": {"rpm": 10}})
    assert patched.status_code == 200
    assert patched.json()["disabled"] is True
    assert patched.json()["limits"] == {"rpm": 10}
    assert patched.json()["budget"] == {"monthly_usd": 10.0}
    disabled = await admin.get("/teams", params={"disabled": "true"})
    assert [t["id"] for t in disabled.json()["items"]] == [team_id]

    assert (await admin.delete(f"/teams/{team_id}")).status_code == 204
    assert (await admin.get(f"/teams/{team_id}")).status_code == 404
    assert (await admin.delete(f"/teams/{team_id}")).status_code == 404


async def test_duplicate_names_are_409_naming_the_field(admin: httpx.AsyncClient) -> None:
    assert (await admin.post("/teams", json={"name": "ops"})).status_code == 201
    again = await admin.post("/teams", json={"name": "ops"})
    assert again.status_code == 409
    assert again.json()["error"] == {
        "message": "a team with this name already exists",
        "type": "conflict",
        "field": "name",
    }
    other = await admin.post("/teams", json={"name": "ops-2"})
    renamed = await admin.patch(f"/teams/{other.json()['id']}", json={"name": "ops"})
    assert renamed.status_code == 409
    assert renamed.json()["error"]["field"] == "name"
    assert (await admin.get(f"/teams/{other.json()['id']}")).json()["name"] == "ops-2"

    user = await admin.post("/users", json={"username": ADMIN_USERNAME, "password": "whatever-123"})
    assert user.status_code == 409
    assert user.json()["error"]["field"] == "username"


async def test_sql_looking_names_are_stored_literally(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    nasty = ["x'); DROP TABLE teams; --", 'Robert" OR 1=1 --', "100%_off\\", "naïve ☃ team"]
    for name in nasty:
        response = await admin.post("/teams", json={"name": name})
        assert response.status_code == 201, response.text
        assert response.json()["name"] == name
    async with admin_env.services.reading() as session:
        stored = (await session.scalars(select(Team.name).order_by(Team.id))).all()
    assert list(stored) == nasty
    # LIKE wildcards in a filter are matched literally too.
    found = await admin.get("/teams", params={"name": "%_"})
    assert [t["name"] for t in found.json()["items"]] == ["100%_off\\"]


async def test_user_passwords_are_hashed_and_never_returned(
    admin_env: AdminEnv, admin: httpx.AsyncClient
) -> None:
    team = (await admin.post("/teams", json={"name": "research"})).json()
    created = await admin.post(
        "/users", json={"username": "erin", "password": "erin-password-1", "team_id": team["id"]}
    )
    assert created.status_code == 201
    body = created.json()
    assert body["has_password"] is True
    assert body["role"] == "member"
    assert not {"password", "password_hash"} & set(body)
    listed = await admin.get("/users", params={"team_id": team["id"]})
    assert [u["username"] for u in listed.json()["items"]] == ["erin"]
    assert "password_hash" not in listed.text

    async with admin_env.services.reading() as session:
        user = (await session.scalars(select(User).where(User.username == "erin"))).one()
    assert user.password_hash is not None and "erin-password-1" not in user.password_hash
    assert verify_password("erin-password-1", user.password_hash)

    member = await admin_env.login("erin", "erin-password-1")
    reset = await admin.post(f"/users/{body['id']}/password", json={"password": "fresh-password-2"})
    assert reset.status_code == 200
    assert (await member.get("/auth/me")).status_code == 401
    await admin_env.login("erin", "fresh-password-2")

    for i in range(3):
        await admin_env.create_user(admin, f"extra-{i}", disabled=i == 1)
    page = await admin.get("/users", params={"name": "extra", "limit": 2, "offset": 2})
    assert page.json()["total"] == 3 and [u["username"] for u in page.json()["items"]] == ["extra-2"]
    disabled = await admin.get("/users", params={"disabled": "true"})
    assert [u["username"] for u in disabled.json()["items"]] == ["extra-1"]
    members = await admin.get("/users", params={"role": "member", "name": "erin"})
    admins = await admin.get("/users", params={"role": "admin"})
    assert [u["username"] for u in members.json()["items"]] == ["erin"]
    assert [u["username"] for u in admins.json()["items"]] == [ADMIN_USERNAME]


async def test_unknown_team_reference_is_422_with_field(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/users", json={"username": "frank", "team_id": 999})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "team_id"


async def test_the_last_admin_cannot_be_removed(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    me = (await admin.get("/auth/me")).json()
    for change in ({"role": "member"}, {"disabled": True}):
        response = await admin.patch(f"/users/{me['id']}", json=change)
        assert response.status_code == 409
        assert "last enabled admin" in response.json()["error"]["message"]
    assert (await admin.delete(f"/users/{me['id']}")).status_code == 409
    second = await admin_env.create_user(admin, "grace", role="admin")
    assert (await admin.patch(f"/users/{me['id']}", json={"role": "member"})).status_code == 200
    assert (await admin.get("/teams")).status_code == 403  # the role change applies at once
    other = await admin_env.login("grace", "grace-password-1")
    assert (await other.get(f"/users/{second}")).status_code == 200


async def test_changes_write_audit_rows_in_the_same_transaction(admin: httpx.AsyncClient) -> None:
    # A rejected change leaves no audit row behind.
    await admin.post("/teams", json={"name": "dup"})
    assert (await admin.post("/teams", json={"name": "dup"})).status_code == 409
    created = await admin.post("/teams", json={"name": "audited", "budget": {"daily_usd": 1}})
    team_id = created.json()["id"]
    await admin.patch(f"/teams/{team_id}", json={"name": "audited-2"})
    await admin.delete(f"/teams/{team_id}")

    log = await admin.get("/audit", params={"entity_type": "team", "entity_id": team_id})
    entries = log.json()["items"]
    assert [e["action"] for e in entries] == ["delete", "update", "create"]
    assert all(e["actor"] == ADMIN_USERNAME for e in entries)
    assert entries[2]["after"]["name"] == "audited"
    assert entries[1]["before"] == {"name": "audited"} and entries[1]["after"] == {"name": "audited-2"}
    assert entries[0]["before"]["name"] == "audited-2"
    dup = await admin.get("/audit", params={"entity_type": "team", "action": "create"})
    assert [e["entity_name"] for e in dup.json()["items"]].count("dup") == 1


async def test_file_managed_entries_are_refused_with_409(
    admin_env: AdminEnv, admin: httpx.AsyncClient
) -> None:
    async with admin_env.services.changing() as session:
        session.add(Team(name="from-file", managed_by="file"))
        session.add(User(username="file-user", role="member", managed_by="file"))
    teams = (await admin.get("/teams", params={"name": "from-file"})).json()["items"]
    users = (await admin.get("/users", params={"name": "file-user"})).json()["items"]
    assert teams[0]["managed_by"] == "file"
    for response in (
        await admin.patch(f"/teams/{teams[0]['id']}", json={"disabled": True}),
        await admin.delete(f"/teams/{teams[0]['id']}"),
        await admin.patch(f"/users/{users[0]['id']}", json={"role": "admin"}),
        await admin.post(f"/users/{users[0]['id']}/password", json={"password": "password-123"}),
        await admin.delete(f"/users/{users[0]['id']}"),
    ):
        assert response.status_code == 409
        assert "config file" in response.json()["error"]["message"]
    assert (await admin.get(f"/teams/{teams[0]['id']}")).json()["disabled"] is False
