"""Budgets with reservations: per key, user and team; daily, monthly and total; in USD and tokens.

Before a call the relay reserves an estimate: for every (entity, period) with a limit, ``spent +
reserved + estimate <= limit`` must hold, and the estimate is added to ``reserved`` everywhere at once
— or nothing is reserved and ``BudgetExceededError`` (429) names the budget. After the call ``settle``
drops the reservation and adds the actual spend; ``release`` drops it for a refused or aborted call.
So concurrent requests overspend by at most what their in-flight reservations underestimated.

Spend is tracked for every key, user and team and every period, limited or not, so a budget added
mid-month sees the month's spend. Budgets count the actual cost (after the provider key's multiplier;
free-tier providers cost nothing). Periods are calendar-aligned in the configured time zone: a day
starts at local midnight, a month on the 1st; a reservation settles into the periods it was made in.

Amounts are kept as integer nano-dollars (reservations rounded up, spend to nearest), so counters
never drift. Reservations expire after ``reservation_ttl_s`` so a crashed process cannot hold budget
forever; the memory backend remembers a reservation only while it holds an estimate (a request with
no budget to check holds nothing), so its memory follows the requests in flight, not the traffic.
``load_spend`` seeds the counters at start-up from the usage database; in Redis mode the counters
live in Redis and are seeded only where absent (another instance may already be counting).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Literal, Protocol
from zoneinfo import ZoneInfo

from isthmus.accounting.prices import to_decimal
from isthmus.accounting.redis_scripts import AccountingScripts, AdmitRefusal, BudgetCall, ReservationFinish
from isthmus.errors import BudgetExceededError
from isthmus.store.snapshot import Budget

if TYPE_CHECKING:  # imported only where Redis is configured: the client costs ~15 MiB
    from redis.asyncio import Redis

EntityType = Literal["key", "user", "team"]
Period = Literal["daily", "monthly", "total"]
PERIODS: tuple[Period, ...] = ("daily", "monthly", "total")
NANO = Decimal(1_000_000_000)
DEFAULT_RESERVATION_TTL_S = 960.0
# Counters outlive their period a little, so late settles and start-up seeding still find them.
COUNTER_GRACE_S = 2 * 86400

CounterKey = tuple[str, int, str]  # (entity type, entity id, period label)


def usd_to_nano(usd: Decimal | float, *, round_up: bool = False) -> int:
    value = to_decimal(usd) * NANO
    return int(value.to_integral_value(ROUND_CEILING if round_up else ROUND_HALF_EVEN))


def nano_to_usd(nano: int) -> Decimal:
    return Decimal(nano) / NANO


@dataclass(frozen=True, slots=True)
class BudgetSubject:
    entity_type: EntityType
    entity_id: int
    name: str
    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class SpendTotal:
    """Spend of one entity in one period, as summed from the usage records (input of ``load_spend``).

    ``period_start`` is the period's first instant (local midnight / the 1st, time-zone aware; a naive
    value is read as local time in the budgets' zone); it is ignored for ``total``.
    """

    entity_type: EntityType
    entity_id: int
    period: Period
    period_start: datetime | None
    usd: Decimal
    tokens: int


@dataclass(frozen=True, slots=True)
class PeriodWindow:
    day_label: str
    day_start: float
    day_end: float
    month_label: str
    month_end: float

    def label(self, period: Period) -> str:
        if period == "daily":
            return self.day_label
        if period == "monthly":
            return self.month_label
        return "t"

    def end(self, period: Period) -> float | None:
        if period == "daily":
            return self.day_end
        if period == "monthly":
            return self.month_end
        return None


class PeriodCalendar:
    """Local day and month boundaries in one time zone, recomputed only when a day ends."""

    def __init__(self, tz: str = "UTC") -> None:
        self.tz = tz
        self.zone = ZoneInfo(tz)
        self._window: PeriodWindow | None = None

    def window(self, now: float) -> PeriodWindow:
        window = self._window
        if window is not None and window.day_start <= now < window.day_end:
            return window
        local = datetime.fromtimestamp(now, self.zone)
        day = local.date()
        next_day = day + timedelta(days=1)
        day_start = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        day_end = datetime(next_day.year, next_day.month, next_day.day, tzinfo=self.zone)
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        month_end = datetime(year, month, 1, tzinfo=self.zone)
        window = PeriodWindow(
            day_label=f"d:{day.isoformat()}",
            day_start=day_start.timestamp(),
            day_end=day_end.timestamp(),
            month_label=f"m:{day.year:04d}-{day.month:02d}",
            month_end=month_end.timestamp(),
        )
        self._window = window
        return window

    def label_of(self, period: Period, start: datetime | None) -> str:
        if period == "total" or start is None:
            return "t"
        local = start.replace(tzinfo=self.zone) if start.tzinfo is None else start.astimezone(self.zone)
        if period == "daily":
            return f"d:{local.date().isoformat()}"
        return f"m:{local.year:04d}-{local.month:02d}"


def _limits(budget: Budget, period: Period) -> tuple[float | None, int | None]:
    if period == "daily":
        return budget.daily_usd, budget.daily_tokens
    if period == "monthly":
        return budget.monthly_usd, budget.monthly_tokens
    return budget.total_usd, budget.total_tokens


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    subject: BudgetSubject
    period: Period
    key: CounterKey
    limit_usd_nano: int | None
    limit_tokens: int | None
    period_end: float | None


def plan_checks(subjects: Sequence[BudgetSubject], window: PeriodWindow) -> list[BudgetCheck]:
    checks: list[BudgetCheck] = []
    for subject in subjects:
        budget = subject.budget
        if budget is None:
            continue
        for period in PERIODS:
            usd, tokens = _limits(budget, period)
            if usd is None and tokens is None:
                continue
            checks.append(
                BudgetCheck(
                    subject=subject,
                    period=period,
                    key=(subject.entity_type, subject.entity_id, window.label(period)),
                    limit_usd_nano=None if usd is None else usd_to_nano(usd),
                    limit_tokens=tokens,
                    period_end=window.end(period),
                )
            )
    return checks


def spend_keys(subjects: Sequence[BudgetSubject], window: PeriodWindow) -> tuple[CounterKey, ...]:
    return tuple((s.entity_type, s.entity_id, window.label(period)) for s in subjects for period in PERIODS)


def _usd_text(nano: int) -> str:
    usd = nano_to_usd(nano)
    cents = usd.quantize(Decimal("0.01"))
    if cents == usd or usd >= 1:
        return f"${cents:,.2f}"
    return f"${usd.normalize():f}"


def budget_error(check: BudgetCheck, kind: str, used: int, estimate: int, now: float) -> BudgetExceededError:
    """429 naming the budget: "team 'research' monthly budget of $500.00 is exhausted"."""
    who = f"{check.subject.entity_type} '{check.subject.name}' {check.period}"
    if kind == "usd":
        limit = check.limit_usd_nano or 0
        message = f"{who} budget of {_usd_text(limit)} is exhausted"
        if used < limit:
            message += (
                f" ({_usd_text(used)} spent or reserved; this request may cost up to {_usd_text(estimate)})"
            )
    else:
        limit = check.limit_tokens or 0
        message = f"{who} token budget of {limit:,} tokens is exhausted"
        if used < limit:
            message += f" ({used:,} tokens used or reserved; this request may use up to {estimate:,})"
    retry_after = None if check.period_end is None else max(1.0, check.period_end - now)
    return BudgetExceededError(message, code="budget_exceeded", retry_after=retry_after)


@dataclass(slots=True, eq=False)
class Reservation:
    """A budget hold; ``settle`` or ``release`` it once (both are idempotent)."""

    id: str
    usd_nano: int
    tokens: int
    holds: tuple[CounterKey, ...]  # counters holding the estimate
    spend: tuple[CounterKey, ...]  # counters the actual spend is added to
    spend_expiry: tuple[int, ...]  # unix seconds each spend counter may be dropped after (0 = never)
    expires_at: float
    live: bool = True  # memory: the estimate is still counted as reserved
    done: bool = False

    @property
    def estimate_usd(self) -> Decimal:
        return nano_to_usd(self.usd_nano)

    @property
    def member(self) -> str:
        return f"{self.id}|{self.usd_nano}|{self.tokens}"


@dataclass(frozen=True, slots=True)
class BudgetCounter:
    spent_usd: Decimal = Decimal(0)
    spent_tokens: int = 0
    reserved_usd: Decimal = Decimal(0)
    reserved_tokens: int = 0


class BudgetBackend(Protocol):
    calendar: PeriodCalendar

    async def reserve(
        self, subjects: Sequence[BudgetSubject], estimate_usd: Decimal, estimate_tokens: int, now: float
    ) -> Reservation: ...

    async def settle(self, reservation: Reservation, actual_usd: Decimal, actual_tokens: int) -> None: ...

    async def release(self, reservation: Reservation) -> None: ...

    async def load_spend(self, totals: Iterable[SpendTotal], now: float | None = None) -> None: ...

    async def counter(
        self, entity_type: EntityType, entity_id: int, period: Period, now: float
    ) -> BudgetCounter: ...


def _expiry_of(window: PeriodWindow, label: str) -> int:
    if label == window.day_label:
        return int(window.day_end + COUNTER_GRACE_S)
    if label == window.month_label:
        return int(window.month_end + COUNTER_GRACE_S)
    return 0


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """Everything a reservation for these subjects needs in one period window (computed once)."""

    subjects: Sequence[BudgetSubject]
    day_label: str
    checks: tuple[BudgetCheck, ...]
    holds: tuple[CounterKey, ...]
    spend: tuple[CounterKey, ...]
    spend_expiry: tuple[int, ...]


class PlanCache:
    """Plans by subjects, so the hot path does not rebuild keys and limits for every request.

    Keyed by the identity of the subjects sequence (the relay reuses one ``Subject`` per key per
    snapshot) and checked against the stored object, so a recycled id can never return a stale plan.
    """

    def __init__(self, max_entries: int = 8192) -> None:
        self._plans: dict[int, BudgetPlan] = {}
        self._max = max_entries

    def plan(self, subjects: Sequence[BudgetSubject], window: PeriodWindow) -> BudgetPlan:
        cached = self._plans.get(id(subjects))
        if cached is not None and cached.subjects is subjects and cached.day_label == window.day_label:
            return cached
        checks = tuple(plan_checks(subjects, window))
        spend = spend_keys(subjects, window)
        plan = BudgetPlan(
            subjects=subjects,
            day_label=window.day_label,
            checks=checks,
            holds=tuple(c.key for c in checks),
            spend=spend,
            spend_expiry=tuple(_expiry_of(window, k[2]) for k in spend),
        )
        if len(self._plans) >= self._max:
            self._plans.clear()
        self._plans[id(subjects)] = plan
        return plan


def _new_reservation(
    plan: BudgetPlan, id_: str, usd_nano: int, tokens: int, now: float, ttl: float
) -> Reservation:
    return Reservation(
        id=id_,
        usd_nano=usd_nano,
        tokens=tokens,
        holds=plan.holds,
        spend=plan.spend,
        spend_expiry=plan.spend_expiry,
        expires_at=now + ttl,
    )


# --- memory -----------------------------------------------------------------------------------------


class _Counter:
    __slots__ = ("reserved_tokens", "reserved_usd", "spent_tokens", "spent_usd")

    def __init__(self) -> None:
        self.spent_usd = 0
        self.spent_tokens = 0
        self.reserved_usd = 0
        self.reserved_tokens = 0


class MemoryBudgets:
    """One process's budgets. Every method completes without awaiting, so each is atomic."""

    def __init__(self, tz: str = "UTC", reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S) -> None:
        self.calendar = PeriodCalendar(tz)
        self.reservation_ttl_s = reservation_ttl_s
        self._counters: dict[CounterKey, _Counter] = {}
        # Reservations holding an estimate, oldest first (one TTL, so also soonest to expire first);
        # settle and release drop theirs at once, expiry frees those never settled.
        self._live: OrderedDict[Reservation, None] = OrderedDict()
        self._plans = PlanCache()
        self._day_label = ""

    async def reserve(
        self, subjects: Sequence[BudgetSubject], estimate_usd: Decimal, estimate_tokens: int, now: float
    ) -> Reservation:
        return self.reserve_nano(subjects, usd_to_nano(estimate_usd, round_up=True), estimate_tokens, now)

    async def settle(self, reservation: Reservation, actual_usd: Decimal, actual_tokens: int) -> None:
        self.settle_nano(reservation, usd_to_nano(actual_usd), actual_tokens)

    async def release(self, reservation: Reservation) -> None:
        self.release_now(reservation)

    def reserve_nano(
        self, subjects: Sequence[BudgetSubject], estimate_nano: int, estimate_tokens: int, now: float
    ) -> Reservation:
        live = self._live
        if live and next(iter(live)).expires_at <= now:
            self._expire(now)
        window = self.calendar.window(now)
        if window.day_label != self._day_label:
            self._rollover(window)
        plan = self._plans.plan(subjects, window)
        if not plan.checks:
            # Nothing limited: nothing is held (so no estimate is converted) and nothing is remembered;
            # the reservation only carries the spend counters its settle adds to.
            reservation = _new_reservation(plan, "", 0, 0, now, self.reservation_ttl_s)
            reservation.live = False
            return reservation
        tokens = max(0, estimate_tokens)
        usd = max(0, estimate_nano)
        counters = self._counters
        for check in plan.checks:
            counter = counters.get(check.key)
            used_usd = counter.spent_usd + counter.reserved_usd if counter else 0
            used_tokens = counter.spent_tokens + counter.reserved_tokens if counter else 0
            limit = check.limit_usd_nano
            if limit is not None and (used_usd >= limit or used_usd + usd > limit):
                raise budget_error(check, "usd", used_usd, usd, now)
            limit = check.limit_tokens
            if limit is not None and (used_tokens >= limit or used_tokens + tokens > limit):
                raise budget_error(check, "tokens", used_tokens, tokens, now)
        reservation = _new_reservation(plan, "", usd, tokens, now, self.reservation_ttl_s)
        for key in reservation.holds:
            counter = counters.get(key)
            if counter is None:
                counter = counters[key] = _Counter()
            counter.reserved_usd += usd
            counter.reserved_tokens += tokens
        live[reservation] = None
        return reservation

    def _unhold(self, reservation: Reservation) -> None:
        if not reservation.live:
            return
        reservation.live = False
        self._live.pop(reservation, None)
        for key in reservation.holds:
            counter = self._counters.get(key)
            if counter is not None:
                counter.reserved_usd -= reservation.usd_nano
                counter.reserved_tokens -= reservation.tokens

    def settle_nano(self, reservation: Reservation, actual_nano: int, actual_tokens: int) -> None:
        if reservation.done:
            return
        reservation.done = True
        self._unhold(reservation)
        usd = max(0, actual_nano)
        tokens = max(0, actual_tokens)
        counters = self._counters
        for key in reservation.spend:
            counter = counters.get(key)
            if counter is None:
                counter = counters[key] = _Counter()
            counter.spent_usd += usd
            counter.spent_tokens += tokens

    def release_now(self, reservation: Reservation) -> None:
        if reservation.done:
            return
        reservation.done = True
        self._unhold(reservation)

    def _expire(self, now: float) -> None:
        live = self._live
        while live:
            reservation = next(iter(live))
            if reservation.expires_at > now:
                return
            self._unhold(reservation)

    @property
    def live_reservations(self) -> int:
        """Reservations this process remembers: those still holding an estimate. Bounded by the
        requests in flight (tests check nothing else accumulates)."""
        return len(self._live)

    @property
    def counters_tracked(self) -> int:
        return len(self._counters)

    def _rollover(self, window: PeriodWindow) -> None:
        # Counters of past days and months are no longer checked; drop them (the database has them).
        current = {window.day_label, window.month_label, "t"}
        for key in [k for k in self._counters if k[2] not in current]:
            del self._counters[key]
        self._day_label = window.day_label

    async def load_spend(self, totals: Iterable[SpendTotal], now: float | None = None) -> None:
        """Set the counters of the current periods to the given totals (others are ignored)."""
        window = self.calendar.window(now if now is not None else datetime.now(UTC).timestamp())
        if window.day_label != self._day_label:
            self._rollover(window)
        current = {window.day_label, window.month_label, "t"}
        for total in totals:
            label = self.calendar.label_of(total.period, total.period_start)
            if label not in current:
                continue
            key: CounterKey = (total.entity_type, total.entity_id, label)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = _Counter()
            counter.spent_usd = usd_to_nano(total.usd)
            counter.spent_tokens = total.tokens

    async def counter(
        self, entity_type: EntityType, entity_id: int, period: Period, now: float
    ) -> BudgetCounter:
        label = self.calendar.window(now).label(period)
        c = self._counters.get((entity_type, entity_id, label))
        if c is None:
            return BudgetCounter()
        return BudgetCounter(
            nano_to_usd(c.spent_usd), c.spent_tokens, nano_to_usd(c.reserved_usd), c.reserved_tokens
        )


# --- Redis ------------------------------------------------------------------------------------------


class RedisBudgets:
    """Budgets shared through one Redis: one ADMIT round trip to reserve, one FINISH to settle."""

    def __init__(
        self,
        client: Redis,
        *,
        tz: str = "UTC",
        prefix: str = "isthmus:",
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
        scripts: AccountingScripts | None = None,
    ) -> None:
        self.client = client
        self.calendar = PeriodCalendar(tz)
        self.prefix = prefix
        self.reservation_ttl_s = reservation_ttl_s
        self.scripts = scripts or AccountingScripts(client)
        self._plans = PlanCache()

    def counter_key(self, key: CounterKey) -> str:
        return f"{self.prefix}bud:{key[0]}:{key[1]}:{key[2]}"

    def reservations_key(self, key: CounterKey) -> str:
        return f"{self.prefix}budr:{key[0]}:{key[1]}:{key[2]}"

    def call(
        self, subjects: Sequence[BudgetSubject], estimate_nano: int, estimate_tokens: int, now: float
    ) -> tuple[Reservation, list[BudgetCheck], BudgetCall]:
        """The reservation this would make (holding ``estimate_nano`` nano-USD), its checks, and the
        ADMIT part that makes it."""
        window = self.calendar.window(now)
        usd = max(0, estimate_nano)
        tokens = max(0, estimate_tokens)
        plan = self._plans.plan(subjects, window)
        checks = list(plan.checks)
        reservation = _new_reservation(plan, os.urandom(9).hex(), usd, tokens, now, self.reservation_ttl_s)
        keys: list[str] = []
        args: list[int] = []
        for check in checks:
            keys.extend((self.counter_key(check.key), self.reservations_key(check.key)))
            args.extend(
                (
                    -1 if check.limit_usd_nano is None else check.limit_usd_nano,
                    -1 if check.limit_tokens is None else check.limit_tokens,
                    _expiry_of(window, check.key[2]),
                )
            )
        call = BudgetCall(
            keys=keys,
            args=args,
            member=reservation.member,
            expires=reservation.expires_at,
            usd_nano=usd,
            tokens=tokens,
        )
        return reservation, checks, call

    @staticmethod
    def error(
        reservation: Reservation, checks: Sequence[BudgetCheck], refusal: AdmitRefusal, now: float
    ) -> BudgetExceededError:
        estimate = reservation.usd_nano if refusal.what == "usd" else reservation.tokens
        return budget_error(checks[refusal.index], refusal.what, int(refusal.values[0]), estimate, now)

    async def reserve(
        self, subjects: Sequence[BudgetSubject], estimate_usd: Decimal, estimate_tokens: int, now: float
    ) -> Reservation:
        usd = usd_to_nano(estimate_usd, round_up=True)
        reservation, checks, call = self.call(subjects, usd, estimate_tokens, now)
        if not checks:
            return reservation  # nothing limited: no round trip now, spend is added at settle
        refusal = await self.scripts.admit(now, None, call)
        if refusal is not None:
            raise self.error(reservation, checks, refusal, now)
        return reservation

    def finish_call(
        self, reservation: Reservation, actual_nano: int | None, actual_tokens: int
    ) -> ReservationFinish:
        """FINISH part settling (``actual_nano`` nano-USD given) or releasing (None) the reservation."""
        settle = actual_nano is not None
        return ReservationFinish(
            hold_keys=[self.counter_key(k) for k in reservation.holds],
            hold_zkeys=[self.reservations_key(k) for k in reservation.holds],
            spend_keys=[self.counter_key(k) for k in reservation.spend] if settle else [],
            spend_expiries=list(reservation.spend_expiry) if settle else [],
            member=reservation.member,
            usd_nano=reservation.usd_nano,
            tokens=reservation.tokens,
            actual_usd_nano=max(0, actual_nano) if actual_nano is not None else 0,
            actual_tokens=max(0, actual_tokens) if settle else 0,
        )

    async def settle(self, reservation: Reservation, actual_usd: Decimal, actual_tokens: int) -> None:
        if reservation.done:
            return
        reservation.done = True
        await self.scripts.finish(None, self.finish_call(reservation, usd_to_nano(actual_usd), actual_tokens))

    async def release(self, reservation: Reservation) -> None:
        if reservation.done:
            return
        reservation.done = True
        if reservation.holds:
            await self.scripts.finish(None, self.finish_call(reservation, None, 0))

    async def load_spend(self, totals: Iterable[SpendTotal], now: float | None = None) -> None:
        """Seed the current periods' counters where Redis has none yet (HSETNX), in one pipeline."""
        window = self.calendar.window(now if now is not None else datetime.now(UTC).timestamp())
        current = {window.day_label, window.month_label, "t"}
        pipe = self.client.pipeline(transaction=False)
        queued = 0
        for total in totals:
            label = self.calendar.label_of(total.period, total.period_start)
            if label not in current:
                continue
            key = self.counter_key((total.entity_type, total.entity_id, label))
            pipe.hsetnx(key, "su", str(usd_to_nano(total.usd)))
            pipe.hsetnx(key, "st", str(total.tokens))
            expiry = _expiry_of(window, label)
            if expiry:
                pipe.expireat(key, expiry)
            queued += 1
        if queued:
            await pipe.execute()

    async def counter(
        self, entity_type: EntityType, entity_id: int, period: Period, now: float
    ) -> BudgetCounter:
        label = self.calendar.window(now).label(period)
        values = await self.client.hmget(
            self.counter_key((entity_type, entity_id, label)), ["su", "st", "ru", "rt"]
        )
        su, st, ru, rt = (int(v) if v is not None else 0 for v in values)
        return BudgetCounter(nano_to_usd(su), st, nano_to_usd(ru), rt)
