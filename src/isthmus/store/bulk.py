"""Multi-row INSERTs for the usage writer, with the driver's parameters bound by us, once per column.

SQLAlchemy's ``session.execute(insert(table), rows)`` spends most of a usage batch's CPU building
parameters row by row (``construct_params``, one dict per row, type processing through several
layers): about three times what SQLite itself spends storing the rows. Here the statement text is
rendered once per row count, and each row is a tuple whose values go through the column types' own
bind processors (the very functions SQLAlchemy would apply), then one ``exec_driver_sql`` sends the
whole chunk — on SQLite, aiosqlite's ``execute_fetchall`` on the same connection, which is one trip to
its thread where SQLAlchemy's adapter makes four. What is stored is the same as through the ORM; tests
read it back both ways.

Chunks come in a few fixed sizes (``CHUNK_ROWS`` and the powers of two below it), never "whatever a
batch left over": the driver keeps each distinct statement prepared (sqlite3 caches 128 per
connection; asyncpg and SQLAlchemy's asyncpg dialect 100 each), and a prepared 35-column INSERT
holds ~7 KiB per row in it. With every remainder its own statement, a gateway whose batches vary in
size grew by ~1.4 MiB per distinct size, up to ~90 MiB per SQLite connection; with the fixed sizes
a table's statements together hold ~2 × ``CHUNK_ROWS`` rows' worth.
"""

from __future__ import annotations

import functools
import operator
import sqlite3
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

from sqlalchemy import JSON, String, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

# Rows per statement (a power of two, see chunk_sizes): 35 columns × 128 rows stays far below both
# SQLite's (32,766) and PostgreSQL's (32,767) limits on parameters, and bounds how long one execution
# holds the event loop. 64 cost measurably more CPU per record (more executions); 200 no less.
CHUNK_ROWS = 128


def chunk_sizes(rows: int) -> list[int]:
    """``rows`` split into full chunks, then the remainder's binary digits, largest first: 269 →
    [128, 128, 8, 4, 1]. So only ``CHUNK_ROWS`` and the powers of two below it are ever executed."""
    sizes = [CHUNK_ROWS] * (rows // CHUNK_ROWS)
    rest = rows % CHUNK_ROWS
    size = CHUNK_ROWS >> 1
    while rest:
        if rest >= size:
            sizes.append(size)
            rest -= size
        size >>= 1
    return sizes


class RowShape:
    """How one table's rows are read off a record object: one C-level getter for all the column
    values, with over-long strings cut to their column size (a client-chosen model name, a long skip
    reason), so one odd value never makes a whole batch fail."""

    __slots__ = ("columns", "limits", "values")

    def __init__(self, table: Table) -> None:
        self.columns = tuple(c.name for c in table.columns)
        self.values = operator.attrgetter(*self.columns)
        self.limits = tuple(
            (i, c.type.length)
            for i, c in enumerate(table.columns)
            if isinstance(c.type, String) and c.type.length is not None
        )

    def row(self, record: object) -> tuple[Any, ...]:
        values = self.values(record)
        for i, limit in self.limits:
            value = values[i]
            if isinstance(value, str) and len(value) > limit:
                values = (*values[:i], value[:limit], *values[i + 1 :])
        return values  # type: ignore[no-any-return]


class _RepeatsLast:
    """A bind processor that reuses its last answer when handed the very same object again: every
    usage record billed at one price shares that price's JSON (``ResolvedPrice.to_json``, read-only),
    and serializing it for each row was 2 µs of the row's preparation. Holding the object keeps its
    identity from being reused."""

    __slots__ = ("_last", "_process")

    def __init__(self, process: Callable[[Any], Any]) -> None:
        self._process = process
        self._last: tuple[Any, Any] = (None, None)  # one tuple: swapped atomically between threads

    def __call__(self, value: Any) -> Any:
        last = self._last
        if value is last[0] and value is not None:
            return last[1]
        bound = self._process(value)
        self._last = (value, bound)
        return bound


class BulkInsert:
    """``INSERT INTO table (every column) VALUES (...), (...) ON CONFLICT ... DO NOTHING`` for one
    dialect, optionally ``RETURNING`` one column (which rows were new).

    With ``add`` (and ``replace``) a conflict on the ``conflict`` columns updates the row in place
    instead: each ``add`` column becomes its stored value plus the new one, each ``replace`` column the
    new value — the upserts of counters that several writers increment. A statement must not hold two
    rows with the same ``conflict`` values then (PostgreSQL refuses it): fold them first.
    """

    def __init__(
        self,
        table: Table,
        dialect: Dialect,
        *,
        conflict: Sequence[str] = (),
        returning: str | None = None,
        add: Sequence[str] = (),
        replace: Sequence[str] = (),
    ) -> None:
        quote = dialect.identifier_preparer.quote
        self._width = len(table.columns)
        self._numbered = dialect.paramstyle in ("numeric", "numeric_dollar")
        self._marker = "$" if dialect.paramstyle == "numeric_dollar" else ":"
        target = f" ({', '.join(quote(c) for c in conflict)})" if conflict else ""
        self._head = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in table.columns)}) VALUES "
        )
        action = "DO NOTHING"
        if add or replace:
            if not conflict:
                raise ValueError("an upsert needs the conflict columns")
            name = quote(table.name)
            sets = [f"{quote(c)} = {name}.{quote(c)} + excluded.{quote(c)}" for c in add]
            sets += [f"{quote(c)} = excluded.{quote(c)}" for c in replace]
            action = "DO UPDATE SET " + ", ".join(sets)
        self._tail = f" ON CONFLICT{target} {action}" + (
            f" RETURNING {quote(returning)}" if returning else ""
        )
        self.returns = returning is not None
        processors: list[tuple[int, Callable[[Any], Any]]] = []
        for i, column in enumerate(table.columns):
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                if isinstance(column.type, JSON):
                    process = _RepeatsLast(process)
                processors.append((i, process))
        self._processors = tuple(processors)

    def bind(self, row: Sequence[Any]) -> list[Any]:
        """A row's values as the driver takes them."""
        values = list(row)
        for i, process in self._processors:
            values[i] = process(values[i])
        return values

    # Shared by every instance: the chunk sizes (8) of the three usage tables, for a dialect or two.
    @functools.lru_cache(maxsize=64)  # noqa: B019
    def sql(self, rows: int) -> str:
        width = self._width
        if self._numbered:
            marker = self._marker
            groups = (
                "(" + ", ".join(f"{marker}{r * width + c + 1}" for c in range(width)) + ")"
                for r in range(rows)
            )
        else:
            group = "(" + ", ".join("?" * width) + ")"
            groups = (group for _ in range(rows))
        return self._head + ", ".join(groups) + self._tail

    async def execute(self, session: AsyncSession, bound: Sequence[Sequence[Any]]) -> list[Any]:
        """Insert rows already passed through :meth:`bind`, in chunks, inside the session's
        transaction; returns the ``RETURNING`` values of the rows actually inserted."""
        connection = await session.connection()
        # aiosqlite is called directly, inside the transaction SQLAlchemy began on the same connection:
        # one round trip to its thread per chunk instead of four (cursor, execute, fetch, close), and
        # no result objects for the RETURNING rows. Other drivers go through SQLAlchemy.
        aiosqlite = None
        if connection.dialect.driver == "aiosqlite":
            aiosqlite = (await connection.get_raw_connection()).driver_connection
        returned: list[Any] = []
        start = 0
        for size in chunk_sizes(len(bound)):
            chunk = bound[start : start + size]
            start += size
            params = tuple(chain.from_iterable(chunk))
            if aiosqlite is not None:
                try:
                    rows = await aiosqlite.execute_fetchall(self.sql(size), params)
                except sqlite3.Error as err:
                    # Raised as SQLAlchemy would have: the writer tells an outage (spool and retry)
                    # from refused data (set aside) by these types.
                    raise DBAPIError.instance(f"{self._head}…", None, err, sqlite3.Error) from err
                if self.returns:
                    returned.extend(row[0] for row in rows)
                continue
            result = await connection.exec_driver_sql(self.sql(size), params)
            if self.returns:
                returned.extend(result.scalars().all())
        return returned


__all__ = ["CHUNK_ROWS", "BulkInsert", "RowShape", "chunk_sizes"]
