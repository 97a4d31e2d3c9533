"""Config file → store: upsert, idempotence, removal disables, prices appended, all-or-nothing."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.config import FileConfig, parse_config
from isthmus.crypto import SecretBox, hash_gateway_key, verify_password
from isthmus.errors import ConfigError
from isthmus.store import repos
from isthmus.store.config_sync import apply_file_config
from isthmus.store.tables import (
    AuditEntry,
    Base,
    GatewayKey,
    Model,
    Price,
    Provider,
    ProviderEndpoint,
    ProviderKey,
    Route,
    Team,
    User,
)

Sessions = async_sessionmaker[AsyncSession]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

BASE_CONFIG = """
providers:
  - name: openai
    type: openai
    base_url: https://api.openai.com/v1
    priority: 1
    timeouts: {connect: 5, first_byte: 30}
    headers: {OpenAI-Organization: org-123}
    keys:
      - {name: main, secret: "sk-openai-main-0000", capabilities: [cache_1h], rpm: 500}
      - {name: backup, secret: "sk-openai-backup-0000", priority: 1, weight: 2}
  - name: claude
    type: anthropic
    base_url: https://api.anthropic.com
    keys: [{name: k1, secret: "sk-ant-0000"}]
  - name: mock
    type: mock
models:
  - name: gpt-4o
    routes:
      - {provider: openai, model: gpt-4o-2024-11-20}
      - {provider: mock, model: echo, priority: 5, weight: 2, keys: []}
    price: {input: 2.5, output: 10, cache_read: 1.25, tiers: [{above_tokens: 200000, input: 5}]}
  - name: claude-sonnet
    routes: [{provider: claude, model: claude-sonnet-4-5, keys: [k1]}]
    price: {input: 3, output: 15}
teams:
  - {name: research, budget: {monthly_usd: 500}, limits: {rpm: 100}}
users:
  - {username: alice, team: research, role: admin, password: "alice-password-1"}
  - {username: bob}
keys:
  - name: alice-laptop
    user: alice
    secret: "sk-isthmus-alice-fixed-secret-0001"
    models: [gpt-4o]
    limits: {rpm: 60, tpm: 200000, concurrency: 4}
    budget: {monthly_usd: 50}
    expires_at: "2027-01-01"
  - name: ci
    team: research
"""


def _config(text: str) -> FileConfig:
    return parse_config(text, env={})


async def _sync(sessions: Sessions, config: FileConfig, box: SecretBox, now: datetime = T0) -> Any:
    async with sessions() as session:
        return await apply_file_config(session, config, box, now=now)


async def _counts(sessions: Sessions) -> dict[str, int]:
    tables: list[type[Base]] = [
        Team,
        User,
        GatewayKey,
        Provider,
        ProviderEndpoint,
        ProviderKey,
        Model,
        Route,
        Price,
        AuditEntry,
    ]
    async with sessions() as session:
        return {
            t.__tablename__: int(await session.scalar(select(func.count()).select_from(t)) or 0)
            for t in tables
        }


async def _dump_store(sessions: Sessions) -> dict[str, list[dict[str, Any]]]:
    """Every synced table as plain dicts, to compare whole-store states."""
    out: dict[str, list[dict[str, Any]]] = {}
    tables: list[type[Base]] = [
        Team,
        User,
        GatewayKey,
        Provider,
        ProviderEndpoint,
        ProviderKey,
        Model,
        Route,
        Price,
    ]
    async with sessions() as session:
        for table in tables:
            rows = (await session.scalars(select(table))).all()
            out[table.__tablename__] = sorted(
                ({c.key: getattr(r, c.key) for c in r.__mapper__.column_attrs} for r in rows),
                key=lambda d: d["id"],
            )
    return out


async def test_first_sync_creates_everything(sessions: Sessions, box: SecretBox) -> None:
    report = await _sync(sessions, _config(BASE_CONFIG), box)
    assert set(report.names("create", "provider")) == {"openai", "claude", "mock"}
    assert set(report.names("create", "model")) == {"gpt-4o", "claude-sonnet"}
    assert set(report.names("add_price")) == {"gpt-4o", "claude-sonnet"}
    assert list(report.generated_secrets) == ["ci"]

    async with sessions() as session:
        openai = await repos.providers.get_by_name(session, "openai")
        assert openai.managed_by == "file" and openai.type == "openai" and openai.priority == 1
        assert openai.headers == {"OpenAI-Organization": "org-123"}
        assert openai.timeouts == {"connect": 5.0, "first_byte": 30.0, "idle": 120.0, "total": 900.0}
        endpoints = await repos.list_endpoints(session, openai.id)
        assert {(e.protocol, e.base_url) for e in endpoints} == {
            ("openai-chat", "https://api.openai.com/v1"),
            ("openai-responses", "https://api.openai.com/v1"),
        }
        mock = await repos.providers.get_by_name(session, "mock")
        assert {e.protocol for e in await repos.list_endpoints(session, mock.id)} == {
            "openai-chat",
            "openai-responses",
            "anthropic",
            "gemini",
        }
        keys = {k.name: k for k in await repos.list_provider_keys(session, openai.id)}
        assert set(keys) == {"main", "backup"}
        assert box.decrypt(keys["main"].secret_encrypted) == "sk-openai-main-0000"
        assert "sk-openai-main-0000" not in keys["main"].secret_encrypted
        assert keys["main"].capabilities == ["cache_1h"] and keys["main"].rpm == 500
        assert keys["backup"].weight == 2.0 and keys["backup"].priority == 1

        gpt = await repos.models.get_by_name(session, "gpt-4o")
        routes = await repos.list_routes(session, gpt.id)
        assert [(r.upstream_model, r.position, r.priority, r.weight, r.key_names) for r in routes] == [
            ("gpt-4o-2024-11-20", 0, None, None, None),
            ("echo", 1, 5, 2.0, []),
        ]
        assert routes[1].provider_id == mock.id
        price = await repos.prices_in_force(session, gpt.id, T0)
        assert price is not None and price.effective_from == T0
        assert (price.input, price.output, price.cache_read, price.cache_write_5m) == (2.5, 10.0, 1.25, None)
        assert price.tiers == [{"above_tokens": 200000, "input": 5.0}]
        assert await repos.prices_in_force(session, gpt.id, T0 - timedelta(seconds=1)) is None

        research = await repos.teams.get_by_name(session, "research")
        assert research.budget == {"monthly_usd": 500.0} and research.limits == {"rpm": 100}
        alice = await repos.users.get_by_name(session, "alice")
        assert alice.team_id == research.id and alice.role == "admin"
        assert alice.password_hash is not None and verify_password("alice-password-1", alice.password_hash)
        bob = await repos.users.get_by_name(session, "bob")
        assert bob.password_hash is None and bob.role == "member" and bob.team_id is None

        laptop = await repos.gateway_keys.get_by_name(session, "alice-laptop")
        assert laptop.key_hash == hash_gateway_key("sk-isthmus-alice-fixed-secret-0001")
        assert laptop.user_id == alice.id and laptop.allowed_models == ["gpt-4o"]
        assert laptop.limits == {"rpm": 60, "tpm": 200000, "concurrency": 4}
        assert laptop.expires_at == datetime(2027, 1, 1, tzinfo=UTC)
        ci = await repos.gateway_keys.get_by_name(session, "ci")
        assert ci.key_hash == hash_gateway_key(report.generated_secrets["ci"])
        assert ci.team_id == research.id and ci.user_id is None and ci.status == "active"

        audit = (await session.scalars(select(AuditEntry))).all()
        assert all(a.actor == "config" for a in audit)
        assert {(a.entity_type, a.entity_name) for a in audit if a.action == "create"} >= {
            ("provider", "openai"),
            ("provider_key", "openai/main"),
            ("gateway_key", "ci"),
        }
        everything = " ".join(str((a.before, a.after)) for a in audit)
        for secret in ("sk-openai-main-0000", "sk-isthmus-alice-fixed-secret-0001", "alice-password-1"):
            assert secret not in everything
        assert report.generated_secrets["ci"] not in everything


async def test_second_sync_changes_nothing(sessions: Sessions, box: SecretBox) -> None:
    config = _config(BASE_CONFIG)
    first = await _sync(sessions, config, box)
    assert first.changed
    before = await _dump_store(sessions)
    counts = await _counts(sessions)

    second = await _sync(sessions, config, box, now=T0 + timedelta(days=3))
    assert not second.changed, second.changes
    assert second.generated_secrets == {}
    assert await _counts(sessions) == counts  # no new prices, no audit noise
    assert await _dump_store(sessions) == before  # not even updated_at moved


async def test_changes_update_in_place_and_prices_are_appended(sessions: Sessions, box: SecretBox) -> None:
    await _sync(sessions, _config(BASE_CONFIG), box)
    async with sessions() as session:
        gpt = await repos.models.get_by_name(session, "gpt-4o")
        old_price = await repos.prices_in_force(session, gpt.id, T0)
        assert old_price is not None
        old_price_values = repos.price_values(old_price)
        openai_id = (await repos.providers.get_by_name(session, "openai")).id
        old_main = await repos.find_provider_key(session, openai_id, "main")
        assert old_main is not None
        ci_hash = (await repos.gateway_keys.get_by_name(session, "ci")).key_hash

    changed = (
        BASE_CONFIG.replace("input: 2.5, output: 10", "input: 2.0, output: 8")
        .replace('"sk-openai-main-0000"', '"sk-openai-rotated-1111"')
        .replace("priority: 1\n    timeouts", "priority: 7\n    timeouts")
        .replace("monthly_usd: 500", "monthly_usd: 900")
    )
    t1 = T0 + timedelta(days=10)
    report = await _sync(sessions, _config(changed), box, now=t1)
    assert report.names("add_price") == ["gpt-4o"]
    assert "openai" in report.names("update", "provider")
    assert report.names("update", "team") == ["research"]
    assert report.generated_secrets == {}

    async with sessions() as session:
        history = await repos.price_history(session, gpt.id)
        assert [p.effective_from for p in history] == [T0, t1]
        assert history[0].id == old_price.id
        assert repos.price_values(history[0]) == old_price_values  # the old row is untouched
        assert (history[1].input, history[1].output) == (2.0, 8.0)
        assert (await repos.prices_in_force(session, gpt.id, t1 - timedelta(seconds=1))).id == old_price.id  # type: ignore[union-attr]
        main = await repos.find_provider_key(session, openai_id, "main")
        assert main is not None and main.id == old_main.id
        assert box.decrypt(main.secret_encrypted) == "sk-openai-rotated-1111"
        assert (await repos.providers.get(session, openai_id)).priority == 7
        # A generated key is never regenerated.
        assert (await repos.gateway_keys.get_by_name(session, "ci")).key_hash == ci_hash
        updates = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "update", AuditEntry.entity_name == "research")
            )
        ).all()
        assert len(updates) == 1
        assert updates[0].before == {"budget": {"monthly_usd": 500.0}}
        assert updates[0].after == {"budget": {"monthly_usd": 900.0}}


async def test_entities_removed_from_the_file_are_disabled_not_deleted(
    sessions: Sessions, box: SecretBox
) -> None:
    await _sync(sessions, _config(BASE_CONFIG), box)
    async with sessions() as session, session.begin():
        # An API-made team must survive a sync that does not mention it.
        await repos.teams.create(session, name="api-team")
        gpt = await repos.models.get_by_name(session, "gpt-4o")
        api_route = await repos.routes.create(
            session,
            model_id=gpt.id,
            provider_id=(await repos.providers.get_by_name(session, "claude")).id,
            upstream_model="api-added",
            position=9,
        )
        api_route_id = api_route.id
    counts = await _counts(sessions)

    shrunk = """
providers:
  - name: openai
    type: openai
    base_url: https://api.openai.com/v1
    protocols: [openai-chat]
    keys: [{name: main, secret: "sk-openai-main-0000"}]
models:
  - name: gpt-4o
    routes: [{provider: openai, model: gpt-4o-2024-11-20}]
"""
    report = await _sync(sessions, _config(shrunk), box, now=T0 + timedelta(days=1))
    assert set(report.names("disable")) == {
        "claude",
        "mock",
        "claude-sonnet",
        "research",
        "alice",
        "bob",
        "alice-laptop",
        "ci",
    }
    after = await _counts(sessions)
    for table in ("teams", "users", "gateway_keys", "providers", "models", "prices", "provider_keys"):
        assert after[table] == counts[table], table
    async with sessions() as session:
        assert not (await repos.providers.get_by_name(session, "claude")).enabled
        assert not (await repos.models.get_by_name(session, "claude-sonnet")).enabled
        assert (await repos.teams.get_by_name(session, "research")).disabled
        assert not (await repos.teams.get_by_name(session, "api-team")).disabled
        assert (await repos.users.get_by_name(session, "alice")).disabled
        assert (await repos.gateway_keys.get_by_name(session, "ci")).status == "paused"
        openai = await repos.providers.get_by_name(session, "openai")
        assert [e.protocol for e in await repos.list_endpoints(session, openai.id)] == ["openai-chat"]
        keys = {k.name: k.enabled for k in await repos.list_provider_keys(session, openai.id)}
        assert keys == {"main": True, "backup": False}
        gpt = await repos.models.get_by_name(session, "gpt-4o")
        routes = await repos.list_routes(session, gpt.id)
        assert [(r.upstream_model, r.managed_by) for r in routes] == [
            ("gpt-4o-2024-11-20", "file"),
            ("api-added", "api"),
        ]
        assert routes[1].id == api_route_id
        # Leaving a price out of the file keeps the history as it was.
        assert len(await repos.price_history(session, gpt.id)) == 1

    # Putting them back re-enables them; a revoked key stays revoked.
    async with sessions() as session, session.begin():
        laptop = await repos.gateway_keys.get_by_name(session, "alice-laptop")
        await repos.gateway_keys.update(session, laptop, status="revoked")
    report = await _sync(sessions, _config(BASE_CONFIG), box, now=T0 + timedelta(days=2))
    assert report.generated_secrets == {}
    async with sessions() as session:
        assert (await repos.providers.get_by_name(session, "claude")).enabled
        assert not (await repos.users.get_by_name(session, "alice")).disabled
        assert (await repos.gateway_keys.get_by_name(session, "ci")).status == "active"
        assert (await repos.gateway_keys.get_by_name(session, "alice-laptop")).status == "revoked"


async def test_file_takes_over_an_api_entity_of_the_same_name(sessions: Sessions, box: SecretBox) -> None:
    async with sessions() as session, session.begin():
        await repos.teams.create(session, name="research", budget={"monthly_usd": 1})
    await _sync(sessions, _config(BASE_CONFIG), box)
    async with sessions() as session:
        team = await repos.teams.get_by_name(session, "research")
        assert team.managed_by == "file" and team.budget == {"monthly_usd": 500.0}
        assert (await repos.teams.list(session)).total == 1


async def test_a_failure_leaves_the_store_unchanged(sessions: Sessions, box: SecretBox) -> None:
    await _sync(sessions, _config(BASE_CONFIG), box)
    # An API key holding the same secret as the file's new key: the key step (the last one) fails.
    clash = "sk-isthmus-shared-secret-000000"
    async with sessions() as session, session.begin():
        await repos.create_gateway_key(session, name="api-key", secret=clash)
    before = await _dump_store(sessions)
    counts = await _counts(sessions)

    changed = (
        BASE_CONFIG.replace("input: 2.5, output: 10", "input: 1.0, output: 1").replace(
            "monthly_usd: 500", "monthly_usd: 1"
        )
        + f'  - {{name: clashing, secret: "{clash}"}}\n'
    )
    with pytest.raises(ConfigError, match="gateway key"):
        await _sync(sessions, _config(changed), box, now=T0 + timedelta(days=1))
    assert await _counts(sessions) == counts
    assert await _dump_store(sessions) == before


async def test_a_wrong_secret_key_fails_before_changing_anything(sessions: Sessions, box: SecretBox) -> None:
    await _sync(sessions, _config(BASE_CONFIG), box)
    before = await _dump_store(sessions)
    changed = BASE_CONFIG.replace("monthly_usd: 500", "monthly_usd: 2")
    with pytest.raises(ConfigError, match="secret key"):
        await _sync(sessions, _config(changed), SecretBox(os.urandom(32)), now=T0 + timedelta(days=1))
    assert await _dump_store(sessions) == before


async def test_inside_a_caller_transaction_the_caller_decides(sessions: Sessions, box: SecretBox) -> None:
    async with sessions() as session:
        await repos.set_setting(session, "marker", 1)
        report = await apply_file_config(session, _config(BASE_CONFIG), box, now=T0)
        assert report.changed
        await session.rollback()
    assert (await _counts(sessions))["providers"] == 0

    async with sessions() as session:
        await repos.set_setting(session, "marker", 2)
        await apply_file_config(session, _config(BASE_CONFIG), box, now=T0)
        await session.commit()
    assert (await _counts(sessions))["providers"] == 3
    async with sessions() as session:
        assert await repos.get_setting(session, "marker") == 2


async def test_bad_expiry_is_a_config_error(sessions: Sessions, box: SecretBox) -> None:
    config = _config("keys:\n  - {name: k, expires_at: next-tuesday}\n")
    with pytest.raises(ConfigError, match="expires_at"):
        await _sync(sessions, config, box)
    assert (await _counts(sessions))["gateway_keys"] == 0
