"""What keeps accounting cheap and bounded on the request path: nothing is remembered per request
once it is finished, a subject without limits or budgets holds nothing, the integer cost path agrees
with the exact decimal one, and the usage writer's batch preparation (threaded, chunked) writes the
same rows and totals."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounting.usage_samples import counts, make_bundle
from isthmus.accounting import Accountant, PriceBook, Subject
from isthmus.accounting.budgets import MemoryBudgets, usd_to_nano
from isthmus.accounting.cost import _CTX, compute_cost, estimate_cost, estimate_nano
from isthmus.accounting.limits import MemoryLimits
from isthmus.accounting.prices import IntegerRates, resolve_price_row, to_decimal
from isthmus.accounting.rollups import SPEND_PERIODS, fold_spend, period_start
from isthmus.accounting.writer import THREAD_MIN_BUNDLES, write_batch
from isthmus.ir.usage import Usage
from isthmus.store.bulk import CHUNK_ROWS
from isthmus.store.db import create_engine, session_factory
from isthmus.store.snapshot import Budget, Limits, PriceTierRow
from isthmus.store.usage_tables import SpendTotalRow, UsageAttemptRow

from .conftest import model_row, price_row, utc

D = Decimal
T0 = utc(2026, 11, 24, 12).timestamp()
CYCLES = 100_000


def book() -> PriceBook:
    return PriceBook({"m": model_row("m", ("gpt-4o",), (price_row(1, utc(2026, 1, 1), input=1, output=2),))})


def limited_subject() -> Subject:
    """Every kind of hold: key RPM/TPM/concurrency, a key budget and a team budget with a limit."""
    return Subject(
        key_id=1,
        key_name="k",
        key_limits=Limits(rpm=10**9, tpm=10**12, concurrency=1000),
        key_budget=Budget(monthly_usd=10**9),
        user_id=2,
        user_name="u",
        team_id=3,
        team_name="t",
        team_limits=Limits(rpm=10**9),
        team_budget=Budget(daily_usd=10**9, monthly_tokens=10**15),
    )


class UpstreamKey:
    rpm = 10**9
    tpm = None
    concurrency = 50


async def test_100k_admit_settle_cycles_leave_nothing_behind() -> None:
    budgets, limits = MemoryBudgets(), MemoryLimits()
    acct = Accountant(book(), budgets, limits)
    who = limited_subject()
    upstream = UpstreamKey()
    usage = Usage(input_tokens=300, output_tokens=40)

    async def cycles(first: int, count: int) -> None:
        for i in range(first, first + count):
            now = T0 + i * 0.02  # 2200 s in all: more than twice the lease and reservation TTLs
            admission = await acct.admit(who, "m", 1200, 100, now=now)
            lease = await acct.try_acquire_provider_key(9, upstream, now=now)
            assert lease is not None
            await acct.release_provider_key(lease, usage.total_tokens)
            cost, _ = acct.cost("m", "gpt-4o", usage, datetime.fromtimestamp(now, UTC))
            if i % 10 == 0:
                await acct.release(admission)  # refused upstream: given back, not settled
            else:
                await acct.settle(admission, usage, cost)

    await cycles(0, CYCLES)
    assert limits.held_leases == 0 and budgets.live_reservations == 0
    assert limits.subjects_tracked == 3  # key, team, provider key: one state each, whatever the traffic
    # Counters of this day, this month and the totals of the key, the user and the team.
    assert budgets.counters_tracked == 3 * 3
    # Nothing else grows either: before, every request left ~0.8 KiB behind (two leases and a
    # reservation kept for 960 s), ~8 MiB over these 10 000 more (traced apart: tracing is slow).
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await cycles(CYCLES, CYCLES // 10)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, f"heap grew by {grown} bytes over {CYCLES // 10} requests"
    total = CYCLES + CYCLES // 10
    for entity, id_ in (("key", 1), ("user", 2), ("team", 3)):
        counter = await budgets.counter(entity, id_, "monthly", T0)  # type: ignore[arg-type]
        assert counter.reserved_usd == 0 and counter.reserved_tokens == 0
        assert counter.spent_tokens == (total - total // 10) * usage.total_tokens
    assert limits.active("key", 1) == 0 and limits.active("provider_key", 9) == 0


async def test_holds_never_given_back_are_reclaimed_by_expiry() -> None:
    budgets, limits = MemoryBudgets(reservation_ttl_s=30), MemoryLimits(lease_ttl_s=30)
    acct = Accountant(book(), budgets, limits)
    who = limited_subject()
    crashed = [await acct.admit(who, "m", 400, 10, now=T0 + i) for i in range(20)]  # never settled
    assert limits.held_leases == 20 and budgets.live_reservations == 20
    assert limits.active("key", 1) == 20
    held = await budgets.counter("key", 1, "monthly", T0)
    assert held.reserved_usd == 20 * crashed[0].reservation.estimate_usd
    # 40 s on, the first eleven (admitted at T0 … T0+10) have expired; the next admission sweeps them.
    await acct.admit(who, "m", 400, 10, now=T0 + 40)
    assert limits.held_leases == 10 and budgets.live_reservations == 10
    assert limits.active("key", 1) == 10
    # A late settle of an expired request frees nothing twice and still counts its spend.
    await acct.settle(crashed[0], Usage(input_tokens=10), None)
    assert limits.active("key", 1) == 10 and limits.held_leases == 10
    await acct.admit(who, "m", 400, 10, now=T0 + 1000)
    assert limits.held_leases == 1 and budgets.live_reservations == 1
    counter = await budgets.counter("key", 1, "monthly", T0 + 1000)
    assert counter.reserved_usd == crashed[0].reservation.estimate_usd and counter.spent_tokens == 10


async def test_a_subject_without_limits_or_budgets_holds_nothing_but_its_spend_counts() -> None:
    budgets, limits = MemoryBudgets(), MemoryLimits()
    acct = Accountant(book(), budgets, limits)
    free = Subject(key_id=5, key_name="free", user_id=6, user_name="f", team_id=7, team_name="ft")
    assert not free.budgeted and free.limit_subjects == ()
    admission = await acct.admit(free, "m", 4000, 500, now=T0)
    assert admission.lease.empty and admission.reservation.holds == ()
    assert limits.held_leases == 0 and limits.subjects_tracked == 0
    assert budgets.live_reservations == 0 and budgets.counters_tracked == 0
    # The estimate is still there for whoever asks (1000 prompt × $1 + 500 output × $2, per 1M).
    assert admission.estimate_usd == D("0.002") and admission.price is not None
    usage = Usage(input_tokens=800, output_tokens=100)
    cost, _ = acct.cost("m", None, usage, datetime.fromtimestamp(T0, UTC))
    await acct.settle(admission, usage, cost)
    # Spend is counted for every entity, so a budget added later this month sees it.
    for entity, id_ in (("key", 5), ("user", 6), ("team", 7)):
        counter = await budgets.counter(entity, id_, "monthly", T0)  # type: ignore[arg-type]
        assert (counter.spent_usd, counter.spent_tokens) == (D("0.001"), 900)


def test_price_json_is_built_once_per_price() -> None:
    price = book().price_for("m", None, utc(2026, 6, 1))
    assert price is not None
    assert price.to_json() is price.to_json()
    assert price.to_json()["ref"] == "price:1" and price.to_json()["input"] == "1"


# --- integer cost path == decimal path --------------------------------------------------------------

# Rates as configured (floats, read exactly as written): round figures, and any float whose shortest
# repr has up to 17 significant digits.
rates = st.one_of(
    st.just(0.0),
    st.integers(0, 10**7).map(lambda n: n / 1000),
    st.floats(min_value=1e-6, max_value=1000, allow_nan=False, allow_infinity=False),
)
optional_rates = st.one_of(st.none(), rates)
counts_ = st.integers(-5, 3_000_000)


@st.composite
def price_rows(draw: st.DrawFn) -> object:
    tiers = tuple(
        PriceTierRow(
            above_tokens=above,
            input=draw(optional_rates),
            output=draw(optional_rates),
            cache_read=draw(optional_rates),
            cache_write_5m=draw(optional_rates),
            cache_write_1h=draw(optional_rates),
        )
        for above in sorted(draw(st.sets(st.integers(0, 2_000_000), max_size=3)))
    )
    return price_row(
        1,
        utc(2026, 1, 1),
        input=draw(rates),
        output=draw(rates),
        cache_read=draw(optional_rates),
        cache_write_5m=draw(optional_rates),
        cache_write_1h=draw(optional_rates),
        reasoning=draw(optional_rates),
        per_request=draw(rates),
        tiers=tiers,
    )


@settings(max_examples=400, deadline=None)
@given(
    row=price_rows(),
    usage=st.builds(Usage, counts_, counts_, counts_, counts_, counts_, counts_),
    multiplier=st.sampled_from([1.0, 0.8, 1.1, 0.333, D("1.25")]),
    max_output=st.one_of(st.none(), st.integers(1, 200_000)),
)
def test_integer_cost_equals_the_decimal_breakdown(
    row: object, usage: Usage, multiplier: float | Decimal, max_output: int | None
) -> None:
    price = resolve_price_row("m", row)  # type: ignore[arg-type]
    cost = compute_cost(usage, price, cost_multiplier=multiplier)
    if usage.is_empty():
        assert cost.list_usd == 0 and cost.actual_usd == 0
        return
    assert cost.list_usd == cost.breakdown.total()
    assert cost.actual_usd == _CTX.multiply(cost.breakdown.total(), to_decimal(multiplier))
    _, tier = price.rates_for(usage.prompt_tokens)
    assert cost.tier_above_tokens == tier
    # The estimate: prompt at the input rate of its tier, output at the dearer of output and reasoning.
    prompt = max(0, usage.input_tokens)
    tier_rates, _ = price.rates_for(prompt)
    out = max_output or 4096
    output_rate = max(tier_rates.output, tier_rates.reasoning)
    variable = _CTX.add(_CTX.multiply(prompt, tier_rates.input), _CTX.multiply(out, output_rate))
    expected = _CTX.add(variable.scaleb(-6, _CTX), price.per_request)
    assert estimate_cost(prompt, max_output, price) == expected
    # Budgets count nano-USD, worked out in integers on the request path: the same figures as
    # converting the decimals (settled half to even, reserved rounded up).
    assert cost.actual_nano == usd_to_nano(cost.actual_usd)
    assert compute_cost(usage, price, free_tier=True).actual_nano == 0
    assert estimate_nano(prompt, max_output, price) == usd_to_nano(expected, round_up=True)


@settings(max_examples=400, deadline=None)
@given(units=st.integers(-(10**15), 10**15), exponent=st.integers(-15, 4))
@example(units=5, exponent=-4).via("a tie rounds to the even neighbour: 0.5 nano -> 0")
@example(units=15, exponent=-4).via("1.5 nano -> 2")
@example(units=25, exponent=-4).via("2.5 nano -> 2")
@example(units=-15, exponent=-4).via("-1.5 nano -> -2")
@example(units=1, exponent=-10).via("any fraction reserved rounds up")
def test_integer_units_to_nano_round_like_the_decimal_conversion(units: int, exponent: int) -> None:
    rates = IntegerRates(exponent, 0, 0, 0, 0, 0, 0, False, 0)
    usd = D(units).scaleb(exponent - 6, _CTX)
    assert rates.nano(units) == usd_to_nano(usd)
    assert rates.nano(units, round_up=True) == usd_to_nano(usd, round_up=True)


# --- the usage writer -------------------------------------------------------------------------------


@pytest.fixture
async def sessions(migrated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine: AsyncEngine = create_engine(migrated_database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def stored_spend(sessions: async_sessionmaker[AsyncSession]) -> dict[tuple[str, int, str], D]:
    async with sessions() as session:
        rows = await session.execute(
            select(
                SpendTotalRow.entity_type, SpendTotalRow.entity_id, SpendTotalRow.period, SpendTotalRow.usd
            )
        )
        return {(r[0], int(r[1]), r[2]): r[3] for r in rows}


async def test_large_batches_are_written_whole_once_and_rekeyed_in_the_thread(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    size = 2 * CHUNK_ROWS + 37  # several INSERT chunks, prepared off the loop
    assert size >= THREAD_MIN_BUNDLES
    first = [make_bundle(i, seed=7, with_log=i % 4 == 0) for i in range(size)]
    async with sessions() as session, session.begin():
        assert await write_batch(session, first, fresh=True) == size
    first_spend = await stored_spend(sessions)
    # A replay of half of them plus new ones: only the new are written and counted.
    more = [make_bundle(i, seed=8) for i in range(size)]
    replay = first[: size // 2] + more
    async with sessions() as session, session.begin():
        assert await write_batch(session, replay) == size
    # Fresh records whose ids are taken (clients reusing x-request-id) are kept under new ids, with
    # their attempts; their spend is added.
    reused = [make_bundle(i, seed=9, request_id=first[i].request_id) for i in range(size)]
    async with sessions() as session, session.begin():
        assert await write_batch(session, reused, fresh=True) == size
    assert all("~" in b.request_id for b in reused)
    everything = first + more + reused
    async with sessions() as session:
        records, attempts, logs = await counts(session)
        attempt_ids = set((await session.scalars(select(UsageAttemptRow.request_id).distinct())).all())
    assert records == 3 * size and logs == sum(1 for b in first if b.log is not None)
    assert attempts == sum(len(b.attempts) for b in everything)
    assert attempt_ids == {b.request_id for b in everything if b.attempts}
    # Total spend per entity: the first batch's, then every new record's added once.
    expected: dict[tuple[str, int], D] = defaultdict(D)
    for b in everything:
        u = b.usage
        for entity, id_ in (("key", u.key_id), ("user", u.user_id), ("team", u.team_id)):
            if id_ is not None and (u.actual_cost or u.total_tokens):
                expected[(entity, id_)] += u.actual_cost
    totals = {
        (e, i): usd for (e, i, period), usd in (await stored_spend(sessions)).items() if period == "total"
    }
    assert totals == expected
    assert all(
        totals[k] >= v for (e, i, period), v in first_spend.items() if period == "total" for k in [(e, i)]
    )


@pytest.mark.parametrize(
    "zone", ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "America/Santiago"]
)
def test_fold_spend_matches_the_per_record_period_starts(zone: str) -> None:
    tz = ZoneInfo(zone)
    rng = random.Random(zone)
    # Two years of random instants, dense around local midnights and DST changes.
    start = datetime(2025, 1, 1, tzinfo=UTC)
    bundles = []
    for n in range(3000):
        at = start + timedelta(seconds=rng.randrange(0, 2 * 365 * 86400))
        if n % 3 == 0:
            local = at.astimezone(tz)
            at = (
                local.replace(hour=0, minute=0, second=0) + timedelta(seconds=rng.randrange(-120, 120))
            ).astimezone(UTC)
        bundles.append(make_bundle(n, seed=3, started_at=at))
    records = [b.usage for b in bundles]
    folded = fold_spend(records, tz)
    expected: dict[tuple[str, int, str, datetime], tuple[D, int]] = {}
    for r in records:
        if r.actual_cost == 0 and r.total_tokens == 0:
            continue
        for entity, id_ in (("key", r.key_id), ("user", r.user_id), ("team", r.team_id)):
            if id_ is None:
                continue
            for period in SPEND_PERIODS:
                key = (entity, id_, period, period_start(period, r.started_at, tz))
                usd, tokens = expected.get(key, (D(0), 0))
                expected[key] = (usd + r.actual_cost, tokens + r.total_tokens)
    got = {
        (k.entity_type, k.entity_id, k.period, k.period_start): (v.usd, v.tokens) for k, v in folded.items()
    }
    assert got == expected
