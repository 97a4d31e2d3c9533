"""Usage status ``internal_error``: a request the gateway itself failed is recorded as such.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Before this, such a request kept the status it had when the failure happened (usually ``ok``).
SQLite cannot alter a CHECK constraint in place, so there the table is rebuilt (batch mode). A
downgrade files these records under ``upstream_error``, the nearest status the old schema has.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = ("ok", "incomplete", "client_error", "upstream_error", "cut", "disconnected", "refused")
_AFTER = (*_BEFORE, "internal_error")


def _replace_status_check(statuses: tuple[str, ...]) -> None:
    allowed = ", ".join(f"'{s}'" for s in statuses)
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_constraint(op.f("ck_usage_records_status"), type_="check")
        batch.create_check_constraint(op.f("ck_usage_records_status"), f"status IN ({allowed})")


def upgrade() -> None:
    _replace_status_check(_AFTER)


def downgrade() -> None:
    op.execute("UPDATE usage_records SET status = 'upstream_error' WHERE status = 'internal_error'")
    _replace_status_check(_BEFORE)
