"""``/usage``: time series, breakdowns, records with their traces, exports, unknown prices.

Times are ISO 8601 (no zone means UTC); ``from`` is inclusive and ``to`` exclusive. Members see only
their own keys' usage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from isthmus.accounting.records import UsageStatus, as_utc
from isthmus.accounting.reporting import Bucket, ExportFormat, GroupBy, UsageFilters
from isthmus.admin.deps import CurrentPrincipal, Services
from isthmus.admin.schemas.common import MAX_LIMIT
from isthmus.admin.schemas.usage import (
    BreakdownOut,
    RecordDetailOut,
    RecordPageOut,
    TimeseriesOut,
    UnknownPricesOut,
)
from isthmus.admin.services import usage

router = APIRouter(prefix="/usage", tags=["usage"])


From = Annotated[
    datetime | None, Query(alias="from", description="start, inclusive (default: 24 h before `to`)")
]
To = Annotated[datetime | None, Query(alias="to", description="end, exclusive (default: now)")]
Metric = Annotated[
    list[str] | None,
    Query(description="metrics to include (repeat, or comma-separate); all by default"),
]


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def _filters(
    model: str | None,
    key_id: int | None,
    user_id: int | None,
    team_id: int | None,
    provider_id: int | None,
    status: UsageStatus | None = None,
) -> UsageFilters:
    return UsageFilters(
        model=model,
        key_id=key_id,
        user_id=user_id,
        team_id=team_id,
        provider_id=provider_id,
        status=status.value if status is not None else None,
    )


@router.get("/timeseries", response_model=TimeseriesOut)
async def timeseries(
    principal: CurrentPrincipal,
    services: Services,
    since: From = None,
    until: To = None,
    bucket: Bucket = "hour",
    group_by: GroupBy | None = None,
    metric: Metric = None,
    tz: Annotated[str, Query(description="IANA time zone of day buckets")] = "UTC",
    model: str | None = None,
    key_id: int | None = None,
    user_id: int | None = None,
    team_id: int | None = None,
    provider_id: int | None = None,
) -> TimeseriesOut:
    """Requests, tokens, cost (list and actual), errors and latency (average, p50, p95) per hour or day,
    per group when ``group_by`` is set. Read from hourly rollups: ``from`` is rounded down to its hour."""
    async with services.reading() as session:
        return await usage.timeseries(
            session,
            principal.actor,
            since=_utc(since),
            until=_utc(until),
            bucket=bucket,
            group_by=group_by,
            filters=_filters(model, key_id, user_id, team_id, provider_id),
            metrics=metric,
            tz=tz,
        )


@router.get("/breakdown", response_model=BreakdownOut)
async def breakdown(
    principal: CurrentPrincipal,
    services: Services,
    by: GroupBy,
    since: From = None,
    until: To = None,
    metric: Metric = None,
    model: str | None = None,
    key_id: int | None = None,
    user_id: int | None = None,
    team_id: int | None = None,
    provider_id: int | None = None,
) -> BreakdownOut:
    """Totals per model, key, user, team or provider over the range, most expensive first."""
    async with services.reading() as session:
        return await usage.breakdown(
            session,
            principal.actor,
            since=_utc(since),
            until=_utc(until),
            by=by,
            filters=_filters(model, key_id, user_id, team_id, provider_id),
            metrics=metric,
        )


@router.get("/records", response_model=RecordPageOut)
async def list_records(
    principal: CurrentPrincipal,
    services: Services,
    since: Annotated[datetime | None, Query(alias="from")] = None,
    until: To = None,
    model: str | None = None,
    key_id: int | None = None,
    user_id: int | None = None,
    team_id: int | None = None,
    provider_id: int | None = None,
    status: UsageStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: str | None = None,
) -> RecordPageOut:
    """Usage records, newest first. Page with ``next_cursor``: stable while new records arrive."""
    async with services.reading() as session:
        return await usage.list_records(
            session,
            principal.actor,
            since=_utc(since),
            until=_utc(until),
            filters=_filters(model, key_id, user_id, team_id, provider_id, status),
            limit=limit,
            cursor=cursor,
        )


@router.get("/records/{request_id}", response_model=RecordDetailOut)
async def get_record(request_id: str, principal: CurrentPrincipal, services: Services) -> RecordDetailOut:
    """One record with its trace (every candidate, tried or skipped) and its request log, if kept."""
    async with services.reading() as session:
        return await usage.get_record(session, principal.actor, request_id)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
async def export(
    principal: CurrentPrincipal,
    services: Services,
    format: ExportFormat = "csv",
    since: Annotated[datetime | None, Query(alias="from")] = None,
    until: To = None,
    model: str | None = None,
    key_id: int | None = None,
    user_id: int | None = None,
    team_id: int | None = None,
    provider_id: int | None = None,
    status: UsageStatus | None = None,
) -> StreamingResponse:
    """Every matching record, oldest first, streamed (never loaded whole). ``csv``: a header row then
    one row per record. ``json``: NDJSON, one JSON object per record per line. Money is a decimal
    string; times are ISO 8601 UTC; ``prices`` is a JSON object (a JSON string in CSV)."""
    stream = usage.export_stream(
        services.reading,
        principal.actor,
        format,
        since=_utc(since),
        until=_utc(until),
        filters=_filters(model, key_id, user_id, team_id, provider_id, status),
    )
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    extension = "csv" if format == "csv" else "ndjson"
    headers = {"content-disposition": f'attachment; filename="usage.{extension}"'}
    return StreamingResponse(stream, media_type=media, headers=headers)


@router.get("/unknown-prices", response_model=UnknownPricesOut)
async def unknown_prices(
    principal: CurrentPrincipal,
    services: Services,
    since: Annotated[datetime | None, Query(alias="from", description="default: 7 days before `to`")] = None,
    until: To = None,
) -> UnknownPricesOut:
    """Models that cost 0 for want of a price: configured models with no price in force (nor a built-in
    one for some route), and traffic recorded without a price in the range. Admins only."""
    async with services.reading() as session:
        return await usage.unknown_prices(
            session, principal.actor, services.box, since=_utc(since), until=_utc(until)
        )
