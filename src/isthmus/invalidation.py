"""Snapshot invalidation across instances: a Redis pub/sub channel says "the store changed, reload".

Every instance reloads its own in-memory snapshot from the database; the message carries no data, only
the sender's id (so an instance ignores its own announcements). A lost message is harmless: a periodic
reload (``interval``) catches anything missed while the subscription was down. Without Redis only the
periodic reload runs, which is how changes made by the CLI (another process) reach a running gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis


log = logging.getLogger("isthmus.invalidation")

CHANNEL = "isthmus:snapshot"


class SnapshotInvalidator:
    def __init__(
        self, redis_url: str | None, reload: Callable[[], Awaitable[None]], *, interval: float = 30.0
    ) -> None:
        self._redis: Redis | None = None
        if redis_url:
            import redis.asyncio as aioredis  # only where configured: the client costs ~15 MiB

            self._redis = aioredis.from_url(redis_url)
        self._reload = reload
        self._interval = interval
        self._instance = os.urandom(8).hex()
        self._task: asyncio.Task[None] | None = None

    async def announce(self) -> None:
        """Tell the other instances to reload (after this one has reloaded itself)."""
        if self._redis is None:
            return
        try:
            await self._redis.publish(CHANNEL, self._instance)
        except Exception as exc:  # the periodic reload will catch up
            log.warning("could not announce a snapshot change: %s", exc)

    def start(self) -> None:
        listen = self._listen() if self._redis is not None else self._poll()
        self._task = asyncio.get_running_loop().create_task(listen)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._reload()
            except Exception as exc:
                log.warning("periodic snapshot reload failed: %s", exc)

    async def _listen(self) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=self._interval
                        )
                        if message is None:
                            await self._reload()  # periodic safety net
                            continue
                        sender = message.get("data")
                        if isinstance(sender, bytes) and sender.decode() == self._instance:
                            continue
                        await self._reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("snapshot subscription lost (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()
