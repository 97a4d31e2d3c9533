"""Providers and provider keys: endpoints, write-only secrets, upstream test and model sync over real HTTP."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from admin.support import ANTHROPIC_IDS, GEMINI_IDS, OPENAI_IDS, UPSTREAM_SECRET, AdminEnv, Upstream
from isthmus.providers.mock_wire import MOCK_MODELS
from isthmus.store.tables import Provider, ProviderKey, Route
from services import free_port

OTHER_SECRET = "sk-other-secret-value-0123456789abcd"


async def _provider(admin: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await admin.post("/providers", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


async def test_create_with_keys_and_secrets_are_write_only(
    admin_env: AdminEnv, admin: httpx.AsyncClient
) -> None:
    provider = await _provider(
        admin,
        name="openai",
        type="openai",
        base_url="https://api.openai.com/v1",
        headers={"OpenAI-Organization": "org-1"},
        keys=[{"name": "main", "secret": UPSTREAM_SECRET, "rpm": 500, "capabilities": ["cache_1h"]}],
    )
    assert provider["base_url"] == "https://api.openai.com/v1"
    assert [e["protocol"] for e in provider["endpoints"]] == ["openai-chat", "openai-responses"]  # type: ignore[attr-defined]
    assert provider["key_count"] == 1
    assert provider["timeouts"] == {"connect": 10.0, "first_byte": 60.0, "idle": 120.0, "total": 900.0}

    keys = await admin.get(f"/providers/{provider['id']}/keys")
    assert keys.status_code == 200
    key = keys.json()["items"][0]
    assert key["secret_hint"] == "sk-…6789"
    assert key["rpm"] == 500 and key["capabilities"] == ["cache_1h"]
    assert "secret" not in key
    async with admin_env.services.reading() as session:
        row = (await session.scalars(select(ProviderKey))).one()
    assert UPSTREAM_SECRET not in row.secret_encrypted
    assert admin_env.services.box.decrypt(row.secret_encrypted) == UPSTREAM_SECRET

    replaced = await admin.patch(
        f"/providers/{provider['id']}/keys/{key['id']}", json={"secret": OTHER_SECRET}
    )
    assert replaced.json()["secret_hint"] == "sk-…abcd"
    audit = await admin.get("/audit", params={"entity_type": "provider_key"})
    assert UPSTREAM_SECRET not in audit.text and OTHER_SECRET not in audit.text
    update_entry = audit.json()["items"][0]
    assert update_entry["before"] == {"secret_hint": "sk-…6789"}
    assert update_entry["after"] == {"secret_hint": "sk-…abcd"}
    create_entry = audit.json()["items"][1]
    assert create_entry["after"]["secret_encrypted"] == "…"

    for path in (f"/providers/{provider['id']}", "/providers", f"/providers/{provider['id']}/keys"):
        text = (await admin.get(path)).text
        assert UPSTREAM_SECRET not in text and OTHER_SECRET not in text


async def test_endpoint_rules_and_updates(admin: httpx.AsyncClient) -> None:
    missing_url = await admin.post("/providers", json={"name": "a", "type": "anthropic"})
    assert missing_url.status_code == 422 and missing_url.json()["error"]["field"] == "base_url"
    wrong_protocol = await admin.post(
        "/providers",
        json={"name": "a", "type": "anthropic", "base_url": "https://x", "protocols": ["gemini"]},
    )
    assert wrong_protocol.status_code == 422
    assert wrong_protocol.json()["error"]["field"] == "protocols[0]"
    bad_url = await admin.post("/providers", json={"name": "a", "type": "openai", "base_url": "ftp://x"})
    assert bad_url.status_code == 422 and bad_url.json()["error"]["field"] == "base_url"
    bad_type = await admin.post("/providers", json={"name": "a", "type": "nope", "base_url": "https://x"})
    assert bad_type.status_code == 422 and bad_type.json()["error"]["field"] == "type"

    provider = await _provider(
        admin,
        name="multi",
        type="mock",
        endpoints=[{"protocol": "anthropic"}, {"protocol": "gemini", "base_url": "http://127.0.0.1:1"}],
    )
    assert [(e["protocol"], e["base_url"]) for e in provider["endpoints"]] == [  # type: ignore[attr-defined]
        ("anthropic", None),
        ("gemini", "http://127.0.0.1:1"),
    ]
    pid = provider["id"]
    moved = await admin.patch(f"/providers/{pid}", json={"base_url": "http://127.0.0.1:2", "priority": 3})
    assert moved.status_code == 200
    assert {e["base_url"] for e in moved.json()["endpoints"]} == {"http://127.0.0.1:2"}
    assert moved.json()["priority"] == 3
    narrowed = await admin.patch(f"/providers/{pid}", json={"protocols": ["openai-chat"]})
    assert [e["protocol"] for e in narrowed.json()["endpoints"]] == ["openai-chat"]
    assert narrowed.json()["base_url"] == "http://127.0.0.1:2"
    both = await admin.patch(f"/providers/{pid}", json={"base_url": "http://h", "endpoints": []})
    assert both.status_code == 422
    log = await admin.get("/audit", params={"entity_type": "provider", "entity_id": pid, "limit": 1})
    assert log.json()["items"][0]["after"]["endpoints"] == [
        {"protocol": "openai-chat", "base_url": "http://127.0.0.1:2"}
    ]

    for i in range(3):
        await _provider(
            admin,
            name=f"gem-{i}",
            type="gemini",
            base_url="https://g",
            enabled=i != 1,
            keys=[{"name": "k", "secret": "s"}],
        )
    gems = await admin.get("/providers", params={"type": "gemini"})
    assert gems.json()["total"] == 3
    disabled = await admin.get("/providers", params={"enabled": "false"})
    assert [p["name"] for p in disabled.json()["items"]] == ["gem-1"]
    named = await admin.get("/providers", params={"name": "GEM-", "limit": 2, "offset": 2})
    assert [p["name"] for p in named.json()["items"]] == ["gem-2"]


async def test_provider_test_against_a_real_upstream(admin: httpx.AsyncClient, upstream: Upstream) -> None:
    provider = await _provider(
        admin,
        name="up",
        type="openai",
        base_url=f"{upstream.url}/oai/v1",
        keys=[
            {"name": "good", "secret": UPSTREAM_SECRET, "priority": 0},
            {"name": "bad", "secret": "sk-revoked-upstream-key-000000", "priority": 1},
        ],
    )
    pid = provider["id"]
    ok = await admin.post(f"/providers/{pid}/test")
    assert ok.status_code == 200, ok.text
    result = ok.json()
    assert result["ok"] is True and result["status"] == 200 and result["error"] is None
    assert result["key_name"] == "good" and result["model_count"] == len(OPENAI_IDS)
    assert result["latency_ms"] >= 0

    keys = (await admin.get(f"/providers/{pid}/keys")).json()["items"]
    bad_id = next(k["id"] for k in keys if k["name"] == "bad")
    failed = (await admin.post(f"/providers/{pid}/test", json={"key_id": bad_id})).json()
    assert failed["ok"] is False and failed["status"] == 401
    assert "invalid api key" in failed["error"]
    assert failed["key_name"] == "bad"

    broken = await _provider(
        admin,
        name="broken",
        type="openai",
        base_url=f"{upstream.url}/broken",
        keys=[{"name": "k", "secret": "x"}],
    )
    answer = (await admin.post(f"/providers/{broken['id']}/test")).json()
    assert answer["ok"] is False and answer["status"] == 500

    down = await _provider(
        admin,
        name="down",
        type="anthropic",
        base_url=f"http://127.0.0.1:{free_port()}",
        keys=[{"name": "k", "secret": "x"}],
    )
    unreachable = (await admin.post(f"/providers/{down['id']}/test")).json()
    assert unreachable["ok"] is False and unreachable["status"] is None
    assert "cannot reach" in unreachable["error"]

    keyless = await _provider(admin, name="keyless", type="mock")
    mock = (await admin.post(f"/providers/{keyless['id']}/test")).json()
    assert mock["ok"] is True and mock["model_count"] == len(MOCK_MODELS)
    assert (await admin.post("/providers/424242/test")).status_code == 404


async def test_sync_models_lists_and_creates(
    admin_env: AdminEnv, admin: httpx.AsyncClient, upstream: Upstream
) -> None:
    anthropic = await _provider(
        admin,
        name="ant",
        type="anthropic",
        base_url=f"{upstream.url}/ant",
        keys=[{"name": "k", "secret": UPSTREAM_SECRET}],
    )
    gemini = await _provider(
        admin,
        name="gem",
        type="gemini",
        base_url=f"{upstream.url}/gem",
        keys=[{"name": "k", "secret": UPSTREAM_SECRET}],
    )
    await admin.post(
        "/models", json={"name": "claude-0", "routes": [{"provider": "ant", "upstream_model": "claude-0"}]}
    )

    listed = await admin.post(f"/providers/{anthropic['id']}/sync-models")
    assert listed.status_code == 200
    assert listed.json() == {"models": ANTHROPIC_IDS, "created": [], "existing": ["claude-0"]}
    assert (await admin.get("/models")).json()["total"] == 1

    before = len(admin_env.changes)
    created = await admin.post(f"/providers/{anthropic['id']}/sync-models", params={"create": "true"})
    assert created.json()["created"] == ANTHROPIC_IDS[1:]
    assert created.json()["existing"] == ["claude-0"]
    assert len(admin_env.changes) == before + 1
    models = (await admin.get("/models", params={"name": "claude", "limit": 100})).json()["items"]
    assert sorted(m["name"] for m in models) == sorted(ANTHROPIC_IDS)
    for model in models:
        assert [(r["provider_name"], r["upstream_model"]) for r in model["routes"]] == [
            ("ant", model["name"])
        ]

    gem = await admin.post(f"/providers/{gemini['id']}/sync-models", params={"create": "true"})
    assert gem.json()["models"] == GEMINI_IDS and gem.json()["created"] == GEMINI_IDS
    again = await admin.post(f"/providers/{gemini['id']}/sync-models", params={"create": "true"})
    assert again.json()["created"] == [] and again.json()["existing"] == GEMINI_IDS

    failing = await _provider(
        admin,
        name="no",
        type="gemini",
        base_url=f"{upstream.url}/gem",
        keys=[{"name": "k", "secret": "wrong"}],
    )
    refused = await admin.post(f"/providers/{failing['id']}/sync-models")
    assert refused.status_code == 502
    assert refused.json()["error"]["type"] == "upstream"


async def test_delete_removes_keys_and_routes(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    provider = await _provider(admin, name="gone", type="mock", keys=[{"name": "k", "secret": "s"}])
    await _provider(admin, name="stays", type="mock")
    model = await admin.post(
        "/models",
        json={
            "name": "m",
            "routes": [
                {"provider": "gone", "upstream_model": "x"},
                {"provider": "stays", "upstream_model": "y"},
            ],
        },
    )
    assert model.status_code == 201
    assert (await admin.delete(f"/providers/{provider['id']}")).status_code == 204
    async with admin_env.services.reading() as session:
        assert (await session.scalars(select(ProviderKey))).all() == []
        routes = (await session.scalars(select(Route))).all()
        assert [r.upstream_model for r in routes] == ["y"]
    assert [
        r["provider_name"] for r in (await admin.get(f"/models/{model.json()['id']}")).json()["routes"]
    ] == ["stays"]
    assert (await admin.get(f"/providers/{provider['id']}")).status_code == 404


async def test_file_managed_providers_are_refused(admin_env: AdminEnv, admin: httpx.AsyncClient) -> None:
    async with admin_env.services.changing(notify=False) as session:
        row = Provider(name="declared", type="mock", managed_by="file")
        session.add(row)
        await session.flush()
        session.add(
            ProviderKey(
                provider_id=row.id,
                name="k",
                secret_encrypted=admin_env.services.box.encrypt("s"),
                managed_by="file",
            )
        )
    provider = (await admin.get("/providers", params={"name": "declared"})).json()["items"][0]
    key = (await admin.get(f"/providers/{provider['id']}/keys")).json()["items"][0]
    for response in (
        await admin.patch(f"/providers/{provider['id']}", json={"enabled": False}),
        await admin.delete(f"/providers/{provider['id']}"),
        await admin.post(f"/providers/{provider['id']}/keys", json={"name": "k2", "secret": "s"}),
        await admin.patch(f"/providers/{provider['id']}/keys/{key['id']}", json={"enabled": False}),
        await admin.delete(f"/providers/{provider['id']}/keys/{key['id']}"),
    ):
        assert response.status_code == 409, response.text
        assert "config file" in response.json()["error"]["message"]


async def test_provider_keys_crud_filters_and_duplicates(admin: httpx.AsyncClient) -> None:
    provider = await _provider(admin, name="p", type="mock", keys=[{"name": "k", "secret": "s"}])
    other = await _provider(admin, name="q", type="mock")
    again = await admin.post(f"/providers/{provider['id']}/keys", json={"name": "k", "secret": "t"})
    assert again.status_code == 409 and again.json()["error"]["field"] == "name"
    elsewhere = await admin.post(f"/providers/{other['id']}/keys", json={"name": "k", "secret": "t"})
    assert elsewhere.status_code == 201
    inline = await admin.post(
        "/providers",
        json={
            "name": "r",
            "type": "mock",
            "keys": [{"name": "a", "secret": "s"}, {"name": "a", "secret": "t"}],
        },
    )
    assert inline.status_code == 409 and inline.json()["error"]["field"] == "keys[1].name"
    assert (await admin.get("/providers", params={"name": "r"})).json()["total"] == 0

    pid = provider["id"]
    for i in range(4):
        body = {"name": f"extra-{i}", "secret": f"sk-extra-{i}", "enabled": i % 2 == 0, "weight": i + 1}
        assert (await admin.post(f"/providers/{pid}/keys", json=body)).status_code == 201
    enabled = await admin.get(f"/providers/{pid}/keys", params={"enabled": "false"})
    assert [k["name"] for k in enabled.json()["items"]] == ["extra-1", "extra-3"]
    paged = await admin.get(f"/providers/{pid}/keys", params={"name": "extra", "limit": 3, "offset": 3})
    assert paged.json()["total"] == 4 and [k["name"] for k in paged.json()["items"]] == ["extra-3"]
    key_id = paged.json()["items"][0]["id"]
    patched = await admin.patch(f"/providers/{pid}/keys/{key_id}", json={"enabled": True, "weight": 0.5})
    assert patched.json()["enabled"] is True and patched.json()["weight"] == 0.5
    bad_weight = await admin.patch(f"/providers/{pid}/keys/{key_id}", json={"weight": 0})
    assert bad_weight.status_code == 422 and bad_weight.json()["error"]["field"] == "weight"
    assert (await admin.get(f"/providers/{other['id']}/keys/{key_id}")).status_code == 404
    assert (await admin.delete(f"/providers/{pid}/keys/{key_id}")).status_code == 204
    assert (await admin.get(f"/providers/{pid}/keys/{key_id}")).status_code == 404
    assert (await admin.get(f"/providers/{pid}")).json()["key_count"] == 4
