"""The usage writer on SQLite and PostgreSQL: batches, idempotent writes, spool and replay, shutdown."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounting.usage_samples import counts, make_bundle, wait_until
from isthmus.accounting.records import ERROR_STATUSES, RecordBundle
from isthmus.accounting.rollups import TOKEN_COLUMNS
from isthmus.accounting.writer import UsageWriter, write_batch
from isthmus.store.db import create_engine, session_factory
from isthmus.store.usage_tables import (
    LATENCY_BUCKET_COLUMNS,
    RequestLogRow,
    SpendTotalRow,
    UsageAttemptRow,
    UsageRecordRow,
    usage_hourly,
)
from services import free_port


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


def expected_spend(
    bundles: Sequence[RecordBundle],
) -> dict[tuple[str, int, str, datetime], tuple[Decimal, int]]:
    """Spend per entity and UTC calendar period, computed straight from the records."""
    out: dict[tuple[str, int, str, datetime], list[object]] = defaultdict(lambda: [Decimal(0), 0])
    for b in bundles:
        u = b.usage
        tokens = (
            u.input_tokens
            + u.output_tokens
            + u.cache_read_tokens
            + u.cache_write_5m_tokens
            + u.cache_write_1h_tokens
        )
        if u.actual_cost == 0 and tokens == 0:
            continue
        t = u.started_at
        periods = {
            "daily": datetime(t.year, t.month, t.day, tzinfo=UTC),
            "monthly": datetime(t.year, t.month, 1, tzinfo=UTC),
            "total": datetime(1970, 1, 1, tzinfo=UTC),
        }
        for entity, ident in (("key", u.key_id), ("user", u.user_id), ("team", u.team_id)):
            if ident is None:
                continue
            for period, start in periods.items():
                acc = out[(entity, ident, period, start)]
                acc[0] = Decimal(acc[0]) + u.actual_cost  # type: ignore[arg-type]
                acc[1] = int(acc[1]) + tokens  # type: ignore[call-overload]
    return {k: (Decimal(v[0]), int(v[1])) for k, v in out.items()}  # type: ignore[arg-type, call-overload]


async def assert_totals_match(
    sessions: async_sessionmaker[AsyncSession], bundles: Sequence[RecordBundle]
) -> None:
    """Records, attempts, rollups and spend totals in the database equal what the bundles say."""
    unique = {b.request_id: b for b in bundles}
    records = [b.usage for b in unique.values()]
    async with sessions() as session:
        n_records, n_attempts, _ = await counts(session)
        assert n_records == len(unique)
        assert n_attempts == sum(len(b.attempts) for b in unique.values())

        columns = ["requests", "errors", *TOKEN_COLUMNS, "list_cost", "actual_cost", "latency_ms_sum"]
        sums = (await session.execute(select(*(func.sum(usage_hourly.c[c]) for c in columns)))).one()
        got = dict(zip(columns, sums, strict=True))
        assert got["requests"] == len(records)
        assert got["errors"] == sum(1 for r in records if r.status in ERROR_STATUSES)
        for column in TOKEN_COLUMNS:
            assert got[column] == sum(getattr(r, column) for r in records), column
        assert got["list_cost"] == sum((r.list_cost for r in records), Decimal(0))
        assert got["actual_cost"] == sum((r.actual_cost for r in records), Decimal(0))
        assert got["latency_ms_sum"] == sum(r.latency_ms for r in records)
        histogram = (
            await session.execute(select(*(func.sum(usage_hourly.c[c]) for c in LATENCY_BUCKET_COLUMNS)))
        ).one()
        assert sum(histogram) == len(records)

        # One rollup group checked on its own: an hour and a model.
        sample = records[0]
        hour = sample.started_at.replace(minute=0, second=0, microsecond=0)
        in_group = [
            r
            for r in records
            if r.started_at.replace(minute=0, second=0, microsecond=0) == hour
            and r.model_requested == sample.model_requested
        ]
        group = (
            await session.execute(
                select(func.sum(usage_hourly.c.requests), func.sum(usage_hourly.c.output_tokens)).where(
                    usage_hourly.c.hour == hour, usage_hourly.c.model == sample.model_requested
                )
            )
        ).one()
        assert group == (len(in_group), sum(r.output_tokens for r in in_group))

        spend = {
            (row.entity_type, row.entity_id, row.period, row.period_start): (row.usd, row.tokens)
            for row in (await session.scalars(select(SpendTotalRow))).all()
        }
    assert spend == expected_spend(list(unique.values()))


async def test_write_batch_is_idempotent(sessions: async_sessionmaker[AsyncSession]) -> None:
    bundles = [make_bundle(i, with_log=i % 4 == 0) for i in range(120)]
    async with sessions() as session, session.begin():
        assert await write_batch(session, bundles) == 120
    # The same batch again (a replay after a commit whose answer was lost) adds nothing.
    async with sessions() as session, session.begin():
        assert await write_batch(session, bundles) == 0
    # A batch mixing old and new rows adds only the new ones, increments included.
    more = [make_bundle(i, with_log=True) for i in range(100, 150)]
    async with sessions() as session, session.begin():
        assert await write_batch(session, more) == 30
    # Rows already stored win: 100-119 keep their first version (and its log, or none).
    everything = bundles + more[20:]
    await assert_totals_match(sessions, everything)
    async with sessions() as session:
        logs = await session.scalar(select(func.count()).select_from(RequestLogRow))
    assert logs == sum(1 for b in everything if b.log is not None) == 60


async def test_duplicate_request_ids_in_one_batch_count_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first = make_bundle(1, request_id="req_dup")
    second = make_bundle(2, request_id="req_dup")
    async with sessions() as session, session.begin():
        assert await write_batch(session, [first, second, make_bundle(3)]) == 2
    await assert_totals_match(sessions, [first, make_bundle(3)])


async def test_clients_reusing_a_request_id_cannot_hide_usage(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    # Requests straight from the queue are new by definition: a taken id is a client's reused
    # x-request-id, so the record is kept under a new id instead of being skipped as a replay.
    writer = UsageWriter(sessions, tmp_path / "spool", batch_size=10, flush_interval=0.02)
    writer.start()
    try:
        same = [make_bundle(i, request_id="client-chosen-id", with_log=True) for i in range(3)]
        for b in same[:2]:
            writer.submit(b)
        await writer.flush()
        writer.submit(same[2])
        await writer.flush()
    finally:
        await writer.stop(10)
    assert writer.stats.written == 3 and writer.stats.duplicates == 0
    ids = {b.request_id for b in same}
    assert len(ids) == 3 and "client-chosen-id" in ids
    assert all(i.startswith("client-chosen-id") for i in ids)
    assert all(a.request_id == b.request_id for b in same for a in b.attempts)
    await assert_totals_match(sessions, same)
    async with sessions() as session:
        _, _, logs = await counts(session)
    assert logs == 3


async def test_money_round_trips_exactly(sessions: async_sessionmaker[AsyncSession]) -> None:
    bundle = make_bundle(1)
    bundle.usage.list_cost = Decimal("1234567.000000000001")
    bundle.usage.actual_cost = Decimal("0.000000000003")
    async with sessions() as session, session.begin():
        await write_batch(session, [bundle])
    async with sessions() as session:
        row = await session.get(UsageRecordRow, bundle.request_id)
        assert row is not None
        assert row.list_cost == Decimal("1234567.000000000001")
        assert row.actual_cost == Decimal("0.000000000003")
        spent = await session.scalar(
            select(SpendTotalRow.usd).where(
                SpendTotalRow.entity_type == "key", SpendTotalRow.period == "total"
            )
        )
    assert spent == Decimal("0.000000000003")


async def test_writer_batches_by_size_and_time(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    writer = UsageWriter(sessions, tmp_path / "spool", batch_size=100, flush_interval=0.05)
    writer.start()
    try:
        bundles = [make_bundle(i, with_log=i % 3 == 0) for i in range(450)]
        for b in bundles:
            assert writer.submit(b)
        await asyncio.wait_for(writer.flush(), 30)
        # A lone record is written within the flush interval, not held until a batch fills.
        late = make_bundle(999)
        writer.submit(late)
        await asyncio.wait_for(writer.flush(), 5)
    finally:
        await writer.stop(10)
    assert writer.stats.written == 451
    assert writer.stats.spooled == writer.stats.dropped == 0
    await assert_totals_match(sessions, [*bundles, late])


async def test_a_batch_closes_when_it_fills_or_the_writer_stops_not_at_the_interval(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """Records trickling in one by one do not wake the task each; the batch they fill is written at
    once, and so is a half-filled one when the writer stops, however long the flush interval."""
    writer = UsageWriter(sessions, tmp_path / "spool", batch_size=10, flush_interval=60)
    writer.start()
    loop = asyncio.get_running_loop()
    try:
        writer.submit(make_bundle(0))
        await asyncio.sleep(0.05)  # the task holds the first record and waits for more
        for i in range(1, 10):
            writer.submit(make_bundle(i))
            await asyncio.sleep(0.001)
        started = loop.time()
        await asyncio.wait_for(writer.flush(), 10)
        assert loop.time() - started < 5
        assert writer.stats.written == 10
        writer.submit(make_bundle(10))
        await asyncio.sleep(0.05)
    finally:
        started = loop.time()
        await writer.stop(30)
    assert loop.time() - started < 5
    assert writer.stats.written == 11 and writer.stats.spooled == 0


async def test_a_congested_backlog_holds_new_requests_until_it_is_down(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    writer = UsageWriter(sessions, tmp_path / "spool", batch_size=20, flush_interval=0.02, backlog_high=60)
    writer.start()
    try:
        writer.submit(make_bundle(0))
        await asyncio.wait_for(writer.flush(), 10)  # the task has finished a batch: it is making progress
        assert not writer.congested
        await asyncio.wait_for(writer.room(), 0.1)  # not congested: no wait
        assert writer.stats.throttled == 0
        bundles = [make_bundle(i) for i in range(1, 301)]
        for b in bundles:
            writer.submit(b)
        assert writer.congested
        await asyncio.wait_for(writer.room(), 10)
        assert writer.stats.throttled == 1
        assert writer.queued <= writer.batch_size  # released only once the backlog was back down
    finally:
        await writer.stop(10)
    assert writer.stats.written == 301


async def test_a_writer_making_no_progress_holds_nobody(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """A task that finishes no batch (here: not started; in life, a database that hangs) must not turn
    into a gateway outage: the queue and the spool absorb the backlog instead."""
    writer = UsageWriter(sessions, tmp_path / "spool", batch_size=20, backlog_high=60, room_wait=5)
    for i in range(100):
        writer.submit(make_bundle(i))
    assert writer.congested
    started = asyncio.get_running_loop().time()
    await writer.room()
    assert asyncio.get_running_loop().time() - started < 1
    assert writer.stats.throttled == 0
    writer.start()
    await writer.stop(10)
    assert writer.stats.written == 100


async def test_stop_drains_the_queue(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    writer = UsageWriter(sessions, tmp_path / "spool", batch_size=50, flush_interval=5.0)
    writer.start()
    bundles = [make_bundle(i) for i in range(230)]
    for b in bundles:
        writer.submit(b)
    await writer.stop(30)
    assert writer.stats.written == 230
    await assert_totals_match(sessions, bundles)
    # After stop, a late submit still keeps its record (in the spool, replayed by the next writer).
    late = make_bundle(500)
    assert writer.submit(late)
    assert writer.stats.spooled == 1
    successor = UsageWriter(sessions, tmp_path / "spool", flush_interval=0.05)
    successor.start()
    try:
        await wait_until(lambda: successor.stats.replayed == 1)
    finally:
        await successor.stop(10)
    await assert_totals_match(sessions, [*bundles, late])


def spool_lines(directory: Path) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    for path in sorted(directory.glob("*.jsonl")):
        if path.name == "rejected.ndjson":
            continue
        lines.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
    return lines


async def test_unreachable_database_spools_then_a_later_writer_replays(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    # A database nobody listens on: every write fails at connect.
    dead_engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    dead = UsageWriter(
        session_factory(dead_engine), spool, batch_size=40, flush_interval=0.02, retry_min=0.05
    )
    dead.start()
    bundles = [make_bundle(i, with_log=True) for i in range(300)]
    try:
        for b in bundles:
            assert dead.submit(b)
        await asyncio.wait_for(dead.flush(), 30)
        assert not dead.stats.database_up
    finally:
        await dead.stop(10)
        await dead_engine.dispose()
    assert dead.stats.written == 0 and dead.stats.dropped == 0
    assert dead.stats.spooled == 300
    assert sorted(line["usage"]["request_id"] for line in spool_lines(spool)) == sorted(  # type: ignore[index]
        b.request_id for b in bundles
    )

    alive = UsageWriter(sessions, spool, batch_size=64, flush_interval=0.02)
    alive.start()
    try:
        await wait_until(lambda: alive.stats.replayed == 300)
        await alive.flush()
    finally:
        await alive.stop(10)
    assert spool_lines(spool) == []
    await assert_totals_match(sessions, bundles)


async def test_a_sqlite_database_without_the_tables_is_an_outage_not_refused_data(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """On SQLite the batch INSERTs go to the driver directly; its errors must still read as
    SQLAlchemy's, so a schema not migrated yet spools every record instead of rejecting them."""
    bare = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bare.db'}", sqlite_immediate=True)
    spool = tmp_path / "spool"
    writer = UsageWriter(session_factory(bare), spool, batch_size=10, flush_interval=0.02, retry_min=60)
    writer.start()
    bundles = [make_bundle(i) for i in range(25)]
    try:
        for b in bundles:
            writer.submit(b)
        await wait_until(lambda: writer.stats.spooled == 25)
    finally:
        await writer.stop(10)
        await bare.dispose()
    assert writer.stats.rejected == 0 and writer.stats.written == 0
    assert not writer.stats.database_up
    assert not (spool / "rejected.ndjson").exists()
    later = UsageWriter(sessions, spool, flush_interval=0.02)
    later.start()
    try:
        await wait_until(lambda: later.stats.replayed == 25)
    finally:
        await later.stop(10)
    await assert_totals_match(sessions, bundles)


async def test_full_queue_spools_instead_of_dropping(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    writer = UsageWriter(sessions, tmp_path / "spool", batch_size=8, flush_interval=0.02, queue_max=10)
    bundles = [make_bundle(i) for i in range(50)]
    # Not started yet: the queue fills after 10 and the rest overflows to the spool, without waiting.
    for b in bundles:
        assert writer.submit(b)
    assert writer.queued == 10
    assert writer.stats.overflowed == 40 and writer.stats.dropped == 0
    writer.start()
    try:
        await wait_until(lambda: writer.stats.written == 50)
    finally:
        await writer.stop(10)
    assert writer.stats.replayed == 40
    await assert_totals_match(sessions, bundles)


async def test_replaying_the_same_spool_twice_counts_once(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    bundles = [make_bundle(i) for i in range(60)]
    lines = b"".join(orjson.dumps(b.to_json()) + b"\n" for b in bundles)
    # A segment that was written to the database but not deleted (crash between commit and unlink),
    # plus a torn last line from a crash mid-append.
    (spool / "00000000000000000001-1-000001.jsonl").write_bytes(lines)
    (spool / "00000000000000000002-1-000001.jsonl").write_bytes(lines + b'{"usage": {"request_')
    writer = UsageWriter(sessions, spool, batch_size=25, flush_interval=0.02)
    writer.start()
    try:
        await wait_until(lambda: not list(spool.glob("*.jsonl")))
    finally:
        await writer.stop(10)
    assert writer.stats.replayed == 60
    assert writer.stats.duplicates == 60
    await assert_totals_match(sessions, bundles)


async def test_an_invalid_record_is_set_aside_not_the_batch(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    writer = UsageWriter(sessions, tmp_path / "spool", batch_size=20, flush_interval=0.02)
    good = [make_bundle(i) for i in range(19)]
    bad = make_bundle(99, status="no-such-status")  # refused by the CHECK constraint
    long_name = make_bundle(100, model="m" * 1000)  # clipped to the column size, still written
    writer.start()
    try:
        for b in [*good[:10], bad, long_name, *good[10:]]:
            writer.submit(b)
        await writer.flush()
    finally:
        await writer.stop(10)
    assert writer.stats.rejected == 1
    assert writer.stats.written == 20
    assert writer.stats.database_up
    rejected = (tmp_path / "spool" / "rejected.ndjson").read_bytes().splitlines()
    assert [orjson.loads(r)["bundle"]["usage"]["request_id"] for r in rejected] == [bad.request_id]
    async with sessions() as session:
        stored = await session.get(UsageRecordRow, long_name.request_id)
        assert stored is not None and stored.model_requested == "m" * 256
        attempts = await session.scalar(
            select(func.count())
            .select_from(UsageAttemptRow)
            .where(UsageAttemptRow.request_id == bad.request_id)
        )
    assert attempts == 0
