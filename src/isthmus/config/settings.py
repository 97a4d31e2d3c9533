"""Process settings from ``ISTHMUS_*`` environment variables (the design's contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISTHMUS_", extra="ignore")

    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    workers: int | None = Field(None, ge=1, le=64)
    config: Path | None = None
    data_dir: Path = Path("data")
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: str | None = None
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    # Calendar periods of budgets (daily, monthly) and usage rollups are counted in this zone.
    timezone: str = "UTC"
    # Usage records (and their traces) are kept this long; request-log headers and bodies less.
    usage_retention_days: int = Field(90, ge=1)
    request_log_retention_days: int = Field(7, ge=1)
    admin_username: str | None = None
    admin_password: str | None = None
    # Seconds in-flight requests and streams get to finish after SIGTERM.
    shutdown_grace: float = 30.0
    # Largest request body accepted by the relay and the admin API.
    max_body_bytes: int = 32 * 1024 * 1024
    max_admin_body_bytes: int = 1024 * 1024

    def resolved_database_url(self, file_url: str | None = None) -> str:
        """Environment beats file beats the embedded SQLite default in the data dir."""
        if self.database_url:
            return self.database_url
        if file_url:
            return file_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'isthmus.db').as_posix()}"
