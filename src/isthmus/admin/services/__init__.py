"""The admin logic, shared by the REST API and the CLI so the two cannot diverge.

Every service function takes an ``AsyncSession`` (inside the caller's transaction) and an
:class:`Actor`, changes rows through ``isthmus.store.repos`` and writes the audit row in the same
transaction. :class:`AdminServices` bundles what the API needs and opens those transactions.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.admin.login_limiter import LoginLimiter
from isthmus.config import Settings
from isthmus.crypto import SecretBox

log = logging.getLogger("isthmus.admin")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is making a change. ``name`` is what the audit log records."""

    name: str
    user_id: int | None = None
    role: str = "admin"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


SYSTEM_ACTOR = Actor("system")
CLI_ACTOR = Actor("cli")


async def _nothing() -> None:
    return None


@dataclass
class AdminServices:
    """What the admin API runs on. ``on_change`` rebuilds the gateway's in-memory snapshot; it is awaited
    after every committed change to keys, providers, models, routes, prices, users, teams or settings."""

    session_factory: async_sessionmaker[AsyncSession]
    box: SecretBox
    settings: Settings
    on_change: Callable[[], Awaitable[None]] = _nothing
    http: aiohttp.ClientSession | None = None
    health_statuses: Callable[[], list[dict[str, Any]]] | None = None
    login_limiter: LoginLimiter = field(default_factory=LoginLimiter)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        async with self.session_factory() as session:
            yield session

    @asynccontextmanager
    async def changing(self, *, notify: bool = True) -> AsyncIterator[AsyncSession]:
        """One transaction; committed when the block ends without error, then ``on_change`` runs."""
        async with self.session_factory() as session, session.begin():
            yield session
        if notify:
            await self.notify_changed()

    async def notify_changed(self) -> None:
        try:
            await self.on_change()
        except Exception:
            # The change is committed; a failed rebuild must not turn it into an error for the caller.
            log.exception("rebuilding the gateway snapshot after an admin change failed")


__all__ = ["CLI_ACTOR", "SYSTEM_ACTOR", "Actor", "AdminServices"]
