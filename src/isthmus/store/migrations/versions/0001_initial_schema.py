"""Initial schema: tenancy, upstreams, models, routes, prices, settings, audit, admin credentials.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Types are spelled out here rather than imported from ``isthmus.store.tables``, so this revision keeps
creating the same schema whatever the models become later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# BIGINT identity on PostgreSQL; INTEGER PRIMARY KEY (the rowid alias, which autoincrements) on SQLite.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=False),
        sa.Column("entity_id", BIG_ID, nullable=True),
        sa.Column("entity_name", sa.String(length=256), nullable=True),
        sa.Column("before", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("after", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)
    op.create_index(
        "ix_audit_log_entity_type_entity_id", "audit_log", ["entity_type", "entity_id"], unique=False
    )
    op.create_table(
        "models",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("capabilities", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("context_window", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("managed_by", sa.String(length=8), server_default="api", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint("managed_by IN ('file', 'api')", name=op.f("ck_models_managed_by")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )
    op.create_table(
        "providers",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("free_tier", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("headers", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("api_version", sa.String(length=64), nullable=True),
        sa.Column("timeouts", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("managed_by", sa.String(length=8), server_default="api", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint("managed_by IN ('file', 'api')", name=op.f("ck_providers_managed_by")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_providers")),
        sa.UniqueConstraint("name", name=op.f("uq_providers_name")),
    )
    op.create_table(
        "settings",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settings")),
        sa.UniqueConstraint("key", name=op.f("uq_settings_key")),
    )
    op.create_table(
        "teams",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("budget", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("limits", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("managed_by", sa.String(length=8), server_default="api", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint("managed_by IN ('file', 'api')", name=op.f("ck_teams_managed_by")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    op.create_table(
        "prices",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("model_id", BIG_ID, nullable=False),
        sa.Column("effective_from", TIMESTAMP, nullable=False),
        sa.Column("input", sa.Double(), server_default="0", nullable=False),
        sa.Column("output", sa.Double(), server_default="0", nullable=False),
        sa.Column("cache_read", sa.Double(), nullable=True),
        sa.Column("cache_write_5m", sa.Double(), nullable=True),
        sa.Column("cache_write_1h", sa.Double(), nullable=True),
        sa.Column("reasoning", sa.Double(), nullable=True),
        sa.Column("per_request", sa.Double(), server_default="0", nullable=False),
        sa.Column("tiers", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("managed_by", sa.String(length=8), server_default="api", nullable=False),
        sa.CheckConstraint("managed_by IN ('file', 'api')", name=op.f("ck_prices_managed_by")),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_prices_model_id_models"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prices")),
        sa.UniqueConstraint("model_id", "effective_from", name=op.f("uq_prices_model_id_effective_from")),
    )
    op.create_table(
        "provider_endpoints",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("provider_id", BIG_ID, nullable=False),
        sa.Column("protocol", sa.String(length=32), nullable=False),
        sa.Column("base_url", sa.String(length=2048), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_provider_endpoints_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_endpoints")),
        sa.UniqueConstraint(
            "provider_id", "protocol", name=op.f("uq_provider_endpoints_provider_id_protocol")
        ),
    )
    op.create_table(
        "provider_keys",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("provider_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("weight", sa.Double(), server_default="1", nullable=False),
        sa.Column("capabilities", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("cost_multiplier", sa.Double(), server_default="1", nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("managed_by", sa.String(length=8), server_default="api", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint("managed_by IN ('file', 'api')", name=op.f("ck_provider_keys_managed_by")),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_provider_keys_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_keys")),
        sa.UniqueConstraint("provider_id", "name", name=op.f("uq_provider_keys_provider_id_name")),
    )
    op.create_table(
        "routes",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("model_id", BIG_ID, nullable=False),
        sa.Column("provider_id", BIG_ID, nullable=False),
        sa.Column("upstream_model", sa.String(length=256), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("weight", sa.Double(), nullable=True),
        sa.Column("key_names", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("position", sa.Integer(), server_default="0", nullable=False),
        sa.Column("managed_by", sa.String(length=8), server_default="api", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint("managed_by IN ('file', 'api')", name=op.f("ck_routes_managed_by")),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_routes_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_routes_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routes")),
    )
    op.create_index("ix_routes_model_id_position", "routes", ["model_id", "position"], unique=False)
    op.create_index(op.f("ix_routes_provider_id"), "routes", ["provider_id"], unique=False)
    op.create_table(
        "users",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("role", sa.String(length=16), server_default="member", nullable=False),
        sa.Column("team_id", BIG_ID, nullable=True),
        sa.Column("budget", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("limits", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("managed_by", sa.String(length=8), server_default="api", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint("managed_by IN ('file', 'api')", name=op.f("ck_users_managed_by")),
        sa.CheckConstraint("role IN ('admin', 'member')", name=op.f("ck_users_role")),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_users_team_id_teams"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_index(op.f("ix_users_team_id"), "users", ["team_id"], unique=False)
    op.create_table(
        "admin_tokens",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_prefix", sa.String(length=32), nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_admin_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_admin_tokens_token_hash")),
    )
    op.create_index(op.f("ix_admin_tokens_user_id"), "admin_tokens", ["user_id"], unique=False)
    op.create_table(
        "gateway_keys",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=32), nullable=False),
        sa.Column("user_id", BIG_ID, nullable=True),
        sa.Column("team_id", BIG_ID, nullable=True),
        sa.Column("allowed_models", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("limits", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("budget", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("log_detail", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.Column("managed_by", sa.String(length=8), server_default="api", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint(
            "log_detail IN ('base', 'headers', 'full')", name=op.f("ck_gateway_keys_log_detail")
        ),
        sa.CheckConstraint("managed_by IN ('file', 'api')", name=op.f("ck_gateway_keys_managed_by")),
        sa.CheckConstraint("status IN ('active', 'paused', 'revoked')", name=op.f("ck_gateway_keys_status")),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_gateway_keys_team_id_teams"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_gateway_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_gateway_keys_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_gateway_keys_name")),
    )
    op.create_index(op.f("ix_gateway_keys_team_id"), "gateway_keys", ["team_id"], unique=False)
    op.create_index(op.f("ix_gateway_keys_user_id"), "gateway_keys", ["user_id"], unique=False)
    op.create_table(
        "sessions",
        sa.Column("id", BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sessions_token_hash")),
    )
    op.create_index(op.f("ix_sessions_expires_at"), "sessions", ["expires_at"], unique=False)
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_sessions_user_id"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_expires_at"), table_name="sessions")
    op.drop_table("sessions")
    op.drop_index(op.f("ix_gateway_keys_user_id"), table_name="gateway_keys")
    op.drop_index(op.f("ix_gateway_keys_team_id"), table_name="gateway_keys")
    op.drop_table("gateway_keys")
    op.drop_index(op.f("ix_admin_tokens_user_id"), table_name="admin_tokens")
    op.drop_table("admin_tokens")
    op.drop_index(op.f("ix_users_team_id"), table_name="users")
    op.drop_table("users")
    op.drop_index(op.f("ix_routes_provider_id"), table_name="routes")
    op.drop_index("ix_routes_model_id_position", table_name="routes")
    op.drop_table("routes")
    op.drop_table("provider_keys")
    op.drop_table("provider_endpoints")
    op.drop_table("prices")
    op.drop_table("teams")
    op.drop_table("settings")
    op.drop_table("providers")
    op.drop_table("models")
    op.drop_index("ix_audit_log_entity_type_entity_id", table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
