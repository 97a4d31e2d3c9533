"""Budgets: calendar periods in a time zone, reserve/settle/release, refusals naming the budget,
expiry of abandoned reservations, seeding — each against memory and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from isthmus.accounting.budgets import (
    BudgetBackend,
    BudgetSubject,
    MemoryBudgets,
    PeriodCalendar,
    RedisBudgets,
    SpendTotal,
    usd_to_nano,
)
from isthmus.errors import BudgetExceededError
from isthmus.store.snapshot import Budget

from .conftest import YEAR, utc

D = Decimal
NOW = utc(YEAR, 11, 24, 12).timestamp()


# --- periods ---------------------------------------------------------------------------------------------


def test_utc_periods() -> None:
    window = PeriodCalendar("UTC").window(utc(2026, 11, 24, 12).timestamp())
    assert (window.day_label, window.month_label) == ("d:2026-11-24", "m:2026-11")
    assert window.day_start == utc(2026, 11, 24).timestamp()
    assert window.day_end == utc(2026, 11, 25).timestamp()
    assert window.month_end == utc(2026, 12, 1).timestamp()


def test_periods_follow_the_local_calendar() -> None:
    calendar = PeriodCalendar("America/New_York")  # UTC−5 in November
    late_evening = calendar.window(utc(2026, 11, 25, 4, 59).timestamp())
    assert late_evening.day_label == "d:2026-11-24"
    assert late_evening.day_end == utc(2026, 11, 25, 5).timestamp()
    assert calendar.window(utc(2026, 11, 25, 5).timestamp()).day_label == "d:2026-11-25"
    # Still November in New York four hours after UTC's month ended.
    assert calendar.window(utc(2026, 12, 1, 4).timestamp()).month_label == "m:2026-11"
    assert calendar.window(utc(2026, 12, 1, 5).timestamp()).month_label == "m:2026-12"
    kolkata = PeriodCalendar("Asia/Kolkata").window(utc(2026, 12, 31, 18, 30).timestamp())  # UTC+5:30
    assert (kolkata.day_label, kolkata.month_label) == ("d:2027-01-01", "m:2027-01")


def test_a_dst_day_is_23_hours_long() -> None:
    window = PeriodCalendar("Europe/Berlin").window(utc(2026, 3, 29, 12).timestamp())
    assert window.day_end - window.day_start == 23 * 3600
    assert window.day_start == datetime(2026, 3, 29, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


def test_labels_of_spend_totals() -> None:
    calendar = PeriodCalendar("America/New_York")
    zone = ZoneInfo("America/New_York")
    assert calendar.label_of("daily", datetime(2026, 11, 24, tzinfo=zone)) == "d:2026-11-24"
    assert calendar.label_of("daily", datetime(2026, 11, 24)) == "d:2026-11-24"  # naive = local
    assert calendar.label_of("monthly", utc(2026, 11, 1, 4)) == "m:2026-11"
    assert calendar.label_of("total", None) == "t"


# --- backends ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def make_budgets(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[object]:
    clients: list[Redis] = []

    def make(tz: str = "UTC", ttl: float = 960.0) -> BudgetBackend:
        if request.param == "memory":
            return MemoryBudgets(tz, ttl)
        client = Redis.from_url(request.getfixturevalue("clean_redis_url"))
        clients.append(client)
        return RedisBudgets(client, tz=tz, prefix=key_prefix, reservation_ttl_s=ttl)

    yield make
    for client in clients:
        await client.aclose()


def team(limit: Budget | None, name: str = "research", id_: int = 7) -> BudgetSubject:
    return BudgetSubject("team", id_, name, limit)


KEY = BudgetSubject("key", 1, "alice-laptop", None)


async def test_reserve_settle_and_release(make_budgets: object) -> None:
    budgets: BudgetBackend = make_budgets()  # type: ignore[operator]
    subjects = [KEY, team(Budget(monthly_usd=10))]
    res = await budgets.reserve(subjects, D("2.5"), 1000, NOW)
    counter = await budgets.counter("team", 7, "monthly", NOW)
    assert (counter.reserved_usd, counter.reserved_tokens, counter.spent_usd) == (D("2.5"), 1000, D(0))
    await budgets.settle(res, D("1.25"), 600)
    await budgets.settle(res, D("1.25"), 600)  # a second settle of the same request bills nothing
    for entity, id_ in (("team", 7), ("key", 1)):  # spend is tracked for the unlimited key too
        for period in ("daily", "monthly", "total"):
            counter = await budgets.counter(entity, id_, period, NOW)  # type: ignore[arg-type]
            assert (counter.spent_usd, counter.spent_tokens) == (D("1.25"), 600), (entity, period)
            assert (counter.reserved_usd, counter.reserved_tokens) == (D(0), 0)
    released = await budgets.reserve(subjects, D("3"), 10, NOW)
    await budgets.release(released)
    counter = await budgets.counter("team", 7, "monthly", NOW)
    assert (counter.spent_usd, counter.reserved_usd) == (D("1.25"), D(0))


async def test_refusal_names_the_budget_and_reserves_nothing(make_budgets: object) -> None:
    budgets: BudgetBackend = make_budgets()  # type: ignore[operator]
    key = BudgetSubject("key", 1, "alice-laptop", Budget(daily_usd=1000))
    subjects = [key, team(Budget(monthly_usd=500))]
    first = await budgets.reserve(subjects, D("450"), 0, NOW)
    with pytest.raises(BudgetExceededError) as refused:
        await budgets.reserve(subjects, D("60"), 0, NOW)
    err = refused.value
    assert err.status == 429 and err.code == "budget_exceeded"
    assert err.message.startswith("team 'research' monthly budget of $500.00 is exhausted")
    assert "$450.00 spent or reserved" in err.message and "up to $60.00" in err.message
    assert err.retry_after == pytest.approx(utc(YEAR, 12, 1).timestamp() - NOW)
    assert err.headers["retry-after"] == str(round(utc(YEAR, 12, 1).timestamp() - NOW))
    # Nothing was reserved for the refused request, on the key's budget either.
    key_daily = await budgets.counter("key", 1, "daily", NOW)
    assert key_daily.reserved_usd == D("450")
    await budgets.settle(first, D("500"), 0)
    with pytest.raises(
        BudgetExceededError, match=r"^team 'research' monthly budget of \$500.00 is exhausted$"
    ):
        await budgets.reserve(subjects, D(0), 0, NOW)  # spent in full: even a free estimate is refused


async def test_token_and_total_budgets(make_budgets: object) -> None:
    budgets: BudgetBackend = make_budgets()  # type: ignore[operator]
    user = BudgetSubject("user", 3, "bob", Budget(daily_tokens=10_000, total_usd=1))
    await budgets.settle(await budgets.reserve([user], D("0.1"), 9000, NOW), D("0.1"), 9000)
    with pytest.raises(BudgetExceededError) as refused:
        await budgets.reserve([user], D("0.1"), 2000, NOW)
    assert refused.value.message.startswith("user 'bob' daily token budget of 10,000 tokens is exhausted")
    assert refused.value.retry_after == pytest.approx(utc(YEAR, 11, 25).timestamp() - NOW)
    tomorrow = utc(YEAR, 11, 25, 0, 0, 1).timestamp()
    await budgets.settle(await budgets.reserve([user], D("0.85"), 2000, tomorrow), D("0.9"), 2000)
    with pytest.raises(BudgetExceededError) as total:
        await budgets.reserve([user], D("0.01"), 1, tomorrow)
    assert total.value.message.startswith("user 'bob' total budget of $1.00 is exhausted")
    assert total.value.retry_after is None and "retry-after" not in total.value.headers


async def test_daily_budget_resets_at_local_midnight(make_budgets: object) -> None:
    budgets: BudgetBackend = make_budgets("America/New_York")  # type: ignore[operator]
    key = BudgetSubject("key", 1, "alice-laptop", Budget(daily_usd=1))
    before_midnight = utc(YEAR, 11, 25, 4, 59).timestamp()  # 23:59 in New York
    await budgets.settle(await budgets.reserve([key], D("1"), 0, before_midnight), D("1"), 0)
    with pytest.raises(BudgetExceededError, match="daily budget of"):
        await budgets.reserve([key], D("0.01"), 0, before_midnight + 30)
    after_midnight = utc(YEAR, 11, 25, 5, 1).timestamp()  # 00:01 in New York, still the 25th in UTC
    res = await budgets.reserve([key], D("0.5"), 0, after_midnight)
    assert res.usd_nano == usd_to_nano(D("0.5"))


async def test_zero_budget_refuses_everything(make_budgets: object) -> None:
    budgets: BudgetBackend = make_budgets()  # type: ignore[operator]
    with pytest.raises(BudgetExceededError, match=r"key 'k' monthly budget of \$0.00 is exhausted"):
        await budgets.reserve([BudgetSubject("key", 9, "k", Budget(monthly_usd=0))], D(0), 0, NOW)


async def test_abandoned_reservations_expire(make_budgets: object) -> None:
    budgets: BudgetBackend = make_budgets(ttl=30)  # type: ignore[operator]
    subjects = [team(Budget(monthly_usd=1))]
    crashed = await budgets.reserve(subjects, D("0.8"), 0, NOW)  # never settled: its process died
    with pytest.raises(BudgetExceededError):
        await budgets.reserve(subjects, D("0.5"), 0, NOW + 29)
    later = await budgets.reserve(subjects, D("0.5"), 0, NOW + 31)
    counter = await budgets.counter("team", 7, "monthly", NOW + 31)
    assert counter.reserved_usd == D("0.5")
    # A late settle of the expired reservation adds its spend once and does not free anything twice.
    await budgets.settle(crashed, D("0.2"), 0)
    counter = await budgets.counter("team", 7, "monthly", NOW + 31)
    assert (counter.spent_usd, counter.reserved_usd) == (D("0.2"), D("0.5"))
    await budgets.release(later)
    assert (await budgets.counter("team", 7, "monthly", NOW + 31)).reserved_usd == 0


async def test_load_spend_seeds_current_periods(make_budgets: object) -> None:
    budgets: BudgetBackend = make_budgets()  # type: ignore[operator]
    totals = [
        SpendTotal("team", 7, "monthly", utc(YEAR, 11, 1), D("480"), 1_000_000),
        SpendTotal("team", 7, "monthly", utc(YEAR, 10, 1), D("999"), 5),  # a past month: ignored
        SpendTotal("team", 7, "daily", utc(YEAR, 11, 24), D("12.5"), 1000),
        SpendTotal("team", 7, "total", None, D("2000"), 9_000_000),
    ]
    await budgets.load_spend(totals, NOW)
    monthly = await budgets.counter("team", 7, "monthly", NOW)
    assert (monthly.spent_usd, monthly.spent_tokens) == (D("480"), 1_000_000)
    assert (await budgets.counter("team", 7, "daily", NOW)).spent_usd == D("12.5")
    assert (await budgets.counter("team", 7, "total", NOW)).spent_tokens == 9_000_000
    subjects = [team(Budget(monthly_usd=500))]
    await budgets.reserve(subjects, D("19"), 0, NOW)
    with pytest.raises(BudgetExceededError, match=r"\$499.00 spent or reserved"):
        await budgets.reserve(subjects, D("2"), 0, NOW)


async def test_redis_seeding_keeps_counters_another_instance_already_has(
    redis_client: Redis, key_prefix: str
) -> None:
    first = RedisBudgets(redis_client, prefix=key_prefix)
    await first.settle(await first.reserve([KEY], D("1"), 0, NOW), D("3"), 30)
    second = RedisBudgets(redis_client, prefix=key_prefix)  # a new process starting later
    await second.load_spend([SpendTotal("key", 1, "monthly", utc(YEAR, 11, 1), D("2"), 20)], NOW)
    counter = await second.counter("key", 1, "monthly", NOW)
    assert (counter.spent_usd, counter.spent_tokens) == (D("3"), 30)
    await second.load_spend([SpendTotal("key", 2, "monthly", utc(YEAR, 11, 1), D("2"), 20)], NOW)
    assert (await second.counter("key", 2, "monthly", NOW)).spent_usd == D("2")


async def test_redis_period_counters_expire_after_their_period(redis_client: Redis, key_prefix: str) -> None:
    budgets = RedisBudgets(redis_client, prefix=key_prefix)
    await budgets.settle(await budgets.reserve([team(Budget(daily_usd=5))], D("1"), 1, NOW), D("1"), 1)
    day_expiry = await redis_client.expiretime(f"{key_prefix}bud:team:7:d:{YEAR}-11-24")
    month_expiry = await redis_client.expiretime(f"{key_prefix}bud:team:7:m:{YEAR}-11")
    assert day_expiry == utc(YEAR, 11, 27).timestamp()  # the day's end + 2 days of grace
    assert month_expiry == utc(YEAR, 12, 3).timestamp()
    assert await redis_client.expiretime(f"{key_prefix}bud:team:7:t") == -1  # totals never expire


async def test_memory_drops_past_periods_at_rollover() -> None:
    budgets = MemoryBudgets()
    await budgets.settle(await budgets.reserve([KEY], D("1"), 1, NOW), D("1"), 1)
    next_month = utc(YEAR, 12, 2).timestamp()
    await budgets.reserve([KEY], D("1"), 1, next_month)
    assert (await budgets.counter("key", 1, "total", next_month)).spent_usd == D("1")
    assert (await budgets.counter("key", 1, "monthly", next_month)).spent_usd == 0
    assert not [k for k in budgets._counters if k[2] in (f"d:{YEAR}-11-24", f"m:{YEAR}-11")]


def test_backends_share_the_interface() -> None:
    backend: BudgetBackend = MemoryBudgets()
    assert backend.calendar.tz == "UTC"
    assert timedelta(seconds=960).total_seconds() == MemoryBudgets().reservation_ttl_s
