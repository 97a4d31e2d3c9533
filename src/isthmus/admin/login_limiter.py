"""Slowing down password guessing: a sliding window of failed logins per username and per client IP.

Counting per username stops a distributed guess at one account; counting per IP stops one client from
trying many accounts. The state lives in this process (with several workers each keeps its own count,
so the effective limit is that many times higher); it is bounded so a flood of usernames cannot grow
it without end.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

DEFAULT_MAX_FAILURES = 5
DEFAULT_WINDOW_SECONDS = 300.0
_MAX_TRACKED = 10_000


class LoginLimiter:
    def __init__(
        self,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, *keys: str) -> float | None:
        """Seconds until a login may be tried again, or None when none of ``keys`` is over the limit."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.max_failures:
                # The attempt becomes possible once enough old failures leave the window.
                oldest_that_matters = times[len(times) - self.max_failures]
                wait = max(wait, oldest_that_matters + self.window_seconds - now)
        return wait if wait > 0 else None

    def record_failure(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                times = deque(maxlen=self.max_failures * 4)
                self._failures[key] = times
            times.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)


def username_key(username: str) -> str:
    return "user:" + username.strip().lower()


def ip_key(ip: str | None) -> str:
    return "ip:" + (ip or "unknown")
