"""The sliding window of failed logins, with a controllable clock."""

from __future__ import annotations

from isthmus.admin.login_limiter import LoginLimiter, ip_key, username_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_slides_and_reset_clears_one_key() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=3, window_seconds=60, clock=clock)
    user, ip = username_key("Alice "), ip_key("10.0.0.1")
    assert user == username_key("alice")
    for at in (1000.0, 1010.0, 1030.0):
        clock.now = at
        assert limiter.retry_after(user, ip) is None
        limiter.record_failure(user, ip)
    clock.now = 1050.0
    # Blocked until the oldest failure (t=1000) leaves the 60 s window.
    assert limiter.retry_after(user, ip) == 10.0
    clock.now = 1060.0
    assert limiter.retry_after(user, ip) is None
    limiter.record_failure(user)
    assert limiter.retry_after(user) == 10.0  # 1010, 1030, 1060 are in the window
    assert limiter.retry_after(ip) is None  # the IP saw only 1010 and 1030 since
    limiter.reset(user)
    assert limiter.retry_after(user) is None


def test_tracked_keys_are_bounded() -> None:
    limiter = LoginLimiter(max_failures=1, window_seconds=60, clock=Clock())
    for i in range(12_000):
        limiter.record_failure(username_key(f"user-{i}"))
    assert limiter.retry_after(username_key("user-11999")) == 60
    assert limiter.retry_after(username_key("user-0")) is None
