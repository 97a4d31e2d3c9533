"""Reading usage back: time series and breakdowns from the hourly rollups, record listings with keyset
pagination, one record with its trace and log, streamed exports (CSV or NDJSON), and models used
without a price.

Time series and breakdowns never touch raw records: they sum ``usage_hourly`` rows, so their time
resolution is the hour (``since`` is rounded down to its hour; an hour is in range when it starts
before ``until``). Latency percentiles come from the summed histogram buckets (see
``isthmus.accounting.rollups.percentile_ms``), so they are estimates within a bucket's width.

Nothing here checks who may see what: the admin services force the caller's user id into
:class:`UsageFilters` for members.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.accounting.records import as_utc
from isthmus.accounting.rollups import TOKEN_COLUMNS, bucket_sums, hour_of, percentile_ms
from isthmus.store.tables import GatewayKey, Provider, Team, User
from isthmus.store.usage_tables import (
    LATENCY_BUCKET_COLUMNS,
    RequestLogRow,
    UsageAttemptRow,
    UsageRecordRow,
    usage_hourly,
)

GroupBy = Literal["model", "key", "user", "team", "provider"]
Bucket = Literal["hour", "day"]
ExportFormat = Literal["csv", "json"]
GROUPS: tuple[GroupBy, ...] = ("model", "key", "user", "team", "provider")

_ZERO = Decimal(0)
_SUM_COLUMNS = (
    "requests",
    "errors",
    *TOKEN_COLUMNS,
    "list_cost",
    "actual_cost",
    "latency_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
)
_GROUP_COLUMN = {
    "model": usage_hourly.c.model,
    "key": usage_hourly.c.key_id,
    "user": usage_hourly.c.user_id,
    "team": usage_hourly.c.team_id,
    "provider": usage_hourly.c.provider_id,
}

# The columns of an export, in order: the fields of a usage record.
EXPORT_FIELDS: tuple[str, ...] = tuple(c.name for c in UsageRecordRow.__table__.columns)


@dataclass(slots=True)
class UsageFilters:
    model: str | None = None
    key_id: int | None = None
    user_id: int | None = None
    team_id: int | None = None
    provider_id: int | None = None
    status: str | None = None  # records only: rollups do not keep statuses apart


@dataclass(slots=True)
class Totals:
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
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKET_COLUMNS))

    def add(self, other: Totals) -> None:
        for name in _SUM_COLUMNS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )

    def metrics(self) -> dict[str, Any]:
        """Sums plus derived values (averages and percentiles in ms; None without requests)."""
        out: dict[str, Any] = {
            name: getattr(self, name) for name in _SUM_COLUMNS if not name.startswith("ttft")
        }
        del out["latency_ms_sum"]
        out["total_tokens"] = self.total_tokens
        out["latency_avg_ms"] = self.latency_ms_sum / self.requests if self.requests else None
        out["latency_p50_ms"] = percentile_ms(self.buckets, 0.50)
        out["latency_p95_ms"] = percentile_ms(self.buckets, 0.95)
        out["ttft_avg_ms"] = self.ttft_ms_sum / self.ttft_count if self.ttft_count else None
        return out


def _totals_from_row(row: Any) -> Totals:
    totals = Totals(buckets=[int(getattr(row, name) or 0) for name in LATENCY_BUCKET_COLUMNS])
    for name in _SUM_COLUMNS:
        value = getattr(row, name) or 0
        setattr(totals, name, Decimal(value) if name.endswith("_cost") else int(value))
    return totals


@dataclass(frozen=True, slots=True)
class GroupRef:
    """One group of a breakdown: a model name, or an entity id with its name when known."""

    kind: GroupBy | None
    id: int | None
    name: str | None


@dataclass(slots=True)
class SeriesPoint:
    start: datetime
    totals: Totals


@dataclass(slots=True)
class Series:
    group: GroupRef
    points: list[SeriesPoint]


@dataclass(slots=True)
class GroupTotals:
    group: GroupRef
    totals: Totals


def _sums() -> list[Any]:
    return [
        func.coalesce(func.sum(usage_hourly.c[name]), 0).label(name) for name in _SUM_COLUMNS
    ] + bucket_sums()


def _rollup_conditions(since: datetime, until: datetime, filters: UsageFilters) -> list[ColumnElement[bool]]:
    c = usage_hourly.c
    conditions: list[ColumnElement[bool]] = [c.hour >= hour_of(since), c.hour < as_utc(until)]
    if filters.model is not None:
        conditions.append(c.model == filters.model)
    for name in ("key_id", "user_id", "team_id", "provider_id"):
        value = getattr(filters, name)
        if value is not None:
            conditions.append(c[name] == value)
    return conditions


def bucket_start(hour: datetime, bucket: Bucket, tz: tzinfo) -> datetime:
    if bucket == "hour":
        return as_utc(hour)
    local = as_utc(hour).astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    return local.replace(tzinfo=tz).astimezone(UTC)


async def timeseries(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime,
    bucket: Bucket = "hour",
    group_by: GroupBy | None = None,
    filters: UsageFilters | None = None,
    tz: tzinfo = UTC,
) -> list[Series]:
    """Totals per bucket (hour, or calendar day in ``tz``), per group when ``group_by`` is set.

    Buckets without traffic are left out; each series is in time order.
    """
    filters = filters or UsageFilters()
    group_col = _GROUP_COLUMN[group_by] if group_by else None
    columns: list[Any] = [usage_hourly.c.hour]
    if group_col is not None:
        columns.append(group_col.label("grp"))
    query = select(*columns, *_sums()).where(*_rollup_conditions(since, until, filters))
    query = query.group_by(usage_hourly.c.hour, *([group_col] if group_col is not None else []))
    rows = (await session.execute(query)).all()
    by_group: dict[Any, dict[datetime, Totals]] = {}
    for row in rows:
        key = row.grp if group_col is not None else None
        start = bucket_start(row.hour, bucket, tz)
        points = by_group.setdefault(key, {})
        current = points.get(start)
        totals = _totals_from_row(row)
        if current is None:
            points[start] = totals
        else:
            current.add(totals)
    refs = await _group_refs(session, group_by, list(by_group))
    series = [
        Series(refs[key], [SeriesPoint(start, totals) for start, totals in sorted(points.items())])
        for key, points in by_group.items()
    ]
    series.sort(key=lambda s: -sum((p.totals.actual_cost for p in s.points), _ZERO))
    return series


async def breakdown(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime,
    by: GroupBy,
    filters: UsageFilters | None = None,
) -> list[GroupTotals]:
    """Totals per group over the range, most expensive first."""
    filters = filters or UsageFilters()
    group_col = _GROUP_COLUMN[by]
    query = (
        select(group_col.label("grp"), *_sums())
        .where(*_rollup_conditions(since, until, filters))
        .group_by(group_col)
    )
    rows = (await session.execute(query)).all()
    refs = await _group_refs(session, by, [row.grp for row in rows])
    items = [GroupTotals(refs[row.grp], _totals_from_row(row)) for row in rows]
    items.sort(key=lambda g: (-g.totals.actual_cost, -g.totals.requests, str(g.group.name)))
    return items


async def overall(
    session: AsyncSession, *, since: datetime, until: datetime, filters: UsageFilters | None = None
) -> Totals:
    row = (
        await session.execute(
            select(*_sums()).where(*_rollup_conditions(since, until, filters or UsageFilters()))
        )
    ).one()
    return _totals_from_row(row)


async def _group_refs(
    session: AsyncSession, kind: GroupBy | None, keys: Sequence[Any]
) -> dict[Any, GroupRef]:
    """Names for the groups: models are their own name; entities are looked up (0 means "none"), and a
    deleted key or provider keeps the name its latest record carries."""
    if kind is None:
        return {k: GroupRef(None, None, None) for k in keys}
    if kind == "model":
        return {k: GroupRef("model", None, k or None) for k in keys}
    ids = [int(k) for k in keys if k]
    names: dict[int, str] = {}
    if ids:
        entity: Any = {"key": GatewayKey, "user": User, "team": Team, "provider": Provider}[kind]
        name_col = entity.username if kind == "user" else entity.name
        for ident, name in (
            await session.execute(select(entity.id, name_col).where(entity.id.in_(ids)))
        ).all():
            names[int(ident)] = str(name)
        missing = [i for i in ids if i not in names]
        if missing and kind in ("key", "provider"):
            names.update(await _names_from_records(session, kind, missing))
    return {k: GroupRef(kind, int(k) if k else None, names.get(int(k)) if k else None) for k in keys}


async def _names_from_records(session: AsyncSession, kind: str, ids: list[int]) -> dict[int, str]:
    id_col = UsageRecordRow.key_id if kind == "key" else UsageRecordRow.provider_id
    name_col = UsageRecordRow.key_name if kind == "key" else UsageRecordRow.provider_name
    query = select(id_col, func.max(name_col)).where(id_col.in_(ids), name_col.is_not(None)).group_by(id_col)
    return {
        int(i): str(n) for i, n in (await session.execute(query)).all() if i is not None and n is not None
    }


# --- Records ------------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    pass


def encode_cursor(started_at: datetime, request_id: str) -> str:
    raw = f"{as_utc(started_at).isoformat()}|{request_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, request_id = raw.partition("|")
        if not request_id:
            raise ValueError("no request id")
        return as_utc(datetime.fromisoformat(when)), request_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("the cursor is not one this API returned") from exc


def _record_conditions(
    filters: UsageFilters, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    r = UsageRecordRow
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(r.started_at >= as_utc(since))
    if until is not None:
        conditions.append(r.started_at < as_utc(until))
    if filters.model is not None:
        conditions.append(r.model_requested == filters.model)
    if filters.key_id is not None:
        conditions.append(r.key_id == filters.key_id)
    if filters.user_id is not None:
        conditions.append(r.user_id == filters.user_id)
    if filters.team_id is not None:
        conditions.append(r.team_id == filters.team_id)
    if filters.provider_id is not None:
        conditions.append(r.provider_id == filters.provider_id)
    if filters.status is not None:
        conditions.append(r.status == filters.status)
    return conditions


@dataclass(slots=True)
class RecordPage:
    items: list[UsageRecordRow]
    next_cursor: str | None


async def list_records(
    session: AsyncSession,
    *,
    filters: UsageFilters | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> RecordPage:
    """Newest first, ``limit`` at a time; pass ``next_cursor`` back for the next page."""
    r = UsageRecordRow
    conditions = _record_conditions(filters or UsageFilters(), since, until)
    if cursor is not None:
        at, request_id = decode_cursor(cursor)
        conditions.append(or_(r.started_at < at, and_(r.started_at == at, r.request_id < request_id)))
    query = select(r).where(*conditions).order_by(r.started_at.desc(), r.request_id.desc()).limit(limit + 1)
    rows = list((await session.scalars(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].started_at, rows[-1].request_id) if more and rows else None
    return RecordPage(rows, next_cursor)


@dataclass(slots=True)
class RecordDetail:
    record: UsageRecordRow
    attempts: list[UsageAttemptRow]
    log: RequestLogRow | None


async def get_record(session: AsyncSession, request_id: str) -> RecordDetail | None:
    record = await session.get(UsageRecordRow, request_id)
    if record is None:
        return None
    attempts = (
        await session.scalars(
            select(UsageAttemptRow)
            .where(UsageAttemptRow.request_id == request_id)
            .order_by(UsageAttemptRow.attempt_no)
        )
    ).all()
    log = await session.get(RequestLogRow, request_id)
    return RecordDetail(record, list(attempts), log)


# --- Export ---------------------------------------------------------------------------------------


def record_dict(row: UsageRecordRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in EXPORT_FIELDS}


async def iter_record_chunks(
    session: AsyncSession,
    *,
    filters: UsageFilters | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    chunk_size: int = 1000,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching record, oldest first, ``chunk_size`` rows per query (keyset on
    ``(started_at, request_id)``), so memory stays flat whatever the range."""
    r = UsageRecordRow
    base = _record_conditions(filters or UsageFilters(), since, until)
    after: tuple[datetime, str] | None = None
    while True:
        conditions = list(base)
        if after is not None:
            at, request_id = after
            conditions.append(or_(r.started_at > at, and_(r.started_at == at, r.request_id > request_id)))
        query = select(r).where(*conditions).order_by(r.started_at, r.request_id).limit(chunk_size)
        rows = list((await session.scalars(query)).all())
        if not rows:
            return
        after = (rows[-1].started_at, rows[-1].request_id)
        yield [record_dict(row) for row in rows]
        # Rows already yielded are not needed again; keep the identity map from growing.
        session.expunge_all()
        if len(rows) < chunk_size:
            return


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return value


def ndjson_lines(rows: Iterable[dict[str, Any]]) -> bytes:
    """One JSON object per record per line; money as decimal strings, times as ISO 8601."""
    return b"".join(orjson.dumps({k: _plain(v) for k, v in row.items()}) + b"\n" for row in rows)


def csv_header() -> bytes:
    return _csv_line(EXPORT_FIELDS)


def csv_lines(rows: Iterable[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([_csv_cell(row[name]) for name in EXPORT_FIELDS])
    return out.getvalue().encode()


def _csv_line(cells: Iterable[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(list(cells))
    return out.getvalue().encode()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(_plain(value))


async def export_chunks(
    session: AsyncSession,
    fmt: ExportFormat,
    *,
    filters: UsageFilters | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    chunk_size: int = 1000,
) -> AsyncIterator[bytes]:
    """The export as encoded pieces: CSV with a header row, or NDJSON."""
    if fmt == "csv":
        yield csv_header()
    encode = csv_lines if fmt == "csv" else ndjson_lines
    async for rows in iter_record_chunks(
        session, filters=filters, since=since, until=until, chunk_size=chunk_size
    ):
        yield encode(rows)


# --- Unknown prices -------------------------------------------------------------------------------


@dataclass(slots=True)
class UnpricedUsage:
    model: str | None
    upstream_model: str | None
    provider_name: str | None
    requests: int
    tokens: int
    last_seen: datetime


async def unpriced_usage(
    session: AsyncSession, *, since: datetime, until: datetime | None = None, user_id: int | None = None
) -> list[UnpricedUsage]:
    """Models that were billed at 0 because no price was known (``prices`` is NULL), with traffic."""
    r = UsageRecordRow
    tokens = (
        r.input_tokens
        + r.output_tokens
        + r.cache_read_tokens
        + r.cache_write_5m_tokens
        + r.cache_write_1h_tokens
    )
    conditions: list[ColumnElement[bool]] = [r.started_at >= as_utc(since), r.prices.is_(None), tokens > 0]
    if until is not None:
        conditions.append(r.started_at < as_utc(until))
    if user_id is not None:
        conditions.append(r.user_id == user_id)
    query = (
        select(
            r.model_requested,
            r.upstream_model,
            r.provider_name,
            func.count().label("requests"),
            func.sum(tokens).label("tokens"),
            func.max(r.started_at).label("last_seen"),
        )
        .where(*conditions)
        .group_by(r.model_requested, r.upstream_model, r.provider_name)
        .order_by(func.count().desc())
    )
    return [
        UnpricedUsage(row[0], row[1], row[2], int(row.requests), int(row.tokens or 0), as_utc(row.last_seen))
        for row in (await session.execute(query)).all()
    ]


def default_range(
    since: datetime | None, until: datetime | None, span: timedelta
) -> tuple[datetime, datetime]:
    """``until`` defaults to now, ``since`` to ``span`` before it."""
    end = as_utc(until) if until is not None else datetime.now(UTC)
    start = as_utc(since) if since is not None else end - span
    return start, end


__all__ = [
    "EXPORT_FIELDS",
    "GROUPS",
    "Bucket",
    "ExportFormat",
    "GroupBy",
    "GroupRef",
    "GroupTotals",
    "InvalidCursor",
    "RecordDetail",
    "RecordPage",
    "Series",
    "SeriesPoint",
    "Totals",
    "UnpricedUsage",
    "UsageFilters",
    "breakdown",
    "csv_header",
    "csv_lines",
    "decode_cursor",
    "default_range",
    "encode_cursor",
    "export_chunks",
    "get_record",
    "iter_record_chunks",
    "list_records",
    "ndjson_lines",
    "overall",
    "timeseries",
    "unpriced_usage",
]
