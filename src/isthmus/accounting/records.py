"""What the relay hands the usage writer for one finished request: plain data, no I/O.

A :class:`RecordBundle` holds the usage record, the trace of attempts and (above the ``base`` log level)
the request log. Bundles go through the writer's queue and, when the database is down, through a JSON
lines spool file, so every field here must survive :meth:`RecordBundle.to_json` /
:meth:`RecordBundle.from_json` unchanged.

Money is ``Decimal`` end to end: costs are exact, never floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

ZERO = Decimal(0)


class UsageStatus(StrEnum):
    OK = "ok"  # completed normally
    INCOMPLETE = "incomplete"  # completed, cut short by max tokens or a content filter
    CLIENT_ERROR = "client_error"  # the caller's fault (4xx), from us or from the upstream
    UPSTREAM_ERROR = "upstream_error"  # every candidate failed
    CUT = "cut"  # the upstream broke a stream after it was committed
    DISCONNECTED = "disconnected"  # the client went away
    REFUSED = "refused"  # refused by a rate limit or a budget before any upstream was called
    INTERNAL_ERROR = "internal_error"  # the gateway itself failed (a bug), whatever the upstream did


# Statuses that count as errors in rollups: a disconnect is the client's choice, not a failure.
ERROR_STATUSES = frozenset(
    {
        UsageStatus.CLIENT_ERROR,
        UsageStatus.UPSTREAM_ERROR,
        UsageStatus.CUT,
        UsageStatus.REFUSED,
        UsageStatus.INTERNAL_ERROR,
    }
)


class LogLevel(StrEnum):
    BASE = "base"  # the usage record only
    HEADERS = "headers"  # + request and response headers
    FULL = "full"  # + request and response bodies, capped


@dataclass(slots=True)
class UsageRecord:
    """One row of ``usage_records``. Ids and names are both kept: history outlives deleted entities.

    ``prices`` is the snapshot of the rates billed (USD per million tokens, the per-request fee, the
    tier applied) plus the price row id and its source; ``None`` means no price was known (cost 0).
    """

    request_id: str
    started_at: datetime
    status: str
    http_status: int
    protocol_in: str
    # principal
    key_id: int | None = None
    key_name: str | None = None
    user_id: int | None = None
    team_id: int | None = None
    # what was asked and who served it
    model_requested: str | None = None
    upstream_model: str | None = None
    provider_id: int | None = None
    provider_name: str | None = None
    provider_key_id: int | None = None
    provider_key_name: str | None = None
    protocol_out: str | None = None
    stream: bool = False
    error: str | None = None
    # tokens
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    # cost
    list_cost: Decimal = ZERO
    actual_cost: Decimal = ZERO
    prices: dict[str, Any] | None = None
    # timing and bookkeeping
    latency_ms: int = 0
    ttft_ms: int | None = None
    attempts: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Every token billed (reasoning tokens are already inside ``output_tokens``)."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )

    @property
    def is_error(self) -> bool:
        return self.status in ERROR_STATUSES


@dataclass(slots=True)
class AttemptRecord:
    """One candidate of a request's trace, tried or skipped (``skipped`` says why)."""

    request_id: str
    attempt_no: int  # 1-based, in the order the relay considered the candidates
    candidate: str  # "provider/key:upstream-model"
    provider_id: int | None
    provider_key_id: int | None
    upstream_model: str | None
    protocol: str | None
    status: str  # "ok" | "failed" | "skipped"
    http_status: int | None = None
    latency_ms: int = 0
    error: str | None = None
    skipped: str | None = None


@dataclass(slots=True)
class RequestLogRecord:
    """Headers and bodies of one request, already redacted and capped (see ``request_logs``)."""

    request_id: str
    level: str
    created_at: datetime
    request_headers: dict[str, str] | None = None
    response_headers: dict[str, str] | None = None
    request_body: str | None = None
    response_body: str | None = None


@dataclass(slots=True)
class RecordBundle:
    usage: UsageRecord
    attempts: list[AttemptRecord] = field(default_factory=list)
    log: RequestLogRecord | None = None

    @property
    def request_id(self) -> str:
        return self.usage.request_id

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only: decimals as strings, times as ISO 8601 with zone."""
        return {
            "usage": _dump(self.usage),
            "attempts": [_dump(a) for a in self.attempts],
            "log": _dump(self.log) if self.log is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordBundle:
        usage = data["usage"]
        log = data.get("log")
        return cls(
            usage=UsageRecord(
                **{
                    **usage,
                    "started_at": _parse_time(usage["started_at"]),
                    "list_cost": Decimal(usage["list_cost"]),
                    "actual_cost": Decimal(usage["actual_cost"]),
                }
            ),
            attempts=[AttemptRecord(**a) for a in data.get("attempts") or ()],
            log=(
                RequestLogRecord(**{**log, "created_at": _parse_time(log["created_at"])})
                if log is not None
                else None
            ),
        )


def _dump(obj: UsageRecord | AttemptRecord | RequestLogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, datetime):
            value = as_utc(value).isoformat()
        out[f.name] = value
    return out


def _parse_time(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text))


def as_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:  # nearly every record's time: no conversion to make
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


__all__ = [
    "ERROR_STATUSES",
    "AttemptRecord",
    "LogLevel",
    "RecordBundle",
    "RequestLogRecord",
    "UsageRecord",
    "UsageStatus",
    "as_utc",
    "utc_from_timestamp",
]
