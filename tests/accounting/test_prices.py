"""Prices: resolution order, effective dating, tiers, fallbacks, name matching, the built-in list."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from isthmus.accounting.prices import (
    BuiltinPrices,
    PriceBook,
    builtin_prices,
    normalise_model_name,
)
from isthmus.store.snapshot import PriceTierRow

from .conftest import model_row, price_row, utc

NOW = utc(2026, 11, 24, 12)
D = Decimal


# --- built-in name matching --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "matched"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # the older snapshot is priced on its own
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-5.4-mini-2026-03-17", "gpt-5.4-mini"),  # longest known prefix, not gpt-5.4
        ("gpt-5-chat-latest", "gpt-5"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Vertex spelling
        ("claude-sonnet-4.5", "claude-sonnet-4-5"),  # dotted Anthropic version
        ("claude-sonnet-4-5[1m]", "claude-sonnet-4-5"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("Claude-Haiku-4-5-20251001", "claude-haiku-4-5"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.5-flash-lite-preview-09-2025", "gemini-2.5-flash-lite"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
    ],
)
def test_builtin_matching_rule(requested: str, matched: str) -> None:
    assert builtin_prices().match(requested) == matched


@pytest.mark.parametrize("requested", ["gpt-5.6", "gpt-4", "claude-opus-9", "my-local-llama", "gpt-4ox", ""])
def test_unlisted_models_do_not_match(requested: str) -> None:
    # A dash is the only boundary: "gpt-5.6" must not take gpt-5's price, "gpt-4ox" not gpt-4o's.
    assert builtin_prices().match(requested) is None


def test_normalise_model_name() -> None:
    assert normalise_model_name(" Models/Gemini-2.5-Pro ") == "gemini-2.5-pro"
    assert normalise_model_name("claude-3.5-haiku@20241022") == "claude-3-5-haiku-20241022"
    assert normalise_model_name("gpt-4.1") == "gpt-4.1"  # dots are only rewritten for claude ids


# --- the packaged list ---------------------------------------------------------------------------------


def test_builtin_list_is_packaged_and_dated() -> None:
    prices = builtin_prices()
    assert prices.checked == "2026-11-24"
    names = prices.names()
    for required in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "claude-opus-4-1",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    ):
        assert required in names


def test_builtin_anthropic_rates_follow_the_published_multipliers() -> None:
    # 5m write = 1.25x input, 1h write = 2x input, read = 0.1x (0.05x / 0.025x on some 5.x models);
    # the same holds inside long-context tiers. A typo in the data file breaks this.
    prices = builtin_prices()
    # Claude 3 Haiku is the exception: its published rates are rounded ($0.30 write, $0.03 read).
    claude = [n for n in prices.names() if n.startswith("claude-") and n != "claude-3-haiku"]
    assert len(claude) >= 15
    for name in claude:
        price = prices.price(name, NOW)
        assert price is not None
        for rates in [price.rates, *(t.rates for t in price.tiers)]:
            assert rates.cache_write_5m == rates.input * D("1.25"), name
            assert rates.cache_write_1h == rates.input * 2, name
            assert rates.cache_read / rates.input in (D("0.1"), D("0.05"), D("0.025")), name


def test_builtin_tiers_cost_more_than_their_base() -> None:
    prices = builtin_prices()
    tiered = 0
    for name in prices.names():
        price = prices.price(name, NOW)
        assert price is not None
        assert price.rates.input >= 0 and price.rates.output >= 0
        assert price.rates.cache_read <= price.rates.input, name
        for tier in price.tiers:
            tiered += 1
            assert tier.rates.input > price.rates.input and tier.rates.output > price.rates.output, name
    assert tiered >= 6  # sonnet 4 / 4.5, haiku 5.5, gemini 2.5 pro and 3.x pro, gpt-5.4 / 5.5


def test_builtin_long_context_tiers_where_the_providers_bill_them() -> None:
    prices = builtin_prices()
    sonnet = prices.price("claude-sonnet-4-5-20250929", NOW)
    assert sonnet is not None
    assert [(t.above_tokens, t.rates.input, t.rates.output) for t in sonnet.tiers] == [
        (200_000, D("6.0"), D("22.5"))
    ]
    gemini = prices.price("gemini-2.5-pro", NOW)
    assert gemini is not None
    assert [(t.above_tokens, t.rates.input, t.rates.cache_read) for t in gemini.tiers] == [
        (200_000, D("2.5"), D("0.25"))
    ]
    opus_46 = prices.price("claude-opus-4-6", NOW)
    assert opus_46 is not None and opus_46.tiers == ()  # 1M context at standard rates


def test_builtin_price_history_is_effective_dated() -> None:
    prices = builtin_prices()
    before = prices.price("claude-sonnet-5-5", utc(2026, 10, 6, 23, 59))
    after = prices.price("claude-sonnet-5-5", utc(2026, 10, 7))
    assert before is not None and after is not None
    assert before.rates.cache_read == D("0.2") and before.ref == "builtin:claude-sonnet-5-5"
    assert after.rates.cache_read == D("0.1") and after.ref == "builtin:claude-sonnet-5-5@2026-10-07"
    assert after.effective_from == utc(2026, 10, 7)


def test_builtin_list_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="cache_reads"):
        BuiltinPrices.from_mapping({"models": {"m": {"input": 1, "output": 2, "cache_reads": 1}}})


# --- price book resolution --------------------------------------------------------------------------------


def test_configured_price_beats_the_builtin_one() -> None:
    book = PriceBook(
        {"gpt-4o": model_row("gpt-4o", ("gpt-4o-2024-11-20",), (price_row(7, utc(2026, 1, 1)),))}
    )
    price = book.price_for("gpt-4o", "gpt-4o-2024-11-20", NOW)
    assert price is not None
    assert (price.source, price.ref, price.price_id, price.model) == ("config", "price:7", 7, "gpt-4o")
    assert price.rates.input == D("1.0")


def test_upstream_builtin_price_then_public_name() -> None:
    book = PriceBook({"fast": model_row("fast", ("claude-haiku-4-5-20251001",))})
    by_upstream = book.price_for("fast", "claude-haiku-4-5-20251001", NOW)
    assert by_upstream is not None and by_upstream.ref == "builtin:claude-haiku-4-5"
    # The upstream is unknown (a self-hosted name) but the public name is a known model.
    by_public = book.price_for("gpt-4.1-mini", "my-vllm-deployment", NOW)
    assert by_public is not None and by_public.ref == "builtin:gpt-4.1-mini"
    assert book.price_for("fast", "my-vllm-deployment", NOW) is None
    assert book.price_for("fast", None, NOW) is None


def test_configured_prices_are_effective_dated() -> None:
    old = price_row(1, utc(2026, 1, 1), input=1.0)
    new = price_row(2, utc(2026, 12, 1), input=3.0)  # a future change, loaded with the snapshot
    book = PriceBook({"m": model_row("m", ("nothing-known",), (old, new))})
    assert book.price_for("m", None, utc(2026, 11, 30, 23, 59, 59)).ref == "price:1"  # type: ignore[union-attr]
    assert book.price_for("m", None, utc(2026, 12, 1)).ref == "price:2"  # type: ignore[union-attr]
    # Before the first loaded row nothing configured is in force: fall back like an unpriced model.
    assert book.price_for("m", None, utc(2025, 6, 1)) is None
    naive = book.price_for("m", None, utc(2026, 12, 2).replace(tzinfo=None))
    assert naive is not None and naive.ref == "price:2"  # naive times are read as UTC


def test_none_rates_fall_back_as_the_price_row_documents() -> None:
    row = price_row(1, utc(2026, 1, 1), input=2.0, output=8.0)
    price = PriceBook({"m": model_row("m", (), (row,))}).price_for("m", None, NOW)
    assert price is not None
    r = price.rates
    assert (r.cache_read, r.cache_write_5m, r.cache_write_1h) == (D("2.0"), D("2.0"), D("2.0"))
    assert r.reasoning == D("8.0") and not r.reasoning_apart


def test_tier_selection_and_tier_fallbacks() -> None:
    tiers = (
        PriceTierRow(
            above_tokens=1000,
            input=2.0,
            output=None,
            cache_read=None,
            cache_write_5m=None,
            cache_write_1h=3.0,
        ),
        PriceTierRow(
            above_tokens=100, input=1.5, output=5.0, cache_read=0.2, cache_write_5m=None, cache_write_1h=None
        ),
    )
    row = price_row(1, utc(2026, 1, 1), input=1.0, output=4.0, cache_read=0.1, reasoning=9.0, tiers=tiers)
    price = PriceBook({"m": model_row("m", (), (row,))}).price_for("m", None, NOW)
    assert price is not None
    assert [t.above_tokens for t in price.tiers] == [100, 1000]  # sorted whatever the input order
    assert price.rates_for(100) == (price.rates, None)  # "above" is strict
    mid, mid_tier = price.rates_for(101)
    assert mid_tier == 100
    assert (mid.input, mid.output, mid.cache_read, mid.cache_write_5m) == (
        D("1.5"),
        D("5.0"),
        D("0.2"),
        D("1.5"),
    )
    top, top_tier = price.rates_for(5000)
    assert top_tier == 1000
    # output None keeps the base output; cache None → the tier's input; reasoning stays priced apart.
    assert (top.input, top.output, top.cache_read, top.cache_write_1h) == (
        D("2.0"),
        D("4.0"),
        D("2.0"),
        D("3.0"),
    )
    assert top.reasoning == D("9.0") and top.reasoning_apart


def test_price_json_keeps_what_was_billed() -> None:
    price = builtin_prices().price("claude-sonnet-4-5", NOW)
    assert price is not None
    data = price.to_json()
    assert data["ref"] == "builtin:claude-sonnet-4-5" and data["source"] == "builtin"
    assert (data["input"], data["cache_write_1h"], data["cache_read"]) == ("3.0", "6.0", "0.3")
    assert data["tiers"][0]["above_tokens"] == 200_000 and data["tiers"][0]["output"] == "22.5"
    assert "reasoning" not in data  # not priced apart


def test_unknown_models_flags_unpriced_routes() -> None:
    at = NOW
    models = {
        "configured": model_row("configured", ("secret-model",), (price_row(1, utc(2026, 1, 1)),)),
        "by-upstream": model_row("by-upstream", ("gpt-4o-2024-11-20", "claude-haiku-4-5")),
        "partly": model_row("partly", ("gpt-4o", "self-hosted-a", "self-hosted-b")),
        "gpt-4.1": model_row("gpt-4.1", ("azure-deployment-7",)),  # public name is priced
        "future-only": model_row("future-only", ("mystery",), (price_row(2, at + timedelta(days=3)),)),
        "no-routes": model_row("no-routes"),
    }
    book = PriceBook(models)
    assert book.unknown_models(at) == {
        "partly": ("self-hosted-a", "self-hosted-b"),
        "future-only": ("mystery",),
        "no-routes": (),
    }
    assert "future-only" not in book.unknown_models(at + timedelta(days=4))


def test_estimate_price_before_routing() -> None:
    book = PriceBook(
        {
            "fast": model_row("fast", ("gpt-4o-mini", "claude-haiku-4-5-20251001", "self-hosted")),
            "house": model_row("house", ("gpt-4o",), (price_row(3, utc(2026, 1, 1)),)),
            "unpriced": model_row("unpriced", ("self-hosted",)),
        }
    )
    fast = book.estimate_price("fast", NOW)
    assert fast is not None and fast.ref == "builtin:claude-haiku-4-5"  # the dearer of the two routes
    assert book.estimate_price("house", NOW).ref == "price:3"  # type: ignore[union-attr]
    assert book.estimate_price("gpt-4.1", NOW).ref == "builtin:gpt-4.1"  # type: ignore[union-attr]
    assert book.estimate_price("unpriced", NOW) is None
    assert book.estimate_price("not-a-model", NOW) is None
