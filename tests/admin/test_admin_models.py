"""Models with routes, and prices that are only ever appended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from admin.support import AdminEnv
from isthmus.store.tables import Model, Price


async def _providers(admin: httpx.AsyncClient) -> tuple[int, int]:
    a = await admin.post(
        "/providers", json={"name": "a", "type": "mock", "keys": [{"name": "k1", "secret": "s"}]}
    )
    b = await admin.post("/providers", json={"name": "b", "type": "mock"})
    assert a.status_code == b.status_code == 201
    return int(a.json()["id"]), int(b.json()["id"])


async def test_model_with_routes_and_price(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    a, b = await _providers(admin)
    created = await admin.post(
        "/models",
        json={
            "name": "gpt-4o",
            "routes": [
                {"provider": "a", "upstream_model": "gpt-4o-2024-11-20", "key_names": ["k1"]},
                {"provider_id": b, "upstream_model": "gpt-4o", "priority": 1, "weight": 2},
            ],
            "price": {"input": 2.5, "output": 10, "cache_read": 1.25},
            "capabilities": ["cache_1h"],
            "context_window": 128000,
        },
    )
    assert created.status_code == 201, created.text
    model = created.json()
    assert [(r["provider_name"], r["upstream_model"], r["position"]) for r in model["routes"]] == [
        ("a", "gpt-4o-2024-11-20", 0),
        ("b", "gpt-4o", 1),
    ]
    assert model["routes"][0]["key_names"] == ["k1"]
    assert model["routes"][1]["priority"] == 1 and model["routes"][1]["weight"] == 2
    assert model["price"]["input"] == 2.5 and model["price"]["cache_read"] == 1.25
    assert model["price"]["cache_write_5m"] is None

    replaced = await admin.patch(
        f"/models/{model['id']}",
        json={"routes": [{"provider_id": b, "upstream_model": "only"}], "enabled": False},
    )
    assert replaced.status_code == 200
    assert [(r["provider_id"], r["upstream_model"]) for r in replaced.json()["routes"]] == [(b, "only")]
    assert replaced.json()["enabled"] is False
    assert replaced.json()["price"]["input"] == 2.5
    entry = (await admin.get("/audit", params={"entity_type": "model", "action": "update"})).json()["items"][
        0
    ]
    assert entry["before"]["routes"][0]["upstream_model"] == "gpt-4o-2024-11-20"
    assert entry["after"]["routes"] == [
        {"provider_id": b, "upstream_model": "only", "priority": None, "weight": None, "key_names": None}
    ]
    assert a != b


async def test_route_references_are_validated(admin: httpx.AsyncClient) -> None:
    await _providers(admin)
    unknown = await admin.post(
        "/models",
        json={
            "name": "m",
            "routes": [{"provider": "a", "upstream_model": "x"}, {"provider": "zz", "upstream_model": "y"}],
        },
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["field"] == "routes[1].provider"
    bad_key = await admin.post(
        "/models",
        json={"name": "m", "routes": [{"provider": "a", "upstream_model": "x", "key_names": ["nope"]}]},
    )
    assert bad_key.status_code == 422 and bad_key.json()["error"]["field"] == "routes[0].key_names[0]"
    neither = await admin.post("/models", json={"name": "m", "routes": [{"upstream_model": "x"}]})
    assert neither.status_code == 422 and neither.json()["error"]["field"] == "routes[0].provider_id"
    bad_weight = await admin.post(
        "/models", json={"name": "m", "routes": [{"provider": "a", "upstream_model": "x", "weight": -1}]}
    )
    assert bad_weight.status_code == 422 and bad_weight.json()["error"]["field"] == "routes[0].weight"
    assert (await admin.get("/models")).json()["total"] == 0


async def test_prices_are_appended_never_rewritten(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    model = (await admin.post("/models", json={"name": "m", "price": {"input": 1, "output": 2}})).json()
    async with admin_env.services.reading() as session:
        first = (await session.scalars(select(Price))).one()
    original = (first.id, first.effective_from, first.input, first.output)

    tomorrow = datetime.now(UTC) + timedelta(days=1)
    scheduled = await admin.post(
        f"/models/{model['id']}/prices",
        json={"input": 3, "output": 6, "effective_from": tomorrow.isoformat()},
    )
    assert scheduled.status_code == 201, scheduled.text
    # Not in force yet: the model still shows the first price.
    assert (await admin.get(f"/models/{model['id']}")).json()["price"]["input"] == 1

    backdated = await admin.post(
        f"/models/{model['id']}/prices",
        json={"input": 9, "output": 9, "effective_from": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
    )
    assert backdated.status_code == 409
    assert backdated.json()["error"]["field"] == "effective_from"
    same_time = await admin.post(
        f"/models/{model['id']}/prices", json={"input": 9, "effective_from": tomorrow.isoformat()}
    )
    assert same_time.status_code == 409

    history = await admin.get(f"/models/{model['id']}/prices")
    assert [p["input"] for p in history.json()["items"]] == [3, 1]
    assert history.json()["total"] == 2
    async with admin_env.services.reading() as session:
        rows = (await session.scalars(select(Price).order_by(Price.id))).all()
    assert (rows[0].id, rows[0].effective_from, rows[0].input, rows[0].output) == original
    assert len(rows) == 2

    later = datetime.now(UTC) + timedelta(days=2)
    tiered = await admin.post(
        f"/models/{model['id']}/prices",
        json={
            "input": 4,
            "output": 8,
            "effective_from": later.isoformat(),
            "tiers": [{"above_tokens": 200000, "input": 6}],
        },
    )
    assert tiered.json()["tiers"] == [{"above_tokens": 200000, "input": 6.0}]
    log = await admin.get("/audit", params={"entity_type": "model", "action": "add_price"})
    assert log.json()["total"] == 3


async def test_list_filter_delete_and_file_managed(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    for name in ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "gemini-pro"):
        assert (
            await admin.post("/models", json={"name": name, "enabled": name != "gemini-pro"})
        ).status_code == 201
    gpts = await admin.get("/models", params={"name": "gpt"})
    assert [m["name"] for m in gpts.json()["items"]] == ["gpt-4o", "gpt-4o-mini"]
    off = await admin.get("/models", params={"enabled": "false"})
    assert [m["name"] for m in off.json()["items"]] == ["gemini-pro"]
    second_page = await admin.get("/models", params={"limit": 2, "offset": 2})
    assert [m["name"] for m in second_page.json()["items"]] == ["claude-sonnet", "gemini-pro"]
    assert second_page.json()["total"] == 4
    dup = await admin.post("/models", json={"name": "gpt-4o"})
    assert dup.status_code == 409 and dup.json()["error"]["field"] == "name"

    victim = gpts.json()["items"][1]["id"]
    assert (await admin.delete(f"/models/{victim}")).status_code == 204
    assert (await admin.get(f"/models/{victim}")).status_code == 404
    assert (await admin.get(f"/models/{victim}/prices")).status_code == 404

    async with admin_env.services.changing(notify=False) as session:
        session.add(Model(name="declared", managed_by="file"))
    declared = (await admin.get("/models", params={"name": "declared"})).json()["items"][0]
    for response in (
        await admin.patch(f"/models/{declared['id']}", json={"enabled": False}),
        await admin.post(f"/models/{declared['id']}/prices", json={"input": 1}),
        await admin.delete(f"/models/{declared['id']}"),
    ):
        assert response.status_code == 409
        assert "config file" in response.json()["error"]["message"]
