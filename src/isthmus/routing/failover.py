"""What to do after a failed attempt: the design's failover rule table, as data.

``classify`` walks ``RULES`` top to bottom and applies the first rule that matches the error's type,
the upstream's HTTP status and (for a few vendor quirks) a marker in the error body. The relay then
fails over (``next``) or hands the error to the client as is (``return``), and reports ``failure``
to the health backend.

Choices worth knowing:
- 404 fails over but costs the key nothing: it means "this provider does not have that model", a
  property of the route, and the same key may serve other routes perfectly well.
- Some vendors say "bad key" or "no money" with a status that would otherwise mean "bad request":
  Gemini answers an invalid API key with 400 ``API_KEY_INVALID``, Anthropic an empty balance with
  400 "credit balance is too low", OpenAI an exhausted quota with 429 ``insufficient_quota``. Those
  are per-key problems, so they fail over and flag the key instead of failing the request.
- Errors that are not upstream errors (our own validation or conversion errors) go back to the client.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from isthmus.errors import (
    IsthmusError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from isthmus.routing.health import FailureKind, HealthConfig

Action = Literal["next", "return"]

_BODY_SCAN_BYTES = 8192  # vendor markers sit at the top of small JSON error bodies


def _statuses(*groups: Iterable[int] | int) -> frozenset[int]:
    out: set[int] = set()
    for group in groups:
        if isinstance(group, int):
            out.add(group)
        else:
            out.update(group)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Rule:
    error_type: type[IsthmusError]
    statuses: frozenset[int] | None  # the upstream HTTP status must be one of these; None: any
    action: Action
    failure: FailureKind | None  # reported to the health backend; None: no penalty
    why: str  # short label for traces
    body_markers: tuple[bytes, ...] = ()  # lower-case; any one must appear in the error body

    def matches(self, error: IsthmusError, status: int | None, body: _LazyBody) -> bool:
        if not isinstance(error, self.error_type):
            return False
        if self.statuses is not None and status not in self.statuses:
            return False
        if self.body_markers:
            text = body.lowered()
            return any(marker in text for marker in self.body_markers)
        return True


_4XX = range(400, 500)
_5XX = range(500, 600)

RULES: tuple[Rule, ...] = (
    Rule(UpstreamConnectError, None, "next", FailureKind.CONNECT, "connect"),
    Rule(UpstreamTimeoutError, None, "next", FailureKind.TIMEOUT, "timeout"),
    Rule(UpstreamError, _statuses(429), "next", FailureKind.PAYMENT, "quota", (b"insufficient_quota",)),
    Rule(UpstreamError, _statuses(429), "next", FailureKind.RATE_LIMITED, "rate_limited"),
    Rule(UpstreamError, _statuses(401, 403), "next", FailureKind.AUTH, "auth"),
    Rule(UpstreamError, _statuses(402), "next", FailureKind.PAYMENT, "payment"),
    Rule(UpstreamError, _statuses(400), "next", FailureKind.AUTH, "auth", (b"api_key_invalid",)),
    Rule(
        UpstreamError, _statuses(400), "next", FailureKind.PAYMENT, "payment", (b"credit balance is too low",)
    ),
    Rule(UpstreamError, _statuses(404), "next", None, "not_found"),
    Rule(UpstreamError, _statuses(408), "next", FailureKind.TIMEOUT, "timeout"),
    Rule(UpstreamError, _statuses(529), "next", FailureKind.OVERLOADED, "overloaded"),
    Rule(UpstreamError, _statuses(_5XX), "next", FailureKind.SERVER, "server_error"),
    # 400 invalid request / context too long / content policy, 413, 422, …: it would fail everywhere.
    Rule(UpstreamError, _statuses(_4XX), "return", None, "client_error"),
    Rule(UpstreamStreamError, None, "next", FailureKind.STREAM, "stream"),
    # Any other upstream trouble (a 2xx we could not read, an unexpected 1xx/3xx).
    Rule(UpstreamError, None, "next", FailureKind.SERVER, "upstream"),
    # Our own errors (invalid request, impossible conversion) are the caller's to see.
    Rule(IsthmusError, None, "return", None, "gateway"),
)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    failure: FailureKind | None
    cooldown_s: float | None  # how long the key will rest, for traces; the health backend applies it
    retry_after: float | None  # the upstream's retry-after, passed on to the health backend
    reason: str  # e.g. "rate_limited 429", "timeout first_byte"

    @property
    def fails_over(self) -> bool:
        return self.action == "next"


class _LazyBody:
    """The error body lower-cased, computed only if a rule with body markers gets that far."""

    __slots__ = ("_lowered", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._lowered: bytes | None = None

    def lowered(self) -> bytes:
        if self._lowered is None:
            self._lowered = self._raw[:_BODY_SCAN_BYTES].lower()
        return self._lowered


_DEFAULT_HEALTH = HealthConfig()


def classify(
    error: IsthmusError, config: HealthConfig = _DEFAULT_HEALTH, rules: tuple[Rule, ...] = RULES
) -> Decision:
    """The first matching rule's verdict on ``error``."""
    status = error.upstream_status if isinstance(error, UpstreamError) else None
    body = _LazyBody(error.body if isinstance(error, UpstreamError) else b"")
    for rule in rules:
        if rule.matches(error, status, body):
            return _decide(rule, error, status, config)
    # Unreachable with RULES (its last row matches every IsthmusError); custom tables may end early.
    return Decision("return", None, None, error.retry_after, "unclassified")


def _decide(rule: Rule, error: IsthmusError, status: int | None, config: HealthConfig) -> Decision:
    reason = rule.why
    if isinstance(error, UpstreamTimeoutError):
        reason = f"{reason} {error.phase}"
    elif status is not None:
        reason = f"{reason} {status}"
    cooldown = config.cooldown_for(rule.failure, error.retry_after) if rule.failure else None
    return Decision(rule.action, rule.failure, cooldown, error.retry_after, reason)


def should_fail_over(decision: Decision, *, attempts_made: int, max_attempts: int, committed: bool) -> bool:
    """Whether the relay tries the next candidate: the rule says so, nothing reached the client yet
    (past the stream commit point there is no retry), and the attempt budget is not spent."""
    return decision.action == "next" and not committed and attempts_made < max_attempts
