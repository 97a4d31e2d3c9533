"""Multi-row INSERTs for the usage writer, with the driver's parameters bound by us, once per column.

SQLAlchemy's ``session.execute(insert(table), rows)`` spends most of a usage batch's CPU building
parameters row by row (``construct_params``, one dict per row, type processing through several
layers): about three times what SQLite itself spends storing the rows. Here the statement text is
rendered once per row count, and each row is a tuple whose values go through the column types' own
bind processors (the very functions SQLAlchemy would apply), then one ``exec_driver_sql`` sends the
whole chunk. What is stored is the same as through the ORM; tests read it back both ways.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import String, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

# Rows per statement: 35 columns × 200 rows stays far below both SQLite's (32,766) and PostgreSQL's
# (32,767) limits on parameters, and bounds how long one execution holds the event loop.
CHUNK_ROWS = 200


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


class BulkInsert:
    """``INSERT INTO table (every column) VALUES (...), (...) ON CONFLICT ... DO NOTHING`` for one
    dialect, optionally ``RETURNING`` one column (which rows were new)."""

    def __init__(
        self,
        table: Table,
        dialect: Dialect,
        *,
        conflict: Sequence[str] = (),
        returning: str | None = None,
    ) -> None:
        quote = dialect.identifier_preparer.quote
        self._width = len(table.columns)
        self._numbered = dialect.paramstyle in ("numeric", "numeric_dollar")
        self._marker = "$" if dialect.paramstyle == "numeric_dollar" else ":"
        target = f" ({', '.join(quote(c) for c in conflict)})" if conflict else ""
        self._head = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in table.columns)}) VALUES "
        )
        self._tail = f" ON CONFLICT{target} DO NOTHING" + (
            f" RETURNING {quote(returning)}" if returning else ""
        )
        self.returns = returning is not None
        processors: list[tuple[int, Callable[[Any], Any]]] = []
        for i, column in enumerate(table.columns):
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors.append((i, process))
        self._processors = tuple(processors)

    def bind(self, row: Sequence[Any]) -> list[Any]:
        """A row's values as the driver takes them."""
        values = list(row)
        for i, process in self._processors:
            values[i] = process(values[i])
        return values

    # Shared by every instance: full chunks and each batch's remainder, for the three usage tables.
    @functools.lru_cache(maxsize=32)  # noqa: B019
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
        returned: list[Any] = []
        for start in range(0, len(bound), CHUNK_ROWS):
            chunk = bound[start : start + CHUNK_ROWS]
            params = tuple(value for row in chunk for value in row)
            result = await connection.exec_driver_sql(self.sql(len(chunk)), params)
            if self.returns:
                returned.extend(result.scalars().all())
        return returned


__all__ = ["CHUNK_ROWS", "BulkInsert", "RowShape"]
