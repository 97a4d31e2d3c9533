"""Accounting: prices, cost, budgets with reservations and rate limits (memory or Redis).

The relay uses the ``Accountant`` façade; the usage-record pipeline stores ``Cost`` and
``ResolvedPrice.to_json()`` with each record and seeds budgets through ``load_spend``.
"""

from isthmus.accounting.accountant import Accountant, Admission, Subject
from isthmus.accounting.budgets import (
    BudgetBackend,
    BudgetCounter,
    BudgetSubject,
    MemoryBudgets,
    PeriodCalendar,
    RedisBudgets,
    Reservation,
    SpendTotal,
)
from isthmus.accounting.cost import Cost, CostBreakdown, compute_cost, estimate_cost, estimate_prompt_tokens
from isthmus.accounting.limits import Lease, LimitBackend, LimitSubject, MemoryLimits, RedisLimits
from isthmus.accounting.prices import BuiltinPrices, PriceBook, Rates, ResolvedPrice, builtin_prices

__all__ = [
    "Accountant",
    "Admission",
    "BudgetBackend",
    "BudgetCounter",
    "BudgetSubject",
    "BuiltinPrices",
    "Cost",
    "CostBreakdown",
    "Lease",
    "LimitBackend",
    "LimitSubject",
    "MemoryBudgets",
    "MemoryLimits",
    "PeriodCalendar",
    "PriceBook",
    "Rates",
    "RedisBudgets",
    "RedisLimits",
    "Reservation",
    "ResolvedPrice",
    "SpendTotal",
    "Subject",
    "builtin_prices",
    "compute_cost",
    "estimate_cost",
    "estimate_prompt_tokens",
]
