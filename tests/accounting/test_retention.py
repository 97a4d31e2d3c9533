"""Retention on SQLite and PostgreSQL: old records, traces and logs go in batches; recent ones stay."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounting.usage_samples import BASE_TIME, counts, make_bundle, wait_until
from isthmus.accounting.retention import RetentionPolicy, RetentionTask, purge
from isthmus.accounting.writer import write_batch
from isthmus.store.db import create_engine, session_factory
from isthmus.store.usage_tables import RequestLogRow, SpendTotalRow, UsageRecordRow, usage_hourly

NOW = BASE_TIME + timedelta(days=100)


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def seed(sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[str]]:
    """Records 120, 95, 30 and 2 days old (every one with a log and attempts)."""
    ages = {"120d": 120, "95d": 95, "30d": 30, "2d": 2}
    ids: dict[str, list[str]] = {}
    bundles = []
    for label, days in ages.items():
        for i in range(23):
            b = make_bundle(i, seed=days, started_at=NOW - timedelta(days=days, minutes=i), with_log=True)
            b.log.created_at = b.usage.started_at  # type: ignore[union-attr]
            bundles.append(b)
            ids.setdefault(label, []).append(b.request_id)
    async with sessions() as session, session.begin():
        assert await write_batch(session, bundles) == len(bundles)
    return ids


async def test_purge_deletes_in_batches_and_keeps_recent_rows(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    ids = await seed(sessions)
    async with sessions() as session:
        rollups_before = await session.scalar(select(func.count()).select_from(usage_hourly))
        daily_before = await session.scalar(
            select(func.count()).select_from(SpendTotalRow).where(SpendTotalRow.period == "daily")
        )

    statements: list[str] = []

    def watch(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM USAGE_RECORDS"):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", watch)
    try:
        result = await purge(sessions, RetentionPolicy(usage_days=90, log_days=7, batch_size=7), now=NOW)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", watch)

    old = ids["120d"] + ids["95d"]
    assert result.records == len(old)
    assert result.attempts == sum(1 + i % 2 for i in range(23)) * 2
    # Logs of the deleted records, plus the 30-day-old logs (past log_days) whose records stay.
    assert result.logs == len(old) + len(ids["30d"])
    assert len(statements) == math.ceil(len(old) / 7)  # never one giant DELETE

    async with sessions() as session:
        kept = set((await session.scalars(select(UsageRecordRow.request_id))).all())
        logs = set((await session.scalars(select(RequestLogRow.request_id))).all())
        records, attempts, _ = await counts(session)
        rollups_after = await session.scalar(select(func.count()).select_from(usage_hourly))
        daily_after = await session.scalar(
            select(func.count()).select_from(SpendTotalRow).where(SpendTotalRow.period == "daily")
        )
    assert kept == set(ids["30d"] + ids["2d"])
    assert logs == set(ids["2d"])
    assert attempts == sum(1 + i % 2 for i in range(23)) * 2
    # Rollups are the dashboards' history: kept. Daily spend rows past the usage retention go.
    assert rollups_after == rollups_before
    assert daily_after is not None and daily_before is not None and 0 < daily_after < daily_before
    assert result.spend_rows == daily_before - daily_after

    # A second pass finds nothing left to do.
    again = await purge(sessions, RetentionPolicy(usage_days=90, log_days=7, batch_size=7), now=NOW)
    assert again.total == 0 and records == len(kept)


async def test_rollup_retention_when_set(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    await seed(sessions)
    result = await purge(sessions, RetentionPolicy(usage_days=365, log_days=365, rollup_days=60), now=NOW)
    assert result.records == 0 and result.rollups > 0
    async with sessions() as session:
        oldest = await session.scalar(select(func.min(usage_hourly.c.hour)))
    assert oldest is not None and oldest >= NOW - timedelta(days=60)


async def test_the_task_runs_periodically_and_stops(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    await seed(sessions)
    task = RetentionTask(sessions, RetentionPolicy(usage_days=90, log_days=7), interval=0.05, first_delay=0)
    task.start()
    try:
        await wait_until(lambda: task.runs >= 2, within=20)
    finally:
        await task.stop()
    runs = task.runs
    await asyncio.sleep(0.2)
    assert task.runs == runs  # stopped means stopped
    async with sessions() as session:
        # The task purges relative to the real clock, where every seeded record is old.
        assert await session.scalar(select(func.count()).select_from(UsageRecordRow)) == 0
