"""The relay's one entry point to accounting: admit before the call, settle (or release) after.

``admit`` estimates the request (body bytes / 4 prompt tokens, the request's max output tokens or a
default cap, the public model's price or else its dearest route's), reserves that against every
budget of the key, user and team and takes a rate-limit lease — all or nothing. With both backends
on the same Redis client this is one ``ADMIT`` script (one round trip); ``settle``/``release`` is one
``FINISH``. With the memory backends nothing awaits, so no task switch happens inside.

The request path pays only for what the subject has: without limits no lease is taken; without a
budget nothing is held and the USD estimate is never computed (``Admission.estimate_usd`` works it out
if someone asks); the actual spend is still counted at settle, so a budget added later sees it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from isthmus.accounting.budgets import (
    DEFAULT_RESERVATION_TTL_S,
    BudgetBackend,
    BudgetSubject,
    MemoryBudgets,
    RedisBudgets,
    Reservation,
    nano_to_usd,
)
from isthmus.accounting.cost import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    Cost,
    compute_cost,
    estimate_cost,
    estimate_nano,
    estimate_output_tokens,
    estimate_prompt_tokens,
)
from isthmus.accounting.limits import (
    DEFAULT_LEASE_TTL_S,
    HasLimits,
    Lease,
    LimitBackend,
    LimitSubject,
    MemoryLimits,
    RedisLimits,
    empty_lease,
)
from isthmus.accounting.prices import PriceBook, ResolvedPrice
from isthmus.accounting.redis_scripts import AccountingScripts
from isthmus.ir.usage import Usage
from isthmus.store.snapshot import Budget, GatewayKeyRow, Limits, TeamRow, UserRow

if TYPE_CHECKING:  # imported only where Redis is configured: the client costs ~15 MiB
    from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a request is accounted to: the key, its user and team, with their limits and budgets."""

    key_id: int
    key_name: str
    key_limits: Limits | None = None
    key_budget: Budget | None = None
    user_id: int | None = None
    user_name: str | None = None
    user_limits: Limits | None = None
    user_budget: Budget | None = None
    team_id: int | None = None
    team_name: str | None = None
    team_limits: Limits | None = None
    team_budget: Budget | None = None
    # Derived once, so the hot path does not rebuild them per request.
    limit_subjects: tuple[LimitSubject, ...] = field(init=False, repr=False)
    budget_subjects: tuple[BudgetSubject, ...] = field(init=False, repr=False)
    budgeted: bool = field(init=False, repr=False)  # some budget of the key, user or team is set

    def __post_init__(self) -> None:
        limits = [LimitSubject.of("key", self.key_id, self.key_name, self.key_limits)]
        budgets = [BudgetSubject("key", self.key_id, self.key_name, self.key_budget)]
        if self.user_id is not None:
            name = self.user_name or str(self.user_id)
            limits.append(LimitSubject.of("user", self.user_id, name, self.user_limits))
            budgets.append(BudgetSubject("user", self.user_id, name, self.user_budget))
        if self.team_id is not None:
            name = self.team_name or str(self.team_id)
            limits.append(LimitSubject.of("team", self.team_id, name, self.team_limits))
            budgets.append(BudgetSubject("team", self.team_id, name, self.team_budget))
        object.__setattr__(self, "limit_subjects", tuple(s for s in limits if s is not None))
        object.__setattr__(self, "budget_subjects", tuple(budgets))
        object.__setattr__(self, "budgeted", any(_sets_a_limit(b.budget) for b in budgets))

    @classmethod
    def from_rows(
        cls, key: GatewayKeyRow, user: UserRow | None = None, team: TeamRow | None = None
    ) -> Subject:
        return cls(
            key_id=key.id,
            key_name=key.name,
            key_limits=key.limits,
            key_budget=key.budget,
            user_id=user.id if user else None,
            user_name=user.username if user else None,
            user_limits=user.limits if user else None,
            user_budget=user.budget if user else None,
            team_id=team.id if team else None,
            team_name=team.name if team else None,
            team_limits=team.limits if team else None,
            team_budget=team.budget if team else None,
        )


def _sets_a_limit(budget: Budget | None) -> bool:
    return budget is not None and any(
        v is not None
        for v in (
            budget.daily_usd,
            budget.monthly_usd,
            budget.total_usd,
            budget.daily_tokens,
            budget.monthly_tokens,
            budget.total_tokens,
        )
    )


_UNSET: Any = object()
_T = TypeVar("_T")


class Estimate:
    """What admission expects a request to use: tokens always, the price and USD only when read
    (at admission only when a budget needs them), as of the admission time and with the price book in
    force then."""

    __slots__ = (
        "_nano",
        "_price",
        "_usd",
        "at",
        "default_max_output",
        "max_output_tokens",
        "model",
        "prices",
        "prompt_tokens",
        "tokens",
    )

    def __init__(
        self,
        prices: PriceBook,
        model: str,
        at: float,
        prompt_tokens: int,
        max_output_tokens: int | None,
        default_max_output: int,
    ) -> None:
        self.prices = prices
        self.model = model
        self.at = at
        self.prompt_tokens = prompt_tokens
        self.max_output_tokens = max_output_tokens
        self.default_max_output = default_max_output
        self.tokens = prompt_tokens + estimate_output_tokens(max_output_tokens, default_max_output)
        self._price: ResolvedPrice | None = _UNSET
        self._usd: Decimal | None = None
        self._nano: int | None = None

    @property
    def price(self) -> ResolvedPrice | None:
        if self._price is _UNSET:
            self._price = self.prices.estimate_price(self.model, datetime.fromtimestamp(self.at, UTC))
        return self._price

    @property
    def usd(self) -> Decimal:
        if self._usd is None:
            self._usd = self._priced(estimate_cost)
        return self._usd

    @property
    def nano(self) -> int:
        """``usd`` in nano-USD rounded up: what a reservation holds (integers only on the way)."""
        if self._nano is None:
            self._nano = self._priced(estimate_nano)
        return self._nano

    def _priced(self, estimate: Callable[..., _T]) -> _T:
        return estimate(
            self.prompt_tokens, self.max_output_tokens, self.price, default_max_output=self.default_max_output
        )


@dataclass(slots=True, eq=False)
class Admission:
    """An admitted request's holds; hand it back to ``settle`` or ``release`` exactly once."""

    subject: Subject
    model: str
    lease: Lease
    reservation: Reservation
    estimate: Estimate
    admitted_at: float
    finished: bool = False

    @property
    def price(self) -> ResolvedPrice | None:
        """The price the estimate used (``PriceBook.estimate_price``)."""
        return self.estimate.price

    @property
    def estimate_usd(self) -> Decimal:
        return self.estimate.usd

    @property
    def estimate_tokens(self) -> int:
        return self.estimate.tokens


class Accountant:
    def __init__(
        self,
        prices: PriceBook,
        budgets: BudgetBackend,
        limits: LimitBackend,
        tz: str = "UTC",
        *,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> None:
        if budgets.calendar.tz != tz:
            raise ValueError(f"the budget backend counts periods in {budgets.calendar.tz}, not {tz}")
        self.prices = prices  # replace on snapshot reload; admissions keep the price they used
        self.budgets = budgets
        self.limits = limits
        self.tz = tz
        self.default_max_output_tokens = default_max_output_tokens
        self._scripts: AccountingScripts | None = None
        # What the backends raise when the shared state cannot be reached: callers fail open on it.
        self.unavailable: tuple[type[Exception], ...] = (OSError,)
        if isinstance(budgets, RedisBudgets) or isinstance(limits, RedisLimits):
            from redis.exceptions import RedisError

            self.unavailable = (RedisError, OSError)
        # Both in this process: call them directly (they never await), saving a coroutine per step.
        self._memory: tuple[MemoryBudgets, MemoryLimits] | None = None
        if isinstance(budgets, MemoryBudgets) and isinstance(limits, MemoryLimits):
            self._memory = (budgets, limits)
        if (
            isinstance(budgets, RedisBudgets)
            and isinstance(limits, RedisLimits)
            and budgets.client is limits.client
        ):
            self._scripts = budgets.scripts

    @classmethod
    def create(
        cls,
        prices: PriceBook,
        *,
        tz: str = "UTC",
        redis: Redis | None = None,
        prefix: str = "isthmus:",
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
    ) -> Accountant:
        """Memory backends for one process, or Redis ones (sharing one client and one ADMIT)."""
        if redis is None:
            return cls(prices, MemoryBudgets(tz, reservation_ttl_s), MemoryLimits(lease_ttl_s), tz)
        scripts = AccountingScripts(redis)
        budgets = RedisBudgets(
            redis, tz=tz, prefix=prefix, reservation_ttl_s=reservation_ttl_s, scripts=scripts
        )
        limits = RedisLimits(redis, prefix=prefix, lease_ttl_s=lease_ttl_s, scripts=scripts)
        return cls(prices, budgets, limits, tz)

    async def admit(
        self,
        subject: Subject,
        model: str,
        body_size: int,
        max_output_tokens: int | None,
        now: float | None = None,
    ) -> Admission:
        """Reserve budget and take rate-limit slots, or raise ``BudgetExceededError``/``RateLimitedError``."""
        at = time.time() if now is None else now
        estimate = Estimate(
            self.prices,
            model,
            at,
            estimate_prompt_tokens(body_size),
            max_output_tokens,
            self.default_max_output_tokens,
        )
        tokens = estimate.tokens
        usd_nano = estimate.nano if subject.budgeted else 0
        if self._memory is not None:
            budgets, limits = self._memory
            reservation = budgets.reserve_nano(subject.budget_subjects, usd_nano, tokens, at)
            if not subject.limit_subjects:
                return Admission(subject, model, empty_lease(at), reservation, estimate, at)
            try:
                lease = limits.acquire_now(subject.limit_subjects, at, tokens)
            except BaseException:
                budgets.release_now(reservation)
                raise
            return Admission(subject, model, lease, reservation, estimate, at)
        if self._scripts is not None:
            lease, reservation = await self._admit_redis(subject, usd_nano, tokens, at)
        else:
            usd = nano_to_usd(usd_nano)
            reservation = await self.budgets.reserve(subject.budget_subjects, usd, tokens, at)
            if not subject.limit_subjects:
                lease = empty_lease(at)
            else:
                try:
                    lease = await self.limits.acquire(subject.limit_subjects, at, tokens)
                except BaseException:
                    await self.budgets.release(reservation)
                    raise
        return Admission(subject, model, lease, reservation, estimate, at)

    async def _admit_redis(
        self, subject: Subject, usd_nano: int, tokens: int, now: float
    ) -> tuple[Lease, Reservation]:
        assert self._scripts is not None
        budgets = self.budgets
        limits = self.limits
        assert isinstance(budgets, RedisBudgets) and isinstance(limits, RedisLimits)
        lease, limit_call = (
            limits.call(subject.limit_subjects, now, tokens)
            if subject.limit_subjects
            else (empty_lease(now), None)
        )
        reservation, checks, budget_call = budgets.call(subject.budget_subjects, usd_nano, tokens, now)
        if limit_call is None and not checks:
            return lease, reservation  # nothing to check now; the settle adds the spend
        refusal = await self._scripts.admit(now, limit_call, budget_call if checks else None)
        if refusal is None:
            return lease, reservation
        if refusal.part == "limit":
            raise limits.error(lease, refusal)
        raise budgets.error(reservation, checks, refusal, now)

    async def settle(self, admission: Admission, usage: Usage, cost: Cost | None) -> None:
        """Replace the estimate with what the request cost (actual USD) and used (all tokens)."""
        if admission.finished:
            return
        admission.finished = True
        await self._finish(admission, cost.actual_nano if cost is not None else 0, usage.total_tokens)

    async def release(self, admission: Admission) -> None:
        """Give everything back: the request was refused or aborted before costing anything."""
        if admission.finished:
            return
        admission.finished = True
        await self._finish(admission, None, 0)

    async def _finish(self, admission: Admission, actual_nano: int | None, actual_tokens: int) -> None:
        """Settle at ``actual_nano`` nano-USD, or release (None)."""
        lease, reservation = admission.lease, admission.reservation
        if self._memory is not None:
            memory_budgets, memory_limits = self._memory
            memory_limits.release_now(lease, actual_tokens)
            if actual_nano is None:
                memory_budgets.release_now(reservation)
            else:
                memory_budgets.settle_nano(reservation, actual_nano, actual_tokens)
            return
        if self._scripts is not None:
            budgets = self.budgets
            limits = self.limits
            assert isinstance(budgets, RedisBudgets) and isinstance(limits, RedisLimits)
            lease_part = None
            if not lease.empty and not lease.released:
                lease_part = limits.finish_call(lease, actual_tokens)
            lease.released = True
            res_part = None
            if not reservation.done and (actual_nano is not None or reservation.holds):
                res_part = budgets.finish_call(reservation, actual_nano, actual_tokens)
            reservation.done = True
            if lease_part is not None or res_part is not None:
                await self._scripts.finish(lease_part, res_part)
            return
        await self.limits.release(lease, actual_tokens)
        if actual_nano is None:
            await self.budgets.release(reservation)
        else:
            await self.budgets.settle(reservation, nano_to_usd(actual_nano), actual_tokens)

    def cost(
        self,
        public_model: str,
        upstream_model: str | None,
        usage: Usage,
        at: datetime,
        cost_multiplier: float = 1.0,
        free_tier: bool = False,
    ) -> tuple[Cost, ResolvedPrice | None]:
        """Cost at the price in force at ``at`` (the request's start); None price = unknown model."""
        price = self.prices.price_for(public_model, upstream_model, at)
        return compute_cost(usage, price, cost_multiplier=cost_multiplier, free_tier=free_tier), price

    async def try_acquire_provider_key(
        self, key_id: int, limits: HasLimits, now: float | None = None, estimated_tokens: int = 0
    ) -> Lease | None:
        """A provider key's slot, or None to skip this candidate (its own limits are full)."""
        at = time.time() if now is None else now
        if self._memory is not None:
            return self._memory[1].try_acquire_provider_key_now(key_id, limits, at, estimated_tokens)
        return await self.limits.try_acquire_provider_key(key_id, limits, at, estimated_tokens)

    async def release_provider_key(self, lease: Lease, actual_tokens: int | None = None) -> None:
        if self._memory is not None:
            self._memory[1].release_now(lease, actual_tokens)
            return
        await self.limits.release(lease, actual_tokens)
