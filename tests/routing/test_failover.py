"""The failover rule table: each row of the design's table, the vendor quirks, and the attempt budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isthmus.errors import (
    InvalidRequestError,
    IsthmusError,
    NoCandidateError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from isthmus.routing.failover import RULES, Decision, classify, should_fail_over
from isthmus.routing.health import FailureKind, HealthConfig


def http(status: int, body: bytes = b"", retry_after: float | None = None) -> UpstreamHTTPError:
    return UpstreamHTTPError(f"HTTP {status}", upstream_status=status, body=body, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "action", "failure"),
    [
        (UpstreamConnectError("refused"), "next", FailureKind.CONNECT),
        (UpstreamTimeoutError("slow", phase="connect"), "next", FailureKind.TIMEOUT),
        (UpstreamTimeoutError("slow", phase="first_byte"), "next", FailureKind.TIMEOUT),
        (http(500), "next", FailureKind.SERVER),
        (http(502), "next", FailureKind.SERVER),
        (http(503), "next", FailureKind.SERVER),
        (http(504), "next", FailureKind.SERVER),
        (http(529), "next", FailureKind.OVERLOADED),
        (http(408), "next", FailureKind.TIMEOUT),
        (http(429), "next", FailureKind.RATE_LIMITED),
        (http(401), "next", FailureKind.AUTH),
        (http(403), "next", FailureKind.AUTH),
        (http(402), "next", FailureKind.PAYMENT),
        (http(404), "next", None),
        (http(400), "return", None),
        (http(413), "return", None),
        (http(422), "return", None),
        (http(409), "return", None),
        (UpstreamStreamError("empty stream"), "next", FailureKind.STREAM),
        (UpstreamStreamError("cut", upstream_status=200), "next", FailureKind.STREAM),
        (UpstreamError("undecodable 200"), "next", FailureKind.SERVER),
        (InvalidRequestError("bad tool schema"), "return", None),
        (NoCandidateError("nothing"), "return", None),
    ],
)
def test_rule_table_rows(error: IsthmusError, action: str, failure: FailureKind | None) -> None:
    decision = classify(error)
    assert decision.action == action
    assert decision.failure == failure
    assert decision.fails_over == (action == "next")


def test_timeout_reason_names_the_phase() -> None:
    assert classify(UpstreamTimeoutError("slow", phase="first_byte")).reason == "timeout first_byte"


def test_http_reason_names_the_status() -> None:
    assert classify(http(503)).reason == "server_error 503"


@pytest.mark.parametrize(("retry_after", "cooldown"), [(None, 30.0), (12.0, 12.0), (10_000.0, 300.0)])
def test_rate_limit_cooldown_follows_retry_after(retry_after: float | None, cooldown: float) -> None:
    decision = classify(http(429, retry_after=retry_after))
    assert decision.cooldown_s == pytest.approx(cooldown)
    assert decision.retry_after == retry_after


def test_cooldowns_come_from_the_health_config() -> None:
    config = HealthConfig(auth_cooldown_s=99.0, rate_limit_default_s=7.0)
    assert classify(http(401), config).cooldown_s == 99.0
    assert classify(http(429), config).cooldown_s == 7.0
    assert classify(http(500), config).cooldown_s is None


def test_openai_exhausted_quota_is_a_payment_problem_not_a_rate_limit() -> None:
    body = (
        b'{"error":{"message":"You exceeded your current quota",'
        b'"type":"insufficient_quota","code":"insufficient_quota"}}'
    )
    decision = classify(http(429, body))
    assert (decision.action, decision.failure) == ("next", FailureKind.PAYMENT)
    assert decision.cooldown_s == HealthConfig().payment_cooldown_s


def test_gemini_invalid_key_400_fails_over_and_flags() -> None:
    body = (
        b'{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",'
        b'"status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}'
    )
    decision = classify(http(400, body))
    assert (decision.action, decision.failure) == ("next", FailureKind.AUTH)


def test_anthropic_low_credit_400_fails_over_and_flags() -> None:
    body = (
        b'{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low '
        b'to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}'
    )
    decision = classify(http(400, body))
    assert (decision.action, decision.failure) == ("next", FailureKind.PAYMENT)


def test_ordinary_400_goes_back_to_the_client() -> None:
    body = (
        b'{"type":"error","error":{"type":"invalid_request_error",'
        b'"message":"prompt is too long: 250000 tokens"}}'
    )
    decision = classify(http(400, body))
    assert decision == Decision("return", None, None, None, "client_error 400")


def test_stream_error_carrying_a_status_is_classified_by_it() -> None:
    overloaded = UpstreamStreamError("overloaded_error event", upstream_status=529)
    assert classify(overloaded).failure is FailureKind.OVERLOADED
    limited = UpstreamStreamError("rate limited event", upstream_status=429, retry_after=3.0)
    decision = classify(limited)
    assert decision.failure is FailureKind.RATE_LIMITED and decision.cooldown_s == 3.0


def test_rules_are_ordered_with_a_catch_all_last() -> None:
    assert RULES[-1].error_type is IsthmusError and RULES[-1].statuses is None


@given(status=st.integers(min_value=100, max_value=599), body=st.binary(max_size=64))
def test_every_upstream_status_gets_a_verdict(status: int, body: bytes) -> None:
    decision = classify(http(status, body))
    assert decision.reason != "unclassified"
    if 500 <= status <= 599:
        assert decision.action == "next" and decision.failure in (FailureKind.SERVER, FailureKind.OVERLOADED)
    if status in (413, 422):
        assert decision.action == "return"
    if decision.action == "return":
        assert decision.failure is None and 400 <= status <= 499


@pytest.mark.parametrize(
    ("action", "attempts", "committed", "expected"),
    [
        ("next", 1, False, True),
        ("next", 2, False, True),
        ("next", 3, False, False),  # budget spent
        ("next", 1, True, False),  # past the commit point
        ("return", 1, False, False),
    ],
)
def test_should_fail_over(action: str, attempts: int, committed: bool, expected: bool) -> None:
    decision = classify(http(503)) if action == "next" else classify(http(400))
    assert should_fail_over(decision, attempts_made=attempts, max_attempts=3, committed=committed) is expected
