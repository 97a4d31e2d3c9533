"""Usage history: usage records, attempt traces, request logs, hourly rollups, spend totals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

No foreign keys to entities: deleting a key, user, team or provider keeps its history. Money is
NUMERIC(30, 12) on PostgreSQL and an integer count of 1e-12 USD on SQLite (exact sums on both).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True)
MONEY = sa.Numeric(30, 12).with_variant(sa.BigInteger(), "sqlite")
# Histogram buckets of the hourly rollup (see isthmus.store.usage_tables.LATENCY_BOUNDS_MS).
LATENCY_BUCKETS = 19

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("key_id", BIG_ID, nullable=True),
        sa.Column("key_name", sa.String(length=128), nullable=True),
        sa.Column("user_id", BIG_ID, nullable=True),
        sa.Column("team_id", BIG_ID, nullable=True),
        sa.Column("model_requested", sa.String(length=256), nullable=True),
        sa.Column("upstream_model", sa.String(length=256), nullable=True),
        sa.Column("provider_id", BIG_ID, nullable=True),
        sa.Column("provider_name", sa.String(length=128), nullable=True),
        sa.Column("provider_key_id", BIG_ID, nullable=True),
        sa.Column("provider_key_name", sa.String(length=128), nullable=True),
        sa.Column("protocol_in", sa.String(length=32), nullable=False),
        sa.Column("protocol_out", sa.String(length=32), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_5m_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_1h_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("list_cost", MONEY, nullable=False),
        sa.Column("actual_cost", MONEY, nullable=False),
        sa.Column("prices", JSON, nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("ttft_ms", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "status IN ('ok', 'incomplete', 'client_error', 'upstream_error', 'cut', 'disconnected', "
            "'refused')",
            name=op.f("ck_usage_records_status"),
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_usage_records")),
    )
    op.create_index(
        "ix_usage_records_started_at_request_id", "usage_records", ["started_at", "request_id"], unique=False
    )
    op.create_index(
        "ix_usage_records_key_id_started_at", "usage_records", ["key_id", "started_at"], unique=False
    )
    op.create_index(
        "ix_usage_records_user_id_started_at", "usage_records", ["user_id", "started_at"], unique=False
    )

    op.create_table(
        "usage_attempts",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("candidate", sa.String(length=512), nullable=False),
        sa.Column("provider_id", BIG_ID, nullable=True),
        sa.Column("provider_key_id", BIG_ID, nullable=True),
        sa.Column("upstream_model", sa.String(length=256), nullable=True),
        sa.Column("protocol", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("skipped", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("request_id", "attempt_no", name=op.f("pk_usage_attempts")),
    )

    op.create_table(
        "request_logs",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("request_headers", JSON, nullable=True),
        sa.Column("response_headers", JSON, nullable=True),
        sa.Column("request_body", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("level IN ('base', 'headers', 'full')", name=op.f("ck_request_logs_level")),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_request_logs")),
    )
    op.create_index(op.f("ix_request_logs_created_at"), "request_logs", ["created_at"], unique=False)

    op.create_table(
        "usage_hourly",
        sa.Column("hour", TIMESTAMP, nullable=False),
        sa.Column("key_id", BIG_ID, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("team_id", BIG_ID, nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("provider_id", BIG_ID, nullable=False),
        _counter("requests"),
        _counter("errors"),
        _counter("input_tokens"),
        _counter("output_tokens"),
        _counter("cache_read_tokens"),
        _counter("cache_write_5m_tokens"),
        _counter("cache_write_1h_tokens"),
        _counter("reasoning_tokens"),
        sa.Column("list_cost", MONEY, server_default="0", nullable=False),
        sa.Column("actual_cost", MONEY, server_default="0", nullable=False),
        _counter("latency_ms_sum"),
        _counter("ttft_ms_sum"),
        _counter("ttft_count"),
        *(_counter(f"lat_b{i:02d}") for i in range(LATENCY_BUCKETS)),
        sa.PrimaryKeyConstraint(
            "hour", "key_id", "user_id", "team_id", "model", "provider_id", name=op.f("pk_usage_hourly")
        ),
    )

    op.create_table(
        "spend_totals",
        sa.Column("entity_type", sa.String(length=8), nullable=False),
        sa.Column("entity_id", BIG_ID, nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("period_start", TIMESTAMP, nullable=False),
        sa.Column("usd", MONEY, server_default="0", nullable=False),
        sa.Column("tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint(
            "entity_type IN ('key', 'user', 'team')", name=op.f("ck_spend_totals_entity_type")
        ),
        sa.CheckConstraint("period IN ('daily', 'monthly', 'total')", name=op.f("ck_spend_totals_period")),
        sa.PrimaryKeyConstraint(
            "entity_type", "entity_id", "period", "period_start", name=op.f("pk_spend_totals")
        ),
    )


def downgrade() -> None:
    op.drop_table("spend_totals")
    op.drop_table("usage_hourly")
    op.drop_index(op.f("ix_request_logs_created_at"), table_name="request_logs")
    op.drop_table("request_logs")
    op.drop_table("usage_attempts")
    op.drop_index("ix_usage_records_user_id_started_at", table_name="usage_records")
    op.drop_index("ix_usage_records_key_id_started_at", table_name="usage_records")
    op.drop_index("ix_usage_records_started_at_request_id", table_name="usage_records")
    op.drop_table("usage_records")
