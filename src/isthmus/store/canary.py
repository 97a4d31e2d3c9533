"""The secret-key canary: start-up refuses to run with a key other than the one the database was made with.

Without it a changed ``ISTHMUS_SECRET_KEY`` or a lost ``secret.key`` would surface only later, as every
upstream call failing to decrypt its provider key.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.crypto import WRONG_KEY_HINT, SecretBox
from isthmus.errors import ConfigError
from isthmus.store.tables import ProviderKey, Setting

CANARY_SETTING = "secret_key_canary"
_CANARY_PLAINTEXT = "isthmus secret key canary v1"

MISMATCH_MESSAGE = "the secret key does not match the one this database was created with; " + WRONG_KEY_HINT


def _ciphertext(value: Any) -> str | None:
    if isinstance(value, dict):
        token = value.get("ciphertext")
        return token if isinstance(token, str) else None
    return None


def _check(box: SecretBox, token: str | None) -> None:
    try:
        ok = token is not None and box.decrypt(token) == _CANARY_PLAINTEXT
    except ConfigError:
        ok = False
    if not ok:
        raise ConfigError(MISMATCH_MESSAGE, code="secret_key_mismatch")


async def verify_secret_key(session: AsyncSession, box: SecretBox) -> None:
    """Raise ConfigError if ``box`` holds the wrong key; on a new database, store the canary.

    Run it on a migrated database before anything decrypts, then commit (it may have added the canary).
    """
    row = await session.scalar(select(Setting).where(Setting.key == CANARY_SETTING))
    if row is not None:
        _check(box, _ciphertext(row.value))
        return
    # No canary yet. If secrets were stored before it existed, one of them must still decrypt.
    sample = await session.scalar(select(ProviderKey.secret_encrypted).limit(1))
    if sample is not None:
        try:
            box.decrypt(sample)
        except ConfigError:
            raise ConfigError(MISMATCH_MESSAGE, code="secret_key_mismatch") from None
    try:
        async with session.begin_nested():
            session.add(Setting(key=CANARY_SETTING, value={"ciphertext": box.encrypt(_CANARY_PLAINTEXT)}))
            await session.flush()
    except IntegrityError:
        # Another process started at the same moment and stored its canary first: check against it.
        row = await session.scalar(select(Setting).where(Setting.key == CANARY_SETTING))
        _check(box, _ciphertext(row.value) if row is not None else None)
