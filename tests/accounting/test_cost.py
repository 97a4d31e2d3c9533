"""Cost against hand-computed expectations, from each protocol's usage as the upstream reports it.

Each case feeds the wire ``usage`` object through that protocol's own normaliser (so cached tokens are
unfolded exactly as the relay will do it), prices it with the built-in list and compares with a sum
worked out by hand below: tokens × USD per 1M tokens.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from isthmus.accounting.cost import (
    Cost,
    compute_cost,
    estimate_cost,
    estimate_output_tokens,
    estimate_prompt_tokens,
)
from isthmus.accounting.prices import PriceBook, builtin_prices
from isthmus.ir.usage import Usage
from isthmus.protocols import anthropic, gemini, openai_chat, openai_responses

from .conftest import model_row, price_row, utc

NOW = utc(2026, 11, 24, 12)
D = Decimal


def builtin(model: str) -> Any:
    price = builtin_prices().price(model, NOW)
    assert price is not None
    return price


def micro(total_micro_usd: str) -> Decimal:
    """Hand sums below are in micro-dollars (tokens × $/1M); this turns them into dollars."""
    return D(total_micro_usd) / D(1_000_000)


def test_anthropic_cache_reads_and_5m_and_1h_writes() -> None:
    usage = anthropic.usage_from_wire(
        {
            "input_tokens": 1200,
            "cache_creation_input_tokens": 3000,
            "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000},
            "cache_read_input_tokens": 50_000,
            "output_tokens": 800,
        }
    )
    cost = compute_cost(usage, builtin("claude-sonnet-4-5-20250929"))
    # 1200×3 + 2000×3.75 + 1000×6 + 50000×0.30 + 800×15 = 3600 + 7500 + 6000 + 15000 + 12000
    assert cost.list_usd == micro("44100") == D("0.0441")
    b = cost.breakdown
    assert (b.input, b.cache_write_5m, b.cache_write_1h, b.cache_read, b.output) == (
        micro("3600"),
        micro("7500"),
        micro("6000"),
        micro("15000"),
        micro("12000"),
    )
    assert cost.actual_usd == cost.list_usd and cost.tier_above_tokens is None and cost.priced


def test_anthropic_long_context_tier_counts_cache_reads_in_the_prompt() -> None:
    # 150k input + 60k cache reads = 210k prompt tokens > 200k: every token at the long-context rates.
    usage = anthropic.usage_from_wire(
        {"input_tokens": 150_000, "cache_read_input_tokens": 60_000, "output_tokens": 2000}
    )
    cost = compute_cost(usage, builtin("claude-sonnet-4-5"))
    # 150000×6 + 60000×0.60 + 2000×22.50 = 900000 + 36000 + 45000
    assert cost.list_usd == D("0.981")
    assert cost.tier_above_tokens == 200_000
    # The same request just at the threshold bills at base rates: 140000×3 + 60000×0.3 + 2000×15.
    under = anthropic.usage_from_wire(
        {"input_tokens": 140_000, "cache_read_input_tokens": 60_000, "output_tokens": 2000}
    )
    assert compute_cost(under, builtin("claude-sonnet-4-5")).list_usd == micro("468000")


def test_anthropic_prompt_length_pricing_haiku_5_5() -> None:
    price = builtin("claude-haiku-5-5")
    over = anthropic.usage_from_wire(
        {"input_tokens": 90_000, "cache_read_input_tokens": 20_000, "output_tokens": 1000}
    )
    # 110k prompt > 100k: 90000×0.50 + 20000×0.05 + 1000×2.50 = 45000 + 1000 + 2500
    assert compute_cost(over, price).list_usd == micro("48500")
    at = anthropic.usage_from_wire(
        {"input_tokens": 80_000, "cache_read_input_tokens": 20_000, "output_tokens": 1000}
    )
    # exactly 100k is not above: 80000×0.10 + 20000×0.01 + 1000×0.50 = 8000 + 200 + 500
    assert compute_cost(at, price).list_usd == micro("8700")


def test_openai_chat_cached_tokens_are_inside_prompt_tokens() -> None:
    usage = openai_chat.usage_from_wire(
        {"prompt_tokens": 10_000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 6000}}
    )
    assert (usage.input_tokens, usage.cache_read_tokens) == (4000, 6000)
    cost = compute_cost(usage, builtin("gpt-4o-2024-11-20"))
    # 4000×2.50 + 6000×1.25 + 500×10 = 10000 + 7500 + 5000
    assert cost.list_usd == micro("22500")


def test_openai_responses_reasoning_inside_output() -> None:
    usage = openai_responses.usage_from_wire(
        {
            "input_tokens": 2000,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 3000,
            "output_tokens_details": {"reasoning_tokens": 2500},
        }
    )
    cost = compute_cost(usage, builtin("o3-2025-04-16"))
    # Reasoning is billed as output for o3: 2000×2 + 3000×8 = 4000 + 24000
    assert cost.list_usd == micro("28000")
    assert cost.breakdown.reasoning == 0 and cost.breakdown.output == micro("24000")


def test_reasoning_priced_apart_when_the_price_says_so() -> None:
    row = price_row(5, utc(2026, 1, 1), input=1.0, output=4.0, reasoning=10.0)
    price = PriceBook({"r": model_row("r", (), (row,))}).price_for("r", None, NOW)
    usage = Usage(input_tokens=2000, output_tokens=3000, reasoning_tokens=2500)
    cost = compute_cost(usage, price)
    # 2000×1 + (3000−2500)×4 + 2500×10 = 2000 + 2000 + 25000
    assert cost.list_usd == micro("29000")
    assert (cost.breakdown.output, cost.breakdown.reasoning) == (micro("2000"), micro("25000"))
    # A report claiming more reasoning than output cannot bill more tokens than were produced.
    odd = compute_cost(Usage(output_tokens=100, reasoning_tokens=500), price)
    assert odd.list_usd == micro("1000")  # 100 × 10


def test_openai_long_context_tier_gpt_5_4() -> None:
    usage = openai_responses.usage_from_wire(
        {"input_tokens": 300_000, "input_tokens_details": {"cached_tokens": 100_000}, "output_tokens": 1000}
    )
    cost = compute_cost(usage, builtin("gpt-5.4"))
    # 300k > 272k: 200000×5 + 100000×0.50 + 1000×22.50 = 1000000 + 50000 + 22500
    assert cost.list_usd == D("1.0725") and cost.tier_above_tokens == 272_000


def test_gemini_thoughts_are_output_and_long_context_tier() -> None:
    usage = gemini.usage_from_wire(
        {
            "promptTokenCount": 250_000,
            "cachedContentTokenCount": 50_000,
            "candidatesTokenCount": 1000,
            "thoughtsTokenCount": 4000,
        }
    )
    cost = compute_cost(usage, builtin("gemini-2.5-pro"))
    # 250k > 200k: 200000×2.50 + 50000×0.25 + (1000+4000)×15 = 500000 + 12500 + 75000
    assert cost.list_usd == micro("587500")
    small = gemini.usage_from_wire(
        {"promptTokenCount": 1000, "candidatesTokenCount": 200, "thoughtsTokenCount": 300}
    )
    # 1000×0.30 + 500×2.50 = 300 + 1250
    assert compute_cost(small, builtin("gemini-2.5-flash")).list_usd == micro("1550")


def test_cost_multiplier_and_free_tier() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000)
    price = builtin("gpt-4.1")
    # 1000000×2 + 100000×8 = 2.8 USD list
    discounted = compute_cost(usage, price, cost_multiplier=0.8)
    assert (discounted.list_usd, discounted.actual_usd) == (D("2.8"), D("2.24"))
    free = compute_cost(usage, price, cost_multiplier=0.8, free_tier=True)
    assert (free.list_usd, free.actual_usd) == (D("2.8"), D(0))
    premium = compute_cost(usage, price, cost_multiplier=D("1.1"))
    assert premium.actual_usd == D("3.08")


def test_per_request_fee_and_empty_usage() -> None:
    row = price_row(9, utc(2026, 1, 1), input=1.0, output=1.0, per_request=0.005)
    price = PriceBook({"f": model_row("f", (), (row,))}).price_for("f", None, NOW)
    assert compute_cost(Usage(input_tokens=1000), price).list_usd == D("0.006")  # 1000×1/1M + 0.005
    # An attempt that produced nothing billable costs nothing, fee included (a retry bills once).
    assert compute_cost(Usage(), price) == Cost.zero()


def test_unknown_price_costs_zero_and_is_flagged() -> None:
    cost = compute_cost(Usage(input_tokens=10, output_tokens=10), None)
    assert cost.list_usd == cost.actual_usd == 0 and not cost.priced


def test_decimal_sums_do_not_drift() -> None:
    price = builtin("gpt-4o-mini")
    one = compute_cost(Usage(input_tokens=7, output_tokens=3), price).list_usd
    total = sum((one for _ in range(100_000)), D(0))
    # 100000 × (7×0.15 + 3×0.60) / 1M exactly; the float equivalent drifts in the last digits.
    assert total == D("0.285")
    assert sum(7 * 0.15e-6 + 3 * 0.6e-6 for _ in range(100_000)) != 0.285


def test_breakdown_json_is_exact_text() -> None:
    cost = compute_cost(Usage(input_tokens=3, cache_read_tokens=7), builtin("gpt-4o-mini"))
    assert cost.breakdown.to_json()["input"] == str(micro("0.45"))
    assert D(cost.breakdown.to_json()["cache_read"]) == micro("0.525")


# --- estimates ---------------------------------------------------------------------------------------------


def test_prompt_and_output_estimates() -> None:
    assert estimate_prompt_tokens(0) == 0
    assert estimate_prompt_tokens(1) == 1 and estimate_prompt_tokens(4000) == 1000
    assert estimate_output_tokens(None) == 4096 and estimate_output_tokens(0) == 4096
    assert estimate_output_tokens(123) == 123 and estimate_output_tokens(None, default=10) == 10


def test_estimate_cost_uses_the_tier_the_prompt_lands_in() -> None:
    price = builtin("claude-sonnet-4-5")
    # 1000 prompt tokens × 3 + 500 output × 15 = 3000 + 7500
    assert estimate_cost(1000, 500, price) == micro("10500")
    # No max tokens: the default cap (4096) × 15 = 61440, + 1000×3
    assert estimate_cost(1000, None, price) == micro("64440")
    # 250k prompt: long-context rates, 250000×6 + 1000×22.5
    assert estimate_cost(250_000, 1000, price) == micro("1522500")
    assert estimate_cost(1000, 1000, None) == 0


@pytest.mark.parametrize("reasoning", [None, 12.0])
def test_estimate_takes_the_dearer_of_output_and_reasoning(reasoning: float | None) -> None:
    row = price_row(3, utc(2026, 1, 1), input=1.0, output=4.0, reasoning=reasoning, per_request=0.01)
    price = PriceBook({"m": model_row("m", (), (row,))}).price_for("m", None, NOW)
    out_rate = 12 if reasoning else 4
    assert estimate_cost(1000, 1000, price) == micro(str(1000 * 1 + 1000 * out_rate)) + D("0.01")
