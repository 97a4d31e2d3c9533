"""Retention: old usage records (with their traces and logs) and old request logs are deleted in small
batches by a periodic task, never by one giant DELETE that would lock the tables and bloat the WAL.

Usage records older than ``usage_days`` (default 90) go with their attempts and request log; request
logs (headers and bodies) older than ``log_days`` (default 7) go on their own, leaving the usage record.
Hourly rollups are kept unless ``rollup_days`` is set: they are small and the dashboards' history.
Daily spend rows older than ``usage_days`` are pruned (budgets only read the current day's).

Several processes may run the task: on PostgreSQL a transaction-level advisory lock lets one of them
purge at a time and the others skip their turn; on SQLite writes are serialised anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.accounting.records import as_utc
from isthmus.store.usage_tables import (
    RequestLogRow,
    SpendTotalRow,
    UsageAttemptRow,
    UsageRecordRow,
    usage_hourly,
)

log = logging.getLogger("isthmus.accounting.retention")

# Shared by every Isthmus process; distinct from the migration lock's key.
_PG_RETENTION_LOCK = 0x1574_4D06


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    usage_days: int = 90
    log_days: int = 7
    rollup_days: int | None = None
    batch_size: int = 5000


@dataclass(slots=True)
class PurgeResult:
    records: int = 0
    attempts: int = 0
    logs: int = 0
    rollups: int = 0
    spend_rows: int = 0
    skipped: bool = False  # another process held the lock

    @property
    def total(self) -> int:
        return self.records + self.attempts + self.logs + self.rollups + self.spend_rows


class _Busy(Exception):
    pass


async def _lock(session: AsyncSession) -> None:
    if session.get_bind().dialect.name == "postgresql":
        got = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _PG_RETENTION_LOCK}
        )
        if not got:
            raise _Busy


def _rowcount(result: object) -> int:
    return max(0, int(getattr(result, "rowcount", 0) or 0))


async def _purge_records(
    sessions: async_sessionmaker[AsyncSession], cutoff: datetime, batch: int, out: PurgeResult
) -> None:
    r = UsageRecordRow
    while True:
        async with sessions() as session, session.begin():
            await _lock(session)
            ids: Sequence[str] = (
                await session.scalars(select(r.request_id).where(r.started_at < cutoff).limit(batch))
            ).all()
            if not ids:
                return
            out.attempts += _rowcount(
                await session.execute(delete(UsageAttemptRow).where(UsageAttemptRow.request_id.in_(ids)))
            )
            out.logs += _rowcount(
                await session.execute(delete(RequestLogRow).where(RequestLogRow.request_id.in_(ids)))
            )
            out.records += _rowcount(await session.execute(delete(r).where(r.request_id.in_(ids))))
        if len(ids) < batch:
            return
        await asyncio.sleep(0)  # let the request path run between batches


async def _purge_logs(
    sessions: async_sessionmaker[AsyncSession], cutoff: datetime, batch: int, out: PurgeResult
) -> None:
    g = RequestLogRow
    while True:
        async with sessions() as session, session.begin():
            await _lock(session)
            ids = (
                await session.scalars(select(g.request_id).where(g.created_at < cutoff).limit(batch))
            ).all()
            if not ids:
                return
            out.logs += _rowcount(await session.execute(delete(g).where(g.request_id.in_(ids))))
        if len(ids) < batch:
            return
        await asyncio.sleep(0)


async def purge(
    sessions: async_sessionmaker[AsyncSession], policy: RetentionPolicy, now: datetime | None = None
) -> PurgeResult:
    """One retention pass; returns how many rows of each kind were deleted."""
    when = as_utc(now) if now is not None else datetime.now(UTC)
    out = PurgeResult()
    try:
        await _purge_records(sessions, when - timedelta(days=policy.usage_days), policy.batch_size, out)
        await _purge_logs(sessions, when - timedelta(days=policy.log_days), policy.batch_size, out)
        async with sessions() as session, session.begin():
            await _lock(session)
            s = SpendTotalRow
            spend_cutoff = when - timedelta(days=policy.usage_days)
            out.spend_rows += _rowcount(
                await session.execute(delete(s).where(s.period == "daily", s.period_start < spend_cutoff))
            )
            if policy.rollup_days is not None:
                # Rollups are a few rows per hour: a range delete stays small.
                rollup_cutoff = when - timedelta(days=policy.rollup_days)
                out.rollups += _rowcount(
                    await session.execute(delete(usage_hourly).where(usage_hourly.c.hour < rollup_cutoff))
                )
    except _Busy:
        out.skipped = True
    return out


class RetentionTask:
    """Runs :func:`purge` every ``interval`` seconds (first after ``first_delay``) until stopped."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: RetentionPolicy | None = None,
        *,
        interval: float = 3600.0,
        first_delay: float = 60.0,
    ) -> None:
        self._sessions = sessions
        self.policy = policy or RetentionPolicy()
        self._interval = interval
        self._first_delay = first_delay
        self._task: asyncio.Task[None] | None = None
        self.last: PurgeResult | None = None
        self.runs = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="isthmus-usage-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        await asyncio.sleep(self._first_delay)
        while True:
            try:
                self.last = await purge(self._sessions, self.policy)
                self.runs += 1
                if self.last.total:
                    log.info(
                        "retention: deleted %d usage record(s), %d attempt(s), %d request log(s)",
                        self.last.records,
                        self.last.attempts,
                        self.last.logs,
                    )
            except Exception:
                # The database may be down; the next pass tries again.
                log.warning("usage retention pass failed", exc_info=True)
            await asyncio.sleep(self._interval)


__all__ = ["PurgeResult", "RetentionPolicy", "RetentionTask", "purge"]
