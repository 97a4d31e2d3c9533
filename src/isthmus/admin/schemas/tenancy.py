"""Teams and users."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from isthmus.admin.schemas.common import Body, Name, Out
from isthmus.config.schema import BudgetConfig, LimitsConfig, Role


class TeamCreate(Body):
    name: Name
    budget: BudgetConfig | None = None
    limits: LimitsConfig | None = None
    disabled: bool = False


class TeamUpdate(Body):
    name: Name | None = None
    budget: BudgetConfig | None = None
    limits: LimitsConfig | None = None
    disabled: bool | None = None


class TeamOut(Out):
    id: int
    name: str
    budget: dict[str, object] | None
    limits: dict[str, object] | None
    disabled: bool
    managed_by: str
    created_at: datetime
    updated_at: datetime


class UserCreate(Body):
    username: Name
    password: str | None = Field(None, min_length=8, max_length=1024)
    role: Role = "member"
    team_id: int | None = None
    budget: BudgetConfig | None = None
    limits: LimitsConfig | None = None
    disabled: bool = False


class UserUpdate(Body):
    username: Name | None = None
    role: Role | None = None
    team_id: int | None = None
    budget: BudgetConfig | None = None
    limits: LimitsConfig | None = None
    disabled: bool | None = None


class PasswordSet(Body):
    password: str = Field(min_length=8, max_length=1024)


class PasswordChange(Body):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class UserOut(Out):
    id: int
    username: str
    role: str
    team_id: int | None
    budget: dict[str, object] | None
    limits: dict[str, object] | None
    disabled: bool
    has_password: bool
    managed_by: str
    created_at: datetime
    updated_at: datetime
