"""Gateway keys: what clients present to the gateway."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from isthmus.admin.schemas.common import Body, Name, Out, UTCTime
from isthmus.config.schema import BudgetConfig, LimitsConfig, LogDetail

KeyStatusFilter = Literal["active", "paused", "revoked", "expired"]


class KeyCreate(Body):
    name: Name
    user_id: int | None = None
    team_id: int | None = None
    secret: str | None = Field(
        None, min_length=16, max_length=256, description="a fixed secret; generated when omitted"
    )
    allowed_models: list[str] | None = Field(None, description="model names this key may use; all if omitted")
    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None
    log_detail: LogDetail | None = None
    expires_at: UTCTime | None = None


class KeyUpdate(Body):
    name: Name | None = None
    user_id: int | None = None
    team_id: int | None = None
    allowed_models: list[str] | None = None
    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None
    log_detail: LogDetail | None = None
    expires_at: UTCTime | None = None


class KeyOut(Out):
    id: int
    name: str
    key_prefix: str
    user_id: int | None
    team_id: int | None
    allowed_models: list[str] | None
    limits: dict[str, object] | None
    budget: dict[str, object] | None
    log_detail: str | None
    status: str
    expired: bool
    expires_at: datetime | None
    last_used_at: datetime | None
    managed_by: str
    created_at: datetime
    updated_at: datetime


class KeyCreated(KeyOut):
    secret: str = Field(description="the key itself; shown only in this answer, never again")
