"""Durability: PostgreSQL is stopped in the middle of a load and started again; nothing is lost.

A dedicated throwaway server (not the session's shared one), so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from accounting.test_writer import assert_totals_match
from accounting.usage_samples import make_bundle, wait_until
from isthmus.accounting.records import RecordBundle
from isthmus.accounting.writer import UsageWriter
from isthmus.store.db import create_engine, session_factory
from isthmus.store.migrations import upgrade_database
from services import RestartablePostgres


async def test_database_stopped_mid_load_loses_nothing(
    restartable_postgres: RestartablePostgres, tmp_path: Path
) -> None:
    server = restartable_postgres
    await upgrade_database(server.url)
    engine = create_engine(server.url)
    sessions = session_factory(engine)
    writer = UsageWriter(
        sessions, tmp_path / "spool", batch_size=50, flush_interval=0.05, retry_min=0.1, retry_max=0.5
    )
    writer.start()
    submitted: list[RecordBundle] = []
    slowest_submit = 0.0

    async def load(seconds: float, offset: int) -> None:
        nonlocal slowest_submit
        end = time.monotonic() + seconds
        n = offset
        while time.monotonic() < end:
            for _ in range(20):
                bundle = make_bundle(n, seed=7, with_log=n % 10 == 0)
                began = time.perf_counter()
                assert writer.submit(bundle)
                slowest_submit = max(slowest_submit, time.perf_counter() - began)
                submitted.append(bundle)
                n += 1
            await asyncio.sleep(0.01)

    try:
        await load(1.0, 0)
        written_before_outage = writer.stats.written
        assert written_before_outage > 0
        # Stopped while the load goes on: pg_ctl runs in a thread so submissions never pause.
        halt = asyncio.create_task(asyncio.to_thread(server.halt))
        await load(1.5, 100_000)
        await halt
        await load(1.0, 200_000)
        assert not writer.stats.database_up
        resume = asyncio.create_task(asyncio.to_thread(server.resume))
        await load(1.0, 300_000)
        await resume
        await load(1.0, 400_000)
        await wait_until(lambda: writer.stats.written == len(submitted), within=60)
    finally:
        await writer.stop(30)
        await engine.dispose()

    assert writer.stats.spooled > 0 and writer.stats.replayed > 0
    assert writer.stats.dropped == writer.stats.rejected == 0
    # The request path never waited on the database (a spool append is a local file write).
    assert slowest_submit < 0.25
    assert not [p for p in (tmp_path / "spool").glob("*.jsonl")]
    engine = create_engine(server.url)
    try:
        await assert_totals_match(session_factory(engine), submitted)
    finally:
        await engine.dispose()
