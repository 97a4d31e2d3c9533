"""Key health: circuit breaker transitions, doubling backoff, cool-downs, flags and recovery."""

from __future__ import annotations

import pytest

from isthmus.routing.health import (
    HEALTHY,
    REASON_CIRCUIT_OPEN,
    REASON_HALF_OPEN,
    REASON_PROBE_IN_FLIGHT,
    FailureKind,
    HealthBackend,
    HealthConfig,
    MemoryHealth,
)

KEY = 7


def fail(health: MemoryHealth, now: float, times: int = 1, kind: FailureKind = FailureKind.SERVER) -> None:
    for _ in range(times):
        health.record_failure(KEY, now, kind)


def test_memory_health_is_a_health_backend() -> None:
    backend: HealthBackend = MemoryHealth()
    assert backend.status(KEY, 0.0) is HEALTHY


def test_unknown_key_is_healthy_and_needs_no_probe() -> None:
    health = MemoryHealth()
    status = health.status(KEY, 100.0)
    assert status.available and status.reason is None and status.error_rate == 0.0
    assert health.try_acquire_probe(KEY, 100.0)


def test_breaker_opens_after_consecutive_failures() -> None:
    health = MemoryHealth()
    fail(health, 0.0, times=4)
    assert health.status(KEY, 0.0).available
    fail(health, 1.0)
    status = health.status(KEY, 1.0)
    assert not status.available
    assert status.reason == REASON_CIRCUIT_OPEN
    assert status.until == pytest.approx(11.0)
    assert not health.try_acquire_probe(KEY, 5.0)


def test_success_resets_the_consecutive_count() -> None:
    health = MemoryHealth(HealthConfig(min_samples=1000))  # keep the error-rate rule out of the way
    for t in range(20):
        fail(health, float(t), times=4)
        health.record_success(KEY, float(t))
    assert health.status(KEY, 20.0).available


def test_breaker_opens_on_error_rate_over_the_window() -> None:
    health = MemoryHealth()
    now = 0.0
    # 6 failures, 4 successes, never 5 in a row: 60% > 50% with 10 samples.
    for outcome in "ffsffsffsf":
        now += 1
        if outcome == "f":
            health.record_failure(KEY, now, FailureKind.TIMEOUT)
        else:
            health.record_success(KEY, now)
        if now < 10:
            assert health.status(KEY, now).available, f"opened early at sample {now}"
    status = health.status(KEY, now)
    assert not status.available and status.reason == REASON_CIRCUIT_OPEN


def test_error_rate_needs_min_samples() -> None:
    health = MemoryHealth()
    for t, outcome in enumerate("ffsffsff"):  # 75% failures but only 8 samples, max 2 in a row
        if outcome == "f":
            health.record_failure(KEY, float(t), FailureKind.CONNECT)
        else:
            health.record_success(KEY, float(t))
    status = health.status(KEY, 8.0)
    assert status.available
    assert status.error_rate == pytest.approx(6 / 8)


def test_old_samples_leave_the_window() -> None:
    health = MemoryHealth()
    fail(health, 0.0, times=3)
    for t in range(6):
        health.record_success(KEY, 1.0 + t)
    assert health.status(KEY, 10.0).error_rate == pytest.approx(3 / 9)
    # 60 s window plus one 5 s bucket of slack: by t=70 the early samples are gone.
    assert health.status(KEY, 70.0).error_rate == 0.0
    assert health.status(KEY, 70.0) is HEALTHY
    # Old failures no longer count towards the error-rate rule.
    fail(health, 71.0, times=4)
    health.record_success(KEY, 72.0)
    assert health.status(KEY, 72.0).available


def test_half_open_lets_exactly_one_probe_through() -> None:
    health = MemoryHealth()
    fail(health, 0.0, times=5)
    assert not health.status(KEY, 9.9).available
    status = health.status(KEY, 10.0)
    assert status.available and status.reason == REASON_HALF_OPEN
    assert health.try_acquire_probe(KEY, 10.0)
    assert not health.try_acquire_probe(KEY, 10.1)
    busy = health.status(KEY, 10.1)
    assert not busy.available and busy.reason == REASON_PROBE_IN_FLIGHT


def test_probe_failure_reopens_with_doubling_backoff_up_to_the_cap() -> None:
    health = MemoryHealth()
    now = 0.0
    fail(health, now, times=5)
    expected = [20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    opened_for = 10.0
    for duration in expected:
        now += opened_for
        assert health.try_acquire_probe(KEY, now)
        fail(health, now)
        status = health.status(KEY, now)
        assert not status.available and status.reason == REASON_CIRCUIT_OPEN
        assert status.until == pytest.approx(now + duration)
        opened_for = duration


def test_probe_success_closes_and_resets_the_backoff() -> None:
    health = MemoryHealth()
    fail(health, 0.0, times=5)
    assert health.try_acquire_probe(KEY, 10.0)
    fail(health, 10.0)  # re-open for 20 s
    assert health.try_acquire_probe(KEY, 30.0)
    health.record_success(KEY, 30.0, latency_ms=120.0)
    assert health.status(KEY, 30.0) is HEALTHY
    assert health.try_acquire_probe(KEY, 30.0)
    # Trip again: back to the base duration, and the old failures do not linger in the window.
    fail(health, 31.0, times=4)
    assert health.status(KEY, 31.0).available
    fail(health, 31.0)
    assert health.status(KEY, 31.0).until == pytest.approx(41.0)


def test_failure_while_open_does_not_extend_it() -> None:
    health = MemoryHealth()
    fail(health, 0.0, times=5)
    fail(health, 5.0, times=3)  # requests that were in flight when it opened
    assert health.status(KEY, 5.0).until == pytest.approx(10.0)


def test_unreported_probe_expires() -> None:
    health = MemoryHealth(HealthConfig(probe_timeout_s=30.0))
    fail(health, 0.0, times=5)
    assert health.try_acquire_probe(KEY, 10.0)
    assert not health.try_acquire_probe(KEY, 39.0)
    assert health.try_acquire_probe(KEY, 40.0)


def test_released_probe_can_be_taken_again() -> None:
    health = MemoryHealth()
    fail(health, 0.0, times=5)
    assert health.try_acquire_probe(KEY, 10.0)
    health.release_probe(KEY)
    assert health.try_acquire_probe(KEY, 10.5)


def test_rate_limit_honours_retry_after_and_recovers() -> None:
    health = MemoryHealth()
    health.record_failure(KEY, 100.0, FailureKind.RATE_LIMITED, retry_after=12.0)
    status = health.status(KEY, 100.0)
    assert not status.available
    assert status.reason == "cooling_down:rate_limited"
    assert status.until == pytest.approx(112.0)
    assert not health.try_acquire_probe(KEY, 111.9)
    assert health.status(KEY, 112.0).available
    assert health.try_acquire_probe(KEY, 112.0)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 30.0), (0.0, 1.0), (5.0, 5.0), (299.0, 299.0), (3600.0, 300.0)],
)
def test_rate_limit_cooldown_bounds(retry_after: float | None, expected: float) -> None:
    health = MemoryHealth()
    health.record_failure(KEY, 0.0, FailureKind.RATE_LIMITED, retry_after=retry_after)
    assert health.status(KEY, 0.0).until == pytest.approx(expected)


def test_rate_limits_do_not_trip_the_breaker() -> None:
    health = MemoryHealth()
    for t in range(20):
        health.record_failure(KEY, float(t * 100), FailureKind.RATE_LIMITED, retry_after=1.0)
    status = health.status(KEY, 5000.0)
    assert status.available and status.error_rate == 0.0


def test_success_does_not_lift_a_rate_limit_cooldown() -> None:
    health = MemoryHealth()
    health.record_failure(KEY, 0.0, FailureKind.RATE_LIMITED, retry_after=20.0)
    health.record_success(KEY, 1.0)  # an earlier request finishing
    assert not health.status(KEY, 1.0).available


def test_longer_cooldown_is_not_shortened_by_a_later_short_one() -> None:
    health = MemoryHealth()
    health.record_failure(KEY, 0.0, FailureKind.AUTH)
    health.record_failure(KEY, 1.0, FailureKind.RATE_LIMITED, retry_after=2.0)
    status = health.status(KEY, 5.0)
    assert not status.available and status.reason == "cooling_down:auth"


@pytest.mark.parametrize(("kind", "flag"), [(FailureKind.AUTH, "auth"), (FailureKind.PAYMENT, "payment")])
def test_bad_credentials_cool_down_long_and_flag(kind: FailureKind, flag: str) -> None:
    health = MemoryHealth()
    health.record_failure(KEY, 0.0, kind, detail="invalid x-api-key")
    status = health.status(KEY, 599.0)
    assert not status.available
    assert status.reason == f"cooling_down:{flag}"
    assert status.flagged == flag
    after = health.status(KEY, 600.0)
    assert after.available and after.flagged == flag  # tried again, still shown to the operator
    report = health.all_statuses(600.0)[KEY]
    assert report.flagged == flag and report.last_error == "invalid x-api-key"
    health.record_success(KEY, 601.0)
    assert health.status(KEY, 601.0) is HEALTHY


def test_success_clears_an_auth_cooldown_early() -> None:
    health = MemoryHealth()
    health.record_failure(KEY, 0.0, FailureKind.AUTH)
    health.record_success(KEY, 10.0)  # e.g. a last-resort attempt worked: the key was fixed
    assert health.status(KEY, 10.0) is HEALTHY


def test_all_statuses_reports_each_state() -> None:
    health = MemoryHealth()
    health.record_success(1, 0.0, latency_ms=100.0)
    health.record_success(1, 1.0, latency_ms=200.0)
    for _ in range(5):
        health.record_failure(2, 0.0, FailureKind.CONNECT)
    for _ in range(5):
        health.record_failure(3, 0.0, FailureKind.CONNECT)
    health.record_failure(4, 0.0, FailureKind.AUTH)
    # Key 3's breaker lapsed at 10 s: half-open. Key 2 re-opened by a failed probe.
    assert health.try_acquire_probe(2, 10.0)
    health.record_failure(2, 10.0, FailureKind.CONNECT)
    reports = health.all_statuses(12.0)
    assert reports[1].state == "closed" and reports[1].available
    assert reports[1].latency_ms == pytest.approx(0.8 * 100.0 + 0.2 * 200.0)
    assert reports[2].state == "open" and reports[2].open_count == 2 and reports[2].backoff_s == 20.0
    assert reports[3].state == "half_open" and reports[3].available
    assert reports[4].state == "closed" and not reports[4].available and reports[4].flagged == "auth"
    assert reports[2].last_failure_kind is FailureKind.CONNECT


def test_reset_forgets_a_key() -> None:
    health = MemoryHealth()
    health.record_failure(KEY, 0.0, FailureKind.AUTH)
    health.reset(KEY)
    assert health.status(KEY, 1.0) is HEALTHY
    assert KEY not in health.all_statuses(1.0)


def test_cooldown_for_is_none_for_breaker_failures() -> None:
    config = HealthConfig()
    for kind in (FailureKind.CONNECT, FailureKind.TIMEOUT, FailureKind.SERVER, FailureKind.OVERLOADED):
        assert config.cooldown_for(kind, 10.0) is None
    assert config.cooldown_for(FailureKind.AUTH, None) == config.auth_cooldown_s
