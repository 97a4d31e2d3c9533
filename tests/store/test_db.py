"""Engine set-up: SQLite pragmas and real transactions, URL normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from isthmus.errors import ConfigError
from isthmus.store.db import create_engine, is_sqlite, normalize_url


async def test_sqlite_engine_creates_its_directory_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "isthmus.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
        assert pragmas == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1, "synchronous": 1}
        assert path.exists()
    finally:
        await engine.dispose()


async def test_sqlite_rollback_undoes_ddl_and_savepoints(tmp_path: Path) -> None:
    # The sqlite3 module alone would autocommit DDL and ignore SAVEPOINT scoping.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    try:
        async with engine.connect() as conn:
            await conn.begin()
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            nested = await conn.begin_nested()
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            await nested.commit()
            await conn.rollback()
        async with engine.connect() as conn:
            tables = (await conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))).all()
        assert tables == []
    finally:
        await engine.dispose()


def test_urls_are_normalised_to_the_async_drivers() -> None:
    assert normalize_url("sqlite:///data/x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    pg = normalize_url("postgresql+asyncpg://u:p%40ss@h:5433/db")
    assert (pg.password, pg.port, pg.database) == ("p@ss", 5433, "db")
    assert is_sqlite("sqlite+aiosqlite:///:memory:") and not is_sqlite("postgresql://h/db")
    with pytest.raises(ConfigError, match="unsupported"):
        normalize_url("mysql://h/db")
    with pytest.raises(ConfigError, match="driver"):
        normalize_url("postgresql+psycopg2://h/db")
