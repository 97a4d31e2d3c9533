"""Usage reports for the admin API and the CLI: who may see what, and the shapes they get.

Admins see all usage. A member sees only usage of their own keys: their user id is forced into every
filter, asking for another user's is refused, and another user's record is "not found".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.accounting import reporting
from isthmus.accounting.prices import PriceBook
from isthmus.accounting.reporting import Bucket, ExportFormat, GroupBy, GroupRef, Totals, UsageFilters
from isthmus.admin.schemas.usage import (
    METRICS,
    AttemptOut,
    BreakdownItemOut,
    BreakdownOut,
    GroupOut,
    RecordDetailOut,
    RecordPageOut,
    RequestLogOut,
    SeriesOut,
    TimeseriesOut,
    UnknownPricesOut,
    UnpricedModelOut,
    UnpricedUsageOut,
    UsageRecordOut,
)
from isthmus.admin.services import Actor
from isthmus.admin.services.common import require_admin
from isthmus.admin.validation import AdminValidationError
from isthmus.crypto import SecretBox
from isthmus.errors import NotFoundError, PermissionDeniedError
from isthmus.store.snapshot import load_snapshot_rows

DEFAULT_SPAN = timedelta(hours=24)


def scoped(actor: Actor, filters: UsageFilters) -> UsageFilters:
    """The filters a caller may use: a member's own user id is forced in."""
    if actor.is_admin:
        return filters
    if actor.user_id is None or (filters.user_id is not None and filters.user_id != actor.user_id):
        raise PermissionDeniedError("members see only their own usage", code="admin_only")
    filters.user_id = actor.user_id
    return filters


def time_range(
    since: datetime | None, until: datetime | None, span: timedelta = DEFAULT_SPAN
) -> tuple[datetime, datetime]:
    start, end = reporting.default_range(since, until, span)
    if start >= end:
        raise AdminValidationError("'from' must be before 'to'", param="query.from")
    return start, end


def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise AdminValidationError(f"unknown time zone {name!r}", param="query.tz") from None


def chosen_metrics(metrics: Sequence[str] | None) -> list[str]:
    if not metrics:
        return list(METRICS)
    names = [m.strip() for item in metrics for m in item.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise AdminValidationError(
            f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}", param="query.metric"
        )
    return names


def _pick(totals: Totals, metrics: Sequence[str]) -> dict[str, Any]:
    values = totals.metrics()
    return {name: values[name] for name in metrics}


def _group(ref: GroupRef) -> GroupOut | None:
    if ref.kind is None:
        return None
    return GroupOut(kind=ref.kind, id=ref.id, name=ref.name)


async def timeseries(
    session: AsyncSession,
    actor: Actor,
    *,
    since: datetime | None,
    until: datetime | None,
    bucket: Bucket,
    group_by: GroupBy | None,
    filters: UsageFilters,
    metrics: Sequence[str] | None = None,
    tz: str = "UTC",
) -> TimeseriesOut:
    start, end = time_range(since, until)
    names = chosen_metrics(metrics)
    series = await reporting.timeseries(
        session,
        since=start,
        until=end,
        bucket=bucket,
        group_by=group_by,
        filters=scoped(actor, filters),
        tz=zone(tz),
    )
    return TimeseriesOut(
        since=start,
        until=end,
        bucket=bucket,
        tz=tz,
        group_by=group_by,
        metrics=names,
        series=[
            SeriesOut(
                group=_group(s.group),
                points=[{"t": p.start, **_pick(p.totals, names)} for p in s.points],
            )
            for s in series
        ],
    )


async def breakdown(
    session: AsyncSession,
    actor: Actor,
    *,
    since: datetime | None,
    until: datetime | None,
    by: GroupBy,
    filters: UsageFilters,
    metrics: Sequence[str] | None = None,
) -> BreakdownOut:
    start, end = time_range(since, until)
    names = chosen_metrics(metrics)
    scope = scoped(actor, filters)
    items = await reporting.breakdown(session, since=start, until=end, by=by, filters=scope)
    total = Totals()
    for item in items:
        total.add(item.totals)
    return BreakdownOut(
        since=start,
        until=end,
        by=by,
        items=[
            BreakdownItemOut(
                group=GroupOut(kind=by, id=i.group.id, name=i.group.name), metrics=_pick(i.totals, names)
            )
            for i in items
        ],
        total=_pick(total, names),
    )


async def list_records(
    session: AsyncSession,
    actor: Actor,
    *,
    since: datetime | None,
    until: datetime | None,
    filters: UsageFilters,
    limit: int,
    cursor: str | None,
) -> RecordPageOut:
    try:
        page = await reporting.list_records(
            session, filters=scoped(actor, filters), since=since, until=until, limit=limit, cursor=cursor
        )
    except reporting.InvalidCursor as exc:
        raise AdminValidationError(str(exc), param="query.cursor") from None
    return RecordPageOut(
        items=[UsageRecordOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor
    )


async def get_record(session: AsyncSession, actor: Actor, request_id: str) -> RecordDetailOut:
    detail = await reporting.get_record(session, request_id)
    if detail is None or (not actor.is_admin and detail.record.user_id != actor.user_id):
        raise NotFoundError(f"no usage record {request_id!r}", code="not_found")
    return RecordDetailOut(
        record=UsageRecordOut.model_validate(detail.record),
        attempts=[AttemptOut.model_validate(a) for a in detail.attempts],
        log=RequestLogOut.model_validate(detail.log) if detail.log is not None else None,
    )


def export_stream(
    open_session: Callable[[], AbstractAsyncContextManager[AsyncSession]],
    actor: Actor,
    fmt: ExportFormat,
    *,
    since: datetime | None,
    until: datetime | None,
    filters: UsageFilters,
    chunk_size: int = 1000,
) -> AsyncIterator[bytes]:
    """The export as encoded pieces (see ``reporting.export_chunks``), read in its own session.

    Access is checked here, before anything is streamed: a refusal is an error answer, not a
    response cut short.
    """
    scope = scoped(actor, filters)

    async def pieces() -> AsyncIterator[bytes]:
        async with open_session() as session:
            async for piece in reporting.export_chunks(
                session, fmt, filters=scope, since=since, until=until, chunk_size=chunk_size
            ):
                yield piece

    return pieces()


async def unknown_prices(
    session: AsyncSession,
    actor: Actor,
    box: SecretBox,
    *,
    since: datetime | None,
    until: datetime | None,
    span: timedelta = timedelta(days=7),
) -> UnknownPricesOut:
    """Configured models without a price now, and traffic billed at 0 for want of one (admins only)."""
    require_admin(actor, "see unknown prices")
    start, end = time_range(since, until, span)
    rows = await load_snapshot_rows(session, box)
    configured = PriceBook.from_snapshot(rows).unknown_models()  # as priced now, whatever the range
    used = await reporting.unpriced_usage(session, since=start, until=end)
    return UnknownPricesOut(
        configured=[
            UnpricedModelOut(model=m, upstream_models=list(u)) for m, u in sorted(configured.items())
        ],
        used=[UnpricedUsageOut.model_validate(u) for u in used],
    )


__all__ = [
    "breakdown",
    "chosen_metrics",
    "export_stream",
    "get_record",
    "list_records",
    "scoped",
    "time_range",
    "timeseries",
    "unknown_prices",
    "zone",
]
