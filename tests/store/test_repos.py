"""Repositories on SQLite and PostgreSQL: CRUD, pagination, conflicts, cascades, prices, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.crypto import SecretBox, hash_gateway_key
from isthmus.errors import ConflictError, InvalidRequestError, NotFoundError
from isthmus.store import repos
from isthmus.store.tables import AuditEntry, Price, ProviderEndpoint, ProviderKey, Route, Team

Sessions = async_sessionmaker[AsyncSession]

SQL_LOOKING = [
    "x'; DROP TABLE teams; --",
    'robert"); DELETE FROM users; --',
    "100%_match\\",
    "名前 with ünïcode",
]


async def _count(session: AsyncSession, table: type[object]) -> int:
    return int(await session.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


async def test_create_get_update_delete(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        team = await repos.teams.create(session, name="research", budget={"monthly_usd": 500})
        assert team.id > 0
        assert team.created_at.tzinfo is not None and team.updated_at.tzinfo is not None
        assert team.managed_by == "api"
        team_id = team.id

    async with sessions() as session, session.begin():
        loaded = await repos.teams.get(session, team_id)
        assert loaded.name == "research"
        assert loaded.budget == {"monthly_usd": 500}
        assert loaded.limits is None
        assert (await repos.teams.get_by_name(session, "research")).id == team_id
        changes = await repos.teams.update(session, loaded, limits={"rpm": 10}, name="research")
        assert changes == {"limits": (None, {"rpm": 10})}
        assert await repos.teams.update(session, team_id, limits={"rpm": 10}) == {}

    async with sessions() as session, session.begin():
        assert (await repos.teams.get(session, team_id)).limits == {"rpm": 10}
        await repos.teams.delete(session, team_id)

    async with sessions() as session:
        with pytest.raises(NotFoundError, match=f"no team with id {team_id}"):
            await repos.teams.get(session, team_id)
        with pytest.raises(NotFoundError):
            await repos.teams.get_by_name(session, "research")
        assert await repos.teams.find(session, team_id) is None


async def test_unknown_fields_are_rejected(sessions: Sessions) -> None:
    async with sessions() as session:
        with pytest.raises(InvalidRequestError, match="no settable field 'colour'"):
            await repos.teams.create(session, name="a", colour="red")
        with pytest.raises(InvalidRequestError, match="no field"):
            await repos.teams.list(session, filters={"nope": 1})
        with pytest.raises(InvalidRequestError):
            await repos.teams.list(session, order_by="-nope")


async def test_pagination_filters_and_search(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        for i in range(25):
            await repos.teams.create(session, name=f"team-{i:02d}", disabled=i % 5 == 0)

    async with sessions() as session:
        first = await repos.teams.list(session, limit=10)
        assert first.total == 25
        assert [t.name for t in first.items] == [f"team-{i:02d}" for i in range(10)]
        last = await repos.teams.list(session, limit=10, offset=20)
        assert [t.name for t in last.items] == [f"team-{i:02d}" for i in range(20, 25)]
        assert last.total == 25
        beyond = await repos.teams.list(session, limit=10, offset=30)
        assert beyond.items == [] and beyond.total == 25

        newest = await repos.teams.list(session, limit=3, order_by="-name")
        assert [t.name for t in newest.items] == ["team-24", "team-23", "team-22"]

        disabled = await repos.teams.list(session, filters={"disabled": True})
        assert disabled.total == 5
        assert {t.name for t in disabled.items} == {f"team-{i:02d}" for i in range(0, 25, 5)}
        some = await repos.teams.list(session, filters={"name": ["team-01", "team-02", "missing"]})
        assert {t.name for t in some.items} == {"team-01", "team-02"}
        no_budget = await repos.teams.list(session, filters={"budget": None}, limit=1)
        assert no_budget.total == 25

        search = await repos.teams.list(session, search="M-1")
        assert {t.name for t in search.items} == {f"team-{i}" for i in range(10, 20)}

        assert (await repos.teams.list(session, limit=10_000)).limit == repos.MAX_PAGE_SIZE
        with pytest.raises(InvalidRequestError):
            await repos.teams.list(session, limit=0)
        with pytest.raises(InvalidRequestError):
            await repos.teams.list(session, offset=-1)


async def test_duplicate_names_conflict_and_leave_the_transaction_usable(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        await repos.teams.create(session, name="alpha")
        with pytest.raises(ConflictError) as caught:
            await repos.teams.create(session, name="alpha")
        assert caught.value.param == "name"
        assert caught.value.status == 409
        assert "name" in caught.value.message
        # The failed insert rolled back only its savepoint: the transaction carries on.
        await repos.teams.create(session, name="beta")

        user = await repos.users.create(session, username="bob")
        with pytest.raises(ConflictError) as caught:
            await repos.users.create(session, username="bob")
        assert caught.value.param == "username"
        other = await repos.users.create(session, username="carol")
        with pytest.raises(ConflictError):
            await repos.users.update(session, other, username="bob")
        assert other.username == "carol"
        assert user.username == "bob"

    async with sessions() as session:
        page = await repos.teams.list(session)
        assert [t.name for t in page.items] == ["alpha", "beta"]
        assert {u.username for u in (await repos.users.list(session)).items} == {"bob", "carol"}


async def test_composite_unique_names_the_user_chosen_field(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        provider = await repos.providers.create(session, name="openai", type="openai")
        await repos.provider_keys.create(
            session, provider_id=provider.id, name="main", secret_encrypted="v1:x"
        )
        with pytest.raises(ConflictError) as caught:
            await repos.provider_keys.create(
                session, provider_id=provider.id, name="main", secret_encrypted="v1:y"
            )
        assert caught.value.param == "name"
        other = await repos.providers.create(session, name="azure", type="azure")
        await repos.provider_keys.create(session, provider_id=other.id, name="main", secret_encrypted="v1:z")


async def test_constraint_violations_become_request_errors(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        with pytest.raises(InvalidRequestError, match="not allowed"):
            await repos.users.create(session, username="eve", role="superuser")
        with pytest.raises(InvalidRequestError, match="does not exist"):
            await repos.users.create(session, username="eve", team_id=999_999)
        with pytest.raises(InvalidRequestError, match="required"):
            await repos.teams.create(session, name=None)
        assert (await repos.users.create(session, username="eve")).role == "member"


@pytest.mark.parametrize("name", SQL_LOOKING)
async def test_sql_looking_names_are_stored_literally(sessions: Sessions, name: str) -> None:
    async with sessions() as session, session.begin():
        team = await repos.teams.create(session, name=name)
        await repos.users.create(session, username=name, team_id=team.id)
        await repos.teams.create(session, name="innocent")
    async with sessions() as session:
        assert (await repos.teams.get_by_name(session, name)).name == name
        assert (await repos.users.get_by_name(session, name)).username == name
        found = await repos.teams.list(session, search=name)
        assert [t.name for t in found.items] == [name]
        assert await _count(session, Team) == 2
        tables = await session.execute(text("SELECT COUNT(*) FROM users"))
        assert tables.scalar() == 1


async def test_deleting_a_provider_removes_endpoints_keys_and_routes(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        provider = await repos.providers.create(session, name="openai", type="openai")
        keep = await repos.providers.create(session, name="other", type="openai")
        model = await repos.models.create(session, name="gpt-4o")
        for p in (provider, keep):
            await repos.provider_endpoints.create(
                session, provider_id=p.id, protocol="openai-chat", base_url="u"
            )
            await repos.provider_keys.create(session, provider_id=p.id, name="k", secret_encrypted="v1:x")
            await repos.routes.create(session, model_id=model.id, provider_id=p.id, upstream_model="gpt-4o")
        provider_id = provider.id

    async with sessions() as session, session.begin():
        await repos.providers.delete(session, provider_id)

    async with sessions() as session:
        for table in (ProviderEndpoint, ProviderKey, Route):
            owners = (await session.scalars(select(table.provider_id))).all()  # type: ignore[attr-defined]
            assert owners == [keep.id], table.__name__
        assert [r.provider_id for r in await repos.list_routes(session, model.id)] == [keep.id]


async def test_deleting_a_team_keeps_its_users(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        team = await repos.teams.create(session, name="t")
        user = await repos.users.create(session, username="u", team_id=team.id)
        user_id = user.id
    async with sessions() as session, session.begin():
        await repos.teams.delete(session, team.id)
    async with sessions() as session:
        assert (await repos.users.get(session, user_id)).team_id is None


async def test_price_history_is_append_only(sessions: Sessions) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with sessions() as session, session.begin():
        model = await repos.models.create(session, name="gpt-4o")
        first = await repos.add_price(session, model.id, effective_from=t0, input=2.5, output=10.0)
        second = await repos.add_price(
            session, model.id, effective_from=t0 + timedelta(days=30), input=2.0, output=8.0, cache_read=1.0
        )
        future = await repos.add_price(session, model.id, effective_from=t0 + timedelta(days=365), input=1.0)
        with pytest.raises(ConflictError):
            await repos.add_price(session, model.id, effective_from=t0, input=99.0)
        with pytest.raises(InvalidRequestError, match="unknown price field"):
            await repos.add_price(session, model.id, inptu=1.0)
        model_id, ids = model.id, (first.id, second.id, future.id)

    async with sessions() as session:
        assert await repos.prices_in_force(session, model_id, t0 - timedelta(seconds=1)) is None
        at_start = await repos.prices_in_force(session, model_id, t0)
        assert at_start is not None and at_start.id == ids[0] and at_start.input == 2.5
        mid = await repos.prices_in_force(session, model_id, t0 + timedelta(days=31))
        assert mid is not None and mid.id == ids[1] and mid.cache_read == 1.0
        # A non-UTC "at" means the same instant.
        local = (t0 + timedelta(days=30)).astimezone(datetime.now().astimezone().tzinfo)
        assert (await repos.prices_in_force(session, model_id, local)).id == ids[1]  # type: ignore[union-attr]
        now = await repos.prices_in_force(session, model_id)
        assert now is not None and now.id == ids[1]
        history = await repos.price_history(session, model_id)
        assert [p.id for p in history] == list(ids)
        assert [p.input for p in history] == [2.5, 2.0, 1.0]
        assert all(p.effective_from.tzinfo is not None for p in history)
        assert await _count(session, Price) == 3


async def test_gateway_key_lookup_by_hash(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        row, secret = await repos.create_gateway_key(session, name="laptop")
        fixed, fixed_secret = await repos.create_gateway_key(
            session, name="ci", secret="fixed-secret-0123456789"
        )
        with pytest.raises(ConflictError):
            await repos.create_gateway_key(session, name="laptop")
        with pytest.raises(ConflictError):
            await repos.create_gateway_key(session, name="ci-copy", secret="fixed-secret-0123456789")
    assert fixed_secret == "fixed-secret-0123456789"
    async with sessions() as session, session.begin():
        found = await repos.find_key_by_hash(session, hash_gateway_key(secret))
        assert found is not None and found.id == row.id and found.status == "active"
        assert secret not in (found.key_hash, found.key_prefix)
        assert secret.startswith(found.key_prefix.rstrip("…"))
        assert (await repos.find_key_by_hash(session, hash_gateway_key(fixed_secret))).id == fixed.id  # type: ignore[union-attr]
        assert await repos.find_key_by_hash(session, hash_gateway_key(secret + "x")) is None
        used_at = datetime.now(UTC)
        await repos.mark_keys_used(session, {row.id: used_at})
        await repos.mark_keys_used(session, {row.id: used_at - timedelta(hours=1)})
    async with sessions() as session:
        assert (await repos.gateway_keys.get(session, row.id)).last_used_at == used_at


async def test_settings_round_trip(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        assert await repos.get_setting(session, "ui", default={"x": 1}) == {"x": 1}
        await repos.set_setting(session, "ui", {"theme": "dark", "n": [1, 2]})
        await repos.set_setting(session, "ui", {"theme": "light"})
        await repos.set_setting(session, "flag", None)
    async with sessions() as session:
        assert await repos.get_setting(session, "ui") == {"theme": "light"}
        assert await repos.get_setting(session, "flag", default="absent") is None


async def test_audit_masks_secrets(sessions: Sessions, box: SecretBox) -> None:
    upstream_secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    async with sessions() as session, session.begin():
        provider = await repos.providers.create(session, name="openai", type="openai")
        key = await repos.provider_keys.create(
            session, provider_id=provider.id, name="main", secret_encrypted=box.encrypt(upstream_secret)
        )
        await repos.record_audit(
            session,
            actor="alice",
            action="create",
            entity_type="provider_key",
            entity_id=key.id,
            entity_name="openai/main",
            after={**repos.row_to_dict(key), "secret": upstream_secret, "nested": {"password": "hunter2"}},
        )
    async with sessions() as session:
        entry = (await session.scalars(select(AuditEntry))).one()
        assert entry.actor == "alice" and entry.entity_id == key.id
        assert entry.at.tzinfo is not None
        stored = str(entry.after)
        assert upstream_secret not in stored
        assert "hunter2" not in stored
        assert key.secret_encrypted not in stored
        assert entry.after is not None
        assert entry.after["name"] == "main"
        assert entry.after["secret"] == "sk-…0123"
        assert entry.after["nested"] == {"password": "…"}
        assert isinstance(entry.after["created_at"], str)


async def test_admin_tokens_and_console_sessions(sessions: Sessions) -> None:
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        user = await repos.users.create(session, username="admin", role="admin")
        row, token = await repos.create_admin_token(session, user_id=user.id, name="script")
        _, expired = await repos.create_admin_token(
            session, user_id=user.id, name="old", expires_at=now - timedelta(minutes=1)
        )
        await repos.create_console_session(
            session, user_id=user.id, token="cookie-1", csrf_token="c1", expires_at=now + timedelta(hours=1)
        )
        await repos.create_console_session(
            session, user_id=user.id, token="cookie-2", csrf_token="c2", expires_at=now - timedelta(hours=1)
        )
    async with sessions() as session, session.begin():
        found = await repos.find_admin_token(session, token)
        assert found is not None and found.id == row.id and found.token_hash != token
        assert await repos.find_admin_token(session, expired) is None
        assert await repos.find_admin_token(session, token + "x") is None
        live = await repos.find_console_session(session, "cookie-1")
        assert live is not None and live.csrf_token == "c1"
        assert await repos.find_console_session(session, "cookie-2") is None
        assert await repos.delete_console_sessions(session, expired=True) == 1
        assert await repos.delete_console_sessions(session, token="cookie-1") == 1
        assert await repos.find_console_session(session, "cookie-1") is None
        with pytest.raises(InvalidRequestError):
            await repos.delete_console_sessions(session)
