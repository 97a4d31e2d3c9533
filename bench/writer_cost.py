"""CPU per usage record of the background writer, against a raw SQLite insert of the same rows.

    .venv/bin/python bench/writer_cost.py [--batches 6] [--size 500]

Writes batches of synthetic records (tests/accounting/usage_samples.py) into a fresh SQLite database
with ``write_batch`` (records, attempts, hourly rollups, spend totals, through SQLAlchemy and
aiosqlite), then inserts the same usage rows with the stdlib ``sqlite3`` driver directly. CPU is
``time.process_time`` (every thread of this process), per record; the first batches warm caches and
are not counted. The gap between the two is what the writer's layers cost on top of SQLite's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
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


def batch(tag: str, size: int) -> list[RecordBundle]:
    return [make_bundle(i, request_id=f"{tag}-{i}", key_id=1, user_id=1, team_id=1) for i in range(size)]


async def through_writer(url: str, batches: int, size: int) -> list[float]:
    engine = create_engine(url, sqlite_immediate=True)
    sessions = session_factory(engine)
    figures = []
    try:
        for n in range(batches + WARM_BATCHES):
            bundles = batch(f"w{n}", size)
            started = time.process_time()
            async with sessions.begin() as session:
                await write_batch(session, bundles, fresh=True)
            if n >= WARM_BATCHES:
                figures.append((time.process_time() - started) / size * 1e6)
    finally:
        await engine.dispose()
    return figures


def raw_inserts(path: Path, batches: int, size: int) -> list[float]:
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
        data = [tuple(row) for row in _prepare_rows(batch(f"r{n}", size), inserts)]
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "usage.db"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(upgrade_database(url))
        writer = asyncio.run(through_writer(url, args.batches, args.size))
        raw = raw_inserts(path, args.batches, args.size)
    print(
        f"write_batch (records, attempts, rollups, spend): {statistics.median(writer):.1f} µs CPU per record"
    )
    print(f"raw sqlite3 executemany of the usage rows only:  {statistics.median(raw):.1f} µs CPU per record")


if __name__ == "__main__":
    main()
