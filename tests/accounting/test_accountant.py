"""The façade the relay calls: admit → (call) → settle/release, with memory backends and with both
backends on one Redis (one round trip per admission)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from isthmus.accounting import Accountant, PriceBook, Subject
from isthmus.accounting.budgets import MemoryBudgets, usd_to_nano
from isthmus.accounting.limits import MemoryLimits
from isthmus.errors import BudgetExceededError, RateLimitedError
from isthmus.ir.usage import Usage
from isthmus.store.snapshot import Budget, GatewayKeyRow, Limits, TeamRow, UserRow

from .conftest import YEAR, model_row, price_row, utc

D = Decimal
T0 = utc(YEAR, 11, 24, 12).timestamp()
AT = datetime.fromtimestamp(T0, UTC)

MakeAccountant = Callable[..., Accountant]


def prices() -> PriceBook:
    # "house" has a configured price: $1 / $2 per 1M tokens; other names use the built-in list.
    return PriceBook(
        {"house": model_row("house", ("gpt-4o",), (price_row(1, utc(2026, 1, 1), input=1, output=2),))}
    )


@pytest.fixture(params=["memory", "redis"])
async def make_accountant(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[MakeAccountant]:
    clients: list[Redis] = []

    def make(tz: str = "UTC") -> Accountant:
        if request.param == "memory":
            return Accountant.create(prices(), tz=tz)
        client = Redis.from_url(request.getfixturevalue("clean_redis_url"))
        clients.append(client)
        return Accountant.create(prices(), tz=tz, redis=client, prefix=key_prefix)

    yield make
    for client in clients:
        await client.aclose()


def subject(
    *, key_limits: Limits | None = None, key_budget: Budget | None = None, team_budget: Budget | None = None
) -> Subject:
    return Subject(
        key_id=1,
        key_name="alice-laptop",
        key_limits=key_limits,
        key_budget=key_budget,
        user_id=3,
        user_name="alice",
        team_id=7,
        team_name="research",
        team_budget=team_budget,
    )


async def test_admit_estimates_then_settle_bills_the_actual_cost(make_accountant: MakeAccountant) -> None:
    acct = make_accountant()
    who = subject(team_budget=Budget(monthly_usd=1))
    admission = await acct.admit(who, "house", body_size=4000, max_output_tokens=500, now=T0)
    # 1000 prompt tokens (4000 bytes / 4) × $1 + 500 output × $2, per 1M
    assert (admission.estimate_usd, admission.estimate_tokens) == (D("0.002"), 1500)
    assert admission.price is not None and admission.price.ref == "price:1"
    held = await acct.budgets.counter("team", 7, "monthly", T0)
    assert held.reserved_usd == D("0.002") and held.spent_usd == 0
    usage = Usage(input_tokens=800, output_tokens=100)
    cost, price = acct.cost("house", "gpt-4o", usage, AT, cost_multiplier=0.5)
    assert price is not None and price.ref == "price:1"
    assert (cost.list_usd, cost.actual_usd) == (D("0.001"), D("0.0005"))  # 800×1 + 100×2 = 1000 µ$
    await acct.settle(admission, usage, cost)
    await acct.settle(admission, usage, cost)  # settling twice bills once
    await acct.release(admission)  # and a release after the settle gives nothing back
    for entity, id_ in (("team", 7), ("user", 3), ("key", 1)):
        counter = await acct.budgets.counter(entity, id_, "monthly", T0)  # type: ignore[arg-type]
        assert (counter.spent_usd, counter.spent_tokens, counter.reserved_usd) == (D("0.0005"), 900, D(0))


async def test_budget_refusal_takes_no_rate_limit_slot(make_accountant: MakeAccountant) -> None:
    acct = make_accountant()
    who = subject(key_limits=Limits(rpm=2, concurrency=1), team_budget=Budget(daily_usd=0.001))
    with pytest.raises(BudgetExceededError, match=r"^team 'research' daily budget of \$0.001 is exhausted"):
        await acct.admit(who, "house", body_size=4000, max_output_tokens=500, now=T0)
    # Neither the RPM nor the concurrency slot was taken by the refused request.
    rich = subject(key_limits=Limits(rpm=2, concurrency=1))
    first = await acct.admit(rich, "house", 100, 10, now=T0)
    await acct.release(first)
    await acct.admit(rich, "house", 100, 10, now=T0)


async def test_limit_refusal_reserves_no_budget(make_accountant: MakeAccountant) -> None:
    acct = make_accountant()
    who = subject(key_limits=Limits(concurrency=1), key_budget=Budget(total_usd=10))
    await acct.admit(who, "house", 4000, 500, now=T0)
    with pytest.raises(RateLimitedError, match="limited to 1 concurrent request"):
        await acct.admit(who, "house", 4000, 500, now=T0)
    counter = await acct.budgets.counter("key", 1, "total", T0)
    assert counter.reserved_usd == D("0.002")  # only the admitted request's estimate


async def test_release_gives_everything_back(make_accountant: MakeAccountant) -> None:
    acct = make_accountant()
    who = subject(key_limits=Limits(tpm=2000, concurrency=1), team_budget=Budget(monthly_tokens=2000))
    admission = await acct.admit(who, "house", 4000, 500, now=T0)  # 1500 tokens
    with pytest.raises(RateLimitedError):
        await acct.admit(who, "house", 4000, 500, now=T0)
    await acct.release(admission)  # the upstream refused before producing anything
    again = await acct.admit(who, "house", 4000, 500, now=T0)  # TPM, slot and budget all returned
    await acct.settle(again, Usage(input_tokens=900, output_tokens=100), None)  # unknown cost: $0
    counter = await acct.budgets.counter("team", 7, "monthly", T0)
    assert (counter.spent_usd, counter.spent_tokens, counter.reserved_tokens) == (D(0), 1000, 0)


async def test_unknown_model_reserves_no_money_but_counts_tokens(make_accountant: MakeAccountant) -> None:
    acct = make_accountant()
    who = subject(team_budget=Budget(monthly_usd=0.01, monthly_tokens=10_000))
    admission = await acct.admit(who, "self-hosted-llama", 400, None, now=T0)
    assert admission.price is None and admission.estimate_usd == 0
    assert admission.estimate_tokens == 100 + 4096  # default output cap when the request sets none
    with pytest.raises(BudgetExceededError, match="monthly token budget of 10,000 tokens"):
        await acct.admit(who, "self-hosted-llama", 40_000, 1000, now=T0)


async def test_costs_use_the_price_in_force_at_the_request_start(make_accountant: MakeAccountant) -> None:
    acct = make_accountant()
    usage = Usage(input_tokens=1000, cache_read_tokens=1000, output_tokens=100)
    before, price_before = acct.cost("sonnet", "claude-sonnet-5-5", usage, utc(2026, 10, 6), free_tier=False)
    after, price_after = acct.cost("sonnet", "claude-sonnet-5-5", usage, utc(2026, 10, 8))
    assert price_before is not None and price_after is not None
    # 1000×2 + 1000×0.20 + 100×10 before the cache-read cut, 1000×0.10 after it
    assert (before.list_usd, after.list_usd) == (D("0.0032"), D("0.0031"))
    free, _ = acct.cost("sonnet", "claude-sonnet-5-5", usage, utc(2026, 10, 8), free_tier=True)
    assert (free.list_usd, free.actual_usd) == (D("0.0031"), D(0))


async def test_provider_key_passthrough(make_accountant: MakeAccountant) -> None:
    acct = make_accountant()
    lease = await acct.try_acquire_provider_key(5, Limits(concurrency=1), now=T0)
    assert lease is not None
    assert await acct.try_acquire_provider_key(5, Limits(concurrency=1), now=T0) is None
    await acct.release_provider_key(lease, 10)
    assert await acct.try_acquire_provider_key(5, Limits(concurrency=1), now=T0) is not None


class CountingRedis(Redis):
    """A real client that remembers which commands it sent (round trips, as the server sees them)."""

    sent: list[str]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


async def test_redis_admission_is_one_round_trip(clean_redis_url: str, key_prefix: str) -> None:
    client = CountingRedis.from_url(clean_redis_url)
    assert isinstance(client, CountingRedis)
    client.sent = []
    try:
        acct = Accountant.create(prices(), redis=client, prefix=key_prefix)
        who = subject(
            key_limits=Limits(rpm=100, tpm=100_000, concurrency=5), team_budget=Budget(monthly_usd=5)
        )
        await acct.release(await acct.admit(who, "house", 100, 10, now=T0))  # scripts loaded
        client.sent.clear()
        admission = await acct.admit(who, "house", 4000, 500, now=T0 + 1)
        assert client.sent == ["EVALSHA"]
        await acct.settle(admission, Usage(input_tokens=10, output_tokens=10), None)
        assert client.sent == ["EVALSHA", "EVALSHA"]
        # With no limit and no budget set, admission needs no round trip at all.
        client.sent.clear()
        free = await acct.admit(subject(), "house", 4000, 500, now=T0 + 2)
        assert client.sent == []
        await acct.settle(free, Usage(input_tokens=10), None)  # spend is still counted
        assert client.sent == ["EVALSHA"]
    finally:
        await client.aclose()


async def test_memory_accountant_never_yields_to_the_loop() -> None:
    # The memory backends must stay atomic without locks: admit/settle complete without suspending.
    acct = Accountant(prices(), MemoryBudgets(), MemoryLimits())
    who = subject(key_limits=Limits(concurrency=3), team_budget=Budget(monthly_usd=1))
    coro = acct.admit(who, "house", 100, 10, now=T0)
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    admission = done.value.value
    settle = acct.settle(admission, Usage(input_tokens=1), None)
    with pytest.raises(StopIteration):
        settle.send(None)


def test_subject_from_rows_and_time_zone_check() -> None:
    key = GatewayKeyRow(
        id=1,
        name="alice-laptop",
        key_hash="h",
        key_prefix="sk-",
        user_id=3,
        team_id=7,
        allowed_models=None,
        limits=Limits(rpm=60),
        budget=None,
        log_detail=None,
        status="active",
        expires_at=None,
    )
    user = UserRow(
        id=3,
        username="alice",
        role="member",
        team_id=7,
        limits=None,
        budget=Budget(daily_usd=5),
        disabled=False,
    )
    team = TeamRow(
        id=7, name="research", limits=Limits(concurrency=10), budget=Budget(monthly_usd=500), disabled=False
    )
    who = Subject.from_rows(key, user, team)
    assert [(s.kind, s.name) for s in who.limit_subjects] == [("key", "alice-laptop"), ("team", "research")]
    assert [(s.entity_type, s.name, s.budget is not None) for s in who.budget_subjects] == [
        ("key", "alice-laptop", False),
        ("user", "alice", True),
        ("team", "research", True),
    ]
    with pytest.raises(ValueError, match="Europe/Paris"):
        Accountant(prices(), MemoryBudgets("Europe/Paris"), MemoryLimits(), "UTC")


@pytest.mark.parametrize("max_factor", [1.0, 1.5])
async def test_50_concurrent_requests_through_the_accountant(
    make_accountant: MakeAccountant, max_factor: float
) -> None:
    """The relay's view of the "Done when": admit → upstream → settle for 50 requests at once."""
    acct = make_accountant()
    limit = D("0.05")
    who = subject(team_budget=Budget(total_usd=float(limit)))
    rng = random.Random(5)
    in_flight = peak = 0
    settled = D(0)

    async def request() -> None:
        nonlocal in_flight, peak, settled
        for _ in range(10):
            try:
                admission = await acct.admit(who, "house", body_size=4000, max_output_tokens=500)
            except BudgetExceededError:
                await asyncio.sleep(rng.uniform(0, 0.003))
                continue
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(rng.uniform(0, 0.003))
            # Up to max_factor × the estimate: 1000 prompt tokens, 500 output tokens at most.
            factor = rng.uniform(0.5, max_factor)
            usage = Usage(input_tokens=round(1000 * factor), output_tokens=round(500 * factor))
            cost, _ = acct.cost("house", None, usage, AT)
            in_flight -= 1
            await acct.settle(admission, usage, cost)
            settled += cost.actual_usd

    await asyncio.gather(*(request() for _ in range(50)))
    counter = await acct.budgets.counter("team", 7, "total", T0)
    assert counter.reserved_usd == 0 and counter.spent_usd == settled
    assert peak > 5 and counter.spent_usd > limit / 2
    estimate = D("0.002")
    assert usd_to_nano(counter.spent_usd) <= usd_to_nano(limit + peak * estimate * D(str(max_factor - 1)))
