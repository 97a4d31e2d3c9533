"""Rate limits: RPM, TPM and concurrency refusals with their headers, recovery over time, lease
expiry, all-or-nothing acquisition and provider-key skips — in memory and on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from isthmus.accounting.limits import (
    LimitBackend,
    LimitSubject,
    MemoryLimits,
    RedisLimits,
    format_duration,
)
from isthmus.errors import RateLimitedError
from isthmus.store.snapshot import Limits

from .conftest import YEAR, utc

T0 = utc(YEAR, 11, 24, 12).timestamp()  # every test passes explicit times (see YEAR)

MakeLimits = Callable[..., LimitBackend]


@pytest.fixture(params=["memory", "redis"])
async def make_limits(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[MakeLimits]:
    clients: list[Redis] = []

    def make(lease_ttl_s: float = 960.0) -> LimitBackend:
        if request.param == "memory":
            return MemoryLimits(lease_ttl_s)
        client = Redis.from_url(request.getfixturevalue("clean_redis_url"))
        clients.append(client)
        return RedisLimits(client, prefix=key_prefix, lease_ttl_s=lease_ttl_s)

    yield make
    for client in clients:
        await client.aclose()


def key(**limits: int) -> LimitSubject:
    subject = LimitSubject.of("key", 1, "alice-laptop", Limits(**limits))
    assert subject is not None
    return subject


def team(**limits: int) -> LimitSubject:
    subject = LimitSubject.of("team", 7, "research", Limits(**limits))
    assert subject is not None
    return subject


def test_subjects_without_limits_are_dropped() -> None:
    assert LimitSubject.of("key", 1, "k", None) is None
    assert LimitSubject.of("key", 1, "k", Limits()) is None
    assert LimitSubject.of("user", 2, "bob", Limits(rpm=5)) == LimitSubject("user", 2, "bob", 5, None, None)


def test_reset_durations_in_openai_format() -> None:
    assert [format_duration(s) for s in (0, 0.25, 1, 1.5, 59.9994, 60, 360, 90.2)] == [
        "0ms",
        "250ms",
        "1s",
        "1.5s",
        "59.999s",
        "1m0s",
        "6m0s",
        "1m31s",
    ]


async def test_rpm_refusal_headers_and_recovery(make_limits: MakeLimits) -> None:
    limits = make_limits()
    subjects = [key(rpm=3)]
    for _ in range(3):  # a full minute's burst is allowed at once
        await limits.acquire(subjects, T0, 0)
    with pytest.raises(RateLimitedError) as refused:
        await limits.acquire(subjects, T0 + 1, 0)
    err = refused.value
    assert err.status == 429 and err.code == "rpm_exceeded"
    assert err.message == "key 'alice-laptop' is limited to 3 requests per minute"
    assert err.retry_after == pytest.approx(19, abs=1e-3)  # one request's worth (20 s) drains at T0+20
    assert err.headers["retry-after"] == "19"
    assert err.headers["x-ratelimit-limit-requests"] == "3"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-reset-requests"] == "59s"
    assert "x-ratelimit-limit-tokens" not in err.headers
    with pytest.raises(RateLimitedError):
        await limits.acquire(subjects, T0 + 19.9, 0)
    await limits.acquire(subjects, T0 + 20, 0)  # one slot back after 60/3 s


async def test_tpm_charges_the_estimate_and_corrects_at_release(make_limits: MakeLimits) -> None:
    limits = make_limits()
    subjects = [key(tpm=1000)]
    first = await limits.acquire(subjects, T0, 400)
    second = await limits.acquire(subjects, T0, 400)
    with pytest.raises(RateLimitedError) as refused:
        await limits.acquire(subjects, T0, 400)
    err = refused.value
    assert err.code == "tpm_exceeded"
    assert err.message == "key 'alice-laptop' is limited to 1,000 tokens per minute"
    assert err.headers["x-ratelimit-limit-tokens"] == "1000"
    assert err.headers["x-ratelimit-remaining-tokens"] == "200"
    assert err.headers["x-ratelimit-reset-tokens"] == "48s"  # 800 tokens drain at 1000/min
    assert err.retry_after == pytest.approx(12)  # until 400 more fit
    # Both requests turned out to use 100 tokens: 600 come back, so the third fits now.
    await limits.release(first, 100)
    await limits.release(second, 100)
    await limits.acquire(subjects, T0, 400)


async def test_tpm_admits_one_oversized_request_when_idle(make_limits: MakeLimits) -> None:
    limits = make_limits()
    subjects = [key(tpm=1000)]
    await limits.acquire(subjects, T0, 5000)  # larger than the limit, but nothing else is using it
    with pytest.raises(RateLimitedError) as refused:
        await limits.acquire(subjects, T0 + 10, 10)
    # 5000 tokens drain in 300 s; 10 more fit once the backlog is under 60 s minus their 0.6 s.
    assert refused.value.retry_after == pytest.approx(300 - 60 + 0.6 - 10, abs=1e-3)
    with pytest.raises(RateLimitedError):
        await limits.acquire(subjects, T0 + 240, 10)
    await limits.acquire(subjects, T0 + 240.7, 10)


async def test_concurrency_and_release(make_limits: MakeLimits) -> None:
    limits = make_limits()
    subjects = [key(concurrency=2)]
    first = await limits.acquire(subjects, T0, 0)
    await limits.acquire(subjects, T0, 0)
    with pytest.raises(RateLimitedError) as refused:
        await limits.acquire(subjects, T0, 0)
    assert refused.value.message == "key 'alice-laptop' is limited to 2 concurrent requests"
    assert refused.value.code == "concurrency_exceeded"
    assert refused.value.headers["x-ratelimit-limit-concurrency"] == "2"
    assert refused.value.headers["retry-after"] == "1"
    await limits.release(first, 0)
    await limits.release(first, 0)  # releasing twice frees one slot, not two
    await limits.acquire(subjects, T0, 0)
    with pytest.raises(RateLimitedError):
        await limits.acquire(subjects, T0, 0)


async def test_leases_of_a_crashed_request_expire(make_limits: MakeLimits) -> None:
    limits = make_limits(lease_ttl_s=30)
    subjects = [key(concurrency=1)]
    lost = await limits.acquire(subjects, T0, 0)  # its process died before releasing
    with pytest.raises(RateLimitedError):
        await limits.acquire(subjects, T0 + 29, 0)
    await limits.acquire(subjects, T0 + 31, 0)
    await limits.release(lost, 0)  # the late release must not free the new holder's slot
    with pytest.raises(RateLimitedError):
        await limits.acquire(subjects, T0 + 32, 0)


async def test_acquisition_is_all_or_nothing(make_limits: MakeLimits) -> None:
    limits = make_limits()
    own = key(rpm=2)
    shared = team(rpm=1)
    await limits.acquire([shared], T0, 0)  # another key of the team used the team's only slot
    with pytest.raises(RateLimitedError) as refused:
        await limits.acquire([own, shared], T0, 0)
    assert refused.value.message == "team 'research' is limited to 1 request per minute"
    # The key's own RPM was not charged by the refused request: both of its slots are still free.
    await limits.acquire([own], T0, 0)
    await limits.acquire([own], T0, 0)


async def test_refusal_headers_describe_all_of_the_subjects_limits(make_limits: MakeLimits) -> None:
    limits = make_limits()
    user = LimitSubject("user", 3, "bob", rpm=10, tpm=1000, concurrency=1)
    await limits.acquire([user], T0, 250)
    with pytest.raises(RateLimitedError) as refused:
        await limits.acquire([user], T0, 250)
    headers = refused.value.headers
    assert refused.value.message == "user 'bob' is limited to 1 concurrent request"
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("10", "9")
    assert headers["x-ratelimit-reset-requests"] == "6s"
    assert (headers["x-ratelimit-remaining-tokens"], headers["x-ratelimit-reset-tokens"]) == ("750", "15s")


async def test_provider_key_full_means_skip_not_error(make_limits: MakeLimits) -> None:
    limits = make_limits()
    upstream = Limits(rpm=1, concurrency=5)
    lease = await limits.try_acquire_provider_key(42, upstream, T0)
    assert lease is not None and not lease.empty
    assert await limits.try_acquire_provider_key(42, upstream, T0 + 1) is None
    assert await limits.try_acquire_provider_key(43, upstream, T0 + 1) is not None  # another key
    unlimited = await limits.try_acquire_provider_key(44, Limits(), T0)
    assert unlimited is not None and unlimited.empty
    await limits.release(unlimited, 10)
    await limits.release(lease, 10)


async def test_no_subjects_is_a_free_pass(make_limits: MakeLimits) -> None:
    limits = make_limits()
    lease = await limits.acquire([], T0, 10_000)
    assert lease.empty
    await limits.release(lease, 5)


def test_memory_backend_tracks_active_leases() -> None:
    limits = MemoryLimits(lease_ttl_s=10)
    subjects = [key(concurrency=3)]
    leases = [limits.acquire_now(subjects, T0, 0) for _ in range(3)]
    assert limits.active("key", 1) == 3
    limits.release_now(leases[0], None)
    assert limits.active("key", 1) == 2
    limits.acquire_now([key(rpm=100)], T0 + 11, 0)  # any acquisition sweeps expired leases
    assert limits.active("key", 1) == 0
    limits.release_now(leases[1], None)
    assert limits.active("key", 1) == 0  # never negative
