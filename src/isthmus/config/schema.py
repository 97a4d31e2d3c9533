"""The YAML config file, as typed models. Unknown keys are errors (a typo must not pass silently)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from isthmus.ir.protocol import Protocol

ProviderType = Literal["openai", "azure", "anthropic", "gemini", "mock"]
SchedulingMode = Literal["provider_priority", "global_key_priority", "weighted"]
LogDetail = Literal["base", "headers", "full"]
Capability = Literal["cache_1h", "context_1m"]
Role = Literal["admin", "member"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"

DEFAULT_PROTOCOLS: dict[str, tuple[Protocol, ...]] = {
    "openai": (Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES),
    "azure": (Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES),
    "anthropic": (Protocol.ANTHROPIC,),
    "gemini": (Protocol.GEMINI,),
    "mock": (Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES, Protocol.ANTHROPIC, Protocol.GEMINI),
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)


class Timeouts(Strict):
    """Seconds. ``first_byte`` runs until the first content event; ``idle`` is the longest stream gap."""

    connect: float = Field(10, gt=0)
    first_byte: float = Field(60, gt=0)
    idle: float = Field(120, gt=0)
    total: float = Field(900, gt=0)


class ProviderKeyConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    secret: str = ""
    priority: int = 0
    weight: float = Field(1.0, gt=0)
    capabilities: list[Capability] = []
    cost_multiplier: float = Field(1.0, ge=0)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    enabled: bool = True


class ProviderConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    type: ProviderType
    base_url: str | None = None
    protocols: list[Protocol] | None = None
    priority: int = 0
    free_tier: bool = False
    enabled: bool = True
    timeouts: Timeouts = Timeouts()
    headers: dict[str, str] = {}
    api_version: str | None = None  # azure only
    keys: list[ProviderKeyConfig] = []

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.type != "mock" and not self.base_url:
            raise ValueError(f"base_url is required for a provider of type {self.type}")
        if self.type != "mock" and not self.keys:
            raise ValueError(f"a provider of type {self.type} needs at least one key")
        names = [k.name for k in self.keys]
        if len(names) != len(set(names)):
            raise ValueError("key names must be unique within a provider")
        allowed = DEFAULT_PROTOCOLS[self.type]
        for proto in self.protocols or ():
            if proto not in allowed:
                raise ValueError(f"a provider of type {self.type} cannot speak {proto}")
        return self

    def effective_protocols(self) -> tuple[Protocol, ...]:
        return tuple(self.protocols) if self.protocols else DEFAULT_PROTOCOLS[self.type]


class PriceTier(Strict):
    """Prices that replace the base ones when the prompt exceeds ``above_tokens``."""

    above_tokens: int = Field(gt=0)
    input: float | None = Field(None, ge=0)
    output: float | None = Field(None, ge=0)
    cache_read: float | None = Field(None, ge=0)
    cache_write_5m: float | None = Field(None, ge=0)
    cache_write_1h: float | None = Field(None, ge=0)


class PriceConfig(Strict):
    """USD per million tokens, plus an optional fee per request."""

    input: float = Field(0, ge=0)
    output: float = Field(0, ge=0)
    cache_read: float | None = Field(None, ge=0)
    cache_write_5m: float | None = Field(None, ge=0)
    cache_write_1h: float | None = Field(None, ge=0)
    reasoning: float | None = Field(None, ge=0)
    per_request: float = Field(0, ge=0)
    tiers: list[PriceTier] = []


class RouteConfig(Strict):
    provider: str
    model: str = Field(min_length=1, max_length=256)
    priority: int | None = None
    weight: float | None = Field(None, gt=0)
    keys: list[str] | None = None  # restrict this route to some of the provider's keys


class ModelConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    routes: list[RouteConfig] = Field(min_length=1)
    price: PriceConfig | None = None
    capabilities: list[Capability] = []
    context_window: int | None = Field(None, gt=0)
    enabled: bool = True


class BudgetConfig(Strict):
    monthly_usd: float | None = Field(None, ge=0)
    daily_usd: float | None = Field(None, ge=0)
    total_usd: float | None = Field(None, ge=0)
    monthly_tokens: int | None = Field(None, ge=0)
    daily_tokens: int | None = Field(None, ge=0)
    total_tokens: int | None = Field(None, ge=0)


class LimitsConfig(Strict):
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)


class TeamConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    budget: BudgetConfig | None = None
    limits: LimitsConfig | None = None


class UserConfig(Strict):
    username: str = Field(pattern=NAME_PATTERN)
    team: str | None = None
    role: Role = "member"
    password: str | None = None
    budget: BudgetConfig | None = None
    limits: LimitsConfig | None = None


class GatewayKeyConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    user: str | None = None
    team: str | None = None
    secret: str | None = Field(None, min_length=16)
    models: list[str] | None = None
    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None
    log_detail: LogDetail | None = None
    expires_at: str | None = None


class FileConfig(Strict):
    server: ServerConfig = ServerConfig()
    database_url: str | None = None
    redis_url: str | None = None
    scheduling: SchedulingMode = "provider_priority"
    log_detail: LogDetail = "base"
    max_attempts: int = Field(3, ge=1, le=20)
    # How long a gateway key sticks to the upstream key that last served it a model (prompt caches
    # live per upstream account); 0 turns cache affinity off.
    cache_affinity_seconds: float = Field(300, ge=0)
    providers: list[ProviderConfig] = []
    models: list[ModelConfig] = []
    teams: list[TeamConfig] = []
    users: list[UserConfig] = []
    keys: list[GatewayKeyConfig] = []

    @field_validator("providers", "models", "teams", "keys")
    @classmethod
    def _unique_names(cls, items: list[BaseModel]) -> list[BaseModel]:
        seen: set[str] = set()
        for item in items:
            name = str(item.name)  # type: ignore[attr-defined]
            if name in seen:
                raise ValueError(f"duplicate name {name!r}")
            seen.add(name)
        return items

    @model_validator(mode="after")
    def _references(self) -> FileConfig:
        providers = {p.name: p for p in self.providers}
        for model in self.models:
            for route in model.routes:
                if route.provider not in providers:
                    raise ValueError(f"model {model.name!r}: route names unknown provider {route.provider!r}")
                known = {k.name for k in providers[route.provider].keys}
                for key_name in route.keys or ():
                    if key_name not in known:
                        raise ValueError(
                            f"model {model.name!r}: provider {route.provider!r} has no key {key_name!r}"
                        )
        teams = {t.name for t in self.teams}
        users = {u.username for u in self.users}
        if len(users) != len(self.users):
            raise ValueError("duplicate username")
        for user in self.users:
            if user.team and user.team not in teams:
                raise ValueError(f"user {user.username!r} names unknown team {user.team!r}")
        models = {m.name for m in self.models}
        for key in self.keys:
            if key.user and key.user not in users:
                raise ValueError(f"key {key.name!r} names unknown user {key.user!r}")
            if key.team and key.team not in teams:
                raise ValueError(f"key {key.name!r} names unknown team {key.team!r}")
            for m in key.models or ():
                if m not in models:
                    raise ValueError(f"key {key.name!r} allows unknown model {m!r}")
        return self
