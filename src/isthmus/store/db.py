"""Engines and sessions for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_only

from isthmus.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 5000
# Pooled connections per SQLite engine, plus as many again in overflow (see create_engine).
SQLITE_POOL_SIZE = 2


def normalize_url(url: str | URL) -> URL:
    """Accept the plain dialect names people type and pick the async driver we ship."""
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver not in ("", "aiosqlite"):
            raise ConfigError(f"unsupported SQLite driver {driver!r}: use sqlite+aiosqlite://")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "asyncpg"):
            raise ConfigError(f"unsupported PostgreSQL driver {driver!r}: use postgresql+asyncpg://")
        return parsed.set(drivername="postgresql+asyncpg")
    raise ConfigError(f"unsupported database URL scheme {parsed.drivername!r}: use SQLite or PostgreSQL")


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection to a new database file is in
    the way. The mode is stored in the file, so this waits only when several processes (or engines)
    open a new database at once: the switch then fails with "database is locked" at once, as SQLite
    does not wait out the busy timeout where waiting could deadlock."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        # Runs inside SQLAlchemy's greenlet on the event loop: sleep without blocking the loop.
        await_only(asyncio.sleep(0.05))


def _install_sqlite_hooks(engine: AsyncEngine, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # The busy timeout first: switching to WAL takes a lock another process starting up at
            # the same moment may hold, and without a timeout that fails at once ("database is locked").
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            # WAL lets the console read while the usage writer writes; NORMAL is durable in WAL mode
            # except for the last commits on power loss.
            _switch_to_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()
        # The sqlite3 module's legacy transaction handling skips BEGIN for SELECT, DDL and SAVEPOINT,
        # which breaks rollbacks of nested transactions; SQLAlchemy emits BEGIN itself instead.
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)


def create_engine(
    url: str | URL, *, echo: bool = False, pool_size: int = 10, sqlite_immediate: bool = False
) -> AsyncEngine:
    """An engine configured for the gateway: SQLite pragmas and real transactions, or a PostgreSQL pool.

    ``sqlite_immediate`` makes every SQLite transaction take the write lock when it begins, so two
    processes doing read-then-write (migrations at start-up) queue up instead of failing on a stale
    snapshot.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        pool: dict[str, int] = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # SQLite runs one write transaction at a time (and with ``sqlite_immediate`` every
            # transaction is one), so more connections add no throughput, only memory: each is a
            # thread of aiosqlite's with its own page cache and prepared statements, ≈ 3 MiB once
            # used. SQLAlchemy's default would allow 15.
            size = min(pool_size, SQLITE_POOL_SIZE)
            pool = {"pool_size": size, "max_overflow": size}
        engine = create_async_engine(parsed, echo=echo, **pool)
        _install_sqlite_hooks(engine, "BEGIN IMMEDIATE" if sqlite_immediate else "BEGIN")
        return engine
    return create_async_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Below typical server/load-balancer idle cut-offs, so a pooled connection is never found dead.
        pool_recycle=1800,
        pool_timeout=30,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after commit, which request handlers rely on.
    return async_sessionmaker(engine, expire_on_commit=False)
