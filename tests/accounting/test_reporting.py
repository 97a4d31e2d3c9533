"""Reporting on SQLite and PostgreSQL: rollup series and breakdowns equal sums over the raw records,
keyset pagination, record detail, streamed exports, unpriced usage."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounting.usage_samples import BASE_TIME, make_bundle
from isthmus.accounting import reporting
from isthmus.accounting.records import ERROR_STATUSES, UsageRecord
from isthmus.accounting.reporting import EXPORT_FIELDS, InvalidCursor, Totals, UsageFilters
from isthmus.accounting.rollups import latency_bucket
from isthmus.accounting.writer import write_batch
from isthmus.store.db import create_engine, session_factory
from isthmus.store.usage_tables import LATENCY_BOUNDS_MS

PARIS = ZoneInfo("Europe/Paris")
SINCE = BASE_TIME - timedelta(days=1)
UNTIL = BASE_TIME + timedelta(days=3)


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def seeded(engine: AsyncEngine) -> tuple[async_sessionmaker[AsyncSession], list[UsageRecord]]:
    sessions = session_factory(engine)
    bundles = [make_bundle(i, seed=11, with_log=i % 5 == 0) for i in range(400)]
    # Ties on started_at, so pagination must break them by request id.
    for b in bundles[:12]:
        b.usage.started_at = BASE_TIME + timedelta(hours=5)
    for b in bundles[12:20]:
        b.usage.prices = None  # no price known
        b.usage.model_requested = "mystery-model"
    async with sessions() as session, session.begin():
        await write_batch(session, bundles)
    return sessions, [b.usage for b in bundles]


def expect(records: Sequence[UsageRecord]) -> dict[str, Any]:
    return {
        "requests": len(records),
        "errors": sum(1 for r in records if r.status in ERROR_STATUSES),
        "input_tokens": sum(r.input_tokens for r in records),
        "output_tokens": sum(r.output_tokens for r in records),
        "cache_read_tokens": sum(r.cache_read_tokens for r in records),
        "total_tokens": sum(r.total_tokens for r in records),
        "list_cost": sum((r.list_cost for r in records), Decimal(0)),
        "actual_cost": sum((r.actual_cost for r in records), Decimal(0)),
    }


def got(totals: Totals) -> dict[str, Any]:
    metrics = totals.metrics()
    return {name: metrics[name] for name in expect([])}


def group_records(
    records: Sequence[UsageRecord], key: Callable[[UsageRecord], Any]
) -> dict[Any, list[UsageRecord]]:
    out: dict[Any, list[UsageRecord]] = defaultdict(list)
    for r in records:
        out[key(r)].append(r)
    return out


def in_bucket_of(estimate: float | None, records: Sequence[UsageRecord], q: float) -> bool:
    latencies = sorted(r.latency_ms for r in records)
    exact = latencies[max(0, int(q * len(latencies) + 0.999999) - 1)]
    i = latency_bucket(exact)
    lower = LATENCY_BOUNDS_MS[i - 1] if i else 0
    return estimate is not None and lower <= estimate <= LATENCY_BOUNDS_MS[i]


async def test_hourly_series_equal_sums_over_records(
    seeded: tuple[async_sessionmaker[AsyncSession], list[UsageRecord]],
) -> None:
    sessions, records = seeded
    async with sessions() as session:
        (series,) = await reporting.timeseries(session, since=SINCE, until=UNTIL, bucket="hour")
    by_hour = group_records(records, lambda r: r.started_at.replace(minute=0, second=0, microsecond=0))
    assert [p.start for p in series.points] == sorted(by_hour)
    for point in series.points:
        in_hour = by_hour[point.start]
        assert got(point.totals) == expect(in_hour)
        metrics = point.totals.metrics()
        assert metrics["latency_avg_ms"] == pytest.approx(sum(r.latency_ms for r in in_hour) / len(in_hour))
        assert in_bucket_of(metrics["latency_p50_ms"], in_hour, 0.5)
        assert in_bucket_of(metrics["latency_p95_ms"], in_hour, 0.95)


async def test_daily_series_per_model_in_a_time_zone(
    seeded: tuple[async_sessionmaker[AsyncSession], list[UsageRecord]],
) -> None:
    sessions, records = seeded
    async with sessions() as session:
        series = await reporting.timeseries(
            session, since=SINCE, until=UNTIL, bucket="day", group_by="model", tz=PARIS
        )
    expected = group_records(records, lambda r: (r.model_requested, r.started_at.astimezone(PARIS).date()))
    seen = 0
    for s in series:
        assert s.group.kind == "model" and s.group.name is not None
        for point in s.points:
            local = point.start.astimezone(PARIS)
            assert (local.hour, local.minute) == (0, 0)
            assert got(point.totals) == expect(expected[(s.group.name, local.date())])
            seen += 1
    assert seen == len(expected)
    # Most expensive series first.
    costs = [sum((p.totals.actual_cost for p in s.points), Decimal(0)) for s in series]
    assert costs == sorted(costs, reverse=True)


@pytest.mark.parametrize("by", ["model", "key", "user", "team", "provider"])
async def test_breakdowns_equal_sums_over_records(
    seeded: tuple[async_sessionmaker[AsyncSession], list[UsageRecord]], by: str
) -> None:
    sessions, records = seeded
    attribute = {"model": "model_requested", "key": "key_id", "user": "user_id", "team": "team_id"}.get(
        by, "provider_id"
    )
    async with sessions() as session:
        items = await reporting.breakdown(session, since=SINCE, until=UNTIL, by=by)  # type: ignore[arg-type]
        only_one_model = await reporting.breakdown(
            session,
            since=SINCE,
            until=UNTIL,
            by=by,
            filters=UsageFilters(model="gpt-4o"),  # type: ignore[arg-type]
        )
    expected = group_records(records, lambda r: getattr(r, attribute))
    assert len(items) == len(expected)
    for item in items:
        key = item.group.name if by == "model" else item.group.id
        assert got(item.totals) == expect(expected[key])
    assert [i.totals.actual_cost for i in items] == sorted(
        (i.totals.actual_cost for i in items), reverse=True
    )
    gpt = [r for r in records if r.model_requested == "gpt-4o"]
    assert sum(i.totals.requests for i in only_one_model) == len(gpt)


async def test_range_is_by_hour(seeded: tuple[async_sessionmaker[AsyncSession], list[UsageRecord]]) -> None:
    sessions, records = seeded
    start = BASE_TIME + timedelta(hours=3, minutes=40)  # rounded down to 03:00
    end = BASE_TIME + timedelta(hours=7)
    async with sessions() as session:
        total = await reporting.overall(session, since=start, until=end)
    in_range = [r for r in records if BASE_TIME + timedelta(hours=3) <= r.started_at < end]
    assert got(total) == expect(in_range)


async def test_record_pages_walk_everything_once_newest_first(
    seeded: tuple[async_sessionmaker[AsyncSession], list[UsageRecord]],
) -> None:
    sessions, records = seeded
    order = sorted(records, key=lambda r: (r.started_at, r.request_id), reverse=True)
    seen: list[str] = []
    cursor: str | None = None
    async with sessions() as session:
        while True:
            page = await reporting.list_records(session, limit=7, cursor=cursor)
            seen.extend(r.request_id for r in page.items)
            if len(seen) == 14:
                # A newer record arriving mid-walk does not shift the pages still to come.
                async with sessions() as other, other.begin():
                    fresh = make_bundle(1, seed=99, started_at=BASE_TIME + timedelta(days=2))
                    await write_batch(other, [fresh])
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [r.request_id for r in order]

        failed = await reporting.list_records(
            session, filters=UsageFilters(status="upstream_error", key_id=2), limit=500
        )
        assert {r.request_id for r in failed.items} == {
            r.request_id for r in records if r.status == "upstream_error" and r.key_id == 2
        }
        window = await reporting.list_records(
            session, since=BASE_TIME + timedelta(hours=5), until=BASE_TIME + timedelta(hours=6), limit=500
        )
        assert {r.request_id for r in window.items} == {
            r.request_id
            for r in records
            if timedelta(hours=5) <= r.started_at - BASE_TIME < timedelta(hours=6)
        }
        with pytest.raises(InvalidCursor):
            await reporting.list_records(session, cursor="not-a-cursor")


async def test_record_detail_has_its_trace_and_log(
    seeded: tuple[async_sessionmaker[AsyncSession], list[UsageRecord]],
) -> None:
    sessions, records = seeded
    async with sessions() as session:
        detail = await reporting.get_record(session, records[5].request_id)
        assert detail is not None
        assert detail.record.request_id == records[5].request_id
        assert [a.attempt_no for a in detail.attempts] == list(range(1, records[5].attempts + 1))
        assert detail.attempts[-1].status == "ok"
        assert detail.log is not None and detail.log.level == "full"
        no_log = await reporting.get_record(session, records[6].request_id)
        assert no_log is not None and no_log.log is None
        assert await reporting.get_record(session, "req_missing") is None


def _same_record(row: dict[str, Any], record: UsageRecord) -> None:
    assert row["request_id"] == record.request_id
    assert Decimal(row["list_cost"]) == record.list_cost
    assert Decimal(row["actual_cost"]) == record.actual_cost
    assert datetime.fromisoformat(row["started_at"]) == record.started_at
    assert int(row["input_tokens"]) == record.input_tokens


async def test_exports_stream_every_record_in_chunks(
    seeded: tuple[async_sessionmaker[AsyncSession], list[UsageRecord]],
) -> None:
    sessions, records = seeded
    order = sorted(records, key=lambda r: (r.started_at, r.request_id))
    async with sessions() as session:
        chunks = [c async for c in reporting.iter_record_chunks(session, chunk_size=37)]
        assert all(len(c) <= 37 for c in chunks) and len(chunks) == -(-len(records) // 37)

        pieces = [p async for p in reporting.export_chunks(session, "csv", chunk_size=50)]
        rows = list(csv.DictReader(io.StringIO(b"".join(pieces).decode())))
        assert tuple(rows[0]) == EXPORT_FIELDS
        assert len(rows) == len(records)
        for row, record in zip(rows, order, strict=True):
            _same_record(row, record)
            assert row["stream"] == ("true" if record.stream else "false")
            assert (orjson.loads(row["prices"]) if row["prices"] else None) == record.prices

        lines = b"".join(
            [p async for p in reporting.export_chunks(session, "json", chunk_size=50)]
        ).splitlines()
        objects = [orjson.loads(line) for line in lines]
        assert len(objects) == len(records)
        assert all(tuple(o) == EXPORT_FIELDS for o in objects)
        for obj, record in zip(objects, order, strict=True):
            _same_record(obj, record)
            assert obj["prices"] == record.prices and obj["stream"] is record.stream

        only_key_1 = [
            p async for p in reporting.export_chunks(session, "json", filters=UsageFilters(key_id=1))
        ]
        assert b"".join(only_key_1).count(b"\n") == sum(1 for r in records if r.key_id == 1)


async def test_unpriced_usage_lists_models_billed_at_zero(
    seeded: tuple[async_sessionmaker[AsyncSession], list[UsageRecord]],
) -> None:
    sessions, records = seeded
    async with sessions() as session:
        unpriced = await reporting.unpriced_usage(session, since=SINCE, until=UNTIL)
    mystery = [r for r in records if r.prices is None and r.total_tokens > 0]
    assert [(u.model, u.requests, u.tokens) for u in unpriced] == [
        ("mystery-model", len(mystery), sum(r.total_tokens for r in mystery))
    ]
    assert unpriced[0].last_seen == max(r.started_at for r in mystery)


def test_cursor_round_trip() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    assert reporting.decode_cursor(reporting.encode_cursor(at, "req_a|b")) == (at, "req_a|b")
