"""Durability through the running gateway: PostgreSQL is stopped in the middle of a load and started
again; every request still succeeds and every usage record arrives, exactly once.

``isthmus serve`` runs in its own process on a dedicated throwaway PostgreSQL (stopping it disturbs no
other test), in front of the mock provider served over HTTP as an ``openai``, an ``anthropic`` and a
``gemini`` provider. Clients keep sending requests at all four front doors, streamed and not, passed
through and converted, while the database is stopped (``pg_ctl stop -m fast``) and started again. The
relay reads only in-memory snapshots and the usage writer spools to the data directory while the
database is away, then replays the spool once it answers.

The gateway's writer retries with back-off doubling from 0.5 s (capped at 30 s), so after an outage of
a few seconds its next attempt comes at most a few seconds after the database is back; the test
polls for the records (up to ``DRAIN_WITHIN``) instead of tuning the writer.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from accounting.e2e_gateway import PROTOCOLS, auth_headers, generation, request_id, sse_events
from isthmus.accounting.records import ERROR_STATUSES
from isthmus.accounting.rollups import TOKEN_COLUMNS
from isthmus.providers.mock_server import BackgroundMockServer
from isthmus.store.usage_tables import (
    LATENCY_BUCKET_COLUMNS,
    ROLLUP_KEY_COLUMNS,
    RequestLogRow,
    SpendTotalRow,
    UsageAttemptRow,
    UsageRecordRow,
    usage_hourly,
)
from relay.gateway_process import GatewayProcess
from services import RestartablePostgres

KEY = "sk-isthmus-durability-e2e-0123456789"
# Public model → provider entry; every front door is sent to every model, so some requests pass
# through and the others are converted (a converted Responses answer also tries to store itself).
MODELS = {"gpt-d": "oai", "claude-d": "ant", "gemini-d": "gem"}
COMBOS = tuple(itertools.product(PROTOCOLS, MODELS, (False, True)))
CLIENTS = 4  # requests in flight at once
PACE = 0.01  # seconds each client waits between its requests (the machine is shared)
PER_PHASE = 40  # requests answered in each phase of the outage at least
# Long enough for the writer to fail and back off several times (0.5, 1, 2 s) and to spool many
# batches, short enough that its next retry comes soon after the database is back.
MIN_OUTAGE = 3.0
DRAIN_WITHIN = 60.0


def _config(upstream: str) -> str:
    return f"""
log_detail: full
providers:
  - name: oai
    type: openai
    base_url: {upstream}/v1
    keys: [{{name: main, secret: upstream-openai-secret-0001, cost_multiplier: 0.8}}]
  - name: ant
    type: anthropic
    base_url: {upstream}
    keys: [{{name: main, secret: upstream-anthropic-secret-01, cost_multiplier: 1.25}}]
  - name: gem
    type: gemini
    base_url: {upstream}
    keys: [{{name: main, secret: upstream-gemini-secret-0001}}]
models:
  - {{name: gpt-d, routes: [{{provider: oai, model: mock-gpt}}], price: {{input: 3, output: 15}}}}
  - {{name: claude-d, routes: [{{provider: ant, model: mock-claude}}], price: {{input: 3, output: 15}}}}
  - {{name: gemini-d, routes: [{{provider: gem, model: mock-gemini}}], price: {{input: 1.25, output: 10}}}}
teams:
  - {{name: durable-team, budget: {{monthly_usd: 1000}}}}
users:
  - {{username: durable-user, team: durable-team}}
keys:
  - {{name: durable, user: durable-user, secret: {KEY}, budget: {{monthly_usd: 1000}}}}
"""


@pytest.fixture
def gateway(restartable_postgres: RestartablePostgres, tmp_path: Path) -> Iterator[GatewayProcess]:
    with BackgroundMockServer() as upstream:
        config = tmp_path / "isthmus.yaml"
        config.write_text(_config(upstream.url))
        env = {"ISTHMUS_DATABASE_URL": restartable_postgres.url}
        with GatewayProcess(config, tmp_path / "gateway", env) as process:
            yield process


@pytest.fixture
async def reader(restartable_postgres: RestartablePostgres) -> AsyncIterator[AsyncEngine]:
    """The test's own connection to the database: a fresh connection per use, so none is left
    dead in a pool by the outage."""
    engine = create_async_engine(restartable_postgres.url, poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()


@dataclass
class Sent:
    """One request and what its client saw."""

    rid: str
    protocol: str
    model: str
    stream: bool
    text: str
    phase_sent: str
    phase_done: str = ""
    seconds: float = 0.0
    input_tokens: int = -1
    output_tokens: int = -1


def client_usage(protocol: str, stream: bool, resp: httpx.Response) -> tuple[int, int]:
    """(prompt tokens, output tokens) as the answer told its client, in that protocol's fields."""
    if not stream:
        body: dict[str, Any] = resp.json()
        if protocol == "openai-chat":
            return body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]
        if protocol in ("openai-responses", "anthropic"):
            return body["usage"]["input_tokens"], body["usage"]["output_tokens"]
        return body["usageMetadata"]["promptTokenCount"], body["usageMetadata"]["candidatesTokenCount"]
    events = sse_events(resp.content)
    if protocol == "openai-chat":
        usage = [e["usage"] for e in events if e.get("usage")][-1]
        return usage["prompt_tokens"], usage["completion_tokens"]
    if protocol == "openai-responses":
        (done,) = [e for e in events if e.get("type") == "response.completed"]
        return done["response"]["usage"]["input_tokens"], done["response"]["usage"]["output_tokens"]
    if protocol == "anthropic":
        (start,) = [e for e in events if e.get("type") == "message_start"]
        delta = [e for e in events if e.get("type") == "message_delta"][-1]
        # message_delta counts are cumulative and win; absent ones keep message_start's (an upstream
        # that reports its prompt only at the end leaves message_start's at 0).
        usage = {**start["message"]["usage"], **delta["usage"]}
        return usage["input_tokens"], usage["output_tokens"]
    usage = [e["usageMetadata"] for e in events if e.get("usageMetadata")][-1]
    return usage["promptTokenCount"], usage["candidatesTokenCount"]


class Load:
    """Clients sending requests in a loop until stopped; each answer is checked as it arrives and a
    failure is kept (not raised) so the load goes on and the test reports every one."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.phase = "before"
        self.sent: list[Sent] = []
        self.failures: list[str] = []
        self._next = itertools.count()
        self._stop = asyncio.Event()

    def answered(self, phase: str) -> int:
        """Requests both sent and answered in ``phase``."""
        return sum(1 for s in self.sent if s.phase_sent == phase and s.phase_done == phase)

    async def run(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(CLIENTS)))

    def stop(self) -> None:
        self._stop.set()

    async def _client(self) -> None:
        while not self._stop.is_set():
            await self._one(next(self._next))
            await asyncio.sleep(PACE)

    async def _one(self, n: int) -> None:
        protocol, model, stream = COMBOS[n % len(COMBOS)]
        rid = request_id(f"dur{n}")
        # A prompt of varying length (so token counts differ) that names its request, so the stored
        # request log can be matched to it.
        text = f"durability {rid} " + "abc " * (n % 17)
        sent = Sent(rid, protocol, model, stream, text, phase_sent=self.phase)
        self.sent.append(sent)
        path, body = generation(protocol, model, text, stream=stream, max_tokens=64)
        if protocol == "openai-chat" and stream:
            body["stream_options"] = {"include_usage": True}
        headers = {"content-type": "application/json", "x-request-id": rid, **auth_headers(protocol, KEY)}
        began = time.monotonic()
        try:
            resp = await self.client.post(path, content=orjson.dumps(body), headers=headers)
            sent.seconds = time.monotonic() - began
            sent.phase_done = self.phase
            if resp.status_code != 200:
                self.failures.append(f"{rid} ({sent.phase_sent}): {resp.status_code} {resp.text[:300]}")
                return
            if resp.headers.get("x-request-id") != rid:
                self.failures.append(f"{rid}: answered as {resp.headers.get('x-request-id')!r}")
                return
            sent.input_tokens, sent.output_tokens = client_usage(protocol, stream, resp)
        except Exception as exc:
            sent.phase_done = self.phase
            self.failures.append(f"{rid} ({protocol}, stream={stream}, {sent.phase_sent}): {exc!r}")


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Poll ``check`` until it holds; returns the seconds it took."""
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > within:
            raise AssertionError(f"{what}: not reached in {within:g}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - began


def spool_segments(spool: Path) -> list[Path]:
    return list(spool.glob("*.jsonl"))


def spooled_records(spool: Path) -> int:
    """Record bundles waiting in the gateway's spool segments (one JSON line each)."""
    return sum(len(p.read_bytes().splitlines()) for p in spool_segments(spool))


async def stored_count(reader: AsyncEngine) -> int:
    try:
        async with reader.connect() as conn:
            count = await conn.scalar(select(func.count()).select_from(UsageRecordRow))
    except Exception:  # the database is away: nothing is readable yet
        return -1
    return int(count or 0)


async def test_database_stopped_mid_load_every_request_succeeds_and_is_recorded_once(
    restartable_postgres: RestartablePostgres, gateway: GatewayProcess, reader: AsyncEngine
) -> None:
    began = time.monotonic()
    spool = gateway.workdir / "data" / "spool"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        load = Load(client)
        running = asyncio.create_task(load.run())
        try:
            # Records reach the database before the outage (so it really is the one being stopped).
            await eventually(
                lambda: _answered_and_stored(load, "before", reader), 30, "records stored before the outage"
            )
            load.phase = "stopping"
            # pg_ctl runs in a thread so the load never pauses while the server shuts down.
            await asyncio.to_thread(restartable_postgres.halt)
            load.phase = "down"
            down_since = time.monotonic()
            most_spooled = 0

            async def spooling_while_down() -> bool:
                nonlocal most_spooled
                most_spooled = max(most_spooled, spooled_records(spool))
                long_enough = time.monotonic() - down_since >= MIN_OUTAGE
                return long_enough and load.answered("down") >= PER_PHASE and most_spooled > 0

            await eventually(spooling_while_down, 30, "requests answered and records spooled while down")
            readyz = await client.get("/readyz")
            assert readyz.status_code == 503 and "database" in readyz.json()["detail"], readyz.text
            load.phase = "starting"
            await asyncio.to_thread(restartable_postgres.resume)
            load.phase = "after"

            async def enough_after() -> bool:
                return load.answered("after") >= PER_PHASE

            await eventually(enough_after, 30, "requests answered after the database returned")
        finally:
            load.stop()
            await running
    sent = load.sent
    assert not load.failures, f"{len(load.failures)} of {len(sent)} requests failed:\n" + "\n".join(
        load.failures[:20]
    )

    async def all_stored() -> bool:
        return await stored_count(reader) >= len(sent)

    drained_in = await eventually(all_stored, DRAIN_WITHIN, f"all {len(sent)} usage records stored")
    # The replayed segments are removed once their records are committed; nothing was refused.
    await eventually(lambda: _no_spool_left(spool), 10, "spool segments replayed and removed")
    assert not (spool / "rejected.ndjson").exists()

    records = await _check_records(reader, sent)
    await _check_logs_and_attempts(reader, sent, records)
    await _check_rollups(reader, records)
    await _check_spend(reader, records)

    by_phase = Counter(s.phase_sent for s in sent)
    slowest_down = max(s.seconds for s in sent if s.phase_sent in ("stopping", "down"))
    # A request that waited on the database would take a connect or pool timeout (seconds).
    assert slowest_down < 10, f"a request sent during the outage took {slowest_down:.1f}s"
    print(
        f"\n{len(sent)} requests ({dict(by_phase)}), at most {most_spooled} records spooled at once, "
        f"slowest during the outage {slowest_down:.2f}s, all stored {drained_in:.1f}s after the load "
        f"stopped; test ran {time.monotonic() - began:.1f}s"
    )


async def _answered_and_stored(load: Load, phase: str, reader: AsyncEngine) -> bool:
    return load.answered(phase) >= PER_PHASE and await stored_count(reader) > 0


async def _no_spool_left(spool: Path) -> bool:
    return not await asyncio.to_thread(spool_segments, spool)


async def _check_records(reader: AsyncEngine, sent: Sequence[Sent]) -> list[UsageRecordRow]:
    """One record per request, under the request's own id, carrying what its client was told."""
    async with AsyncSession(reader) as session:
        records = list((await session.scalars(select(UsageRecordRow))).all())
    ids = Counter(r.request_id for r in records)
    assert len(records) == len(sent)
    assert ids == Counter(s.rid for s in sent), "records are not exactly one per request sent"
    by_id = {r.request_id: r for r in records}
    for s in sent:
        r = by_id[s.rid]
        seen = (r.status, r.http_status, r.protocol_in, r.model_requested, r.stream)
        assert seen == ("ok", 200, s.protocol, s.model, s.stream), f"{s.rid}: {seen}"
        assert (r.input_tokens, r.output_tokens) == (s.input_tokens, s.output_tokens), s.rid
        assert r.input_tokens > 0 and r.output_tokens > 0 and r.actual_cost > 0, s.rid
        assert r.key_id is not None and r.user_id is not None and r.team_id is not None, s.rid
    return records


async def _check_logs_and_attempts(
    reader: AsyncEngine, sent: Sequence[Sent], records: Sequence[UsageRecordRow]
) -> None:
    """Each request's log (full level) holds its own prompt; its trace has the attempts it counts."""
    async with reader.connect() as conn:
        logs = {
            row.request_id: row.request_body
            for row in (
                await conn.execute(select(RequestLogRow.request_id, RequestLogRow.request_body))
            ).all()
        }
        attempts = Counter(
            row.request_id for row in (await conn.execute(select(UsageAttemptRow.request_id))).all()
        )
    assert logs.keys() == {s.rid for s in sent}
    for s in sent:
        assert s.rid in (logs[s.rid] or ""), f"{s.rid}: the stored log is not this request's"
    assert attempts == Counter({r.request_id: r.attempts for r in records})
    assert all(r.attempts >= 1 for r in records)


async def _check_rollups(reader: AsyncEngine, records: Sequence[UsageRecordRow]) -> None:
    """Every hourly rollup row equals the sums over the records of its group, and there is no other."""
    expected: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        group = expected[
            (
                r.started_at.replace(minute=0, second=0, microsecond=0),
                r.key_id or 0,
                r.user_id or 0,
                r.team_id or 0,
                r.model_requested or "",
                r.provider_id or 0,
            )
        ]
        group["requests"] += 1
        group["errors"] += r.status in ERROR_STATUSES
        for column in TOKEN_COLUMNS:
            group[column] += getattr(r, column)
        group["list_cost"] += r.list_cost
        group["actual_cost"] += r.actual_cost
        group["latency_ms_sum"] += r.latency_ms
        group["ttft_ms_sum"] += r.ttft_ms or 0
        group["ttft_count"] += r.ttft_ms is not None
    columns = [
        "requests",
        "errors",
        *TOKEN_COLUMNS,
        "list_cost",
        "actual_cost",
        "latency_ms_sum",
        "ttft_ms_sum",
        "ttft_count",
    ]
    async with reader.connect() as conn:
        rows = (await conn.execute(select(usage_hourly))).all()
    got: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        values = row._mapping
        key = tuple(values[c] for c in ROLLUP_KEY_COLUMNS)
        got[key] = {c: values[c] for c in columns}
        assert sum(values[c] for c in LATENCY_BUCKET_COLUMNS) == values["requests"], key
    assert got == {key: {c: sums[c] for c in columns} for key, sums in expected.items()}
    assert sum(g["requests"] for g in got.values()) == len(records)


async def _check_spend(reader: AsyncEngine, records: Sequence[UsageRecordRow]) -> None:
    """Spend totals of the key, its user and its team, per UTC day, month and all time, equal the
    sums of the records' actual costs and billed tokens."""
    expected: dict[tuple[str, int, str, datetime], list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    for r in records:
        tokens = (
            r.input_tokens
            + r.output_tokens
            + r.cache_read_tokens
            + r.cache_write_5m_tokens
            + r.cache_write_1h_tokens
        )
        t = r.started_at.astimezone(UTC)
        starts = {
            "daily": datetime(t.year, t.month, t.day, tzinfo=UTC),
            "monthly": datetime(t.year, t.month, 1, tzinfo=UTC),
            "total": datetime(1970, 1, 1, tzinfo=UTC),
        }
        for entity, ident in (("key", r.key_id), ("user", r.user_id), ("team", r.team_id)):
            assert ident is not None
            for period, start in starts.items():
                sums = expected[(entity, ident, period, start)]
                sums[0] += r.actual_cost
                sums[1] += tokens
    async with AsyncSession(reader) as session:
        rows = (await session.scalars(select(SpendTotalRow))).all()
    got = {
        (row.entity_type, row.entity_id, row.period, row.period_start): [row.usd, row.tokens] for row in rows
    }
    assert got == dict(expected)
    assert {key[0] for key in got} == {"key", "user", "team"}
