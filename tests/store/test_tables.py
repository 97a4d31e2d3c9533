"""Column types of our own: what they hand the driver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite

from isthmus.store.tables import UTCDateTime

BERLIN = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 24, 13, 5, 7, 123456, tzinfo=UTC),
        datetime(2026, 11, 24, 13, 5, 7, tzinfo=UTC),  # no microseconds: still written out
        datetime(2026, 11, 24, 0, 30, tzinfo=BERLIN),  # the day before, in UTC
        datetime(2026, 11, 24, 13, 5, 7, 5),  # naive: taken as UTC
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        None,
    ],
)
def test_sqlite_timestamps_bind_to_the_text_sqlalchemy_would_store(value: datetime | None) -> None:
    # UTCDateTime binds in one step on SQLite; it must give what its process_bind_param followed
    # by SQLite's own DATETIME processor gives, or text order and equality with stored rows break.
    dialect = sqlite.dialect()
    column_type = UTCDateTime()
    sqlite_datetime = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert sqlite_datetime is not None
    ours = column_type.bind_processor(dialect)
    assert ours is not None
    assert ours(value) == sqlite_datetime(column_type.process_bind_param(value, dialect))
