"""Rollup and spend folding: calendar periods in a time zone, the latency histogram, upserts that add."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from accounting.usage_samples import make_bundle
from isthmus.accounting.budgets import MemoryBudgets, nano_to_usd, usd_to_nano
from isthmus.accounting.records import ERROR_STATUSES, UsageRecord
from isthmus.accounting.rollups import (
    TOKEN_COLUMNS,
    TOTAL_PERIOD_START,
    RollupDelta,
    RollupKey,
    SpendDelta,
    SpendKey,
    current_spend,
    fold_rollups,
    fold_spend,
    hour_of,
    latency_bucket,
    load_spend_totals,
    percentile_ms,
    period_start,
    upsert_spend,
)
from isthmus.accounting.writer import write_batch
from isthmus.store.db import create_engine, session_factory
from isthmus.store.usage_tables import LATENCY_BOUNDS_MS

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_period_starts_follow_the_calendar_of_the_time_zone() -> None:
    at = utc(2026, 3, 31, 22, 30)  # already April 1st, 00:30, in Paris (UTC+2 in summer time)
    assert period_start("daily", at) == utc(2026, 3, 31)
    assert period_start("monthly", at) == utc(2026, 3, 1)
    assert period_start("daily", at, PARIS) == utc(2026, 3, 31, 22)
    assert period_start("monthly", at, PARIS) == utc(2026, 3, 31, 22)
    assert period_start("total", at, PARIS) == TOTAL_PERIOD_START
    # The day DST starts in New York: midnight is still at UTC-5, though the instant is at UTC-4.
    assert period_start("daily", utc(2026, 3, 8, 20), NEW_YORK) == utc(2026, 3, 8, 5)
    # March in Paris began in winter time (UTC+1), though the instant is in summer time.
    assert period_start("monthly", utc(2026, 3, 30, 12), PARIS) == utc(2026, 2, 28, 23)
    with pytest.raises(ValueError):
        period_start("weekly", at)


def test_hours_and_buckets() -> None:
    assert hour_of(datetime(2026, 1, 2, 3, 59, 59, 999, tzinfo=PARIS)) == utc(2026, 1, 2, 2)
    assert latency_bucket(0) == 0
    assert latency_bucket(50) == 0  # upper bounds are inclusive
    assert latency_bucket(50.5) == 1
    assert latency_bucket(10**9) == len(LATENCY_BOUNDS_MS) - 1


def test_percentiles_from_the_histogram_are_within_a_bucket() -> None:
    rng = random.Random(5)
    latencies = sorted(rng.lognormvariate(7, 1) for _ in range(5000))
    buckets = [0] * len(LATENCY_BOUNDS_MS)
    for value in latencies:
        buckets[latency_bucket(value)] += 1
    for q in (0.5, 0.95):
        exact = latencies[int(q * len(latencies)) - 1]
        estimate = percentile_ms(buckets, q)
        assert estimate is not None
        i = latency_bucket(exact)
        lower = LATENCY_BOUNDS_MS[i - 1] if i else 0
        assert lower <= estimate <= LATENCY_BOUNDS_MS[i]
    assert percentile_ms([0] * len(LATENCY_BOUNDS_MS), 0.5) is None


def test_folding_groups_a_batch_into_few_rows() -> None:
    bundles = [
        make_bundle(i, key_id=1, user_id=2, team_id=None, model="m", provider_id=3) for i in range(200)
    ]
    for b in bundles:
        b.usage.started_at = utc(2026, 3, 1, 10, b.usage.started_at.minute)
        b.usage.team_id = None
    rollups = fold_rollups(b.usage for b in bundles)
    assert len(rollups) == 1
    (delta,) = rollups.values()
    assert delta.requests == 200 and sum(delta.buckets) == 200
    assert delta.actual_cost == sum((b.usage.actual_cost for b in bundles), Decimal(0))

    spend = fold_spend((b.usage for b in bundles), PARIS)
    # A key and a user (no team), three periods each: six rows for the whole batch.
    assert {(k.entity_type, k.period) for k in spend} == {
        (e, p) for e in ("key", "user") for p in ("daily", "monthly", "total")
    }
    assert spend[SpendKey("key", 1, "daily", utc(2026, 2, 28, 23))].usd == delta.actual_cost


def test_folding_sums_every_column_of_each_hour_and_principal() -> None:
    """Against a record-by-record reference: statuses, missing times to first token, a negative
    latency, and times in another zone (an hour is a UTC hour, whatever zone a record was read in)."""
    bundles = [make_bundle(i, key_id=1 + i % 2, model="m") for i in range(300)]
    for i, b in enumerate(bundles):
        if i % 7 == 0:
            b.usage.started_at = b.usage.started_at.astimezone(ZoneInfo("Asia/Kolkata"))  # +05:30
        if i % 11 == 0:
            b.usage.latency_ms = -5
    expected: dict[RollupKey, RollupDelta] = {}
    for b in bundles:
        r = b.usage
        key = RollupKey(
            hour_of(r.started_at), r.key_id or 0, r.user_id or 0, r.team_id or 0, "m", r.provider_id or 0
        )
        d = expected.setdefault(key, RollupDelta())
        d.requests += 1
        d.errors += r.status in ERROR_STATUSES
        for column in TOKEN_COLUMNS:
            setattr(d, column, getattr(d, column) + getattr(r, column))
        d.list_cost += r.list_cost
        d.actual_cost += r.actual_cost
        d.latency_ms_sum += max(0, r.latency_ms)
        if r.ttft_ms is not None:
            d.ttft_ms_sum += max(0, r.ttft_ms)
            d.ttft_count += 1
        d.buckets[latency_bucket(r.latency_ms)] += 1
    folded = fold_rollups(b.usage for b in bundles)
    assert folded == expected
    assert all(key.hour.minute == 0 and key.hour.utcoffset() == timedelta(0) for key in folded)
    assert any(d.ttft_count < d.requests for d in folded.values())  # some without a first token


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_spend_upserts_add_and_current_spend_reads_this_period(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    now = utc(2026, 5, 20, 12)
    today, month = utc(2026, 5, 20), utc(2026, 5, 1)
    rows = {
        SpendKey("team", 7, "daily", today): SpendDelta(Decimal("1.25"), 100),
        SpendKey("team", 7, "daily", today - timedelta(days=1)): SpendDelta(Decimal("9"), 900),
        SpendKey("team", 7, "monthly", month): SpendDelta(Decimal("10.25"), 1000),
        SpendKey("team", 7, "total", TOTAL_PERIOD_START): SpendDelta(Decimal("50.000000000001"), 5000),
        SpendKey("key", 3, "monthly", utc(2026, 4, 1)): SpendDelta(Decimal("2"), 20),
    }
    for _ in range(3):  # three batches adding the same increments
        async with sessions() as session, session.begin():
            await upsert_spend(session, rows)
    async with sessions() as session:
        current = await current_spend(session, now)
    got = {(r.entity_type, r.entity_id, r.period): (r.usd, r.tokens) for r in current}
    assert got == {
        ("team", 7, "daily"): (Decimal("3.75"), 300),
        ("team", 7, "monthly"): (Decimal("30.75"), 3000),
        ("team", 7, "total"): (Decimal("150.000000000003"), 15000),
    }


async def test_written_spend_seeds_the_budget_counters_in_their_time_zone(engine: AsyncEngine) -> None:
    # Records written by the writer in Paris time, read back at start-up by the in-memory budgets.
    sessions = session_factory(engine)
    now = utc(2026, 4, 30, 22, 30)  # already May 1st in Paris
    bundles = [
        make_bundle(i, key_id=4, user_id=8, team_id=None, started_at=now - timedelta(minutes=i))
        for i in range(40)
    ]
    for b in bundles:
        b.usage.team_id = None
    async with sessions() as session, session.begin():
        await write_batch(session, bundles, PARIS)
    async with sessions() as session:
        totals = await load_spend_totals(session, PARIS, now)
    budgets = MemoryBudgets("Europe/Paris")
    await budgets.load_spend(totals, now.timestamp())

    def spent(records: list[UsageRecord]) -> tuple[Decimal, int]:
        # Budget counters hold whole nano-dollars.
        usd = sum((r.actual_cost for r in records), Decimal(0))
        return nano_to_usd(usd_to_nano(usd)), sum(r.total_tokens for r in records)

    may = [b.usage for b in bundles if b.usage.started_at >= utc(2026, 4, 30, 22)]
    assert 0 < len(may) < len(bundles)
    for period, expected in (
        ("daily", spent(may)),
        ("monthly", spent(may)),
        ("total", spent([b.usage for b in bundles])),
    ):
        counter = await budgets.counter("key", 4, period, now.timestamp())  # type: ignore[arg-type]
        assert (counter.spent_usd, counter.spent_tokens) == expected, period
