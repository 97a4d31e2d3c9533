"""Schema migrations (Alembic), resolved from this package's directory so they ship in the wheel.

``upgrade_database`` runs at start-up and from ``isthmus migrate``; ``is_up_to_date`` backs ``/readyz``.
Concurrent start-ups (several workers or instances) are safe: PostgreSQL serialises them with an
advisory lock, SQLite with an immediate write lock, and the second one finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from isthmus.store.db import create_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent
# The newest revision in versions/ (a test checks it against Alembic's view). Knowing it without
# Alembic lets a start-up on a current database skip importing Alembic, which stays resident (~11 MiB).
HEAD_REVISION = "0004"
# Arbitrary constant shared by every Isthmus process; pg_advisory_xact_lock takes a bigint.
_PG_MIGRATION_LOCK = 0x1574_4D05
_SQLITE_LOCK_RETRIES = 12


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation treats % specially (URL-encoded passwords contain it).
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision as Alembic reads it from versions/."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the migrations directory has no revisions")
    return head


@asynccontextmanager
async def _engine_for(db: str | AsyncEngine, *, immediate: bool = False) -> AsyncIterator[AsyncEngine]:
    if isinstance(db, AsyncEngine):
        yield db
        return
    engine = create_engine(db, pool_size=1, sqlite_immediate=immediate)
    try:
        yield engine
    finally:
        await engine.dispose()


def _run_command(connection: Connection, action: str, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    if action == "upgrade":
        command.upgrade(cfg, revision)
    else:
        command.downgrade(cfg, revision)


async def _migrate(db: str | AsyncEngine, action: str, revision: str) -> None:
    async with _engine_for(db, immediate=True) as engine:
        is_sqlite = engine.dialect.name == "sqlite"
        for attempt in range(_SQLITE_LOCK_RETRIES):
            try:
                async with engine.begin() as conn:
                    if engine.dialect.name == "postgresql":
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                        )
                    await conn.run_sync(_run_command, action, revision)
                return
            except OperationalError as exc:
                # Another process held the SQLite write lock past busy_timeout (a long migration).
                if not is_sqlite or "locked" not in str(exc) or attempt == _SQLITE_LOCK_RETRIES - 1:
                    raise
                await asyncio.sleep(0.5)


async def upgrade_database(db: str | AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (default: the newest) in one transaction."""
    if revision in ("head", HEAD_REVISION) and await current_revision(db) == HEAD_REVISION:
        return  # the usual start-up: nothing to do
    await _migrate(db, "upgrade", revision)


async def upgrade_in_child(url: str) -> None:
    """Migrate in a short-lived child process (``python -m isthmus.store.migrations``) when the schema
    is behind, so the calling process never imports Alembic; raises ``RuntimeError`` with the child's
    error output if it fails."""
    if await current_revision(url) == HEAD_REVISION:
        return
    env = {**os.environ, "ISTHMUS_MIGRATE_URL": url}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "isthmus.store.migrations", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await child.communicate()
    if child.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"database migration failed: {lines[-1] if lines else child.returncode}")


async def downgrade_database(db: str | AsyncEngine, revision: str = "base") -> None:
    """Take the schema down to ``revision``; ``"base"`` drops every table (tests and rollbacks only)."""
    await _migrate(db, "downgrade", revision)


def _current(connection: Connection) -> str | None:
    # What Alembic's MigrationContext.get_current_revision reads, without importing Alembic.
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


async def current_revision(db: str | AsyncEngine) -> str | None:
    """The revision the database is at, or None for an empty (never migrated) database."""
    async with _engine_for(db) as engine, engine.connect() as conn:
        return await conn.run_sync(_current)


async def is_up_to_date(db: str | AsyncEngine) -> bool:
    return await current_revision(db) == HEAD_REVISION


__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "downgrade_database",
    "head_revision",
    "is_up_to_date",
    "upgrade_database",
    "upgrade_in_child",
]
