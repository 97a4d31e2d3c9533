"""CPU per usage record of the background writer, against a raw SQLite insert of the same rows.

    .venv/bin/python bench/writer_cost.py [--batches 6] [--size 500] [--varied]

Writes batches of records into a fresh SQLite database with ``write_batch`` (records, attempts,
hourly rollups, spend totals, through SQLAlchemy and aiosqlite), then inserts the same usage rows with
the stdlib ``sqlite3`` driver directly. By default the records look like the benchmark's traffic: one
key, model and provider, one attempt each, started a few hundred microseconds apart, billed at one
shared price. ``--varied`` uses the test suite's synthetic records instead (three models and two
providers, a price object each, times spread over 30 hours: ≈ 170 rollup rows per batch), which cost
more.

CPU is ``time.process_time`` (every thread of this process) per record, and ``time.thread_time`` of
the event loop's thread (what the writer takes from the request path); the first batches warm caches
and are not counted. The gap between the writer and the raw insert is what the writer's layers cost on
top of SQLite's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "accounting")]

from usage_samples import make_bundle  # noqa: E402

from isthmus.accounting.records import RecordBundle  # noqa: E402
from isthmus.accounting.writer import _inserts, _prepare_rows, write_batch  # noqa: E402
from isthmus.store.db import create_engine, session_factory  # noqa: E402
from isthmus.store.migrations import upgrade_database  # noqa: E402
from isthmus.store.usage_tables import UsageRecordRow  # noqa: E402

WARM_BATCHES = 2


PRICE = {"ref": "price:1", "source": "config", "input": "0.15", "output": "0.6"}


def batch(tag: str, size: int, varied: bool = False) -> list[RecordBundle]:
    if varied:
        return [make_bundle(i, request_id=f"{tag}-{i}", key_id=1, user_id=1, team_id=1) for i in range(size)]
    now = datetime.now(UTC)
    bundles = []
    for i in range(size):
        bundle = make_bundle(
            i,
            request_id=f"{tag}-{i}",
            key_id=1,
            user_id=1,
            team_id=1,
            model="bench-unary",
            provider_id=1,
            status="ok",
            started_at=now + timedelta(microseconds=300 * i),
        )
        bundle.usage.prices = PRICE  # one price object for every record, as the relay hands over
        bundle.attempts = bundle.attempts[:1]
        bundles.append(bundle)
    return bundles


async def through_writer(url: str, batches: int, size: int, varied: bool) -> tuple[list[float], list[float]]:
    engine = create_engine(url, pool_size=1, sqlite_immediate=True)  # as the gateway's writer has it
    sessions = session_factory(engine)
    process, loop = [], []
    try:
        for n in range(batches + WARM_BATCHES):
            bundles = batch(f"w{n}", size, varied)
            started, started_loop = time.process_time(), time.thread_time()
            async with sessions.begin() as session:
                await write_batch(session, bundles, fresh=True)
            if n >= WARM_BATCHES:
                process.append((time.process_time() - started) / size * 1e6)
                loop.append((time.thread_time() - started_loop) / size * 1e6)
    finally:
        await engine.dispose()
    return process, loop


def raw_inserts(path: Path, batches: int, size: int, varied: bool) -> list[float]:
    inserts = _inserts(create_engine(f"sqlite+aiosqlite:///{path}").dialect)
    columns = [c.name for c in UsageRecordRow.__table__.columns]
    sql = (
        f"INSERT INTO usage_records ({','.join(columns)}) VALUES ({','.join('?' * len(columns))}) "
        "ON CONFLICT (request_id) DO NOTHING"
    )
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    figures = []
    for n in range(batches + WARM_BATCHES):
        # The same driver values the writer binds, so only the way they reach SQLite differs.
        data = [tuple(row) for row in _prepare_rows(batch(f"r{n}", size, varied), inserts)]
        started = time.process_time()
        con.execute("BEGIN IMMEDIATE")
        con.executemany(sql, data)
        con.execute("COMMIT")
        if n >= WARM_BATCHES:
            figures.append((time.process_time() - started) / size * 1e6)
    con.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--varied", action="store_true", help="the test suite's varied synthetic records")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "usage.db"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(upgrade_database(url))
        writer, loop = asyncio.run(through_writer(url, args.batches, args.size, args.varied))
        raw = raw_inserts(path, args.batches, args.size, args.varied)
    print(
        "write_batch (records, attempts, rollups, spend): "
        f"{statistics.median(writer):.1f} µs CPU per record, "
        f"{statistics.median(loop):.1f} of them on the event loop's thread"
    )
    print(f"raw sqlite3 executemany of the usage rows only:  {statistics.median(raw):.1f} µs CPU per record")


if __name__ == "__main__":
    main()
