"""The migration chain from an empty database, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from isthmus.store.db import create_engine
from isthmus.store.migrations import (
    HEAD_REVISION,
    current_revision,
    downgrade_database,
    head_revision,
    is_up_to_date,
    upgrade_database,
)
from isthmus.store.tables import Base


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_downgrade_upgrade_from_empty(database_url: str) -> None:
    assert await current_revision(database_url) is None
    assert not await is_up_to_date(database_url)

    await upgrade_database(database_url)
    assert await current_revision(database_url) == head_revision()
    assert await is_up_to_date(database_url)

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(_table_names)
        assert set(Base.metadata.tables) <= tables

        await downgrade_database(database_url)
        assert await current_revision(database_url) is None
        async with engine.connect() as conn:
            leftover = await conn.run_sync(_table_names)
        assert leftover <= {"alembic_version"}

        await upgrade_database(database_url)
        assert await is_up_to_date(database_url)
        # Running it again at start-up finds nothing to do.
        await upgrade_database(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_orm_metadata_matches_migrated_schema(database_url: str) -> None:
    await upgrade_database(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_schema_diff)
    finally:
        await engine.dispose()
    assert diff == []


async def test_concurrent_start_ups_migrate_once(database_url: str) -> None:
    # Several workers or instances starting together: one migrates, the others find nothing to do.
    # Each runs to its end even if another fails: one left half-way through Alembic would break the
    # migrations of the tests after this one (Alembic's context is process-global).
    outcomes = await asyncio.gather(
        *(upgrade_database(database_url) for _ in range(3)), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    assert await is_up_to_date(database_url)


def test_head_revision_constant_is_alembics_head() -> None:
    assert head_revision() == HEAD_REVISION


_MIGRATE_THEN_SAY_IF_ALEMBIC_LOADED = """
import asyncio, sys
from isthmus.store import migrations
asyncio.run(getattr(migrations, sys.argv[1])(sys.argv[2]))
assert asyncio.run(migrations.is_up_to_date(sys.argv[2]))
print("alembic" in sys.modules)
"""


async def _alembic_loaded_after(function: str, database_url: str) -> bool:
    """Run ``migrations.<function>(url)`` in a fresh interpreter: did it import Alembic there?"""
    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _MIGRATE_THEN_SAY_IF_ALEMBIC_LOADED, function, database_url],
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout.strip() == "True"


async def test_start_up_on_a_current_database_does_not_load_alembic(database_url: str) -> None:
    # Alembic stays resident once imported (~11 MiB of a worker's memory) and is not needed then.
    await upgrade_database(database_url)
    assert not await _alembic_loaded_after("upgrade_database", database_url)


async def test_a_fresh_database_can_be_migrated_without_loading_alembic_here(database_url: str) -> None:
    # What `isthmus serve` does before its workers start: the child process imports Alembic.
    assert not await _alembic_loaded_after("upgrade_in_child", database_url)
    assert await current_revision(database_url) == head_revision()


_RECORD = (
    "INSERT INTO usage_records (request_id, started_at, status, http_status, protocol_in, stream, "
    "input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, "
    "reasoning_tokens, list_cost, actual_cost, latency_ms, attempts, estimated) VALUES "
    "(:rid, '2026-11-24 12:00:00+00:00', :status, 200, 'openai-chat', false, 1, 2, 0, 0, 0, 0, 0, 0, "
    "5, 1, false)"
)


async def _statuses(engine: Any) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT request_id, status FROM usage_records"))
        return {rid: status for rid, status in rows}


async def test_0004_admits_internal_error_and_keeps_existing_records(database_url: str) -> None:
    await upgrade_database(database_url, "0003")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(_RECORD), {"rid": "before", "status": "ok"})
        await upgrade_database(database_url)
        async with engine.begin() as conn:
            await conn.execute(text(_RECORD), {"rid": "bug", "status": "internal_error"})
        with pytest.raises(IntegrityError):  # the rebuilt constraint still refuses what is not a status
            async with engine.begin() as conn:
                await conn.execute(text(_RECORD), {"rid": "odd", "status": "whatever"})
        assert await _statuses(engine) == {"before": "ok", "bug": "internal_error"}

        await downgrade_database(database_url, "0003")  # the old schema files it under upstream_error
        assert await _statuses(engine) == {"before": "ok", "bug": "upstream_error"}
    finally:
        await engine.dispose()
