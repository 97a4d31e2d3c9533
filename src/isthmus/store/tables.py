"""The database schema as SQLAlchemy 2 declarative models (SQLite and PostgreSQL alike).

Conventions:
- Entity ids are integers (``BIGINT`` identity on PostgreSQL, the rowid alias on SQLite); request ids in
  the later usage/trace tables are strings (ULID/UUIDv7), so they never collide with these.
- Every timestamp is timezone-aware UTC on the Python side, whatever the database stores.
- ``managed_by`` says who owns a row: ``"file"`` rows are upserted from the config file at start-up
  (and disabled, not deleted, when they leave it); ``"api"`` rows belong to the admin API.
- Enumerations are strings guarded by CHECK constraints, not database enum types, so adding a value
  is a plain migration on both databases.
- Deleting a provider removes its endpoints, keys and routes; deleting a model removes its routes and
  prices. Usage history (a later table) must not reference these rows with cascading keys.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MANAGED_BY_VALUES = ("file", "api")
ROLES = ("admin", "member")
KEY_STATUSES = ("active", "paused", "revoked")
LOG_DETAILS = ("base", "headers", "full")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite has no time zone type: values are stored as naive UTC text, which also keeps their text
    order equal to their time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # The text SQLite's DATETIME would make of process_bind_param's value, in one step: the usage
        # writer binds a timestamp per row, and the two layers took 2.5 µs where this takes 1.1.
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not None and value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            return value.isoformat(" ", "microseconds")[:26]  # without a UTC value's "+00:00"

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# BIGINT on PostgreSQL; plain INTEGER on SQLite, where only "INTEGER PRIMARY KEY" autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# ``none_as_null``: Python None is SQL NULL, not the JSON literal ``null``, so IS NULL filters work.
Json = JSON(none_as_null=True)


def _check_in(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: Json, list[Any]: Json}


class IdMixin:
    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True, sort_order=-100)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.current_timestamp(), sort_order=100
    )
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.current_timestamp(), sort_order=101
    )


class ManagedMixin:
    managed_by: Mapped[str] = mapped_column(String(8), default="api", server_default="api", sort_order=90)


# --- Tenancy -------------------------------------------------------------------------------------


class Team(IdMixin, TimestampMixin, ManagedMixin, Base):
    __tablename__ = "teams"
    __table_args__ = (_check_in("managed_by", MANAGED_BY_VALUES, "managed_by"),)

    name: Mapped[str] = mapped_column(String(128), unique=True)
    budget: Mapped[dict[str, Any] | None]
    limits: Mapped[dict[str, Any] | None]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class User(IdMixin, TimestampMixin, ManagedMixin, Base):
    __tablename__ = "users"
    __table_args__ = (
        _check_in("managed_by", MANAGED_BY_VALUES, "managed_by"),
        _check_in("role", ROLES, "role"),
    )

    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="member", server_default="member")
    team_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="SET NULL"), index=True
    )
    budget: Mapped[dict[str, Any] | None]
    limits: Mapped[dict[str, Any] | None]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class GatewayKey(IdMixin, TimestampMixin, ManagedMixin, Base):
    """A key clients present to the gateway. Only its SHA-256 hash is stored."""

    __tablename__ = "gateway_keys"
    __table_args__ = (
        _check_in("managed_by", MANAGED_BY_VALUES, "managed_by"),
        _check_in("status", KEY_STATUSES, "status"),
        _check_in("log_detail", LOG_DETAILS, "log_detail"),
    )

    name: Mapped[str] = mapped_column(String(128), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="SET NULL"), index=True
    )
    allowed_models: Mapped[list[Any] | None]
    limits: Mapped[dict[str, Any] | None]
    budget: Mapped[dict[str, Any] | None]
    log_detail: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


# --- Upstreams ---------------------------------------------------------------------------------


class Provider(IdMixin, TimestampMixin, ManagedMixin, Base):
    __tablename__ = "providers"
    __table_args__ = (_check_in("managed_by", MANAGED_BY_VALUES, "managed_by"),)

    name: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    free_tier: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    headers: Mapped[dict[str, Any] | None]
    api_version: Mapped[str | None] = mapped_column(String(64))
    timeouts: Mapped[dict[str, Any] | None]

    endpoints: Mapped[list[ProviderEndpoint]] = relationship(
        back_populates="provider", cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )
    keys: Mapped[list[ProviderKey]] = relationship(
        back_populates="provider", cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )


class ProviderEndpoint(IdMixin, TimestampMixin, Base):
    """One row per protocol a provider speaks, with the base URL that protocol's SDK would take."""

    __tablename__ = "provider_endpoints"
    __table_args__ = (UniqueConstraint("provider_id", "protocol"),)

    provider_id: Mapped[int] = mapped_column(BigId, ForeignKey("providers.id", ondelete="CASCADE"))
    protocol: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str | None] = mapped_column(String(2048))

    provider: Mapped[Provider] = relationship(back_populates="endpoints", lazy="raise")


class ProviderKey(IdMixin, TimestampMixin, ManagedMixin, Base):
    """An upstream credential. The secret is stored encrypted (see ``isthmus.crypto.SecretBox``)."""

    __tablename__ = "provider_keys"
    __table_args__ = (
        UniqueConstraint("provider_id", "name"),
        _check_in("managed_by", MANAGED_BY_VALUES, "managed_by"),
    )

    provider_id: Mapped[int] = mapped_column(BigId, ForeignKey("providers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    weight: Mapped[float] = mapped_column(Double, default=1.0, server_default="1")
    capabilities: Mapped[list[Any] | None]
    cost_multiplier: Mapped[float] = mapped_column(Double, default=1.0, server_default="1")
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    provider: Mapped[Provider] = relationship(back_populates="keys", lazy="raise")


# --- Models, routes, prices ------------------------------------------------------------------------


class Model(IdMixin, TimestampMixin, ManagedMixin, Base):
    """A public model name clients send; ``routes`` say which upstreams serve it."""

    __tablename__ = "models"
    __table_args__ = (_check_in("managed_by", MANAGED_BY_VALUES, "managed_by"),)

    name: Mapped[str] = mapped_column(String(128), unique=True)
    capabilities: Mapped[list[Any] | None]
    context_window: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    routes: Mapped[list[Route]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Route.position",
        lazy="raise",
    )


class Route(IdMixin, TimestampMixin, ManagedMixin, Base):
    """One candidate for a model. ``priority``/``weight`` NULL mean "inherit the provider's / 1"."""

    __tablename__ = "routes"
    __table_args__ = (
        Index("ix_routes_model_id_position", "model_id", "position"),
        _check_in("managed_by", MANAGED_BY_VALUES, "managed_by"),
    )

    model_id: Mapped[int] = mapped_column(BigId, ForeignKey("models.id", ondelete="CASCADE"))
    provider_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    upstream_model: Mapped[str] = mapped_column(String(256))
    priority: Mapped[int | None] = mapped_column(Integer)
    weight: Mapped[float | None] = mapped_column(Double)
    key_names: Mapped[list[Any] | None]
    position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    model: Mapped[Model] = relationship(back_populates="routes", lazy="raise")


class Price(IdMixin, ManagedMixin, Base):
    """USD per million tokens from ``effective_from`` on. Rows are never updated: a new price is a new row.

    NULL cache/reasoning rates mean "bill those tokens at the input/output rate".
    """

    __tablename__ = "prices"
    __table_args__ = (
        UniqueConstraint("model_id", "effective_from"),
        _check_in("managed_by", MANAGED_BY_VALUES, "managed_by"),
    )

    model_id: Mapped[int] = mapped_column(BigId, ForeignKey("models.id", ondelete="CASCADE"))
    effective_from: Mapped[datetime]
    input: Mapped[float] = mapped_column(Double, default=0.0, server_default="0")
    output: Mapped[float] = mapped_column(Double, default=0.0, server_default="0")
    cache_read: Mapped[float | None] = mapped_column(Double)
    cache_write_5m: Mapped[float | None] = mapped_column(Double)
    cache_write_1h: Mapped[float | None] = mapped_column(Double)
    reasoning: Mapped[float | None] = mapped_column(Double)
    per_request: Mapped[float] = mapped_column(Double, default=0.0, server_default="0")
    tiers: Mapped[list[Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.current_timestamp())


# --- Settings, audit, admin credentials ----------------------------------------------------------


class Setting(IdMixin, Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(128), unique=True)
    value: Mapped[Any] = mapped_column(Json, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.current_timestamp()
    )


class AuditEntry(IdMixin, Base):
    """Who changed what. ``before``/``after`` hold the changed entity with secrets masked."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity_type_entity_id", "entity_type", "entity_id"),)

    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.current_timestamp(), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[int | None] = mapped_column(BigId)
    entity_name: Mapped[str | None] = mapped_column(String(256))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]


class AdminToken(IdMixin, Base):
    """A bearer token for scripts calling the admin API; only its hash is stored."""

    __tablename__ = "admin_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.current_timestamp())
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class ConsoleSession(IdMixin, Base):
    """A console login. Stored (not only a signed cookie) so logout and disabling a user end it at once."""

    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.current_timestamp())
    expires_at: Mapped[datetime] = mapped_column(index=True)
    last_seen_at: Mapped[datetime | None]


# --- Responses API state -------------------------------------------------------------------------

RESPONSE_STATUSES = ("completed", "incomplete", "failed", "cancelled", "in_progress", "queued")


class StoredResponse(Base):
    """A Responses API answer the gateway produced itself (the upstream spoke another protocol), kept
    so ``previous_response_id``, ``GET /v1/responses/{id}`` and its input items work.

    The JSON columns hold Responses wire items as plain JSON (this package knows no protocol):
    ``input_items`` are this turn's inputs only (earlier turns are reached through
    ``previous_response_id``), ``response`` is the Response object without ``output``/``usage``.
    No foreign key to ``gateway_keys``: rows outlive nothing but their ``expires_at``, and a write
    never waits on the keys table.
    """

    __tablename__ = "responses"
    __table_args__ = (_check_in("status", RESPONSE_STATUSES, "status"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[int] = mapped_column(BigId)
    model: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    previous_response_id: Mapped[str | None] = mapped_column(String(128))
    input_items: Mapped[list[Any]]
    output_items: Mapped[list[Any]]
    usage: Mapped[dict[str, Any] | None]
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.current_timestamp())
    expires_at: Mapped[datetime] = mapped_column(index=True)


# The usage history tables (their own module) share this metadata, so Alembic and the schema tests
# see one schema whichever module is imported first.
from isthmus.store import usage_tables as _usage_tables  # noqa: E402, F401
