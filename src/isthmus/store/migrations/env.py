"""Alembic environment, shipped inside the package.

Two ways in:
- ``isthmus.store.migrations.upgrade_database`` (start-up, ``isthmus migrate``, tests) hands over an
  open connection through ``config.attributes["connection"]``, already inside a transaction and a
  migration lock, and this file runs the migrations on it.
- The ``alembic`` command line (developers writing a new revision) gives only a URL; an async engine
  is created here and driven with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from isthmus.store.db import create_engine
from isthmus.store.tables import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run_on(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_engine(url, sqlite_immediate=True)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_on)
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        url = config.get_main_option("sqlalchemy.url")
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: set sqlalchemy.url (alembic -x) or pass a connection")
    asyncio.run(_run_with_own_engine(url))


_main()
