"""Small async repositories over the tables, for the admin API and the config sync.

Every function takes an ``AsyncSession`` and leaves commit to the caller (one request or one sync = one
transaction). Writes run inside a SAVEPOINT so a constraint violation becomes a clean
``ConflictError``/``InvalidRequestError`` without spoiling the caller's transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    delete,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.schema import ColumnCollectionConstraint

from isthmus.crypto import (
    generate_admin_token,
    generate_gateway_key,
    hash_gateway_key,
    hash_token,
    key_display_prefix,
    mask_secret,
)
from isthmus.errors import ConflictError, InvalidRequestError, NotFoundError
from isthmus.store.tables import (
    AdminToken,
    AuditEntry,
    Base,
    ConsoleSession,
    GatewayKey,
    Model,
    Price,
    Provider,
    ProviderEndpoint,
    ProviderKey,
    Route,
    Setting,
    Team,
    User,
    utcnow,
)

E = TypeVar("E", bound=Base)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

# Column names whose values never reach the audit log or API answers in clear.
SECRET_FIELDS = frozenset(
    {"secret", "secret_encrypted", "password", "password_hash", "key_hash", "token_hash", "csrf_token"}
)


@dataclass(frozen=True, slots=True)
class Page(Generic[E]):
    items: list[E]
    total: int
    limit: int
    offset: int


# --- Constraint violations → our errors ----------------------------------------------------------

_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: ([\w., ]+)")
_SQLITE_NOT_NULL = re.compile(r"NOT NULL constraint failed: \w+\.(\w+)")
_SQLITE_CHECK = re.compile(r"CHECK constraint failed: (\w+)")
_PG_NOT_NULL = re.compile(r'null value in column "(\w+)"')


def _constraint_columns(name: str) -> list[str]:
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            if constraint.name == name and isinstance(constraint, ColumnCollectionConstraint):
                return [column.name for column in constraint.columns]
    return []


def _classify(exc: IntegrityError) -> tuple[str, list[str], str]:
    """(kind, columns, constraint) from either driver's error: kind is unique|not_null|check|foreign_key."""
    orig = exc.orig
    text = str(orig)
    # asyncpg: SQLSTATE and the constraint name sit on the driver exception behind the DBAPI adapter.
    cause = getattr(orig, "__cause__", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(cause, "sqlstate", None)
    constraint = str(getattr(cause, "constraint_name", None) or "")
    if sqlstate:
        if sqlstate == "23505":
            return "unique", _constraint_columns(constraint), constraint
        if sqlstate == "23502":
            column = getattr(cause, "column_name", None) or next(iter(_PG_NOT_NULL.findall(text)), "")
            return "not_null", [str(column)], constraint
        if sqlstate == "23514":
            return "check", [], constraint
        if sqlstate == "23503":
            return "foreign_key", _constraint_columns(constraint), constraint
        return "other", [], constraint
    if match := _SQLITE_UNIQUE.search(text):
        return "unique", [p.strip().rsplit(".", 1)[-1] for p in match.group(1).split(",")], ""
    if match := _SQLITE_NOT_NULL.search(text):
        return "not_null", [match.group(1)], ""
    if match := _SQLITE_CHECK.search(text):
        return "check", [], match.group(1)
    if "FOREIGN KEY constraint failed" in text:
        return "foreign_key", [], ""
    return "other", [], ""


def translate_integrity_error(exc: IntegrityError, entity: str) -> Exception:
    """Name the field a constraint protects, never the value (it may be a key hash or a secret)."""
    kind, columns, constraint = _classify(exc)
    if kind == "unique":
        # A composite key's scope (provider_id, model_id) is implied; name what the user chose.
        named = [c for c in columns if not c.endswith("_id")] or columns or ["name"]
        field = ", ".join(named)
        return ConflictError(f"a {entity} with this {field} already exists", code="duplicate", param=named[0])
    if kind == "not_null":
        column = columns[0] if columns and columns[0] else "a field"
        return InvalidRequestError(f"{entity}: {column} is required", param=columns[0] if columns else None)
    if kind == "check":
        return InvalidRequestError(f"{entity}: a value is not allowed ({constraint})", code="invalid_value")
    if kind == "foreign_key":
        what = f" ({', '.join(columns)})" if columns else ""
        return InvalidRequestError(
            f"{entity}: it refers to something that does not exist{what}", code="bad_reference"
        )
    return ConflictError(f"{entity}: the change conflicts with stored data")


async def flush_or_raise(
    session: AsyncSession, entity: str, change: Callable[[], object] | None = None
) -> None:
    """Apply ``change`` (adds, deletes, attribute sets) and flush it in a SAVEPOINT.

    A constraint violation rolls back only this change and is raised as our error. The change must be
    made inside the savepoint: opening one first flushes whatever is pending.
    """
    try:
        async with session.begin_nested():
            if change is not None:
                change()
            await session.flush()
    except IntegrityError as exc:
        raise translate_integrity_error(exc, entity) from None


def entity_id(row: Base) -> int | None:
    """The primary key of a flushed row (None before its first flush)."""
    identity = inspect(row).identity
    return int(identity[0]) if identity else None


# --- Generic repository ------------------------------------------------------------------------


class Repository(Generic[E]):
    """List/get/create/update/delete for one table. ``entity`` is the name used in error messages."""

    def __init__(self, table: type[E], entity: str, *, name_field: str | None = "name") -> None:
        self.table = table
        self.entity = entity
        self.name_field = name_field
        self.columns = frozenset(c.key for c in table.__mapper__.column_attrs)

    def _column(self, name: str) -> InstrumentedAttribute[Any]:
        if name not in self.columns:
            raise InvalidRequestError(f"{self.entity} has no field {name!r}", param=name)
        column: InstrumentedAttribute[Any] = getattr(self.table, name)
        return column

    def _conditions(self, filters: Mapping[str, Any] | None) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        for name, value in (filters or {}).items():
            column = self._column(name)
            if value is None:
                conditions.append(column.is_(None))
            elif isinstance(value, list | tuple | set | frozenset):
                conditions.append(column.in_(list(value)))
            else:
                conditions.append(column == value)
        return conditions

    async def list(
        self,
        session: AsyncSession,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        search: str | None = None,
        order_by: str = "id",
    ) -> Page[E]:
        """One page plus the total count. ``search`` is a case-insensitive substring of the name;
        ``order_by`` is a column name, ``-`` first for descending."""
        if limit < 1 or offset < 0:
            raise InvalidRequestError("limit must be at least 1 and offset at least 0")
        limit = min(limit, MAX_PAGE_SIZE)
        conditions = self._conditions(filters)
        if search and self.name_field:
            pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conditions.append(func.lower(self._column(self.name_field)).like(pattern, escape="\\"))
        descending = order_by.startswith("-")
        sort = self._column(order_by.lstrip("-"))
        id_column = self._column("id")
        query: Select[E] = select(self.table).where(*conditions)
        query = query.order_by(sort.desc() if descending else sort.asc(), id_column.asc())
        total = await session.scalar(select(func.count()).select_from(self.table).where(*conditions))
        rows = (await session.scalars(query.limit(limit).offset(offset))).all()
        return Page(items=list(rows), total=int(total or 0), limit=limit, offset=offset)

    async def find(self, session: AsyncSession, entity_id: int) -> E | None:
        return await session.get(self.table, entity_id)

    async def get(self, session: AsyncSession, entity_id: int) -> E:
        row = await session.get(self.table, entity_id)
        if row is None:
            raise NotFoundError(f"no {self.entity} with id {entity_id}", code="not_found")
        return row

    async def find_by_name(self, session: AsyncSession, name: str) -> E | None:
        if self.name_field is None:
            raise InvalidRequestError(f"{self.entity} has no name")
        found: E | None = await session.scalar(
            select(self.table).where(self._column(self.name_field) == name)
        )
        return found

    async def get_by_name(self, session: AsyncSession, name: str) -> E:
        row = await self.find_by_name(session, name)
        if row is None:
            raise NotFoundError(f"no {self.entity} named {name!r}", code="not_found")
        return row

    def _check_fields(self, values: Mapping[str, Any]) -> None:
        for name in values:
            if name == "id" or name not in self.columns:
                raise InvalidRequestError(f"{self.entity} has no settable field {name!r}", param=name)

    async def create(self, session: AsyncSession, **values: Any) -> E:
        self._check_fields(values)
        row = self.table(**values)
        await flush_or_raise(session, self.entity, lambda: session.add(row))
        return row

    async def update(
        self, session: AsyncSession, row_or_id: E | int, **values: Any
    ) -> dict[str, tuple[Any, Any]]:
        """Set fields; return ``{field: (old, new)}`` for those that actually changed."""
        self._check_fields(values)
        row = await self.get(session, row_or_id) if isinstance(row_or_id, int) else row_or_id
        changes = {k: (getattr(row, k), v) for k, v in values.items() if getattr(row, k) != v}
        if not changes:
            return changes

        def assign() -> None:
            for name, (_old, new) in changes.items():
                setattr(row, name, new)

        try:
            await flush_or_raise(session, self.entity, assign)
        except Exception:
            # The savepoint rollback expired the row; reload it so it reads as stored.
            await session.refresh(row)
            raise
        return changes

    async def delete(self, session: AsyncSession, row_or_id: E | int) -> None:
        row = await self.get(session, row_or_id) if isinstance(row_or_id, int) else row_or_id
        try:
            async with session.begin_nested():
                await session.delete(row)
                await session.flush()
        except IntegrityError as exc:
            raise translate_integrity_error(exc, self.entity) from None


teams = Repository(Team, "team")
users = Repository(User, "user", name_field="username")
gateway_keys = Repository(GatewayKey, "gateway key")
providers = Repository(Provider, "provider")
provider_endpoints = Repository(ProviderEndpoint, "provider endpoint", name_field="protocol")
provider_keys = Repository(ProviderKey, "provider key")
models = Repository(Model, "model")
routes = Repository(Route, "route", name_field="upstream_model")
admin_tokens = Repository(AdminToken, "admin token")
audit_entries = Repository(AuditEntry, "audit entry", name_field="entity_name")


# --- Gateway keys ---------------------------------------------------------------------------------


async def find_key_by_hash(session: AsyncSession, key_hash: str) -> GatewayKey | None:
    found: GatewayKey | None = await session.scalar(select(GatewayKey).where(GatewayKey.key_hash == key_hash))
    return found


async def create_gateway_key(
    session: AsyncSession, *, name: str, secret: str | None = None, **values: Any
) -> tuple[GatewayKey, str]:
    """Create a key; return it with its secret (generated unless given), which is shown only once."""
    secret = secret or generate_gateway_key()
    row = await gateway_keys.create(
        session, name=name, key_hash=hash_gateway_key(secret), key_prefix=key_display_prefix(secret), **values
    )
    return row, secret


async def mark_keys_used(session: AsyncSession, last_used: Mapping[int, datetime]) -> None:
    """Fold many requests' "last used" times into one statement per key (called by the batch writer)."""
    for key_id, at in last_used.items():
        await session.execute(
            update(GatewayKey)
            .where(
                GatewayKey.id == key_id, (GatewayKey.last_used_at.is_(None)) | (GatewayKey.last_used_at < at)
            )
            .values(last_used_at=at)
            .execution_options(synchronize_session=False)
        )


# --- Provider keys ------------------------------------------------------------------------------


async def find_provider_key(session: AsyncSession, provider_id: int, name: str) -> ProviderKey | None:
    found: ProviderKey | None = await session.scalar(
        select(ProviderKey).where(ProviderKey.provider_id == provider_id, ProviderKey.name == name)
    )
    return found


async def list_provider_keys(session: AsyncSession, provider_id: int) -> Sequence[ProviderKey]:
    query = select(ProviderKey).where(ProviderKey.provider_id == provider_id).order_by(ProviderKey.id)
    return (await session.scalars(query)).all()


async def list_endpoints(session: AsyncSession, provider_id: int) -> Sequence[ProviderEndpoint]:
    query = select(ProviderEndpoint).where(ProviderEndpoint.provider_id == provider_id)
    return (await session.scalars(query.order_by(ProviderEndpoint.id))).all()


async def list_routes(session: AsyncSession, model_id: int) -> Sequence[Route]:
    query = select(Route).where(Route.model_id == model_id).order_by(Route.position, Route.id)
    return (await session.scalars(query)).all()


# --- Prices (effective-dated, append-only) ------------------------------------------------------

PRICE_FIELDS = (
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
    "per_request",
    "tiers",
)


async def prices_in_force(session: AsyncSession, model_id: int, at: datetime | None = None) -> Price | None:
    """The price row that applies at ``at`` (default now): the newest one effective at or before it."""
    query = (
        select(Price)
        .where(Price.model_id == model_id, Price.effective_from <= (at or utcnow()))
        .order_by(Price.effective_from.desc(), Price.id.desc())
        .limit(1)
    )
    found: Price | None = await session.scalar(query)
    return found


async def price_history(session: AsyncSession, model_id: int) -> Sequence[Price]:
    query = select(Price).where(Price.model_id == model_id).order_by(Price.effective_from, Price.id)
    return (await session.scalars(query)).all()


async def add_price(
    session: AsyncSession,
    model_id: int,
    *,
    effective_from: datetime | None = None,
    managed_by: str = "api",
    **rates: Any,
) -> Price:
    """Append a price effective from ``effective_from`` (default now). Existing rows are never changed."""
    unknown = set(rates) - set(PRICE_FIELDS)
    if unknown:
        raise InvalidRequestError(f"unknown price field(s): {', '.join(sorted(unknown))}")
    row = Price(model_id=model_id, effective_from=effective_from or utcnow(), managed_by=managed_by, **rates)
    await flush_or_raise(session, "price", lambda: session.add(row))
    return row


def price_values(price: Price) -> dict[str, Any]:
    return {name: getattr(price, name) for name in PRICE_FIELDS}


# --- Settings ---------------------------------------------------------------------------------------


async def get_setting(session: AsyncSession, key: str, default: Any = None) -> Any:
    row = await session.scalar(select(Setting).where(Setting.key == key))
    return default if row is None else row.value


async def set_setting(session: AsyncSession, key: str, value: Any) -> None:
    row = await session.scalar(select(Setting).where(Setting.key == key))
    if row is None:
        new = Setting(key=key, value=value)
        await flush_or_raise(session, "setting", lambda: session.add(new))
    elif row.value != value:
        row.value = value
        await session.flush()


# --- Audit -------------------------------------------------------------------------------------------


def mask_secrets(value: Any) -> Any:
    """A copy of ``value`` with every secret-named field masked, at any depth."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in SECRET_FIELDS and item is not None:
                out[str(key)] = mask_secret(item) if isinstance(item, str) and key == "secret" else "…"
            else:
                out[str(key)] = mask_secrets(item)
        return out
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping | list | tuple):
        return mask_secrets(value)
    return str(value)


def row_to_dict(row: Base, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """A row's columns as plain JSON-able values (secrets masked), for audit entries."""
    skip = set(exclude)
    values = {
        attr.key: getattr(row, attr.key) for attr in row.__mapper__.column_attrs if attr.key not in skip
    }
    masked: dict[str, Any] = mask_secrets(values)
    return masked


def changes_to_audit(changes: Mapping[str, tuple[Any, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{field: (old, new)}`` → masked ``before`` and ``after`` dicts."""
    before = mask_secrets({k: old for k, (old, _new) in changes.items()})
    after = mask_secrets({k: new for k, (_old, new) in changes.items()})
    return before, after


async def record_audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: int | None = None,
    entity_name: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        entity_name=entity_name,
        before=mask_secrets(before) if before is not None else None,
        after=mask_secrets(after) if after is not None else None,
    )
    session.add(entry)
    await session.flush()
    return entry


# --- Admin tokens and console sessions --------------------------------------------------------------


async def create_admin_token(
    session: AsyncSession, *, user_id: int, name: str, expires_at: datetime | None = None
) -> tuple[AdminToken, str]:
    token = generate_admin_token()
    row = await admin_tokens.create(
        session,
        user_id=user_id,
        name=name,
        token_hash=hash_token(token),
        token_prefix=key_display_prefix(token),
        expires_at=expires_at,
    )
    return row, token


async def find_admin_token(session: AsyncSession, token: str) -> AdminToken | None:
    """The live (unexpired) token row for a presented bearer token."""
    query = select(AdminToken).where(AdminToken.token_hash == hash_token(token))
    row: AdminToken | None = await session.scalar(query)
    if row is None or (row.expires_at is not None and row.expires_at <= utcnow()):
        return None
    return row


async def create_console_session(
    session: AsyncSession, *, user_id: int, token: str, csrf_token: str, expires_at: datetime
) -> ConsoleSession:
    row = ConsoleSession(
        user_id=user_id, token_hash=hash_token(token), csrf_token=csrf_token, expires_at=expires_at
    )
    await flush_or_raise(session, "session", lambda: session.add(row))
    return row


async def find_console_session(session: AsyncSession, token: str) -> ConsoleSession | None:
    query = select(ConsoleSession).where(
        ConsoleSession.token_hash == hash_token(token), ConsoleSession.expires_at > utcnow()
    )
    found: ConsoleSession | None = await session.scalar(query)
    return found


async def delete_console_sessions(
    session: AsyncSession, *, token: str | None = None, user_id: int | None = None, expired: bool = False
) -> int:
    """Log out one session, all of a user's, or sweep the expired ones; return how many went."""
    conditions: list[ColumnElement[bool]] = []
    if token is not None:
        conditions.append(ConsoleSession.token_hash == hash_token(token))
    if user_id is not None:
        conditions.append(ConsoleSession.user_id == user_id)
    if expired:
        conditions.append(ConsoleSession.expires_at <= utcnow())
    if not conditions:
        raise InvalidRequestError("say which sessions to delete")
    result = await session.execute(
        delete(ConsoleSession).where(*conditions).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
