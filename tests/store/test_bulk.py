"""``BulkInsert`` stores exactly what SQLAlchemy's own ``insert()`` stores, column by column, on
SQLite and PostgreSQL; it skips conflicting rows, reports the new ones, and spans several chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Table, event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from isthmus.store.bulk import CHUNK_ROWS, BulkInsert, RowShape, chunk_sizes
from isthmus.store.db import create_engine, session_factory
from isthmus.store.usage_tables import RequestLogRow, SpendTotalRow, UsageAttemptRow, UsageRecordRow

BERLIN = timezone(timedelta(hours=1))


class _Record:
    """Any object with one attribute per column, as the accounting records are."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def _usage(request_id: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "request_id": request_id,
        "started_at": datetime(2026, 11, 24, 13, 5, 7, 123456, tzinfo=BERLIN),  # stored as UTC
        "status": "internal_error",
        "http_status": 500,
        "key_id": 2**40,
        "key_name": "laptop",
        "user_id": None,
        "team_id": 7,
        "model_requested": "m" * 300,  # longer than its column: clipped
        "upstream_model": "upstream",
        "provider_id": 3,
        "provider_name": "oai",
        "provider_key_id": None,
        "provider_key_name": None,
        "protocol_in": "anthropic",
        "protocol_out": "openai-chat",
        "stream": True,
        "error": "boom ✓",
        "input_tokens": 10,
        "output_tokens": 0,
        "cache_read_tokens": 3,
        "cache_write_5m_tokens": 4,
        "cache_write_1h_tokens": 5,
        "reasoning_tokens": 6,
        "list_cost": Decimal("0.000000000003"),
        "actual_cost": Decimal("12.345678901234"),
        "prices": {"input": "2.5", "nested": {"tiers": [1, 2]}},
        "latency_ms": 1234,
        "ttft_ms": None,
        "attempts": 2,
        "estimated": False,
    }
    values.update(overrides)
    return values


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


async def _stored(session: AsyncSession, model: type[Any], request_id: str) -> dict[str, Any]:
    table = _table(model)
    row = (await session.execute(select(table).where(table.c.request_id == request_id))).one()
    return dict(row._mapping)


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (UsageRecordRow, _usage("x")),
        (
            UsageAttemptRow,
            {
                "request_id": "x",
                "attempt_no": 1,
                "candidate": "oai/main:gpt",
                "provider_id": 3,
                "provider_key_id": None,
                "upstream_model": "gpt",
                "protocol": "openai-chat",
                "status": "skipped",
                "http_status": None,
                "latency_ms": 0,
                "error": None,
                "skipped": "s" * 400,
            },
        ),
        (
            RequestLogRow,
            {
                "request_id": "x",
                "level": "full",
                "request_headers": {"authorization": "[redacted]"},
                "response_headers": None,
                "request_body": '{"a": 1}',
                "response_body": None,
                "created_at": datetime(2026, 11, 24, 23, 59, 59, tzinfo=BERLIN),
            },
        ),
    ],
)
async def test_stores_what_sqlalchemy_stores(
    model: type[Any], values: dict[str, Any], sessions: async_sessionmaker[AsyncSession]
) -> None:
    table = _table(model)
    shape = RowShape(table)
    async with sessions.begin() as session:
        bulk = BulkInsert(table, session.get_bind().dialect)
        row = shape.row(_Record(**{**values, "request_id": "bulk"}))
        await bulk.execute(session, [bulk.bind(row)])
        clipped = dict(zip(shape.columns, shape.row(_Record(**{**values, "request_id": "orm"})), strict=True))
        await session.execute(insert(table), [clipped])
    async with sessions() as session:
        through_bulk = await _stored(session, model, "bulk")
        through_orm = await _stored(session, model, "orm")
    assert {**through_bulk, "request_id": "orm"} == through_orm
    for name, column in table.c.items():
        limit = getattr(column.type, "length", None)
        value = through_bulk[name]
        if isinstance(value, str) and limit is not None:
            assert len(value) <= limit


async def test_returns_only_new_rows_across_chunks(sessions: async_sessionmaker[AsyncSession]) -> None:
    table = _table(UsageRecordRow)
    shape = RowShape(table)
    ids = [f"r{i:04d}" for i in range(2 * CHUNK_ROWS + 17)]
    async with sessions.begin() as session:
        bulk = BulkInsert(table, session.get_bind().dialect, conflict=("request_id",), returning="request_id")
        first = [bulk.bind(shape.row(_Record(**_usage(rid)))) for rid in ids[::2]]
        assert sorted(await bulk.execute(session, first)) == ids[::2]
        every = [bulk.bind(shape.row(_Record(**_usage(rid, error="second")))) for rid in ids]
        assert sorted(await bulk.execute(session, every)) == ids[1::2]  # the rest were taken
    async with sessions() as session:
        table_rows = (await session.execute(select(table.c.request_id, table.c.error))).all()
    assert sorted(rid for rid, _ in table_rows) == ids
    assert {rid for rid, error in table_rows if error == "boom ✓"} == set(ids[::2])  # kept, not replaced


def test_chunk_sizes_are_chunk_rows_and_powers_of_two_below_it() -> None:
    allowed = {CHUNK_ROWS >> shift for shift in range(CHUNK_ROWS.bit_length())}
    for rows in range(0, 3 * CHUNK_ROWS + 2):
        sizes = chunk_sizes(rows)
        assert sum(sizes) == rows
        assert set(sizes) <= allowed
        assert sizes == sorted(sizes, reverse=True)
        remainder = sizes[rows // CHUNK_ROWS :]
        assert len(remainder) == len(set(remainder))  # each smaller size at most once


async def test_batches_of_any_size_use_a_few_statements(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Every distinct statement stays prepared in the driver's cache, each holding ~7 KiB per row:
    # a statement per leftover size made memory grow with the variety of batch sizes.
    table = _table(UsageRecordRow)
    shape = RowShape(table)
    statements: set[str] = set()

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO usage_records"):
            statements.add(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    sizes = [*range(1, 40), 127, 128, 129, 200, 255, 2 * CHUNK_ROWS + 77]
    async with sessions.begin() as session:
        bulk = BulkInsert(table, session.get_bind().dialect, conflict=("request_id",), returning="request_id")
        for batch, size in enumerate(sizes):
            ids = [f"b{batch}-{i}" for i in range(size)]
            rows = [bulk.bind(shape.row(_Record(**_usage(rid)))) for rid in ids]
            assert sorted(await bulk.execute(session, rows)) == sorted(ids)
    async with sessions() as session:
        stored = (await session.execute(select(func.count()).select_from(table))).scalar_one()
    assert stored == sum(sizes)
    assert len(statements) <= CHUNK_ROWS.bit_length()  # 128, 64, …, 1


async def test_rows_sharing_a_json_value_each_store_it(sessions: async_sessionmaker[AsyncSession]) -> None:
    # Records billed at one price share its JSON object; the bind reuses the last serialization
    # for the very same object only.
    table = _table(UsageRecordRow)
    shape = RowShape(table)
    shared = {"ref": "price:1", "input": "2.5"}
    other = {"ref": "price:2", "input": "3"}
    chosen = {"a": shared, "b": shared, "c": other, "d": shared, "e": None}
    async with sessions.begin() as session:
        bulk = BulkInsert(table, session.get_bind().dialect)
        rows = [bulk.bind(shape.row(_Record(**_usage(rid, prices=p)))) for rid, p in chosen.items()]
        await bulk.execute(session, rows)
    async with sessions() as session:
        result = await session.execute(select(table.c.request_id, table.c.prices))
        stored = {request_id: prices for request_id, prices in result}
    assert stored == chosen


async def test_an_upsert_adds_to_counters_and_replaces_the_rest(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    table = _table(SpendTotalRow)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    earlier, later = start + timedelta(hours=1), start + timedelta(hours=2)

    def row(entity_id: int, usd: str, tokens: int, updated_at: datetime) -> list[Any]:
        return bulk.bind(("team", entity_id, "monthly", start, Decimal(usd), tokens, updated_at))

    async with sessions.begin() as session:
        bulk = BulkInsert(
            table,
            session.get_bind().dialect,
            conflict=("entity_type", "entity_id", "period", "period_start"),
            add=("usd", "tokens"),
            replace=("updated_at",),
        )
        assert [c.name for c in table.columns] == [
            "entity_type", "entity_id", "period", "period_start", "usd", "tokens", "updated_at"
        ]  # fmt: skip
        await bulk.execute(session, [row(1, "0.000000000001", 10, earlier), row(2, "5", 1, earlier)])
        # More rows than one chunk size, so the update runs in a multi-row statement too.
        await bulk.execute(session, [row(1, "1.5", 5, later), row(3, "2", 2, later), row(4, "0", 0, later)])
    async with sessions() as session:
        result = await session.execute(
            select(table.c.entity_id, table.c.usd, table.c.tokens, table.c.updated_at)
        )
        stored = {entity: (usd, tokens, at) for entity, usd, tokens, at in result}
    assert stored == {
        1: (Decimal("1.500000000001"), 15, later),  # added, and the time replaced
        2: (Decimal("5"), 1, earlier),
        3: (Decimal("2"), 2, later),
        4: (Decimal("0"), 0, later),
    }
