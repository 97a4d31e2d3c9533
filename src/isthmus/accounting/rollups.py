"""Per-batch folding of usage records into hourly rollups and per-entity spend increments, and the
upserts that add them to ``usage_hourly`` / ``spend_totals``.

Folding first means one upsert per (hour, key, user, team, model, provider) and per (entity, period)
touched by a batch, never one per request: a team's spend row is written once per flush however many
of its requests the batch holds. Upserts add (``col = col + excluded.col``), so concurrent writers in
several processes never lose each other's increments.
"""

from __future__ import annotations

import bisect
import functools
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.accounting.budgets import EntityType, Period, SpendTotal
from isthmus.accounting.records import ERROR_STATUSES, UsageRecord, as_utc
from isthmus.store.bulk import BulkInsert
from isthmus.store.usage_tables import (
    LATENCY_BOUNDS_MS,
    LATENCY_BUCKET_COLUMNS,
    ROLLUP_KEY_COLUMNS,
    SpendTotalRow,
    usage_hourly,
)

# The period start of "total" spend rows (a key column cannot be NULL).
TOTAL_PERIOD_START = datetime(1970, 1, 1, tzinfo=UTC)
SPEND_PERIODS = ("daily", "monthly", "total")
_ZERO = Decimal(0)

# The token columns a usage record and an hourly rollup both carry.
TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)


def hour_of(at: datetime) -> datetime:
    return as_utc(at).replace(minute=0, second=0, microsecond=0)


def period_start(period: str, at: datetime, tz: tzinfo = UTC) -> datetime:
    """The UTC instant the calendar period containing ``at`` began in time zone ``tz``."""
    if period == "total":
        return TOTAL_PERIOD_START
    local = as_utc(at).astimezone(tz)
    if period == "daily":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "monthly":
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"unknown spend period {period!r}")
    # Re-attach the zone so a DST change between midnight and ``at`` gives midnight's own offset.
    naive = start.replace(tzinfo=None)
    return naive.replace(tzinfo=tz).astimezone(UTC)


def latency_bucket(latency_ms: float) -> int:
    """Index of the histogram bucket whose upper bound is the first at or above ``latency_ms``."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, max(0.0, latency_ms))


@dataclass(frozen=True, slots=True)
class RollupKey:
    hour: datetime
    key_id: int
    user_id: int
    team_id: int
    model: str
    provider_id: int


@dataclass(slots=True)
class RollupDelta:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    list_cost: Decimal = _ZERO
    actual_cost: Decimal = _ZERO
    latency_ms_sum: int = 0
    ttft_ms_sum: int = 0
    ttft_count: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_MS))

    @classmethod
    def of(cls, records: list[UsageRecord]) -> RollupDelta:
        """The sums over one group of records: a column at a time, in C where it can be."""
        delta = cls(requests=len(records))
        delta.errors = sum(1 for r in records if r.status in ERROR_STATUSES)
        columns = list(zip(*map(_ROLLUP_SUMS, records), strict=True))
        (
            delta.input_tokens,
            delta.output_tokens,
            delta.cache_read_tokens,
            delta.cache_write_5m_tokens,
            delta.cache_write_1h_tokens,
            delta.reasoning_tokens,
        ) = (sum(column) for column in columns[:6])
        delta.list_cost = sum(columns[6], _ZERO)
        delta.actual_cost = sum(columns[7], _ZERO)
        latencies = columns[8]
        delta.latency_ms_sum = sum(map(_non_negative, latencies))
        ttfts = [_non_negative(t) for t in columns[9] if t is not None]
        delta.ttft_ms_sum = sum(ttfts)
        delta.ttft_count = len(ttfts)
        for bucket in map(latency_bucket, latencies):
            delta.buckets[bucket] += 1
        return delta

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "list_cost": self.list_cost,
            "actual_cost": self.actual_cost,
            "latency_ms_sum": self.latency_ms_sum,
            "ttft_ms_sum": self.ttft_ms_sum,
            "ttft_count": self.ttft_count,
        }
        for name in TOKEN_COLUMNS:
            out[name] = getattr(self, name)
        for name, count in zip(LATENCY_BUCKET_COLUMNS, self.buckets, strict=True):
            out[name] = count
        return out


_ROLLUP_SUMS = operator.attrgetter(*TOKEN_COLUMNS, "list_cost", "actual_cost", "latency_ms", "ttft_ms")


def _non_negative(value: int) -> int:
    return value if value > 0 else 0


def fold_rollups(records: Iterable[UsageRecord]) -> dict[RollupKey, RollupDelta]:
    # Grouped by a plain tuple first (a batch holds a few groups), then summed a group at a time: a
    # key object and fifteen attribute updates per record cost the writer ~7 µs a record.
    groups: dict[tuple[datetime, int, int, int, str, int], list[UsageRecord]] = {}
    for record in records:
        group = (
            hour_of(record.started_at),
            record.key_id or 0,
            record.user_id or 0,
            record.team_id or 0,
            record.model_requested or "",
            record.provider_id or 0,
        )
        members = groups.get(group)
        if members is None:
            groups[group] = [record]
        else:
            members.append(record)
    return {RollupKey(*group): RollupDelta.of(members) for group, members in groups.items()}


@dataclass(frozen=True, slots=True)
class SpendKey:
    entity_type: str  # key | user | team
    entity_id: int
    period: str  # daily | monthly | total
    period_start: datetime


@dataclass(slots=True)
class SpendDelta:
    usd: Decimal = _ZERO
    tokens: int = 0


def fold_spend(records: Iterable[UsageRecord], tz: tzinfo = UTC) -> dict[SpendKey, SpendDelta]:
    """Spend increments per key, user and team, for each calendar period in ``tz``.

    Spend is the actual cost (after the provider key's multiplier; 0 on a free tier): what budgets
    count. Tokens are every billed token. Records that cost nothing and used no token add nothing.
    """
    # Records are first summed per (local day, key, user, team) — one tuple per record — and only the
    # distinct sums are spread over the entities and periods: a batch holds a few days and principals,
    # and the period starts (which depend only on the local date) are computed once per day.
    by_day: dict[tuple[date, int | None, int | None, int | None], SpendDelta] = {}
    for record in records:
        usd = record.actual_cost
        tokens = record.total_tokens
        if usd == _ZERO and tokens == 0:
            continue
        day = as_utc(record.started_at).astimezone(tz).date()
        group = (day, record.key_id, record.user_id, record.team_id)
        delta = by_day.get(group)
        if delta is None:
            delta = by_day[group] = SpendDelta()
        delta.usd += usd
        delta.tokens += tokens
    starts_of: dict[date, dict[str, datetime]] = {}
    folded: dict[SpendKey, SpendDelta] = {}
    for (day, key_id, user_id, team_id), sums in by_day.items():
        starts = starts_of.get(day)
        if starts is None:
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)  # any instant of that day
            starts = starts_of[day] = {p: period_start(p, noon, tz) for p in SPEND_PERIODS}
        for entity_type, entity_id in (("key", key_id), ("user", user_id), ("team", team_id)):
            if entity_id is None:
                continue
            for period, start in starts.items():
                key = SpendKey(entity_type, entity_id, period, start)
                delta = folded.get(key)
                if delta is None:
                    delta = folded[key] = SpendDelta()
                delta.usd += sums.usd
                delta.tokens += sums.tokens
    return folded


_SPEND = cast(Table, SpendTotalRow.__table__)
_SPEND_KEY_COLUMNS = ("entity_type", "entity_id", "period", "period_start")


@functools.lru_cache(maxsize=4)  # one or two engines per process; tests make many
def _upserts(dialect: Dialect) -> tuple[BulkInsert, BulkInsert]:
    """The rollup and spend upserts of one dialect, rendered once (as the writer's INSERTs are):
    built with SQLAlchemy for every batch, they cost the writer ~2 ms of the event loop a batch."""
    rollups = BulkInsert(
        usage_hourly,
        dialect,
        conflict=ROLLUP_KEY_COLUMNS,
        add=[c.name for c in usage_hourly.columns if c.name not in ROLLUP_KEY_COLUMNS],
    )
    spend = BulkInsert(
        _SPEND, dialect, conflict=_SPEND_KEY_COLUMNS, add=("usd", "tokens"), replace=("updated_at",)
    )
    return rollups, spend


_ROLLUP_COLUMNS = tuple(c.name for c in usage_hourly.columns)
_SPEND_COLUMNS = tuple(c.name for c in _SPEND.columns)


async def upsert_rollups(session: AsyncSession, deltas: Mapping[RollupKey, RollupDelta]) -> None:
    """Add the folded deltas to ``usage_hourly``."""
    if not deltas:
        return
    upsert = _upserts(session.get_bind().dialect)[0]
    rows = []
    for key, delta in deltas.items():
        values = delta.values()
        values.update(
            hour=key.hour,
            key_id=key.key_id,
            user_id=key.user_id,
            team_id=key.team_id,
            model=key.model,
            provider_id=key.provider_id,
        )
        rows.append(upsert.bind([values[c] for c in _ROLLUP_COLUMNS]))
    await upsert.execute(session, rows)


async def upsert_spend(session: AsyncSession, deltas: Mapping[SpendKey, SpendDelta]) -> None:
    if not deltas:
        return
    upsert = _upserts(session.get_bind().dialect)[1]
    now = datetime.now(UTC)
    rows = []
    for key, delta in deltas.items():
        values = {
            "entity_type": key.entity_type,
            "entity_id": key.entity_id,
            "period": key.period,
            "period_start": key.period_start,
            "usd": delta.usd,
            "tokens": delta.tokens,
            "updated_at": now,
        }
        rows.append(upsert.bind([values[c] for c in _SPEND_COLUMNS]))
    await upsert.execute(session, rows)


@dataclass(frozen=True, slots=True)
class SpendRow:
    entity_type: str
    entity_id: int
    period: str
    period_start: datetime
    usd: Decimal
    tokens: int


async def current_spend(
    session: AsyncSession, now: datetime | None = None, tz: tzinfo = UTC
) -> list[SpendRow]:
    """The spend rows of the periods in force at ``now`` (this day, this month, and totals), for seeding
    budget counters at start-up."""
    when = as_utc(now) if now is not None else datetime.now(UTC)
    starts = {p: period_start(p, when, tz) for p in SPEND_PERIODS}
    t = SpendTotalRow
    conditions = [(t.period == p) & (t.period_start == s) for p, s in starts.items()]
    query = select(t.entity_type, t.entity_id, t.period, t.period_start, t.usd, t.tokens).where(
        conditions[0] | conditions[1] | conditions[2]
    )
    result = await session.execute(query)
    return [
        SpendRow(r.entity_type, int(r.entity_id), r.period, as_utc(r.period_start), r.usd, int(r.tokens))
        for r in result
    ]


async def load_spend_totals(
    session: AsyncSession, tz: tzinfo = UTC, now: datetime | None = None
) -> list[SpendTotal]:
    """:func:`current_spend` as the budgets' ``SpendTotal`` rows, ready for ``Budgets.load_spend``."""
    return [
        SpendTotal(
            cast(EntityType, r.entity_type),
            r.entity_id,
            cast(Period, r.period),
            r.period_start,
            r.usd,
            r.tokens,
        )
        for r in await current_spend(session, now, tz)
    ]


# Used by reporting to sum bucket columns; kept here with the rest of the histogram logic.
def bucket_sums() -> list[Any]:
    return [func.coalesce(func.sum(usage_hourly.c[name]), 0).label(name) for name in LATENCY_BUCKET_COLUMNS]


def percentile_ms(buckets: list[int], q: float) -> float | None:
    """Estimate a latency percentile from histogram counts by linear interpolation in its bucket.

    The open last bucket is taken to span up to twice its lower bound.
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count == 0:
            continue
        if seen + count >= rank:
            lower = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            upper = LATENCY_BOUNDS_MS[i]
            if upper == float("inf"):
                upper = lower * 2
            fraction = (rank - seen) / count
            return lower + (upper - lower) * fraction
        seen += count
    return LATENCY_BOUNDS_MS[-2] * 2


__all__ = [
    "TOKEN_COLUMNS",
    "TOTAL_PERIOD_START",
    "RollupDelta",
    "RollupKey",
    "SpendDelta",
    "SpendKey",
    "SpendRow",
    "bucket_sums",
    "current_spend",
    "fold_rollups",
    "fold_spend",
    "hour_of",
    "latency_bucket",
    "load_spend_totals",
    "percentile_ms",
    "period_start",
    "upsert_rollups",
    "upsert_spend",
]
