"""Cost of a request: usage × price, in exact decimal dollars.

List cost = input × in + cache_read × cr + cache_write_5m × cw5m + cache_write_1h × cw1h
+ output × out + per-request fee, with the rates of the tier the prompt falls in. Reasoning tokens are
part of ``output_tokens``; when the price sets a reasoning rate apart they are billed at it and only
the rest of the output at the output rate. Actual cost = list × the provider key's cost multiplier, and
0 for a provider marked free tier. An empty usage (an attempt that produced nothing billable) costs
nothing, per-request fee included, so a failed attempt followed by a retry bills once.

All arithmetic is exact: the request path sums tokens × rate as integers (each price's rates scaled to
one integer unit once, ``IntegerRates``) and makes one ``Decimal`` of the total; the per-kind breakdown
is worked out in ``Decimal`` only when asked for. Decimals use a private context: no float drift,
whatever the global context says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal

from isthmus.accounting.budgets import usd_to_nano
from isthmus.accounting.prices import IntegerRates, Rates, ResolvedPrice, to_decimal
from isthmus.ir.usage import Usage

# Token counts up to 1e12 times rates with a dozen significant digits stay exact at this precision.
_CTX = Context(prec=40)
_ZERO = Decimal(0)
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


# Token counts of one priced request, in the order ``_breakdown`` reads them.
_Tokens = tuple[int, int, int, int, int, int]


@dataclass(slots=True)
class Cost:
    """What a request cost. A value: nothing changes it after ``compute_cost`` (not frozen only
    because a frozen dataclass costs three times as much to build, once per request)."""

    list_usd: Decimal
    actual_usd: Decimal
    actual_nano: int = 0  # ``actual_usd`` in nano-USD (rounded half to even), what budgets count
    tier_above_tokens: int | None = None  # the long-context tier applied, if any
    priced: bool = True  # False: no price was known; the cost is 0 and the record is flagged
    # What the breakdown is worked out from, on demand (the request path never needs it): the
    # counts billed, the prompt size that chose the tier, and the price.
    basis: tuple[_Tokens, int, ResolvedPrice] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def zero(cls, *, priced: bool = True) -> Cost:
        return cls(list_usd=_ZERO, actual_usd=_ZERO, priced=priced)

    @property
    def breakdown(self) -> CostBreakdown:
        """List cost per token kind (``Decimal`` arithmetic; its total is ``list_usd``)."""
        if self.basis is None:
            return CostBreakdown()
        tokens, prompt, price = self.basis
        rates, _ = price.rates_for(prompt)
        return _breakdown(tokens, rates, price.per_request)


def _part(tokens: int, rate: Decimal) -> Decimal:
    if tokens <= 0:
        return _ZERO
    return _CTX.multiply(Decimal(tokens), rate).scaleb(_PER_MILLION, _CTX)


def _breakdown(tokens: _Tokens, rates: Rates, per_request: Decimal) -> CostBreakdown:
    input_, cache_read, cache_write_5m, cache_write_1h, output, reasoning = tokens
    if rates.reasoning_apart:
        output_usd = _part(output - reasoning, rates.output)
        reasoning_usd = _part(reasoning, rates.reasoning)
    else:
        output_usd = _part(output, rates.output)
        reasoning_usd = _ZERO
    return CostBreakdown(
        input=_part(input_, rates.input),
        cache_read=_part(cache_read, rates.cache_read),
        cache_write_5m=_part(cache_write_5m, rates.cache_write_5m),
        cache_write_1h=_part(cache_write_1h, rates.cache_write_1h),
        output=output_usd,
        reasoning=reasoning_usd,
        per_request=per_request,
    )


def _units(tokens: _Tokens, rates: IntegerRates) -> int:
    """The list cost in ``10**(rates.exponent - 6)`` USD: exact integer arithmetic."""
    input_, cache_read, cache_write_5m, cache_write_1h, output, reasoning = tokens
    total = (
        input_ * rates.input
        + cache_read * rates.cache_read
        + cache_write_5m * rates.cache_write_5m
        + cache_write_1h * rates.cache_write_1h
        + rates.per_request
    )
    if rates.reasoning_apart:
        return total + (output - reasoning) * rates.output + reasoning * rates.reasoning
    return total + output * rates.output


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
    # Negative counts (a broken report) bill nothing; reasoning cannot exceed the output it is part of.
    output = max(usage.output_tokens, 0)
    tokens: _Tokens = (
        max(usage.input_tokens, 0),
        max(usage.cache_read_tokens, 0),
        max(usage.cache_write_5m_tokens, 0),
        max(usage.cache_write_1h_tokens, 0),
        output,
        min(max(usage.reasoning_tokens, 0), output),
    )
    prompt = usage.prompt_tokens
    integer, tier = price.integer_rates_for(prompt)
    list_nano: int | None = None
    if integer is not None:
        units = _units(tokens, integer)
        list_usd = Decimal(units).scaleb(integer.exponent + _PER_MILLION, _CTX)
        list_nano = integer.nano(units)
    else:
        list_usd = _breakdown(tokens, price.rates_for(prompt)[0], price.per_request).total()
    if free_tier:
        actual, actual_nano = _ZERO, 0
    elif cost_multiplier == 1:
        actual = list_usd
        actual_nano = list_nano if list_nano is not None else usd_to_nano(actual)
    else:
        actual = _CTX.multiply(list_usd, to_decimal(cost_multiplier))
        actual_nano = usd_to_nano(actual)
    return Cost(list_usd, actual, actual_nano, tier, basis=(tokens, prompt, price))


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


def estimate_nano(
    prompt_tokens_estimate: int,
    max_output_tokens: int | None,
    price: ResolvedPrice | None,
    *,
    default_max_output: int = DEFAULT_MAX_OUTPUT_TOKENS,
) -> int:
    """``estimate_cost`` in nano-USD rounded up, what a reservation holds: integers only on the
    request path (prices with integer rates), the decimal estimate converted otherwise."""
    if price is not None:
        prompt = max(0, prompt_tokens_estimate)
        integer, _ = price.integer_rates_for(prompt)
        if integer is not None:
            output_tokens = estimate_output_tokens(max_output_tokens, default_max_output)
            return integer.nano(_estimate_units(prompt, output_tokens, integer), round_up=True)
    usd = estimate_cost(
        prompt_tokens_estimate, max_output_tokens, price, default_max_output=default_max_output
    )
    return usd_to_nano(usd, round_up=True)


def _estimate_units(prompt: int, output_tokens: int, rates: IntegerRates) -> int:
    return prompt * rates.input + output_tokens * max(rates.output, rates.reasoning) + rates.per_request


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
    integer, _ = price.integer_rates_for(prompt)
    if integer is not None:
        units = _estimate_units(prompt, output_tokens, integer)
        return Decimal(units).scaleb(integer.exponent + _PER_MILLION, _CTX)
    rates, _ = price.rates_for(prompt)
    out_rate = max(rates.output, rates.reasoning)
    total = _CTX.add(_part(prompt, rates.input), _part(output_tokens, out_rate))
    return _CTX.add(total, price.per_request)
