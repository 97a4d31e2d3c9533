"""Rate limits: requests per minute, tokens per minute and concurrent requests.

Subjects are the caller's key, user and team (``Limits`` on each row) and, for upstream protection,
provider keys (``ProviderKeyRow.rpm/tpm/concurrency``). ``acquire`` checks every subject and takes
from all of them or from none; a refusal raises ``RateLimitedError`` (429) naming the limit and
carrying ``retry-after`` and OpenAI-style ``x-ratelimit-*`` headers. Provider keys use
``try_acquire_provider_key``, which answers None (skip this candidate) instead of raising.

Algorithms (the same in memory and in Redis):
- RPM is GCRA: each request pushes a theoretical arrival time (TAT) by 60/rpm seconds and is refused
  when that would put the TAT more than 60 s ahead — a burst of up to ``rpm`` then a steady rate.
- TPM is GCRA weighted by tokens: a 60 s bucket of ``tpm`` tokens, charged with an estimate at
  admission and corrected by (actual − estimate) at release. An idle bucket admits any single request,
  however large; the request then blocks the bucket for as long as its tokens take to drain.
- Concurrency is a count of live leases; a lease expires after ``lease_ttl_s`` so a crashed process or
  a lost release cannot hold a slot forever (set the TTL above the longest request the gateway allows).

The memory backend does O(1) work per subject per request (a dict hit and a few float operations).
Only leases that hold a concurrency slot are remembered, in arrival order (every lease has the same
TTL, so arrival order is expiry order), and only until they are released or expire: memory stays
proportional to the requests in flight, not to the traffic of the last TTL.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from isthmus.accounting.redis_scripts import AccountingScripts, AdmitRefusal, LeaseFinish, LimitCall
from isthmus.errors import RateLimitedError

if TYPE_CHECKING:  # imported only where Redis is configured: the client costs ~15 MiB
    from redis.asyncio import Redis

LimitKind = Literal["key", "user", "team", "provider_key"]
WINDOW_S = 60.0
_EPS = 1e-6
DEFAULT_LEASE_TTL_S = 960.0  # the default total timeout (900 s) plus a margin

_KIND_LABEL = {"key": "key", "user": "user", "team": "team", "provider_key": "provider key"}


class HasLimits(Protocol):
    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...
    @property
    def concurrency(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class LimitSubject:
    kind: LimitKind
    id: int
    name: str
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @classmethod
    def of(cls, kind: LimitKind, id_: int, name: str, limits: HasLimits | None) -> LimitSubject | None:
        """The subject, or None when ``limits`` sets nothing (nothing to check)."""
        if limits is None or (not limits.rpm and not limits.tpm and not limits.concurrency):
            return None
        return cls(kind, id_, name, limits.rpm or None, limits.tpm or None, limits.concurrency or None)

    @property
    def label(self) -> str:
        return f"{_KIND_LABEL[self.kind]} '{self.name}'"


@dataclass(slots=True, eq=False)
class Lease:
    """What ``acquire`` took; give it back with ``release`` (idempotent)."""

    id: str
    subjects: tuple[LimitSubject, ...]
    tokens: int  # charged to TPM at admission
    acquired_at: float
    expires_at: float
    released: bool = False
    expired: bool = False  # memory: the concurrency slots were reclaimed by expiry
    states: tuple[_State, ...] = field(default=(), repr=False)  # memory backend only

    @property
    def empty(self) -> bool:
        return not self.subjects


def new_id() -> str:
    return os.urandom(9).hex()


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``250ms``, ``1.5s``, ``6m0s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def rate_limit_error(
    subject: LimitSubject, what: str, retry_after: float, rpm_backlog: float, tpm_backlog: float
) -> RateLimitedError:
    """The refusal: message names the limit; headers describe the refusing subject's buckets.

    ``*_backlog`` is how far the subject's TAT is ahead of now (0 = idle); remaining = what still fits
    in the 60 s window, reset = when the bucket is empty again.
    """
    if what == "requests":
        message = f"{subject.label} is limited to {_count(subject.rpm, 'request')} per minute"
    elif what == "tokens":
        message = f"{subject.label} is limited to {_count(subject.tpm, 'token')} per minute"
    else:
        message = f"{subject.label} is limited to {_count(subject.concurrency, 'concurrent request')}"
    headers: dict[str, str] = {}
    if subject.rpm:
        headers["x-ratelimit-limit-requests"] = str(subject.rpm)
        headers["x-ratelimit-remaining-requests"] = str(_remaining(subject.rpm, rpm_backlog))
        headers["x-ratelimit-reset-requests"] = format_duration(rpm_backlog)
    if subject.tpm:
        headers["x-ratelimit-limit-tokens"] = str(subject.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(_remaining(subject.tpm, tpm_backlog))
        headers["x-ratelimit-reset-tokens"] = format_duration(tpm_backlog)
    if subject.concurrency:
        headers["x-ratelimit-limit-concurrency"] = str(subject.concurrency)
    code = {"requests": "rpm_exceeded", "tokens": "tpm_exceeded"}.get(what, "concurrency_exceeded")
    return RateLimitedError(message, code=code, retry_after=max(retry_after, 0.001), headers=headers)


def _count(n: int | None, noun: str) -> str:
    return f"{n or 0:,} {noun}" + ("" if n == 1 else "s")


def _remaining(limit: int, backlog: float) -> int:
    return max(0, math.floor(limit * (WINDOW_S - backlog) / WINDOW_S + _EPS))


class LimitBackend(Protocol):
    async def acquire(self, subjects: Sequence[LimitSubject], now: float, estimated_tokens: int) -> Lease: ...

    async def release(self, lease: Lease, actual_tokens: int | None = None) -> None: ...

    async def try_acquire_provider_key(
        self, key_id: int, limits: HasLimits, now: float, estimated_tokens: int = 0
    ) -> Lease | None: ...


_NO_SUBJECTS: tuple[LimitSubject, ...] = ()


def empty_lease(now: float) -> Lease:
    """The lease of a request with nothing to limit (releasing it does nothing)."""
    return Lease(id="", subjects=_NO_SUBJECTS, tokens=0, acquired_at=now, expires_at=now)


class ProviderKeySubjects:
    """The limit subject of each provider key, rebuilt only when the key's limits object changes.

    The relay passes the same snapshot object for a key on every request, so this is a dict hit
    instead of a new subject per attempt. The cached object is held, so its id cannot be reused.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._subjects: dict[int, tuple[HasLimits, tuple[LimitSubject, ...]]] = {}
        self._max = max_entries

    def of(self, key_id: int, limits: HasLimits) -> tuple[LimitSubject, ...]:
        cached = self._subjects.get(key_id)
        if cached is not None and cached[0] is limits:
            return cached[1]
        subject = LimitSubject.of("provider_key", key_id, str(key_id), limits)
        subjects = _NO_SUBJECTS if subject is None else (subject,)
        if len(self._subjects) >= self._max:
            self._subjects.clear()
        self._subjects[key_id] = (limits, subjects)
        return subjects


# --- memory -----------------------------------------------------------------------------------------


class _State:
    __slots__ = ("active", "rpm_tat", "tpm_tat")

    def __init__(self) -> None:
        self.rpm_tat = 0.0
        self.tpm_tat = 0.0
        self.active = 0


class MemoryLimits:
    """One process's limits. Every method completes without awaiting (no task switch inside)."""

    def __init__(self, lease_ttl_s: float = DEFAULT_LEASE_TTL_S) -> None:
        self.lease_ttl_s = lease_ttl_s
        self._states: dict[tuple[str, int], _State] = {}
        # Leases holding a concurrency slot, oldest first; a release drops its entry at once (O(1)),
        # expiry reclaims the slots of those never released (a crashed request).
        self._held: OrderedDict[Lease, None] = OrderedDict()
        self._provider_keys = ProviderKeySubjects()

    async def acquire(self, subjects: Sequence[LimitSubject], now: float, estimated_tokens: int) -> Lease:
        return self.acquire_now(subjects, now, estimated_tokens)

    async def release(self, lease: Lease, actual_tokens: int | None = None) -> None:
        self.release_now(lease, actual_tokens)

    async def try_acquire_provider_key(
        self, key_id: int, limits: HasLimits, now: float, estimated_tokens: int = 0
    ) -> Lease | None:
        return self.try_acquire_provider_key_now(key_id, limits, now, estimated_tokens)

    def try_acquire_provider_key_now(
        self, key_id: int, limits: HasLimits, now: float, estimated_tokens: int = 0
    ) -> Lease | None:
        subjects = self._provider_keys.of(key_id, limits)
        if not subjects:
            return empty_lease(now)
        try:
            return self.acquire_now(subjects, now, estimated_tokens)
        except RateLimitedError:
            return None

    def acquire_now(self, subjects: Sequence[LimitSubject], now: float, estimated_tokens: int) -> Lease:
        if not subjects:
            return empty_lease(now)
        held = self._held
        if held and next(iter(held)).expires_at <= now:
            self._expire(now)
        tokens = max(0, estimated_tokens)
        states: list[_State] = []
        for subject in subjects:
            key = (subject.kind, subject.id)
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = _State()
            rtat = state.rpm_tat if state.rpm_tat > now else now
            ttat = state.tpm_tat if state.tpm_tat > now else now
            if subject.rpm and rtat + WINDOW_S / subject.rpm - now > WINDOW_S + _EPS:
                retry = rtat + WINDOW_S / subject.rpm - now - WINDOW_S
                raise rate_limit_error(subject, "requests", retry, rtat - now, ttat - now)
            if subject.tpm and ttat > now:
                new_t = ttat + tokens * WINDOW_S / subject.tpm
                if new_t - now > WINDOW_S + _EPS:
                    retry = min(new_t - now - WINDOW_S, ttat - now)
                    raise rate_limit_error(subject, "tokens", retry, rtat - now, ttat - now)
            if subject.concurrency and state.active >= subject.concurrency:
                raise rate_limit_error(subject, "concurrency", 1.0, rtat - now, ttat - now)
            states.append(state)
        slots = False
        for subject, state in zip(subjects, states, strict=True):
            if subject.rpm:
                state.rpm_tat = (state.rpm_tat if state.rpm_tat > now else now) + WINDOW_S / subject.rpm
            if subject.tpm:
                state.tpm_tat = (
                    state.tpm_tat if state.tpm_tat > now else now
                ) + tokens * WINDOW_S / subject.tpm
            if subject.concurrency:
                state.active += 1
                slots = True
        lease = Lease(
            id="",
            subjects=tuple(subjects),
            tokens=tokens,
            acquired_at=now,
            expires_at=now + self.lease_ttl_s,
            states=tuple(states),
        )
        if slots:
            held[lease] = None
        return lease

    def release_now(self, lease: Lease, actual_tokens: int | None = None) -> None:
        if lease.released or lease.empty:
            lease.released = True
            return
        lease.released = True
        if not lease.expired:
            self._held.pop(lease, None)
        delta = 0 if actual_tokens is None else max(0, actual_tokens) - lease.tokens
        for subject, state in zip(lease.subjects, lease.states, strict=True):
            if subject.tpm and delta:
                state.tpm_tat += delta * WINDOW_S / subject.tpm
            if subject.concurrency and not lease.expired:
                state.active -= 1

    def _expire(self, now: float) -> None:
        held = self._held
        while held:
            lease = next(iter(held))
            if lease.expires_at > now:
                return
            del held[lease]
            lease.expired = True
            for subject, state in zip(lease.subjects, lease.states, strict=True):
                if subject.concurrency:
                    state.active -= 1

    def active(self, kind: LimitKind, id_: int) -> int:
        """Concurrent leases held on a subject (for the health page and tests)."""
        state = self._states.get((kind, id_))
        return state.active if state else 0

    @property
    def held_leases(self) -> int:
        """Leases this process remembers: those holding a concurrency slot, not yet released or
        expired. Bounded by the requests in flight (tests check nothing else accumulates)."""
        return len(self._held)

    @property
    def subjects_tracked(self) -> int:
        return len(self._states)


# --- Redis ------------------------------------------------------------------------------------------


class RedisLimits:
    """Limits shared by every process through one Redis: one ADMIT round trip per acquisition."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "isthmus:",
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        scripts: AccountingScripts | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.lease_ttl_s = lease_ttl_s
        self.scripts = scripts or AccountingScripts(client)
        self._provider_keys = ProviderKeySubjects()

    def _keys(self, subject: LimitSubject) -> tuple[str, str]:
        return f"{self.prefix}rl:{subject.kind}:{subject.id}", f"{self.prefix}rlc:{subject.kind}:{subject.id}"

    def call(
        self, subjects: Sequence[LimitSubject], now: float, estimated_tokens: int
    ) -> tuple[Lease, LimitCall]:
        """The lease this acquisition would give, and the ADMIT part that takes it."""
        lease = Lease(
            id=new_id(),
            subjects=tuple(subjects),
            tokens=max(0, estimated_tokens),
            acquired_at=now,
            expires_at=now + self.lease_ttl_s,
        )
        keys: list[str] = []
        args: list[int] = []
        for subject in subjects:
            keys.extend(self._keys(subject))
            args.extend((subject.rpm or 0, subject.tpm or 0, subject.concurrency or 0))
        return lease, LimitCall(
            keys=keys, args=args, member=lease.id, expires=lease.expires_at, tokens=lease.tokens
        )

    @staticmethod
    def error(lease: Lease, refusal: AdmitRefusal) -> RateLimitedError:
        retry, rpm_backlog, tpm_backlog = (float(v) for v in refusal.values[:3])
        return rate_limit_error(lease.subjects[refusal.index], refusal.what, retry, rpm_backlog, tpm_backlog)

    async def acquire(self, subjects: Sequence[LimitSubject], now: float, estimated_tokens: int) -> Lease:
        if not subjects:
            return empty_lease(now)
        lease, call = self.call(subjects, now, estimated_tokens)
        refusal = await self.scripts.admit(now, call, None)
        if refusal is not None:
            raise self.error(lease, refusal)
        return lease

    def finish_call(self, lease: Lease, actual_tokens: int | None) -> LeaseFinish:
        """FINISH part releasing the lease and correcting TPM by (actual − charged) tokens."""
        delta = 0 if actual_tokens is None else max(0, actual_tokens) - lease.tokens
        keys: list[str] = []
        corrections: list[int] = []
        for subject in lease.subjects:
            keys.extend(self._keys(subject))
            corrections.extend((subject.tpm or 0, delta))
        return LeaseFinish(keys=keys, member=lease.id, corrections=corrections)

    async def release(self, lease: Lease, actual_tokens: int | None = None) -> None:
        if lease.released or lease.empty:
            lease.released = True
            return
        lease.released = True
        await self.scripts.finish(self.finish_call(lease, actual_tokens), None)

    async def try_acquire_provider_key(
        self, key_id: int, limits: HasLimits, now: float, estimated_tokens: int = 0
    ) -> Lease | None:
        subjects = self._provider_keys.of(key_id, limits)
        if not subjects:
            return empty_lease(now)
        try:
            return await self.acquire(subjects, now, estimated_tokens)
        except RateLimitedError:
            return None
