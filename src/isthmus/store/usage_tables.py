"""Usage history tables: records, attempt traces, request logs, hourly rollups and spend totals.

Written only by the usage writer (in batches) and the retention task; read by reporting and at start-up
(spend totals seed the budget counters). None of them references an entity with a foreign key:
deleting a key, user, team or provider must never delete or block history, so rows keep ids *and* the
names they had.

Money columns hold exact decimals: ``NUMERIC(30, 12)`` on PostgreSQL, and on SQLite (which has no exact
decimal type, its NUMERIC is a float) an integer count of 1e-12 USD, so sums and the
``usd = usd + excluded.usd`` upserts stay exact there too. SQLite's 64-bit integers cap one value at
about 9.2 million USD.

Rollup and spend rows are keyed by non-null columns (0 / '' stand for "none") because NULLs never
match in a unique key, and an upsert must find the row it adds to.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from isthmus.store.tables import Base, BigId, UTCDateTime, _check_in, utcnow

MONEY_SCALE = 12
_MONEY_UNIT = Decimal(1).scaleb(-MONEY_SCALE)
_MONEY_FACTOR = 10**MONEY_SCALE

USAGE_STATUSES = (
    "ok",
    "incomplete",
    "client_error",
    "upstream_error",
    "cut",
    "disconnected",
    "refused",
    "internal_error",
)
LOG_LEVELS = ("base", "headers", "full")
SPEND_ENTITIES = ("key", "user", "team")
SPEND_PERIODS = ("daily", "monthly", "total")

# Upper bounds (ms) of the latency histogram kept per rollup row; the last bucket is open-ended.
# Roughly logarithmic: fine where chat latencies cluster, coarse for long streams.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    50,
    100,
    200,
    350,
    500,
    750,
    1_000,
    1_500,
    2_000,
    3_000,
    5_000,
    7_500,
    10_000,
    15_000,
    20_000,
    30_000,
    60_000,
    120_000,
    float("inf"),
)
LATENCY_BUCKET_COLUMNS: tuple[str, ...] = tuple(f"lat_b{i:02d}" for i in range(len(LATENCY_BOUNDS_MS)))


class Money(TypeDecorator[Decimal]):
    """An exact USD amount (see the module docstring for the SQLite representation)."""

    impl = Numeric(30, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(30, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = Decimal(value)
        if dialect.name == "sqlite":
            return int((amount * _MONEY_FACTOR).to_integral_value(ROUND_HALF_EVEN))
        return amount.quantize(_MONEY_UNIT, ROUND_HALF_EVEN)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_SCALE)
        return Decimal(value)


class UsageRecordRow(Base):
    """One request, whatever happened to it (see ``isthmus.accounting.records.UsageRecord``)."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_started_at_request_id", "started_at", "request_id"),
        Index("ix_usage_records_key_id_started_at", "key_id", "started_at"),
        Index("ix_usage_records_user_id_started_at", "user_id", "started_at"),
        _check_in("status", USAGE_STATUSES, "status"),
    )

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[int | None] = mapped_column(BigId)
    key_name: Mapped[str | None] = mapped_column(String(128))
    user_id: Mapped[int | None] = mapped_column(BigId)
    team_id: Mapped[int | None] = mapped_column(BigId)
    model_requested: Mapped[str | None] = mapped_column(String(256))
    upstream_model: Mapped[str | None] = mapped_column(String(256))
    provider_id: Mapped[int | None] = mapped_column(BigId)
    provider_name: Mapped[str | None] = mapped_column(String(128))
    provider_key_id: Mapped[int | None] = mapped_column(BigId)
    provider_key_name: Mapped[str | None] = mapped_column(String(128))
    protocol_in: Mapped[str] = mapped_column(String(32))
    protocol_out: Mapped[str | None] = mapped_column(String(32))
    stream: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_5m_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_1h_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    list_cost: Mapped[Decimal] = mapped_column(Money())
    actual_cost: Mapped[Decimal] = mapped_column(Money())
    prices: Mapped[dict[str, Any] | None]
    latency_ms: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    estimated: Mapped[bool] = mapped_column(Boolean)


class UsageAttemptRow(Base):
    """One candidate of a request's trace: tried (``ok``/``failed``) or ``skipped`` with the reason."""

    __tablename__ = "usage_attempts"
    __table_args__ = (PrimaryKeyConstraint("request_id", "attempt_no"),)

    request_id: Mapped[str] = mapped_column(String(128))
    attempt_no: Mapped[int] = mapped_column(Integer)
    candidate: Mapped[str] = mapped_column(String(512))
    provider_id: Mapped[int | None] = mapped_column(BigId)
    provider_key_id: Mapped[int | None] = mapped_column(BigId)
    upstream_model: Mapped[str | None] = mapped_column(String(256))
    protocol: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    skipped: Mapped[str | None] = mapped_column(String(256))


class RequestLogRow(Base):
    """Headers and bodies of one request, redacted before they were queued; shorter retention."""

    __tablename__ = "request_logs"
    __table_args__ = (_check_in("level", LOG_LEVELS, "level"),)

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    level: Mapped[str] = mapped_column(String(8))
    request_headers: Mapped[dict[str, Any] | None]
    response_headers: Mapped[dict[str, Any] | None]
    request_body: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(index=True)


def _counter(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, server_default="0")


# A Core table: its histogram columns are generated from LATENCY_BOUNDS_MS, and only bulk upserts and
# aggregate reads touch it.
usage_hourly = Table(
    "usage_hourly",
    Base.metadata,
    Column("hour", UTCDateTime(), nullable=False),
    Column("key_id", BigId, nullable=False),
    Column("user_id", BigId, nullable=False),
    Column("team_id", BigId, nullable=False),
    Column("model", String(256), nullable=False),
    Column("provider_id", BigId, nullable=False),
    _counter("requests"),
    _counter("errors"),
    _counter("input_tokens"),
    _counter("output_tokens"),
    _counter("cache_read_tokens"),
    _counter("cache_write_5m_tokens"),
    _counter("cache_write_1h_tokens"),
    _counter("reasoning_tokens"),
    Column("list_cost", Money(), nullable=False, server_default="0"),
    Column("actual_cost", Money(), nullable=False, server_default="0"),
    _counter("latency_ms_sum"),
    _counter("ttft_ms_sum"),
    _counter("ttft_count"),
    *(_counter(name) for name in LATENCY_BUCKET_COLUMNS),
    PrimaryKeyConstraint("hour", "key_id", "user_id", "team_id", "model", "provider_id"),
)

ROLLUP_KEY_COLUMNS = ("hour", "key_id", "user_id", "team_id", "model", "provider_id")


class SpendTotalRow(Base):
    """Spend per entity and period, added to in folded batches (never one update per request)."""

    __tablename__ = "spend_totals"
    __table_args__ = (
        PrimaryKeyConstraint("entity_type", "entity_id", "period", "period_start"),
        _check_in("entity_type", SPEND_ENTITIES, "entity_type"),
        _check_in("period", SPEND_PERIODS, "period"),
    )

    entity_type: Mapped[str] = mapped_column(String(8))
    entity_id: Mapped[int] = mapped_column(BigId)
    period: Mapped[str] = mapped_column(String(8))
    period_start: Mapped[datetime]
    usd: Mapped[Decimal] = mapped_column(Money(), server_default="0")
    tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.current_timestamp())


__all__ = [
    "LATENCY_BOUNDS_MS",
    "LATENCY_BUCKET_COLUMNS",
    "LOG_LEVELS",
    "MONEY_SCALE",
    "ROLLUP_KEY_COLUMNS",
    "SPEND_ENTITIES",
    "SPEND_PERIODS",
    "USAGE_STATUSES",
    "Money",
    "RequestLogRow",
    "SpendTotalRow",
    "UsageAttemptRow",
    "UsageRecordRow",
    "usage_hourly",
]
