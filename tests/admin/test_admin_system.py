"""One error shape for everything, body limits, settings, audit filters, key health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx

from admin.support import ADMIN_USERNAME, MAX_BODY, AdminEnv
from isthmus.store.canary import CANARY_SETTING


async def test_oversize_bodies_are_refused_with_413(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    big_name = "x" * (MAX_BODY + 10)
    declared = await admin.post("/teams", json={"name": big_name})
    assert declared.status_code == 413
    assert declared.json()["error"]["type"] == "too_large"

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the size is only known while the body streams in.
        yield b'{"name": "'
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"y" * 1024
        yield b'"}'

    streamed = await admin.post("/teams", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert (await admin.get("/teams")).json()["total"] == 0
    assert admin_env.changes == []


async def test_validation_errors_name_the_field(admin: httpx.AsyncClient) -> None:
    nested = await admin.post("/teams", json={"name": "t", "budget": {"monthly_usd": -5}})
    assert nested.status_code == 422
    error = nested.json()["error"]
    assert error["type"] == "validation_error"
    assert error["field"] == "budget.monthly_usd"
    assert error["message"].startswith("budget.monthly_usd: ")

    typo = await admin.post("/teams", json={"name": "t", "budgett": {}})
    assert typo.json()["error"] == {
        "message": "budgett: unknown field",
        "type": "validation_error",
        "field": "budgett",
        "errors": [{"field": "budgett", "message": "unknown field"}],
    }
    missing = await admin.post("/teams", json={})
    assert missing.json()["error"]["field"] == "name"
    assert "required" in missing.json()["error"]["message"]
    control = await admin.post("/teams", json={"name": "bad\nname"})
    assert control.status_code == 422 and control.json()["error"]["field"] == "name"
    query = await admin.get("/teams", params={"limit": 0})
    assert query.status_code == 422 and query.json()["error"]["field"] == "query.limit"
    broken_json = await admin.post(
        "/teams", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken_json.status_code == 422
    assert broken_json.json()["error"]["type"] == "validation_error"
    null_name = await admin.post("/teams", json={"name": "ok"})
    renamed = await admin.patch(f"/teams/{null_name.json()['id']}", json={"name": None})
    assert renamed.status_code == 422 and renamed.json()["error"]["field"] == "name"


async def test_unknown_ids_paths_and_methods(admin: httpx.AsyncClient) -> None:
    for path in (
        "/teams/999",
        "/users/999",
        "/keys/999",
        "/providers/999",
        "/models/999",
        "/providers/999/keys",
    ):
        response = await admin.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found"
        assert "999" in response.json()["error"]["message"]
    nowhere = await admin.get("/no/such/thing")
    assert nowhere.status_code == 404 and nowhere.json()["error"]["type"] == "not_found"
    wrong_method = await admin.put("/teams")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "method_not_allowed"
    not_a_number = await admin.get("/teams/abc")
    assert not_a_number.status_code == 422 and not_a_number.json()["error"]["field"] == "path.team_id"


async def test_settings(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/settings/scheduling")).status_code == 404
    put = await admin.put("/settings/scheduling", json={"value": {"mode": "weighted", "spread": [1, 2]}})
    assert put.status_code == 200
    assert put.json()["value"] == {"mode": "weighted", "spread": [1, 2]}
    assert admin_env.changes
    assert (await admin.get("/settings/scheduling")).json()["value"]["mode"] == "weighted"
    await admin.put("/settings/log_detail", json={"value": "full"})
    listed = await admin.get("/settings")
    keys = [s["key"] for s in listed.json()]
    assert keys == ["log_detail", "scheduling"]
    assert CANARY_SETTING not in listed.text

    reserved = await admin.put(f"/settings/{CANARY_SETTING}", json={"value": "x"})
    assert reserved.status_code == 403
    assert (await admin.get(f"/settings/{CANARY_SETTING}")).status_code == 403
    bad_key = await admin.put("/settings/Bad Key", json={"value": 1})
    assert bad_key.status_code == 422
    missing_value = await admin.put("/settings/x", json={})
    assert missing_value.status_code == 422 and missing_value.json()["error"]["field"] == "value"

    assert (await admin.delete("/settings/log_detail")).status_code == 204
    assert (await admin.get("/settings/log_detail")).status_code == 404
    log = await admin.get("/audit", params={"entity_type": "setting"})
    assert [e["action"] for e in log.json()["items"]] == ["delete", "set", "set"]


async def test_audit_filters_by_actor_and_time(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    start = datetime.now(UTC)
    await admin_env.create_user(admin, "ivy", role="admin")
    other = await admin_env.login("ivy", "ivy-password-1")
    await other.post("/teams", json={"name": "by-ivy"})
    await admin.post("/teams", json={"name": "by-root"})

    by_ivy = await admin.get("/audit", params={"actor": "ivy"})
    assert [e["entity_name"] for e in by_ivy.json()["items"]] == ["by-ivy"]
    by_root = await admin.get("/audit", params={"actor": ADMIN_USERNAME, "entity_type": "team"})
    assert [e["entity_name"] for e in by_root.json()["items"]] == ["by-root"]
    recent = await admin.get("/audit", params={"since": start.isoformat()})
    assert recent.json()["total"] == 3  # ivy's creation and the two teams
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await admin.get("/audit", params={"since": future})).json()["total"] == 0
    assert (await admin.get("/audit", params={"until": start.isoformat()})).json()[
        "total"
    ] == 1  # first admin
    page = await admin.get("/audit", params={"limit": 1, "offset": 1})
    assert page.json()["total"] == 4 and len(page.json()["items"]) == 1


async def test_key_health_comes_from_the_gateway(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/health/keys")
    assert response.status_code == 200
    assert response.json() == {"items": [{"provider": "p", "key": "k", "state": "closed"}], "available": True}
