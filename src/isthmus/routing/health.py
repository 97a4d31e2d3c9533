"""Per-key health: circuit breakers, cool-downs and flags.

The relay reports every attempt's outcome with ``record_success``/``record_failure``; the router reads
``status`` on the hot path. Reads are synchronous and cheap by contract: a shared (Redis) backend keeps
a local mirror that it updates in the background from its peers' reports, and serves ``status`` from
that mirror, so routing never waits on the network.

Breaker (per key): closed → open after ``consecutive_failures`` failures in a row, or an error rate
above ``error_rate_threshold`` over ``window_s`` (with at least ``min_samples`` attempts). Open lasts
``open_base_s``, doubling on each re-open up to ``open_max_s``. When it lapses the breaker is half-open:
exactly one caller wins ``try_acquire_probe``; its success closes the breaker (and resets the backoff),
its failure re-opens it. Rate limits (429) and bad credentials (401/403/402) do not trip the breaker:
they cool the key down for a time instead, and bad credentials flag it for the health page.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol


class FailureKind(StrEnum):
    CONNECT = "connect"  # could not connect, or the connection broke before a response
    TIMEOUT = "timeout"  # connect / first-byte / idle / total timeout
    SERVER = "server"  # 5xx
    OVERLOADED = "overloaded"  # 529 (Anthropic's "overloaded")
    STREAM = "stream"  # empty stream, cut stream, error event before the commit point
    RATE_LIMITED = "rate_limited"  # 429: cool down for retry-after
    AUTH = "auth"  # 401/403 or an invalid key: long cool-down, flagged
    PAYMENT = "payment"  # 402, exhausted quota or credits: long cool-down, flagged


# Failures that say "this upstream is unwell" and feed the breaker; the others say "not now" or
# "not with this key" and are handled by cool-downs.
BREAKER_FAILURES = frozenset(
    {FailureKind.CONNECT, FailureKind.TIMEOUT, FailureKind.SERVER, FailureKind.OVERLOADED, FailureKind.STREAM}
)
FLAGGING_FAILURES = frozenset({FailureKind.AUTH, FailureKind.PAYMENT})


@dataclass(frozen=True, slots=True)
class HealthConfig:
    consecutive_failures: int = 5
    error_rate_threshold: float = 0.5
    window_s: float = 60.0
    min_samples: int = 10
    window_buckets: int = 12
    open_base_s: float = 10.0
    open_max_s: float = 300.0
    # A half-open probe whose outcome is never reported (cancelled request) frees the key after this.
    probe_timeout_s: float = 120.0
    rate_limit_default_s: float = 30.0
    rate_limit_min_s: float = 1.0
    rate_limit_max_s: float = 300.0
    auth_cooldown_s: float = 600.0
    payment_cooldown_s: float = 600.0
    latency_smoothing: float = 0.2  # weight of the newest sample in the latency moving average

    def cooldown_for(self, failure: FailureKind, retry_after: float | None) -> float | None:
        """Seconds the key rests after this failure, or None when the breaker handles it instead."""
        if failure is FailureKind.RATE_LIMITED:
            if retry_after is None:
                return self.rate_limit_default_s
            return min(max(retry_after, self.rate_limit_min_s), self.rate_limit_max_s)
        if failure is FailureKind.AUTH:
            return self.auth_cooldown_s
        if failure is FailureKind.PAYMENT:
            return self.payment_cooldown_s
        return None


# Reasons a key is (un)available, as shown in plans and on the health page.
REASON_COOLING_DOWN = "cooling_down"
REASON_CIRCUIT_OPEN = "circuit_open"
REASON_HALF_OPEN = "circuit_half_open"  # available: the next caller may probe
REASON_PROBE_IN_FLIGHT = "probe_in_flight"  # unavailable: another caller is probing


@dataclass(frozen=True, slots=True)
class KeyStatus:
    available: bool
    reason: str | None = None
    until: float | None = None  # when an unavailable key may be tried again
    error_rate: float = 0.0  # failures / attempts over the sliding window
    flagged: str | None = None  # "auth" / "payment": needs an operator's attention
    last_failure: float | None = None


HEALTHY = KeyStatus(available=True)

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class KeyHealthReport:
    """Everything the health page shows about one key."""

    key_id: int
    state: BreakerState
    available: bool
    reason: str | None
    until: float | None
    error_rate: float
    samples: int
    consecutive_failures: int
    open_count: int
    backoff_s: float
    flagged: str | None
    last_failure: float | None
    last_failure_kind: FailureKind | None
    last_error: str | None
    last_success: float | None
    latency_ms: float | None


class HealthBackend(Protocol):
    """Key health as the router and relay see it. All methods are synchronous and must not block."""

    def record_success(self, key_id: int, now: float, latency_ms: float | None = None) -> None: ...

    def record_failure(
        self,
        key_id: int,
        now: float,
        failure: FailureKind,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> None: ...

    def status(self, key_id: int, now: float) -> KeyStatus: ...

    def try_acquire_probe(self, key_id: int, now: float) -> bool:
        """True if a request may be sent to the key now; for a half-open breaker, True for one caller."""
        ...

    def release_probe(self, key_id: int) -> None:
        """Give back a probe whose request was abandoned without an outcome."""
        ...

    def all_statuses(self, now: float) -> dict[int, KeyHealthReport]: ...

    def reset(self, key_id: int) -> None:
        """Forget everything about a key (an operator fixed it)."""
        ...


class _Bucket:
    __slots__ = ("fail", "ok", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.ok = 0
        self.fail = 0


class _KeyState:
    __slots__ = (
        "backoff",
        "buckets",
        "consecutive",
        "cooldown_kind",
        "cooldown_until",
        "fail_total",
        "flagged",
        "last_error",
        "last_failure",
        "last_failure_kind",
        "last_success",
        "latency_ms",
        "ok_total",
        "open_count",
        "open_until",
        "probe_until",
    )

    def __init__(self, backoff: float) -> None:
        self.buckets: deque[_Bucket] = deque()
        self.ok_total = 0
        self.fail_total = 0
        self.consecutive = 0
        self.open_until = 0.0  # 0: closed; otherwise open until then, half-open after
        self.backoff = backoff  # duration of the current (or next fresh) open period
        self.open_count = 0
        self.probe_until = 0.0
        self.cooldown_until = 0.0
        self.cooldown_kind: FailureKind | None = None
        self.flagged: str | None = None
        self.last_failure: float | None = None
        self.last_failure_kind: FailureKind | None = None
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.latency_ms: float | None = None


class MemoryHealth:
    """Health state of one process. Not thread-safe: it lives on the event loop, like the relay."""

    def __init__(self, config: HealthConfig | None = None) -> None:
        self.config = config or HealthConfig()
        self._bucket_width = self.config.window_s / max(1, self.config.window_buckets)
        self._keys: dict[int, _KeyState] = {}

    # --- reports -------------------------------------------------------------------------------

    def record_success(self, key_id: int, now: float, latency_ms: float | None = None) -> None:
        st = self._state(key_id)
        st.last_success = now
        if latency_ms is not None:
            alpha = self.config.latency_smoothing
            st.latency_ms = (
                latency_ms if st.latency_ms is None else (1 - alpha) * st.latency_ms + alpha * latency_ms
            )
        if st.open_until:
            # A success proves the key works, whether it was the half-open probe or a request sent
            # anyway (last resort, or in flight when the breaker opened): close and start afresh.
            self._close(st)
        else:
            st.consecutive = 0
            self._add_sample(st, now, ok=True)
        if st.flagged is not None:
            st.flagged = None
            if st.cooldown_kind in FLAGGING_FAILURES:
                st.cooldown_until = 0.0
                st.cooldown_kind = None

    def record_failure(
        self,
        key_id: int,
        now: float,
        failure: FailureKind,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> None:
        st = self._state(key_id)
        st.last_failure = now
        st.last_failure_kind = failure
        st.last_error = detail
        cooldown = self.config.cooldown_for(failure, retry_after)
        if cooldown is not None:
            until = now + cooldown
            if until >= st.cooldown_until:
                st.cooldown_until = until
                st.cooldown_kind = failure
            if failure in FLAGGING_FAILURES:
                st.flagged = failure.value
            st.probe_until = 0.0  # the probe got no verdict on the breaker; let the next one try
            return
        if failure not in BREAKER_FAILURES:
            return
        self._add_sample(st, now, ok=False)
        if st.open_until:
            if now >= st.open_until:
                self._open(st, now, st.backoff * 2)  # the half-open probe failed
            # else: a request sent before the breaker opened; already accounted for.
            return
        st.consecutive += 1
        cfg = self.config
        total = st.ok_total + st.fail_total
        if st.consecutive >= cfg.consecutive_failures or (
            total >= cfg.min_samples and st.fail_total > cfg.error_rate_threshold * total
        ):
            self._open(st, now, cfg.open_base_s)

    # --- reads ---------------------------------------------------------------------------------

    def status(self, key_id: int, now: float) -> KeyStatus:
        st = self._keys.get(key_id)
        if st is None:
            return HEALTHY
        if st.cooldown_until > now:
            kind = st.cooldown_kind.value if st.cooldown_kind else "unknown"
            return KeyStatus(
                False,
                f"{REASON_COOLING_DOWN}:{kind}",
                st.cooldown_until,
                self._error_rate(st, now),
                st.flagged,
                st.last_failure,
            )
        if st.open_until:
            rate = self._error_rate(st, now)
            if now < st.open_until:
                return KeyStatus(False, REASON_CIRCUIT_OPEN, st.open_until, rate, st.flagged, st.last_failure)
            if st.probe_until > now:
                return KeyStatus(
                    False, REASON_PROBE_IN_FLIGHT, st.probe_until, rate, st.flagged, st.last_failure
                )
            return KeyStatus(True, REASON_HALF_OPEN, None, rate, st.flagged, st.last_failure)
        rate = self._error_rate(st, now)
        if rate == 0.0 and st.flagged is None:
            return HEALTHY
        return KeyStatus(True, None, None, rate, st.flagged, st.last_failure)

    def try_acquire_probe(self, key_id: int, now: float) -> bool:
        st = self._keys.get(key_id)
        if st is None:
            return True
        if st.cooldown_until > now:
            return False
        if not st.open_until:
            return True
        if now < st.open_until or st.probe_until > now:
            return False
        st.probe_until = now + self.config.probe_timeout_s
        return True

    def release_probe(self, key_id: int) -> None:
        st = self._keys.get(key_id)
        if st is not None:
            st.probe_until = 0.0

    def all_statuses(self, now: float) -> dict[int, KeyHealthReport]:
        reports: dict[int, KeyHealthReport] = {}
        for key_id, st in self._keys.items():
            status = self.status(key_id, now)
            state: BreakerState = "closed"
            if st.open_until:
                state = "open" if now < st.open_until else "half_open"
            reports[key_id] = KeyHealthReport(
                key_id=key_id,
                state=state,
                available=status.available,
                reason=status.reason,
                until=status.until,
                error_rate=status.error_rate,
                samples=st.ok_total + st.fail_total,
                consecutive_failures=st.consecutive,
                open_count=st.open_count,
                backoff_s=st.backoff,
                flagged=st.flagged,
                last_failure=st.last_failure,
                last_failure_kind=st.last_failure_kind,
                last_error=st.last_error,
                last_success=st.last_success,
                latency_ms=st.latency_ms,
            )
        return reports

    def reset(self, key_id: int) -> None:
        self._keys.pop(key_id, None)

    # --- internals -----------------------------------------------------------------------------

    def _state(self, key_id: int) -> _KeyState:
        st = self._keys.get(key_id)
        if st is None:
            st = self._keys[key_id] = _KeyState(self.config.open_base_s)
        return st

    def _open(self, st: _KeyState, now: float, duration: float) -> None:
        st.backoff = min(duration, self.config.open_max_s)
        st.open_until = now + st.backoff
        st.open_count += 1
        st.probe_until = 0.0

    def _close(self, st: _KeyState) -> None:
        st.open_until = 0.0
        st.probe_until = 0.0
        st.backoff = self.config.open_base_s
        st.consecutive = 0
        # The failures that opened the breaker must not re-open it on the next hiccup.
        st.buckets.clear()
        st.ok_total = 0
        st.fail_total = 0

    def _add_sample(self, st: _KeyState, now: float, *, ok: bool) -> None:
        self._prune(st, now)
        start = now - (now % self._bucket_width)
        buckets = st.buckets
        if not buckets or buckets[-1].start < start:
            buckets.append(_Bucket(start))
        bucket = buckets[-1]  # a sample from the past (clock skew between reporters) joins the newest
        if ok:
            bucket.ok += 1
            st.ok_total += 1
        else:
            bucket.fail += 1
            st.fail_total += 1

    def _prune(self, st: _KeyState, now: float) -> None:
        horizon = now - self.config.window_s - self._bucket_width
        buckets = st.buckets
        while buckets and buckets[0].start <= horizon:
            old = buckets.popleft()
            st.ok_total -= old.ok
            st.fail_total -= old.fail

    def _error_rate(self, st: _KeyState, now: float) -> float:
        if st.buckets and st.buckets[0].start <= now - self.config.window_s - self._bucket_width:
            self._prune(st, now)
        total = st.ok_total + st.fail_total
        return st.fail_total / total if total else 0.0
