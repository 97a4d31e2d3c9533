"""Fixtures for accounting tests: a real Redis client on the throwaway server, a PostgreSQL that can be
stopped and started again, the usage API of a module's ``gateway``, and row builders."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from accounting.e2e_gateway import UsageApi
from isthmus.store.snapshot import ModelRow, PriceRow, PriceTierRow, RouteRow
from servers import ServerThread
from services import RestartablePostgres, started, wait_for_postgres


@pytest.fixture
async def redis_client(clean_redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(clean_redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def restartable_postgres() -> Iterator[RestartablePostgres]:
    """A dedicated PostgreSQL (not the session's shared one), so stopping it disturbs no other test."""
    with started(RestartablePostgres, "a dedicated PostgreSQL", wait_for_postgres) as server:
        yield server


@pytest.fixture(scope="module")
def usage(gateway: ServerThread) -> Iterator[UsageApi]:
    """The admin usage API of the module's ``gateway`` fixture."""
    with UsageApi(gateway.url) as api:
        yield api


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix, so a test never sees another's counters even on a shared Redis."""
    return f"test-{uuid.uuid4().hex[:8]}:"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# Tests that keep state in a real Redis pass explicit times, but Redis expires keys by its own clock:
# a fixed date would sooner or later lie in the past and every key would expire as it is written.
# They use a date in the coming year instead, on the same day of the calendar (mid-month, far from
# daylight-saving changes) so the period arithmetic they check stays the same.
YEAR = datetime.now(UTC).year + 1


def price_row(
    id_: int,
    effective_from: datetime,
    *,
    input: float = 1.0,
    output: float = 2.0,
    cache_read: float | None = None,
    cache_write_5m: float | None = None,
    cache_write_1h: float | None = None,
    reasoning: float | None = None,
    per_request: float = 0.0,
    tiers: tuple[PriceTierRow, ...] = (),
) -> PriceRow:
    return PriceRow(
        id=id_,
        effective_from=effective_from,
        input=input,
        output=output,
        cache_read=cache_read,
        cache_write_5m=cache_write_5m,
        cache_write_1h=cache_write_1h,
        reasoning=reasoning,
        per_request=per_request,
        tiers=tiers,
    )


def model_row(name: str, upstreams: tuple[str, ...] = (), prices: tuple[PriceRow, ...] = ()) -> ModelRow:
    routes = tuple(
        RouteRow(
            id=i + 1,
            provider_id=1,
            provider_name="p",
            upstream_model=upstream,
            priority=None,
            weight=None,
            key_names=None,
            position=i,
        )
        for i, upstream in enumerate(upstreams)
    )
    return ModelRow(
        id=abs(hash(name)) % 10_000,
        name=name,
        capabilities=(),
        context_window=None,
        enabled=True,
        routes=routes,
        prices=prices,
    )
