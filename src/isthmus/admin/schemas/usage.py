"""``/usage``: usage reports, records with their traces and logs, unknown prices.

Money is a decimal string (``"0.001234500000"``), never a float, so sums stay exact on the client too.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from isthmus.accounting.rollups import TOKEN_COLUMNS
from isthmus.admin.schemas.common import Out

METRICS: tuple[str, ...] = (
    "requests",
    "errors",
    *TOKEN_COLUMNS,
    "total_tokens",
    "list_cost",
    "actual_cost",
    "latency_avg_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "ttft_avg_ms",
)


class GroupOut(Out):
    kind: Literal["model", "key", "user", "team", "provider"]
    id: int | None = Field(description="the entity's id; null for a model, or for traffic without one")
    name: str | None = Field(description="current name; a deleted key or provider keeps its last name")


class SeriesOut(Out):
    group: GroupOut | None = Field(description="null when the series is not grouped")
    points: list[dict[str, Any]] = Field(
        description="one object per bucket with traffic, in time order: `t` (bucket start, UTC) and the "
        "chosen metrics (all by default): " + ", ".join(METRICS)
    )


class TimeseriesOut(Out):
    since: datetime = Field(serialization_alias="from")
    until: datetime = Field(serialization_alias="to")
    bucket: Literal["hour", "day"]
    tz: str
    group_by: str | None
    metrics: list[str]
    series: list[SeriesOut]


class BreakdownItemOut(Out):
    group: GroupOut
    metrics: dict[str, Any]


class BreakdownOut(Out):
    since: datetime = Field(serialization_alias="from")
    until: datetime = Field(serialization_alias="to")
    by: str
    items: list[BreakdownItemOut]
    total: dict[str, Any]


class UsageRecordOut(Out):
    request_id: str
    started_at: datetime
    status: str
    http_status: int
    key_id: int | None
    key_name: str | None
    user_id: int | None
    team_id: int | None
    model_requested: str | None
    upstream_model: str | None
    provider_id: int | None
    provider_name: str | None
    provider_key_id: int | None
    provider_key_name: str | None
    protocol_in: str
    protocol_out: str | None
    stream: bool
    error: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    reasoning_tokens: int
    list_cost: Decimal
    actual_cost: Decimal
    prices: dict[str, Any] | None = Field(description="the rates billed, with the price's ref and source")
    latency_ms: int
    ttft_ms: int | None
    attempts: int
    estimated: bool = Field(description="usage counted by the gateway; the upstream reported none")


class RecordPageOut(Out):
    items: list[UsageRecordOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null at the end")


class AttemptOut(Out):
    attempt_no: int
    candidate: str
    provider_id: int | None
    provider_key_id: int | None
    upstream_model: str | None
    protocol: str | None
    status: str = Field(description="ok | failed | skipped")
    http_status: int | None
    latency_ms: int
    error: str | None
    skipped: str | None = Field(description="why the candidate was not tried")


class RequestLogOut(Out):
    level: str
    created_at: datetime
    request_headers: dict[str, Any] | None
    response_headers: dict[str, Any] | None
    request_body: str | None
    response_body: str | None


class RecordDetailOut(Out):
    record: UsageRecordOut
    attempts: list[AttemptOut]
    log: RequestLogOut | None = Field(description="null at log level base, or after the log retention")


class UnpricedModelOut(Out):
    model: str = Field(description="a public model with no price in force for some route")
    upstream_models: list[str] = Field(description="its upstream models that have no built-in price either")


class UnpricedUsageOut(Out):
    model: str | None
    upstream_model: str | None
    provider_name: str | None
    requests: int
    tokens: int
    last_seen: datetime


class UnknownPricesOut(Out):
    configured: list[UnpricedModelOut] = Field(description="configured models that would bill at 0 now")
    used: list[UnpricedUsageOut] = Field(description="traffic billed at 0 for want of a price, in the range")
