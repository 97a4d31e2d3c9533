"""Usage record bundles for the writer, rollup, reporting and retention tests, and small DB helpers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.accounting.records import AttemptRecord, RecordBundle, RequestLogRecord, UsageRecord
from isthmus.store.usage_tables import RequestLogRow, UsageAttemptRow, UsageRecordRow

BASE_TIME = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
MODELS = ("gpt-4o", "claude-sonnet", "gemini-pro")
STATUSES = ("ok", "ok", "ok", "ok", "incomplete", "upstream_error", "cut", "disconnected", "refused")


def make_bundle(
    n: int,
    *,
    started_at: datetime | None = None,
    key_id: int | None = None,
    user_id: int | None = None,
    team_id: int | None = None,
    model: str | None = None,
    provider_id: int | None = None,
    status: str | None = None,
    seed: int = 0,
    with_log: bool = False,
    request_id: str | None = None,
) -> RecordBundle:
    """A deterministic, varied bundle: the n-th request of a synthetic load."""
    rng = random.Random(n * 7919 + seed)
    key = key_id if key_id is not None else rng.choice((1, 2, 3))
    usage = UsageRecord(
        request_id=request_id or f"req_test_{seed}_{n:08d}",
        started_at=started_at or BASE_TIME + timedelta(minutes=rng.randrange(0, 60 * 30)),
        status=status or rng.choice(STATUSES),
        http_status=200,
        protocol_in=rng.choice(("openai-chat", "anthropic", "gemini")),
        key_id=key,
        key_name=f"key-{key}",
        user_id=user_id if user_id is not None else 10 + key,
        team_id=team_id if team_id is not None else (100 if key < 3 else None),
        model_requested=model or rng.choice(MODELS),
        upstream_model="upstream-model",
        provider_id=provider_id if provider_id is not None else rng.choice((1, 2)),
        provider_name="prov",
        provider_key_id=5,
        provider_key_name="main",
        protocol_out="openai-chat",
        stream=bool(n % 2),
        input_tokens=rng.randrange(0, 5000),
        output_tokens=rng.randrange(0, 2000),
        cache_read_tokens=rng.randrange(0, 3000),
        cache_write_5m_tokens=rng.randrange(0, 300),
        cache_write_1h_tokens=rng.randrange(0, 100),
        reasoning_tokens=rng.randrange(0, 50),
        list_cost=Decimal(rng.randrange(0, 10**9)).scaleb(-12),
        actual_cost=Decimal(rng.randrange(0, 10**9)).scaleb(-12),
        prices={"ref": "price:1", "source": "config", "input": "2.5", "output": "10"},
        latency_ms=rng.randrange(5, 40_000),
        ttft_ms=rng.randrange(1, 3000) if n % 3 else None,
        attempts=1 + n % 2,
        estimated=n % 5 == 0,
    )
    attempts = [
        AttemptRecord(
            request_id=usage.request_id,
            attempt_no=i + 1,
            candidate=f"prov/main:upstream-model-{i}",
            provider_id=usage.provider_id,
            provider_key_id=5,
            upstream_model="upstream-model",
            protocol="openai-chat",
            status="ok" if i == usage.attempts - 1 else "failed",
            http_status=200 if i == usage.attempts - 1 else 503,
            latency_ms=rng.randrange(1, 1000),
            error=None if i == usage.attempts - 1 else "upstream answered 503",
        )
        for i in range(usage.attempts)
    ]
    log = None
    if with_log:
        log = RequestLogRecord(
            request_id=usage.request_id,
            level="full",
            created_at=usage.started_at,
            request_headers={"content-type": "application/json"},
            response_headers={"content-type": "application/json"},
            request_body='{"model": "x"}',
            response_body='{"id": "y"}',
        )
    return RecordBundle(usage=usage, attempts=attempts, log=log)


async def count(session: AsyncSession, model: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def counts(session: AsyncSession) -> tuple[int, int, int]:
    return (
        await count(session, UsageRecordRow),
        await count(session, UsageAttemptRow),
        await count(session, RequestLogRow),
    )


async def wait_until(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
