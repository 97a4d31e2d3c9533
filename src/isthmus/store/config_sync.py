"""Upsert what the config file declares into the store, at start-up.

Rules:
- Entities are matched by name. Everything the file declares is marked ``managed_by="file"`` and set to
  exactly what the file says (an entity of the same name made through the API is taken over).
- File-managed entities that left the file are disabled, never deleted, so usage history keeps its
  references: providers/models/provider keys get ``enabled=False``, teams/users ``disabled=True``,
  gateway keys ``status="paused"``. A revoked gateway key stays revoked even if the file names it.
- A model's price becomes a new price row effective now only when it differs from the one in force;
  price rows are never rewritten.
- Gateway keys without a fixed ``secret`` get one generated only when created; the report carries it so
  the CLI can print it once. Only the hash is stored.
- Idempotent: a second run with the same file writes nothing and records no audit entries.
- One transaction: on any error nothing is changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.config.schema import (
    FileConfig,
    GatewayKeyConfig,
    ModelConfig,
    PriceConfig,
    ProviderConfig,
    TeamConfig,
    UserConfig,
)
from isthmus.crypto import (
    SecretBox,
    generate_gateway_key,
    hash_gateway_key,
    hash_password,
    key_display_prefix,
    password_needs_rehash,
    verify_password,
)
from isthmus.errors import ConfigError, IsthmusError
from isthmus.store import repos
from isthmus.store.tables import (
    Base,
    GatewayKey,
    Model,
    Provider,
    Team,
    User,
    utcnow,
)

ACTOR = "config"
FILE = "file"

R = TypeVar("R", bound=Base)


@dataclass(frozen=True, slots=True)
class SyncChange:
    entity_type: str
    name: str
    action: str  # create | update | disable | add_price


@dataclass(slots=True)
class SyncReport:
    changes: list[SyncChange] = field(default_factory=list)
    # Gateway key name → secret generated in this run. Shown once; only the hash is stored.
    generated_secrets: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def names(self, action: str, entity_type: str | None = None) -> list[str]:
        return [
            c.name
            for c in self.changes
            if c.action == action and (entity_type is None or c.entity_type == entity_type)
        ]


def _dump(model: BaseModel | None) -> dict[str, Any] | None:
    """A config sub-object as stored JSON: unset (None) fields left out so equal configs compare equal."""
    if model is None:
        return None
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return dumped


def _parse_expiry(key: GatewayKeyConfig) -> datetime | None:
    if key.expires_at is None:
        return None
    text = key.expires_at.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                f"keys.{key.name}.expires_at: {text!r} is not an ISO date or date-time"
            ) from None
        parsed = datetime(day.year, day.month, day.day)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class _Sync:
    def __init__(self, session: AsyncSession, box: SecretBox, now: datetime, actor: str) -> None:
        self.session = session
        self.box = box
        self.now = now
        self.actor = actor
        self.report = SyncReport()

    # -- helpers ------------------------------------------------------------------------------------

    async def _all(self, table: type[R]) -> list[R]:
        query = select(table).order_by(*inspect(table).primary_key)
        return list((await self.session.scalars(query)).all())

    async def _created(self, entity_type: str, name: str, row: Base, repo_values: Mapping[str, Any]) -> None:
        self.report.changes.append(SyncChange(entity_type, name, "create"))
        await repos.record_audit(
            self.session,
            actor=self.actor,
            action="create",
            entity_type=entity_type,
            entity_id=repos.entity_id(row),
            entity_name=name,
            after=dict(repo_values),
        )

    async def _apply(
        self,
        repo: repos.Repository[R],
        row: R,
        values: Mapping[str, Any],
        *,
        entity_type: str,
        name: str,
        action: str = "update",
        report: bool = True,
    ) -> bool:
        changes = await repo.update(self.session, row, **values)
        if not changes:
            return False
        if report:
            self.report.changes.append(SyncChange(entity_type, name, action))
        before, after = repos.changes_to_audit(changes)
        await repos.record_audit(
            self.session,
            actor=self.actor,
            action=action,
            entity_type=entity_type,
            entity_id=repos.entity_id(row),
            entity_name=name,
            before=before,
            after=after,
        )
        return True

    # -- teams and users ---------------------------------------------------------------------------

    async def teams(self, declared: Sequence[TeamConfig]) -> dict[str, int]:
        existing = {t.name: t for t in await self._all(Team)}
        for cfg in declared:
            values = {
                "budget": _dump(cfg.budget),
                "limits": _dump(cfg.limits),
                "disabled": False,
                "managed_by": FILE,
            }
            row = existing.get(cfg.name)
            if row is None:
                row = await repos.teams.create(self.session, name=cfg.name, **values)
                existing[cfg.name] = row
                await self._created("team", cfg.name, row, values)
            else:
                await self._apply(repos.teams, row, values, entity_type="team", name=cfg.name)
        names = {cfg.name for cfg in declared}
        for row in existing.values():
            if row.managed_by == FILE and row.name not in names and not row.disabled:
                await self._apply(
                    repos.teams, row, {"disabled": True}, entity_type="team", name=row.name, action="disable"
                )
        return {name: row.id for name, row in existing.items()}

    async def users(self, declared: Sequence[UserConfig], team_ids: Mapping[str, int]) -> dict[str, int]:
        existing = {u.username: u for u in await self._all(User)}
        for cfg in declared:
            values: dict[str, Any] = {
                "role": cfg.role,
                "team_id": team_ids[cfg.team] if cfg.team else None,
                "budget": _dump(cfg.budget),
                "limits": _dump(cfg.limits),
                "disabled": False,
                "managed_by": FILE,
            }
            row = existing.get(cfg.username)
            if cfg.password is not None:
                current = row.password_hash if row is not None else None
                # Hashes are salted, so compare by verifying; re-hashing every start would not be idempotent.
                if (
                    current is None
                    or not verify_password(cfg.password, current)
                    or password_needs_rehash(current)
                ):
                    values["password_hash"] = hash_password(cfg.password)
            if row is None:
                row = await repos.users.create(self.session, username=cfg.username, **values)
                existing[cfg.username] = row
                await self._created("user", cfg.username, row, values)
            else:
                await self._apply(repos.users, row, values, entity_type="user", name=cfg.username)
        names = {cfg.username for cfg in declared}
        for row in existing.values():
            if row.managed_by == FILE and row.username not in names and not row.disabled:
                await self._apply(
                    repos.users,
                    row,
                    {"disabled": True},
                    entity_type="user",
                    name=row.username,
                    action="disable",
                )
        return {name: row.id for name, row in existing.items()}

    # -- providers ------------------------------------------------------------------------------------

    async def providers(self, declared: Sequence[ProviderConfig]) -> dict[str, int]:
        existing = {p.name: p for p in await self._all(Provider)}
        for cfg in declared:
            values = {
                "type": cfg.type,
                "priority": cfg.priority,
                "free_tier": cfg.free_tier,
                "enabled": cfg.enabled,
                "headers": dict(cfg.headers),
                "api_version": cfg.api_version,
                "timeouts": _dump(cfg.timeouts),
                "managed_by": FILE,
            }
            row = existing.get(cfg.name)
            if row is None:
                row = await repos.providers.create(self.session, name=cfg.name, **values)
                existing[cfg.name] = row
                await self._created("provider", cfg.name, row, values)
                changed = True
            else:
                changed = await self._apply(
                    repos.providers, row, values, entity_type="provider", name=cfg.name
                )
            children = await self._endpoints(row, cfg)
            children = await self._provider_keys(row, cfg) or children
            if children and not changed:
                self.report.changes.append(SyncChange("provider", cfg.name, "update"))
        names = {cfg.name for cfg in declared}
        for row in existing.values():
            if row.managed_by == FILE and row.name not in names and row.enabled:
                await self._apply(
                    repos.providers,
                    row,
                    {"enabled": False},
                    entity_type="provider",
                    name=row.name,
                    action="disable",
                )
        return {name: row.id for name, row in existing.items()}

    async def _endpoints(self, provider: Provider, cfg: ProviderConfig) -> bool:
        """Endpoints are pure configuration of the provider: add, update and delete them freely."""
        existing = {e.protocol: e for e in await repos.list_endpoints(self.session, provider.id)}
        wanted = {str(p): cfg.base_url for p in cfg.effective_protocols()}
        changed = False
        for protocol, base_url in wanted.items():
            row = existing.get(protocol)
            label = f"{cfg.name}/{protocol}"
            if row is None:
                row = await repos.provider_endpoints.create(
                    self.session, provider_id=provider.id, protocol=protocol, base_url=base_url
                )
                await self._created("provider_endpoint", label, row, {"base_url": base_url})
                changed = True
            else:
                changed = (
                    await self._apply(
                        repos.provider_endpoints,
                        row,
                        {"base_url": base_url},
                        entity_type="provider_endpoint",
                        name=label,
                        report=False,
                    )
                    or changed
                )
        for protocol, row in existing.items():
            if protocol not in wanted:
                await repos.provider_endpoints.delete(self.session, row)
                await repos.record_audit(
                    self.session,
                    actor=self.actor,
                    action="delete",
                    entity_type="provider_endpoint",
                    entity_id=row.id,
                    entity_name=f"{cfg.name}/{protocol}",
                    before={"base_url": row.base_url},
                )
                changed = True
        return changed

    async def _provider_keys(self, provider: Provider, cfg: ProviderConfig) -> bool:
        existing = {k.name: k for k in await repos.list_provider_keys(self.session, provider.id)}
        changed = False
        for key in cfg.keys:
            label = f"{cfg.name}/{key.name}"
            values: dict[str, Any] = {
                "priority": key.priority,
                "weight": key.weight,
                "capabilities": list(key.capabilities),
                "cost_multiplier": key.cost_multiplier,
                "rpm": key.rpm,
                "tpm": key.tpm,
                "concurrency": key.concurrency,
                "enabled": key.enabled,
                "managed_by": FILE,
            }
            row = existing.get(key.name)
            # Encryption is randomised, so compare plaintexts: re-encrypting an unchanged secret would
            # rewrite the row on every start.
            if row is None or self.box.decrypt(row.secret_encrypted) != key.secret:
                values["secret_encrypted"] = self.box.encrypt(key.secret)
            if row is None:
                row = await repos.provider_keys.create(
                    self.session, provider_id=provider.id, name=key.name, **values
                )
                await self._created("provider_key", label, row, values)
                changed = True
            else:
                changed = (
                    await self._apply(
                        repos.provider_keys, row, values, entity_type="provider_key", name=label, report=False
                    )
                    or changed
                )
        names = {k.name for k in cfg.keys}
        for row in existing.values():
            if row.managed_by == FILE and row.name not in names and row.enabled:
                await self._apply(
                    repos.provider_keys,
                    row,
                    {"enabled": False},
                    entity_type="provider_key",
                    name=f"{cfg.name}/{row.name}",
                    action="disable",
                    report=False,
                )
                changed = True
        return changed

    # -- models, routes, prices --------------------------------------------------------------------

    async def models(self, declared: Sequence[ModelConfig], provider_ids: Mapping[str, int]) -> None:
        existing = {m.name: m for m in await self._all(Model)}
        for cfg in declared:
            values = {
                "capabilities": list(cfg.capabilities),
                "context_window": cfg.context_window,
                "enabled": cfg.enabled,
                "managed_by": FILE,
            }
            row = existing.get(cfg.name)
            if row is None:
                row = await repos.models.create(self.session, name=cfg.name, **values)
                existing[cfg.name] = row
                await self._created("model", cfg.name, row, values)
                changed = True
            else:
                changed = await self._apply(repos.models, row, values, entity_type="model", name=cfg.name)
            routes_changed = await self._routes(row, cfg, provider_ids)
            if routes_changed and not changed:
                self.report.changes.append(SyncChange("model", cfg.name, "update"))
            if cfg.price is not None:
                await self._price(row, cfg.price)
        names = {cfg.name for cfg in declared}
        for row in existing.values():
            if row.managed_by == FILE and row.name not in names and row.enabled:
                await self._apply(
                    repos.models,
                    row,
                    {"enabled": False},
                    entity_type="model",
                    name=row.name,
                    action="disable",
                )

    async def _routes(self, model: Model, cfg: ModelConfig, provider_ids: Mapping[str, int]) -> bool:
        """Make the model's file-managed routes equal the file's list, updating in place by position.

        Routes added through the API to a file-managed model are left alone.
        """
        current = [r for r in await repos.list_routes(self.session, model.id) if r.managed_by == FILE]
        changed = False
        for position, route in enumerate(cfg.routes):
            values: dict[str, Any] = {
                "provider_id": provider_ids[route.provider],
                "upstream_model": route.model,
                "priority": route.priority,
                "weight": route.weight,
                "key_names": list(route.keys) if route.keys is not None else None,
                "position": position,
                "managed_by": FILE,
            }
            label = f"{cfg.name}#{position}"
            if position < len(current):
                changed = (
                    await self._apply(
                        repos.routes, current[position], values, entity_type="route", name=label, report=False
                    )
                    or changed
                )
            else:
                row = await repos.routes.create(self.session, model_id=model.id, **values)
                await self._created("route", label, row, values)
                changed = True
        for row in current[len(cfg.routes) :]:
            await repos.record_audit(
                self.session,
                actor=self.actor,
                action="delete",
                entity_type="route",
                entity_id=row.id,
                entity_name=f"{cfg.name}#{row.position}",
                before={"provider_id": row.provider_id, "upstream_model": row.upstream_model},
            )
            await repos.routes.delete(self.session, row)
            changed = True
        return changed

    async def _price(self, model: Model, price: PriceConfig) -> None:
        wanted = {
            "input": price.input,
            "output": price.output,
            "cache_read": price.cache_read,
            "cache_write_5m": price.cache_write_5m,
            "cache_write_1h": price.cache_write_1h,
            "reasoning": price.reasoning,
            "per_request": price.per_request,
            "tiers": [t.model_dump(mode="json", exclude_none=True) for t in price.tiers] or None,
        }
        in_force = await repos.prices_in_force(self.session, model.id, self.now)
        if in_force is not None and repos.price_values(in_force) == wanted:
            return
        row = await repos.add_price(
            self.session, model.id, effective_from=self.now, managed_by=FILE, **wanted
        )
        self.report.changes.append(SyncChange("price", model.name, "add_price"))
        await repos.record_audit(
            self.session,
            actor=self.actor,
            action="add_price",
            entity_type="price",
            entity_id=row.id,
            entity_name=model.name,
            before=repos.price_values(in_force) if in_force is not None else None,
            after={**wanted, "effective_from": self.now},
        )

    # -- gateway keys ---------------------------------------------------------------------------------

    async def gateway_keys(
        self, declared: Sequence[GatewayKeyConfig], user_ids: Mapping[str, int], team_ids: Mapping[str, int]
    ) -> None:
        existing = {k.name: k for k in await self._all(GatewayKey)}
        for cfg in declared:
            values: dict[str, Any] = {
                "user_id": user_ids[cfg.user] if cfg.user else None,
                "team_id": team_ids[cfg.team] if cfg.team else None,
                "allowed_models": list(cfg.models) if cfg.models is not None else None,
                "limits": _dump(cfg.limits),
                "budget": _dump(cfg.budget),
                "log_detail": cfg.log_detail,
                "expires_at": _parse_expiry(cfg),
                "managed_by": FILE,
            }
            row = existing.get(cfg.name)
            if cfg.secret is not None:
                values["key_hash"] = hash_gateway_key(cfg.secret)
                values["key_prefix"] = key_display_prefix(cfg.secret)
            if row is None:
                secret = cfg.secret
                if secret is None:
                    secret = generate_gateway_key()
                    self.report.generated_secrets[cfg.name] = secret
                    values["key_hash"] = hash_gateway_key(secret)
                    values["key_prefix"] = key_display_prefix(secret)
                row = await repos.gateway_keys.create(self.session, name=cfg.name, status="active", **values)
                await self._created("gateway_key", cfg.name, row, values)
            else:
                if row.status != "revoked":
                    values["status"] = "active"
                await self._apply(repos.gateway_keys, row, values, entity_type="gateway_key", name=cfg.name)
        names = {cfg.name for cfg in declared}
        for row in existing.values():
            if row.managed_by == FILE and row.name not in names and row.status == "active":
                await self._apply(
                    repos.gateway_keys,
                    row,
                    {"status": "paused"},
                    entity_type="gateway_key",
                    name=row.name,
                    action="disable",
                )


async def apply_file_config(
    session: AsyncSession,
    config: FileConfig,
    box: SecretBox,
    *,
    now: datetime | None = None,
    actor: str = ACTOR,
) -> SyncReport:
    """Upsert the file's entities in one transaction and return what changed.

    On a fresh session this begins and commits its own transaction; inside a caller's transaction it
    uses a SAVEPOINT and leaves the commit to the caller. Either way, any error leaves the store as it
    was and is raised as ``ConfigError``.
    """
    sync = _Sync(session, box, now or utcnow(), actor)

    async def run() -> None:
        team_ids = await sync.teams(config.teams)
        user_ids = await sync.users(config.users, team_ids)
        provider_ids = await sync.providers(config.providers)
        await sync.models(config.models, provider_ids)
        await sync.gateway_keys(config.keys, user_ids, team_ids)

    try:
        if session.in_transaction():
            async with session.begin_nested():
                await run()
        else:
            async with session.begin():
                await run()
    except ConfigError:
        raise
    except IsthmusError as exc:
        raise ConfigError(f"applying the config file failed: {exc.message}", code=exc.code) from exc
    return sync.report
