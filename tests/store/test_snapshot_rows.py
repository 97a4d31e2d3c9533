"""The in-memory snapshot: plain frozen rows with decrypted keys, ordered routes and the prices that apply."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.config import parse_config
from isthmus.crypto import SecretBox, hash_gateway_key
from isthmus.store import repos
from isthmus.store.config_sync import apply_file_config
from isthmus.store.snapshot import Budget, Limits, SnapshotRows, Timeouts, load_snapshot_rows

Sessions = async_sessionmaker[AsyncSession]

T0 = datetime(2026, 5, 1, tzinfo=UTC)

CONFIG = """
providers:
  - name: openai
    type: openai
    base_url: https://api.openai.com/v1
    priority: 2
    timeouts: {first_byte: 15}
    keys:
      - {name: main, secret: "sk-openai-main-0000", capabilities: [cache_1h], rpm: 100}
      - {name: spare, secret: "sk-openai-spare-0000", enabled: false}
  - name: mock
    type: mock
models:
  - name: gpt-4o
    context_window: 128000
    routes:
      - {provider: mock, model: echo, priority: 0}
      - {provider: openai, model: gpt-4o-2024-11-20, keys: [main]}
    price: {input: 2.5, output: 10, tiers: [{above_tokens: 200000, input: 5, output: 20}]}
teams:
  - {name: research, budget: {monthly_usd: 100}}
users:
  - {username: alice, team: research, limits: {rpm: 30}}
keys:
  - {name: alice-key, user: alice, secret: "sk-isthmus-alice-0000000000", models: [gpt-4o], limits: {rpm: 5}}
  - {name: team-key, team: research, secret: "sk-isthmus-team-00000000000"}
"""


async def configure(sessions: Sessions, box: SecretBox) -> None:
    """CONFIG applied at T0, and a cheaper gpt-4o price from T0 + 30 days."""
    async with sessions() as session:
        await apply_file_config(session, parse_config(CONFIG, env={}), box, now=T0)
    async with sessions() as session, session.begin():
        gpt = await repos.models.get_by_name(session, "gpt-4o")
        await repos.add_price(session, gpt.id, effective_from=T0 + timedelta(days=30), input=2.0, output=8.0)


async def test_snapshot_after_sync(sessions: Sessions, box: SecretBox) -> None:
    await configure(sessions, box)
    async with sessions() as session, session.begin():
        gpt = await repos.models.get_by_name(session, "gpt-4o")
        await repos.add_price(session, gpt.id, effective_from=T0 - timedelta(days=30), input=9.0, output=9.0)
        revoked, _ = await repos.create_gateway_key(session, name="old", secret="sk-isthmus-old-000000000000")
        await repos.gateway_keys.update(session, revoked, status="revoked")

    now = T0 + timedelta(days=1)
    async with sessions() as session, session.begin():
        snap = await load_snapshot_rows(session, box, now=now)

    assert snap.loaded_at == now
    providers = {p.name: p for p in snap.providers.values()}
    openai = providers["openai"]
    assert openai.type == "openai" and openai.priority == 2 and openai.enabled
    assert openai.timeouts == Timeouts(first_byte=15.0)
    assert openai.endpoint("openai-responses") is not None
    assert openai.endpoint("anthropic") is None
    assert [(k.name, k.secret, k.enabled) for k in openai.keys] == [
        ("main", "sk-openai-main-0000", True),
        ("spare", "sk-openai-spare-0000", False),
    ]
    assert openai.keys[0].capabilities == ("cache_1h",) and openai.keys[0].rpm == 100
    assert "sk-openai-main-0000" not in repr(openai)
    assert len(providers["mock"].endpoints) == 4 and providers["mock"].keys == ()

    model = snap.models["gpt-4o"]
    assert model.context_window == 128000 and model.enabled
    assert [(r.provider_name, r.upstream_model, r.priority, r.key_names) for r in model.routes] == [
        ("mock", "echo", 0, None),
        ("openai", "gpt-4o-2024-11-20", None, ("main",)),
    ]
    # The price in force now, then the future one; the superseded one is left out.
    assert [(p.effective_from, p.input) for p in model.prices] == [
        (T0, 2.5),
        (T0 + timedelta(days=30), 2.0),
    ]
    assert model.prices[0].tiers[0].above_tokens == 200000 and model.prices[0].tiers[0].output == 20.0
    assert model.price_at(now).input == 2.5  # type: ignore[union-attr]
    assert model.price_at(T0 + timedelta(days=31)).input == 2.0  # type: ignore[union-attr]

    alice_key = snap.gateway_keys[hash_gateway_key("sk-isthmus-alice-0000000000")]
    alice = next(u for u in snap.users.values() if u.username == "alice")
    research = next(t for t in snap.teams.values() if t.name == "research")
    assert alice_key.user_id == alice.id
    assert alice_key.team_id == research.id  # inherited from the user
    assert alice_key.allowed_models == ("gpt-4o",)
    assert alice_key.limits == Limits(rpm=5)
    assert alice_key.is_usable(now)
    assert alice.limits == Limits(rpm=30)
    assert research.budget == Budget(monthly_usd=100.0)
    team_key = snap.gateway_keys[hash_gateway_key("sk-isthmus-team-00000000000")]
    assert team_key.user_id is None and team_key.team_id == research.id and team_key.allowed_models is None
    old = snap.gateway_keys[hash_gateway_key("sk-isthmus-old-000000000000")]
    assert old.status == "revoked" and not old.is_usable(now)

    with pytest.raises(dataclasses.FrozenInstanceError):
        alice_key.status = "active"  # type: ignore[misc]


async def test_empty_store_gives_an_empty_snapshot(sessions: Sessions, box: SecretBox) -> None:
    async with sessions() as session:
        snap = await load_snapshot_rows(session, box)
    assert snap.providers == {} and snap.models == {} and snap.gateway_keys == {}
    assert snap.loaded_at.tzinfo is not None


async def test_same_content_says_whether_a_reload_changed_rows(sessions: Sessions, box: SecretBox) -> None:
    await configure(sessions, box)

    async def load(at: datetime) -> SnapshotRows:
        async with sessions() as session, session.begin():
            return await load_snapshot_rows(session, box, now=at)

    first = await load(T0 + timedelta(days=1))
    # Read again later, nothing written in between: the same content, whatever the read time.
    assert first.same_content(await load(T0 + timedelta(days=2)))
    # The future price has come into force: the rows the request path prices with are not the same.
    assert not first.same_content(await load(T0 + timedelta(days=31)))

    async with sessions() as session, session.begin():
        key = await repos.gateway_keys.get_by_name(session, "alice-key")
        await repos.gateway_keys.update(session, key, limits={"rpm": 6})
    changed = await load(T0 + timedelta(days=2))
    assert not first.same_content(changed)
    assert changed.same_content(await load(T0 + timedelta(days=3)))
