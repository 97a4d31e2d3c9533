"""A database refuses a secret key other than the one it was created with."""

from __future__ import annotations

import base64
import os

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.crypto import SecretBox
from isthmus.errors import ConfigError
from isthmus.store import repos
from isthmus.store.canary import CANARY_SETTING, verify_secret_key

Sessions = async_sessionmaker[AsyncSession]


async def test_first_start_stores_a_canary_that_later_starts_check(sessions: Sessions) -> None:
    key = os.urandom(32)
    async with sessions() as session, session.begin():
        await verify_secret_key(session, SecretBox(key))
    async with sessions() as session:
        stored = await repos.get_setting(session, CANARY_SETTING)
    assert isinstance(stored, dict) and stored["ciphertext"].startswith("v1:")

    # The same key, however it is spelled, passes and leaves the canary as it was.
    async with sessions() as session, session.begin():
        await verify_secret_key(session, SecretBox(key))
        await verify_secret_key(session, SecretBox.from_material(base64.urlsafe_b64encode(key).decode()))
    async with sessions() as session:
        assert await repos.get_setting(session, CANARY_SETTING) == stored

    with pytest.raises(ConfigError, match="does not match the one this database was created with") as caught:
        async with sessions() as session, session.begin():
            await verify_secret_key(session, SecretBox(os.urandom(32)))
    assert "ISTHMUS_SECRET_KEY" in caught.value.message


async def test_secrets_stored_before_the_canary_still_catch_a_wrong_key(sessions: Sessions) -> None:
    old = SecretBox(os.urandom(32))
    async with sessions() as session, session.begin():
        provider = await repos.providers.create(session, name="p", type="openai")
        await repos.provider_keys.create(
            session, provider_id=provider.id, name="k", secret_encrypted=old.encrypt("sk-upstream")
        )
    with pytest.raises(ConfigError, match="does not match"):
        async with sessions() as session, session.begin():
            await verify_secret_key(session, SecretBox(os.urandom(32)))
    async with sessions() as session:
        assert await repos.get_setting(session, CANARY_SETTING) is None
    async with sessions() as session, session.begin():
        await verify_secret_key(session, old)
    async with sessions() as session:
        assert await repos.get_setting(session, CANARY_SETTING) is not None


async def test_a_corrupt_canary_is_reported_as_a_mismatch(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        await repos.set_setting(session, CANARY_SETTING, {"ciphertext": "garbage"})
    with pytest.raises(ConfigError, match="does not match"):
        async with sessions() as session:
            await verify_secret_key(session, SecretBox(os.urandom(32)))
