"""Engine set-up: SQLite pragmas and real transactions, URL normalisation."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import QueuePool, text

from isthmus.errors import ConfigError
from isthmus.store.db import SQLITE_POOL_SIZE, create_engine, is_sqlite, normalize_url


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


async def test_a_sqlite_engine_keeps_few_connections(tmp_path: Path) -> None:
    # Each connection is a thread with its own caches; SQLite serializes writes, so a few suffice.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    single = create_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", pool_size=1)
    try:
        pools = [engine.sync_engine.pool, single.sync_engine.pool]
        assert all(isinstance(pool, QueuePool) for pool in pools)
        assert [pool.size() for pool in pools if isinstance(pool, QueuePool)] == [SQLITE_POOL_SIZE, 1]
        limit = 2 * SQLITE_POOL_SIZE  # the pool and as many again in overflow
        connections = [await engine.connect() for _ in range(limit)]
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(engine.connect(), 0.5)  # one more waits for a free one
        finally:
            for connection in connections:
                await connection.close()
        async with engine.connect() as connection:  # and gets one once they are back
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
        await single.dispose()


async def test_a_new_sqlite_file_switches_to_wal_once_another_connection_lets_it(tmp_path: Path) -> None:
    """Several processes opening a new database at once: while another connection writes in the old
    journal mode, the switch to WAL fails at once ("database is locked": SQLite skips the busy wait
    where it could deadlock); it is retried until the other is done."""
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN")
    other.execute("INSERT INTO t VALUES (1)")  # holds the reserved lock until it commits
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, other.execute, "COMMIT")
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
    finally:
        await engine.dispose()
        other.close()
