"""Console auth, admin tokens, settings, audit entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, JsonValue

from isthmus.admin.schemas.common import Body, Name, Out, UTCTime


class LoginIn(Body):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class MeOut(Out):
    id: int
    username: str
    role: str
    team_id: int | None
    auth: Literal["session", "token", "local"]
    csrf_token: str | None = Field(None, description="the session's CSRF token (session auth only)")


class LoginOut(Out):
    user: MeOut
    csrf_token: str = Field(description="send it back as the x-csrf-token header on unsafe requests")
    expires_at: datetime


class TokenCreate(Body):
    name: Name
    expires_at: UTCTime | None = None


class TokenOut(Out):
    id: int
    name: str
    token_prefix: str
    user_id: int
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="the bearer token; shown only in this answer, never again")


class SettingIn(Body):
    value: JsonValue


class SettingOut(Out):
    key: str
    value: Any
    updated_at: datetime


class AuditOut(Out):
    id: int
    at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: int | None
    entity_name: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
