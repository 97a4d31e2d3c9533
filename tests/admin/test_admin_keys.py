"""Gateway keys: the secret shown once, hash-only storage, status changes, expiry, filters, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from admin.support import AdminEnv
from isthmus.crypto import hash_gateway_key
from isthmus.store.tables import GatewayKey, Model


async def test_create_returns_the_secret_once_and_stores_only_its_hash(
    admin_env: AdminEnv, admin: httpx.AsyncClient
) -> None:
    created = await admin.post("/keys", json={"name": "laptop", "log_detail": "headers"})
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("sk-isthmus-") and len(secret) > 40
    assert body["key_prefix"] == secret[: len("sk-isthmus-") + 4] + "…"
    assert body["status"] == "active" and body["expired"] is False

    async with admin_env.services.reading() as session:
        row = (await session.scalars(select(GatewayKey))).one()
    assert row.key_hash == hash_gateway_key(secret)
    columns = {c.key: getattr(row, c.key) for c in GatewayKey.__mapper__.column_attrs}
    assert not any(isinstance(v, str) and secret in v for v in columns.values())

    for response in (await admin.get(f"/keys/{body['id']}"), await admin.get("/keys")):
        assert response.status_code == 200
        assert secret not in response.text
        assert "key_hash" not in response.text
    audit = await admin.get("/audit", params={"entity_type": "gateway_key"})
    assert secret not in audit.text
    assert audit.json()["items"][0]["after"]["key_hash"] == "…"


async def test_fixed_secrets_are_checked(admin: httpx.AsyncClient) -> None:
    fixed = "my-own-secret-of-32-characters-x"
    created = await admin.post("/keys", json={"name": "ci", "secret": fixed})
    assert created.status_code == 201
    assert created.json()["secret"] == fixed
    assert fixed not in created.json()["key_prefix"]
    again = await admin.post("/keys", json={"name": "ci-2", "secret": fixed})
    assert again.status_code == 409
    assert again.json()["error"]["field"] == "secret"
    assert fixed not in again.text
    short = await admin.post("/keys", json={"name": "ci-3", "secret": "short"})
    assert short.status_code == 422
    assert short.json()["error"]["field"] == "secret"
    dup_name = await admin.post("/keys", json={"name": "ci"})
    assert dup_name.status_code == 409 and dup_name.json()["error"]["field"] == "name"


async def test_pause_resume_revoke(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    key_id = (await admin.post("/keys", json={"name": "k"})).json()["id"]
    before = len(admin_env.changes)
    paused = await admin.post(f"/keys/{key_id}/pause")
    assert paused.json()["status"] == "paused"
    assert (await admin.post(f"/keys/{key_id}/pause")).json()["status"] == "paused"
    resumed = await admin.post(f"/keys/{key_id}/resume")
    assert resumed.json()["status"] == "active"
    revoked = await admin.post(f"/keys/{key_id}/revoke")
    assert revoked.json()["status"] == "revoked"
    for action in ("resume", "pause"):
        refused = await admin.post(f"/keys/{key_id}/{action}")
        assert refused.status_code == 409
        assert "revoked" in refused.json()["error"]["message"]
    assert len(admin_env.changes) > before
    log = await admin.get("/audit", params={"entity_type": "gateway_key", "entity_id": key_id})
    assert [e["action"] for e in log.json()["items"]] == ["revoke", "resume", "pause", "create"]
    assert log.json()["items"][0]["before"] == {"status": "active"}
    assert log.json()["items"][0]["after"] == {"status": "revoked"}
    assert (await admin.post("/keys/999999/pause")).status_code == 404


async def test_expiry(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    refused = await admin.post("/keys", json={"name": "old", "expires_at": past})
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "expires_at"

    soon = datetime.now(UTC) + timedelta(days=1)
    created = await admin.post(
        "/keys", json={"name": "soon", "expires_at": soon.replace(tzinfo=None).isoformat()}
    )
    assert created.status_code == 201
    assert datetime.fromisoformat(created.json()["expires_at"]) == soon
    other = await admin.post("/keys", json={"name": "forever"})
    assert other.json()["expires_at"] is None

    # Time passes: the key's expiry is now behind us.
    async with admin_env.services.changing(notify=False) as session:
        await session.execute(
            update(GatewayKey)
            .where(GatewayKey.name == "soon")
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    fetched = await admin.get(f"/keys/{created.json()['id']}")
    assert fetched.json()["expired"] is True
    assert fetched.json()["status"] == "active"
    expired = await admin.get("/keys", params={"status": "expired"})
    active = await admin.get("/keys", params={"status": "active"})
    assert [k["name"] for k in expired.json()["items"]] == ["soon"]
    assert [k["name"] for k in active.json()["items"]] == ["forever"]

    extended = await admin.patch(f"/keys/{created.json()['id']}", json={"expires_at": None})
    assert extended.json()["expired"] is False


async def test_filters_pagination_and_model_allow_list(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    async with admin_env.services.changing(notify=False) as session:
        session.add_all([Model(name="gpt-4o"), Model(name="claude")])
    team = (await admin.post("/teams", json={"name": "t"})).json()["id"]
    user = await admin_env.create_user(admin, "henry", team_id=team)
    bad = await admin.post("/keys", json={"name": "x", "allowed_models": ["gpt-4o", "nope"]})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "allowed_models[1]"
    good = await admin.post(
        "/keys",
        json={"name": "henry-1", "user_id": user, "team_id": team, "allowed_models": ["gpt-4o", "claude"]},
    )
    assert good.status_code == 201
    assert good.json()["allowed_models"] == ["gpt-4o", "claude"]
    for i in range(4):
        assert (await admin.post("/keys", json={"name": f"svc-{i}", "limits": {"rpm": 5}})).status_code == 201

    by_user = await admin.get("/keys", params={"user_id": user})
    by_team = await admin.get("/keys", params={"team_id": team})
    by_name = await admin.get("/keys", params={"name": "SVC"})
    assert [k["name"] for k in by_user.json()["items"]] == ["henry-1"]
    assert [k["name"] for k in by_team.json()["items"]] == ["henry-1"]
    assert by_name.json()["total"] == 4
    page = await admin.get("/keys", params={"name": "svc", "limit": 3, "offset": 3})
    assert [k["name"] for k in page.json()["items"]] == ["svc-3"]
    assert page.json()["total"] == 4

    unknown_user = await admin.post("/keys", json={"name": "y", "user_id": 424242})
    assert unknown_user.status_code == 422 and unknown_user.json()["error"]["field"] == "user_id"
    renamed = await admin.patch(
        f"/keys/{good.json()['id']}", json={"name": "henry-main", "limits": {"tpm": 100}}
    )
    assert renamed.json()["name"] == "henry-main"
    assert renamed.json()["limits"] == {"tpm": 100}
    assert (await admin.delete(f"/keys/{good.json()['id']}")).status_code == 204
    assert (await admin.get(f"/keys/{good.json()['id']}")).status_code == 404


async def test_file_managed_keys_cannot_be_changed(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    async with admin_env.services.changing(notify=False) as session:
        session.add(GatewayKey(name="declared", key_hash="0" * 64, key_prefix="sk-…", managed_by="file"))
    key = (await admin.get("/keys", params={"name": "declared"})).json()["items"][0]
    for response in (
        await admin.patch(f"/keys/{key['id']}", json={"name": "renamed"}),
        await admin.post(f"/keys/{key['id']}/revoke"),
        await admin.delete(f"/keys/{key['id']}"),
    ):
        assert response.status_code == 409
        assert "config file" in response.json()["error"]["message"]
    assert (await admin.get(f"/keys/{key['id']}")).json()["status"] == "active"
