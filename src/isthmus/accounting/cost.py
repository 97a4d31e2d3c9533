"""Cost of a request: usage × price, in exact decimal dollars.

List cost = input × in + cache_read × cr + cache_write_5m × cw5m + cache_write_1h × cw1h
+ output × out + per-request fee, with the rates of the tier the prompt falls in. Reasoning tokens are
part of ``output_tokens``; when the price sets a reasoning rate apart they are billed at it and only
the rest of the output at the output rate. Actual cost = list × the provider key's cost multiplier, and
0 for a provider marked free tier. An empty usage (an attempt that produced nothing billable) costs
nothing, per-request fee included, so a failed attempt followed by a retry bills once.

All arithmetic is ``Decimal`` in a private context: no float drift, whatever the global context says.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal

from isthmus.accounting.prices import ResolvedPrice, to_decimal
from isthmus.ir.usage import Usage

# Token counts up to 1e12 times rates with a dozen significant digits stay exact at this precision.
_CTX = Context(prec=40)
_ZERO = Decimal(0)
_ONE = Decimal(1)
_PER_MILLION = -6  # rates are per 1M tokens: scale by 10^-6 (exact, an exponent shift)

DEFAULT_MAX_OUTPUT_TOKENS = 4096
BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """List cost per token kind, USD."""

    input: Decimal = _ZERO
    cache_read: Decimal = _ZERO
    cache_write_5m: Decimal = _ZERO
    cache_write_1h: Decimal = _ZERO
    output: Decimal = _ZERO  # output tokens other than reasoning billed apart
    reasoning: Decimal = _ZERO  # only when reasoning is priced apart
    per_request: Decimal = _ZERO

    def total(self) -> Decimal:
        total = _ZERO
        for part in (
            self.input,
            self.cache_read,
            self.cache_write_5m,
            self.cache_write_1h,
            self.output,
            self.reasoning,
            self.per_request,
        ):
            total = _CTX.add(total, part)
        return total

    def to_json(self) -> dict[str, str]:
        return {
            "input": str(self.input),
            "cache_read": str(self.cache_read),
            "cache_write_5m": str(self.cache_write_5m),
            "cache_write_1h": str(self.cache_write_1h),
            "output": str(self.output),
            "reasoning": str(self.reasoning),
            "per_request": str(self.per_request),
        }


@dataclass(frozen=True, slots=True)
class Cost:
    list_usd: Decimal
    actual_usd: Decimal
    breakdown: CostBreakdown
    tier_above_tokens: int | None = None  # the long-context tier applied, if any
    priced: bool = True  # False: no price was known; the cost is 0 and the record is flagged

    @classmethod
    def zero(cls, *, priced: bool = True) -> Cost:
        return cls(list_usd=_ZERO, actual_usd=_ZERO, breakdown=CostBreakdown(), priced=priced)


def _part(tokens: int, rate: Decimal) -> Decimal:
    if tokens <= 0:
        return _ZERO
    return _CTX.multiply(Decimal(tokens), rate).scaleb(_PER_MILLION, _CTX)


def compute_cost(
    usage: Usage,
    price: ResolvedPrice | None,
    *,
    cost_multiplier: float | Decimal = 1.0,
    free_tier: bool = False,
) -> Cost:
    if price is None:
        return Cost.zero(priced=False)
    if usage.is_empty():
        return Cost.zero()
    rates, tier = price.rates_for(usage.prompt_tokens)
    reasoning_tokens = min(max(usage.reasoning_tokens, 0), max(usage.output_tokens, 0))
    if rates.reasoning_apart:
        output = _part(usage.output_tokens - reasoning_tokens, rates.output)
        reasoning = _part(reasoning_tokens, rates.reasoning)
    else:
        output = _part(usage.output_tokens, rates.output)
        reasoning = _ZERO
    breakdown = CostBreakdown(
        input=_part(usage.input_tokens, rates.input),
        cache_read=_part(usage.cache_read_tokens, rates.cache_read),
        cache_write_5m=_part(usage.cache_write_5m_tokens, rates.cache_write_5m),
        cache_write_1h=_part(usage.cache_write_1h_tokens, rates.cache_write_1h),
        output=output,
        reasoning=reasoning,
        per_request=price.per_request,
    )
    list_usd = breakdown.total()
    if free_tier:
        actual = _ZERO
    else:
        multiplier = to_decimal(cost_multiplier)
        actual = list_usd if multiplier == _ONE else _CTX.multiply(list_usd, multiplier)
    return Cost(list_usd=list_usd, actual_usd=actual, breakdown=breakdown, tier_above_tokens=tier)


def estimate_prompt_tokens(body_size: int) -> int:
    """A cheap upper-ish estimate of prompt tokens from the request body size (about 4 bytes a token).

    JSON framing makes it an overestimate for text; base64 images make it a large one. Both err on the
    side of reserving too much, which a settle gives back.
    """
    return max(0, (body_size + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN)


def estimate_output_tokens(max_output_tokens: int | None, default: int = DEFAULT_MAX_OUTPUT_TOKENS) -> int:
    if max_output_tokens is None or max_output_tokens <= 0:
        return default
    return max_output_tokens


def estimate_cost(
    prompt_tokens_estimate: int,
    max_output_tokens: int | None,
    price: ResolvedPrice | None,
    *,
    default_max_output: int = DEFAULT_MAX_OUTPUT_TOKENS,
) -> Decimal:
    """What to reserve against USD budgets before the call (list prices, multiplier not applied).

    The prompt is billed at the input rate of the tier the estimate falls in, the output at the higher
    of the output and reasoning rates, plus the per-request fee. Unknown price → 0.
    """
    if price is None:
        return _ZERO
    prompt = max(0, prompt_tokens_estimate)
    output_tokens = estimate_output_tokens(max_output_tokens, default_max_output)
    rates, _ = price.rates_for(prompt)
    out_rate = max(rates.output, rates.reasoning)
    total = _CTX.add(_part(prompt, rates.input), _part(output_tokens, out_rate))
    return _CTX.add(total, price.per_request)
