"""Prices: which rates a request is billed at.

``PriceBook.price_for(public_model, upstream_model, at)`` resolves, in this order:

1. the price configured for the public model (config file or admin API, ``ModelRow.prices``) that is
   in force at ``at`` — the store never rewrites a price, a change is a new effective-dated row;
2. the built-in price of the upstream model name (``prices.yaml`` beside this module);
3. the built-in price of the public model name;
4. nothing: the model is unknown, costs 0 and is flagged (``unknown_models``).

Built-in names are matched by a fixed rule (``normalise_model_name`` + ``BuiltinPrices.match``):
lower-case, keep what follows the last ``/`` (``models/gemini-2.5-pro``), read ``@`` as ``-`` (Vertex
``claude-sonnet-4-5@20250929``), drop a trailing ``[...]`` (``claude-sonnet-4-5[1m]``) and, for
``claude-`` names only, read dots as dashes (Anthropic ids never contain dots: ``claude-sonnet-4.5``).
Then the exact name, else the longest known name ``N`` such that the request starts with ``N-``: dated
snapshots and suffixed variants (``gpt-4o-2024-11-20``, ``claude-sonnet-4-5-20250929``,
``gpt-5-chat-latest``) take their base model's price. ``gpt-5.6`` does not match ``gpt-5`` (the
boundary is a dash), so an unlisted new version is flagged rather than billed at an old price.

Rates fall back as ``PriceRow`` documents: a None cache rate means the input rate, a None reasoning
rate the output rate. Tiers: when the prompt (input + cache reads + cache writes) is above a tier's
``above_tokens``, the highest such tier's rates replace the base rates for the whole request (how
Anthropic and Google bill long context). In a tier, a None input/output rate keeps the base rate, a
None cache rate means the tier's input rate, and reasoning is billed at the base reasoning rate when
one is set apart, else at the tier's output rate.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from typing import Any, Literal

import yaml

from isthmus.config.schema import PriceConfig
from isthmus.store.snapshot import ModelRow, PriceRow, PriceTierRow, SnapshotRows

PriceSource = Literal["config", "builtin"]

_BRACKET_SUFFIX = re.compile(r"\[[^\]]*\]$")


def to_decimal(value: float | int | Decimal) -> Decimal:
    """Exact decimal of a configured rate: ``0.075`` is 0.075, not the binary float's expansion."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    return Decimal(repr(value))


def as_utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens, every fallback already applied."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal
    reasoning_apart: bool  # reasoning has its own rate (else it equals ``output``)

    def to_json(self) -> dict[str, str]:
        data = {
            "input": str(self.input),
            "output": str(self.output),
            "cache_read": str(self.cache_read),
            "cache_write_5m": str(self.cache_write_5m),
            "cache_write_1h": str(self.cache_write_1h),
        }
        if self.reasoning_apart:
            data["reasoning"] = str(self.reasoning)
        return data


@dataclass(frozen=True, slots=True)
class IntegerRates:
    """One set of rates and the per-request fee as integers of a common unit, ``10**exponent`` USD per
    1M tokens, so pricing a request is integer arithmetic (exact) and one ``Decimal`` at the end."""

    exponent: int
    input: int
    output: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    reasoning: int
    reasoning_apart: bool
    per_request: int  # the fee × 1M, in the same unit (it is added to a sum of tokens × rate)

    def nano(self, units: int, *, round_up: bool = False) -> int:
        """``units`` of ``10**(exponent - 6)`` USD (a sum of tokens × these rates) in nano-USD, rounded
        half to even like ``budgets.usd_to_nano`` (or up, for reservations): exact integer arithmetic."""
        shift = self.exponent + 3  # 10**(exponent - 6) USD = 10**(exponent + 3) nano-USD
        if shift >= 0:
            scale: int = 10**shift
            return units * scale
        divisor: int = 10**-shift
        quotient, rest = divmod(units, divisor)
        if rest and (round_up or 2 * rest > divisor or (2 * rest == divisor and quotient % 2)):
            quotient += 1
        return quotient

    @classmethod
    def of(cls, rates: Rates, per_request: Decimal) -> IntegerRates | None:
        """None when a value is not a finite decimal (no common integer unit)."""
        values = (
            rates.input,
            rates.output,
            rates.cache_read,
            rates.cache_write_5m,
            rates.cache_write_1h,
            rates.reasoning,
        )
        if not all(v.is_finite() for v in values) or not per_request.is_finite():
            return None
        fee_exponent = _exponent(per_request) + 6  # USD per request → a "per 1M" amount
        exponent = min(min(_exponent(v) for v in values), fee_exponent)
        return cls(
            exponent=exponent,
            input=_scaled(rates.input, exponent),
            output=_scaled(rates.output, exponent),
            cache_read=_scaled(rates.cache_read, exponent),
            cache_write_5m=_scaled(rates.cache_write_5m, exponent),
            cache_write_1h=_scaled(rates.cache_write_1h, exponent),
            reasoning=_scaled(rates.reasoning, exponent),
            reasoning_apart=rates.reasoning_apart,
            per_request=_scaled(per_request, exponent - 6),
        )


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite values only
    return exponent


def _scaled(value: Decimal, exponent: int) -> int:
    """``value / 10**exponent`` exactly, for an ``exponent`` at or below the value's own."""
    sign, digits, own = value.as_tuple()
    assert isinstance(own, int) and own >= exponent
    coefficient = int("".join(map(str, digits)) or "0") * 10 ** (own - exponent)
    return int(-coefficient if sign else coefficient)


@dataclass(frozen=True, slots=True)
class PriceTier:
    above_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class ResolvedPrice:
    """A price as billed: the usage record stores ``ref`` and ``to_json()`` so history keeps its rates."""

    source: PriceSource
    ref: str  # "price:12" for a configured row, "builtin:gpt-4o" / "builtin:x@2026-10-07" otherwise
    price_id: int | None  # the ``prices`` row id for configured prices
    model: str  # the public model (configured) or the built-in name that matched
    effective_from: datetime | None
    rates: Rates
    per_request: Decimal  # USD per request
    tiers: tuple[PriceTier, ...]  # ascending ``above_tokens``
    # Derived once per price (prices are built per snapshot, used by every request): the integer
    # form of the base and tier rates, and the JSON every usage record billed at this price stores.
    integer_rates: tuple[IntegerRates | None, ...] = field(init=False, repr=False, compare=False)
    _json: dict[str, Any] | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        integer = [IntegerRates.of(self.rates, self.per_request)]
        integer += [IntegerRates.of(t.rates, self.per_request) for t in self.tiers]
        object.__setattr__(self, "integer_rates", tuple(integer))

    def integer_rates_for(self, prompt_tokens: int) -> tuple[IntegerRates | None, int | None]:
        """:meth:`rates_for` in integer form (None: some rate is not a finite decimal)."""
        index = 0
        for number, tier in enumerate(self.tiers, start=1):
            if prompt_tokens > tier.above_tokens:
                index = number
            else:
                break
        if index == 0:
            return self.integer_rates[0], None
        return self.integer_rates[index], self.tiers[index - 1].above_tokens

    def rates_for(self, prompt_tokens: int) -> tuple[Rates, int | None]:
        """The rates for a request with this many prompt tokens, and the tier applied (its threshold)."""
        chosen: PriceTier | None = None
        for tier in self.tiers:
            if prompt_tokens > tier.above_tokens:
                chosen = tier
            else:
                break
        if chosen is None:
            return self.rates, None
        return chosen.rates, chosen.above_tokens

    def to_json(self) -> dict[str, Any]:
        """The price as stored with each usage record. Built once and shared by every record billed
        at this price: treat it as read-only."""
        data = self._json
        if data is None:
            data = self._build_json()
            object.__setattr__(self, "_json", data)
        return data

    def _build_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "source": self.source,
            "model": self.model,
            "effective_from": self.effective_from.isoformat() if self.effective_from else None,
            **self.rates.to_json(),
            "per_request": str(self.per_request),
            "tiers": [{"above_tokens": t.above_tokens, **t.rates.to_json()} for t in self.tiers],
        }


def _base_rates(
    input_: float | Decimal,
    output: float | Decimal,
    cache_read: float | Decimal | None,
    cache_write_5m: float | Decimal | None,
    cache_write_1h: float | Decimal | None,
    reasoning: float | Decimal | None,
) -> Rates:
    inp = to_decimal(input_)
    out = to_decimal(output)
    return Rates(
        input=inp,
        output=out,
        cache_read=inp if cache_read is None else to_decimal(cache_read),
        cache_write_5m=inp if cache_write_5m is None else to_decimal(cache_write_5m),
        cache_write_1h=inp if cache_write_1h is None else to_decimal(cache_write_1h),
        reasoning=out if reasoning is None else to_decimal(reasoning),
        reasoning_apart=reasoning is not None,
    )


def _tier_rates(base: Rates, tier: PriceTierRow) -> Rates:
    inp = base.input if tier.input is None else to_decimal(tier.input)
    out = base.output if tier.output is None else to_decimal(tier.output)
    return Rates(
        input=inp,
        output=out,
        cache_read=inp if tier.cache_read is None else to_decimal(tier.cache_read),
        cache_write_5m=inp if tier.cache_write_5m is None else to_decimal(tier.cache_write_5m),
        cache_write_1h=inp if tier.cache_write_1h is None else to_decimal(tier.cache_write_1h),
        reasoning=base.reasoning if base.reasoning_apart else out,
        reasoning_apart=base.reasoning_apart,
    )


def _tiers(base: Rates, tiers: Iterable[PriceTierRow]) -> tuple[PriceTier, ...]:
    ordered = sorted(tiers, key=lambda t: t.above_tokens)
    return tuple(PriceTier(above_tokens=t.above_tokens, rates=_tier_rates(base, t)) for t in ordered)


def resolve_price_row(public_model: str, row: PriceRow) -> ResolvedPrice:
    """A configured price row as billed."""
    rates = _base_rates(
        row.input, row.output, row.cache_read, row.cache_write_5m, row.cache_write_1h, row.reasoning
    )
    return ResolvedPrice(
        source="config",
        ref=f"price:{row.id}",
        price_id=row.id,
        model=public_model,
        effective_from=as_utc(row.effective_from),
        rates=rates,
        per_request=to_decimal(row.per_request),
        tiers=_tiers(rates, row.tiers),
    )


def normalise_model_name(name: str) -> str:
    """The form built-in names are matched in (see the module docstring)."""
    key = name.strip().lower()
    key = key.rsplit("/", 1)[-1]
    key = key.replace("@", "-")
    key = _BRACKET_SUFFIX.sub("", key)
    if key.startswith("claude-"):
        key = key.replace(".", "-")
    return key


class BuiltinPrices:
    """The packaged price list: name → price history (oldest first)."""

    def __init__(self, models: Mapping[str, Sequence[ResolvedPrice]], checked: str | None = None) -> None:
        self._models: dict[str, tuple[ResolvedPrice, ...]] = {
            normalise_model_name(name): tuple(history) for name, history in models.items()
        }
        self.checked = checked
        # Longest first, so the first prefix hit is the longest known name.
        self._by_length = sorted(self._models, key=len, reverse=True)
        self._match_cache: dict[str, str | None] = {}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BuiltinPrices:
        """Parse the YAML shape; each entry is validated like a configured ``price``."""
        models_raw = data.get("models") or {}
        if not isinstance(models_raw, Mapping):
            raise ValueError("prices: 'models' must be a mapping")
        models: dict[str, list[ResolvedPrice]] = {}
        for name, entry in models_raw.items():
            history = entry if isinstance(entry, list) else [entry]
            models[str(name)] = [_builtin_price(str(name), dict(item)) for item in history]
            models[str(name)].sort(key=lambda p: p.effective_from or datetime.min.replace(tzinfo=UTC))
        return cls(models, checked=str(data["checked"]) if data.get("checked") else None)

    def names(self) -> list[str]:
        return sorted(self._models)

    def match(self, model: str) -> str | None:
        """The built-in name whose price ``model`` takes, or None."""
        try:
            return self._match_cache[model]
        except KeyError:
            pass
        key = normalise_model_name(model)
        found: str | None = key if key in self._models else None
        if found is None:
            for name in self._by_length:
                if key.startswith(name) and key[len(name) : len(name) + 1] == "-":
                    found = name
                    break
        # Names come from configuration and upstream reports, so the cache stays small; the bound
        # only guards against a client spraying random names through some future code path.
        if len(self._match_cache) >= 4096:
            self._match_cache.clear()
        self._match_cache[model] = found
        return found

    def price(self, model: str, at: datetime) -> ResolvedPrice | None:
        name = self.match(model)
        if name is None:
            return None
        return _in_force(self._models[name], as_utc(at))


def _in_force(history: Sequence[ResolvedPrice], at: datetime) -> ResolvedPrice | None:
    current: ResolvedPrice | None = None
    for price in history:
        if price.effective_from is None or price.effective_from <= at:
            current = price
        else:
            break
    return current


def _builtin_price(name: str, item: dict[str, Any]) -> ResolvedPrice:
    raw_from = item.pop("effective_from", None)
    effective_from: datetime | None
    if raw_from is None:
        effective_from = None
    elif isinstance(raw_from, datetime):
        effective_from = as_utc(raw_from)
    elif isinstance(raw_from, date):
        effective_from = datetime(raw_from.year, raw_from.month, raw_from.day, tzinfo=UTC)
    else:
        effective_from = as_utc(datetime.fromisoformat(str(raw_from)))
    config = PriceConfig.model_validate(item)
    rates = _base_rates(
        config.input,
        config.output,
        config.cache_read,
        config.cache_write_5m,
        config.cache_write_1h,
        config.reasoning,
    )
    tiers = _tiers(
        rates,
        (
            PriceTierRow(
                above_tokens=t.above_tokens,
                input=t.input,
                output=t.output,
                cache_read=t.cache_read,
                cache_write_5m=t.cache_write_5m,
                cache_write_1h=t.cache_write_1h,
            )
            for t in config.tiers
        ),
    )
    ref = (
        f"builtin:{name}" if effective_from is None else f"builtin:{name}@{effective_from.date().isoformat()}"
    )
    return ResolvedPrice(
        source="builtin",
        ref=ref,
        price_id=None,
        model=name,
        effective_from=effective_from,
        rates=rates,
        per_request=to_decimal(config.per_request),
        tiers=tiers,
    )


@functools.cache
def builtin_prices() -> BuiltinPrices:
    """The packaged list, read on first use (never at import)."""
    text = resources.files("isthmus.accounting").joinpath("prices.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    return BuiltinPrices.from_mapping(data)


class PriceBook:
    """Prices for the request path, built from one snapshot; lookups are dict hits after the first."""

    def __init__(
        self, models: Mapping[str, ModelRow] | None = None, builtin: BuiltinPrices | None = None
    ) -> None:
        self._models: Mapping[str, ModelRow] = models or {}
        self._builtin = builtin if builtin is not None else builtin_prices()
        self._configured: dict[str, tuple[ResolvedPrice, ...]] = {
            name: tuple(
                resolve_price_row(name, row) for row in sorted(m.prices, key=lambda p: p.effective_from)
            )
            for name, m in self._models.items()
            if m.prices
        }

    @classmethod
    def from_snapshot(cls, rows: SnapshotRows, builtin: BuiltinPrices | None = None) -> PriceBook:
        return cls(rows.models, builtin)

    @property
    def builtin(self) -> BuiltinPrices:
        return self._builtin

    def configured_price(self, public_model: str, at: datetime) -> ResolvedPrice | None:
        history = self._configured.get(public_model)
        if not history:
            return None
        return _in_force(history, as_utc(at))

    def price_for(self, public_model: str, upstream_model: str | None, at: datetime) -> ResolvedPrice | None:
        """The price in force at ``at``; None means unknown (bill 0 and flag the record)."""
        price = self.configured_price(public_model, at)
        if price is not None:
            return price
        if upstream_model:
            price = self._builtin.price(upstream_model, at)
            if price is not None:
                return price
        return self._builtin.price(public_model, at)

    def estimate_price(self, public_model: str, at: datetime) -> ResolvedPrice | None:
        """The price to estimate a request with before routing picks an upstream.

        The public model's own price (configured, else built-in); failing that, the dearest built-in
        price among its routes' upstream models, so a reservation errs high rather than at 0.
        """
        price = self.price_for(public_model, None, at)
        if price is not None:
            return price
        model = self._models.get(public_model)
        if model is None:
            return None
        best: ResolvedPrice | None = None
        for route in model.routes:
            candidate = self._builtin.price(route.upstream_model, at)
            if candidate is not None and (
                best is None
                or candidate.rates.input + candidate.rates.output > best.rates.input + best.rates.output
            ):
                best = candidate
        return best

    def unknown_models(self, at: datetime | None = None) -> dict[str, tuple[str, ...]]:
        """Public models that would bill some route at 0, with the upstream models left unpriced.

        A model with a configured price in force is fully priced. Otherwise each route is priced by
        its upstream model's built-in price, else the public name's; a model without routes is
        listed (with no upstream names) when its public name has no price either.
        """
        when = as_utc(at) if at is not None else datetime.now(UTC)
        unknown: dict[str, tuple[str, ...]] = {}
        for name, model in self._models.items():
            if self.configured_price(name, when) is not None or self._builtin.price(name, when) is not None:
                continue
            unpriced = tuple(
                sorted(
                    {
                        r.upstream_model
                        for r in model.routes
                        if self._builtin.price(r.upstream_model, when) is None
                    }
                )
            )
            if unpriced or not model.routes:
                unknown[name] = unpriced
        return unknown
