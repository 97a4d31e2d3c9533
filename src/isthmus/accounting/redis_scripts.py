"""The Lua scripts behind the Redis backends: one round trip to admit, one to finish.

``ADMIT`` checks rate limits and budgets for several subjects at once and applies all of them or none
(Redis runs a script atomically). The same script serves a rate-limit-only call (no budget part), a
budget-only call (no limit part) and the combined admission. ``FINISH`` releases a lease (corrects
TPM by the actual tokens, frees the concurrency slot) and settles or releases a budget reservation.

Layout of the keys (``P`` = the configured prefix):
- ``P rl:{kind}:{id}``   hash ``r`` = RPM theoretical arrival time (GCRA), ``t`` = TPM one; unix seconds.
- ``P rlc:{kind}:{id}``  zset of concurrency leases, member = lease id, score = lease expiry.
- ``P bud:{type}:{id}:{label}``  hash ``su``/``st`` spent (nano-USD, tokens), ``ru``/``rt`` reserved.
- ``P budr:{type}:{id}:{label}`` zset of reservations, member = ``id|nano_usd|tokens``, score = expiry.
Expired leases and reservations are purged by the next check of the same key, so a crashed process
holds nothing for longer than the TTL. Amounts are integers (``HINCRBY``, exact); Lua only compares
them (doubles, exact below 2^53 nano-USD ≈ $9M per counter). Times come from the calling process.

On a Redis Cluster every key of one call would have to share a hash slot; this layout assumes a
single Redis (or a primary with replicas), as the gateway's shared state does elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported only where Redis is configured: the client costs ~15 MiB
    from redis.asyncio import Redis


_PRELUDE = r"""
local function fmt(x) return string.format('%d', x) end
local function fl(x) return string.format('%.6f', x) end
local EPS = 1e-6

-- Rate limits. Subject i: KEYS[kb+2i-1] hash (r, t), KEYS[kb+2i] concurrency zset;
-- ARGV[ab+3i-2], ARGV[ab+3i-1], ARGV[ab+3i] = rpm, tpm, concurrency (0 = none).
local function limits_check(kb, ab, n, now, tokens, pending)
  for i = 1, n do
    local hkey = KEYS[kb + 2*i - 1]
    local ckey = KEYS[kb + 2*i]
    local rpm = tonumber(ARGV[ab + 3*i - 2])
    local tpm = tonumber(ARGV[ab + 3*i - 1])
    local conc = tonumber(ARGV[ab + 3*i])
    local v = redis.call('HMGET', hkey, 'r', 't')
    local rtat = math.max(tonumber(v[1]) or 0, now)
    local ttat = math.max(tonumber(v[2]) or 0, now)
    local back = {tostring(rtat - now), tostring(ttat - now)}
    local newr = false
    local newt = false
    if rpm > 0 then
      newr = rtat + 60 / rpm
      if newr - now > 60 + EPS then
        return {0, 'limit', i, 'requests', tostring(newr - now - 60), back[1], back[2]}
      end
    end
    if tpm > 0 then
      newt = ttat + tokens * 60 / tpm
      -- An idle bucket admits any single request, however large (else it could never pass).
      if ttat > now and newt - now > 60 + EPS then
        return {0, 'limit', i, 'tokens', tostring(math.min(newt - now - 60, ttat - now)), back[1], back[2]}
      end
    end
    if conc > 0 then
      redis.call('ZREMRANGEBYSCORE', ckey, '-inf', now)
      if redis.call('ZCARD', ckey) >= conc then
        return {0, 'limit', i, 'concurrency', '1', back[1], back[2]}
      end
    end
    pending[i] = {newr, newt}
  end
  return false
end

local function limits_apply(kb, ab, n, now, member, expires, pending)
  for i = 1, n do
    local hkey = KEYS[kb + 2*i - 1]
    local p = pending[i]
    local horizon = 0
    if p[1] then
      redis.call('HSET', hkey, 'r', fl(p[1]))
      horizon = math.max(horizon, p[1] - now)
    end
    if p[2] then
      redis.call('HSET', hkey, 't', fl(p[2]))
      horizon = math.max(horizon, p[2] - now)
    end
    if p[1] or p[2] then
      redis.call('PEXPIRE', hkey, fmt(math.ceil((horizon + 60) * 1000)))
    end
    if tonumber(ARGV[ab + 3*i]) > 0 then
      local ckey = KEYS[kb + 2*i]
      redis.call('ZADD', ckey, expires, member)
      redis.call('PEXPIREAT', ckey, fmt(math.ceil(tonumber(expires) * 1000) + 60000))
    end
  end
end

-- Budgets. Check j: KEYS[kb+2j-1] counter hash, KEYS[kb+2j] reservation zset;
-- ARGV[ab+3j-2], ARGV[ab+3j-1], ARGV[ab+3j] = nano-USD limit, token limit (-1 = none),
-- key expiry (0 = never).
local function budget_purge(hkey, zkey, now)
  local expired = redis.call('ZRANGEBYSCORE', zkey, '-inf', now)
  if #expired == 0 then return end
  local du, dt = 0, 0
  for _, m in ipairs(expired) do
    local u, t = string.match(m, '|(%d+)|(%d+)$')
    du = du + (tonumber(u) or 0)
    dt = dt + (tonumber(t) or 0)
  end
  redis.call('HINCRBY', hkey, 'ru', fmt(-du))
  redis.call('HINCRBY', hkey, 'rt', fmt(-dt))
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
end

local function budget_check(kb, ab, n, now, est_usd, est_tok)
  for j = 1, n do
    local hkey = KEYS[kb + 2*j - 1]
    budget_purge(hkey, KEYS[kb + 2*j], now)
    local v = redis.call('HMGET', hkey, 'su', 'ru', 'st', 'rt')
    local used_usd = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
    local used_tok = (tonumber(v[3]) or 0) + (tonumber(v[4]) or 0)
    local lim_usd = tonumber(ARGV[ab + 3*j - 2])
    local lim_tok = tonumber(ARGV[ab + 3*j - 1])
    if lim_usd >= 0 and (used_usd >= lim_usd or used_usd + est_usd > lim_usd) then
      return {0, 'budget', j, 'usd', fmt(used_usd)}
    end
    if lim_tok >= 0 and (used_tok >= lim_tok or used_tok + est_tok > lim_tok) then
      return {0, 'budget', j, 'tokens', fmt(used_tok)}
    end
  end
  return false
end

local function budget_apply(kb, ab, n, member, expires, est_usd, est_tok)
  for j = 1, n do
    local hkey = KEYS[kb + 2*j - 1]
    local zkey = KEYS[kb + 2*j]
    redis.call('HINCRBY', hkey, 'ru', est_usd)
    redis.call('HINCRBY', hkey, 'rt', est_tok)
    redis.call('ZADD', zkey, expires, member)
    redis.call('EXPIREAT', zkey, fmt(math.ceil(tonumber(expires)) + 60))
    local exp = tonumber(ARGV[ab + 3*j])
    if exp > 0 then redis.call('EXPIREAT', hkey, fmt(exp)) end
  end
end
"""

# ARGV: now, nl, nb, lease_member, lease_expires, tokens, res_member, res_expires, est_usd, est_tokens,
#       3*nl limit args, 3*nb budget args.   KEYS: 2*nl limit keys, 2*nb budget keys.
ADMIT = (
    _PRELUDE
    + r"""
local now = tonumber(ARGV[1])
local nl = tonumber(ARGV[2])
local nb = tonumber(ARGV[3])
local bab = 10 + 3*nl
local pending = {}
local r = limits_check(0, 10, nl, now, tonumber(ARGV[6]), pending)
if r then return r end
r = budget_check(2*nl, bab, nb, now, tonumber(ARGV[9]), tonumber(ARGV[10]))
if r then return r end
limits_apply(0, 10, nl, now, ARGV[4], ARGV[5], pending)
budget_apply(2*nl, bab, nb, ARGV[7], ARGV[8], ARGV[9], ARGV[10])
return {1}
"""
)

# ARGV: nl, nr, ns, lease_member, res_member, res_usd, res_tokens, actual_usd, actual_tokens,
#       2*nl (tpm, token correction), ns spend-key expiries.
# KEYS: 2*nl lease keys, nr hold hashes, nr hold zsets, ns spend hashes.
FINISH = (
    _PRELUDE
    + r"""
local nl = tonumber(ARGV[1])
local nr = tonumber(ARGV[2])
local ns = tonumber(ARGV[3])
for i = 1, nl do
  local hkey = KEYS[2*i - 1]
  local tpm = tonumber(ARGV[9 + 2*i - 1])
  local delta = tonumber(ARGV[9 + 2*i])
  if tpm > 0 and delta ~= 0 then
    local t = tonumber(redis.call('HGET', hkey, 't'))
    if t then redis.call('HSET', hkey, 't', fl(t + delta * 60 / tpm)) end
  end
  redis.call('ZREM', KEYS[2*i], ARGV[4])
end
local kb = 2*nl
for j = 1, nr do
  if redis.call('ZREM', KEYS[kb + nr + j], ARGV[5]) == 1 then
    redis.call('HINCRBY', KEYS[kb + j], 'ru', fmt(-tonumber(ARGV[6])))
    redis.call('HINCRBY', KEYS[kb + j], 'rt', fmt(-tonumber(ARGV[7])))
  end
end
local eb = 9 + 2*nl
for j = 1, ns do
  local k = KEYS[kb + 2*nr + j]
  redis.call('HINCRBY', k, 'su', ARGV[8])
  redis.call('HINCRBY', k, 'st', ARGV[9])
  local exp = tonumber(ARGV[eb + j])
  if exp > 0 then redis.call('EXPIREAT', k, fmt(exp)) end
end
return 1
"""
)


@dataclass(frozen=True, slots=True)
class LimitCall:
    """The rate-limit part of an ADMIT: per subject 2 keys and (rpm, tpm, concurrency)."""

    keys: Sequence[str]
    args: Sequence[int]
    member: str
    expires: float
    tokens: int

    @property
    def count(self) -> int:
        return len(self.keys) // 2


@dataclass(frozen=True, slots=True)
class BudgetCall:
    """The budget part of an ADMIT: per check 2 keys and (nano-USD limit, token limit, key expiry)."""

    keys: Sequence[str]
    args: Sequence[int]
    member: str
    expires: float
    usd_nano: int
    tokens: int

    @property
    def count(self) -> int:
        return len(self.keys) // 2


@dataclass(frozen=True, slots=True)
class LeaseFinish:
    """Release a lease: its keys (2 per subject) and (tpm, actual − charged tokens) per subject."""

    keys: Sequence[str]
    member: str
    corrections: Sequence[int]


@dataclass(frozen=True, slots=True)
class ReservationFinish:
    """Drop a reservation from its holds; add the actual spend to ``spend_keys`` (empty = release)."""

    hold_keys: Sequence[str] = ()
    hold_zkeys: Sequence[str] = ()
    spend_keys: Sequence[str] = ()
    spend_expiries: Sequence[int] = ()
    member: str = ""
    usd_nano: int = 0
    tokens: int = 0
    actual_usd_nano: int = 0
    actual_tokens: int = 0


@dataclass(frozen=True, slots=True)
class AdmitRefusal:
    part: str  # "limit" | "budget"
    index: int  # 0-based index of the refusing subject/check in its call
    what: str  # limit: requests | tokens | concurrency; budget: usd | tokens
    values: tuple[str, ...]  # limit: retry_after, rpm backlog, tpm backlog; budget: used


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AccountingScripts:
    """The two scripts, registered on one client (EVALSHA, reloaded if the server lost them)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._admit = client.register_script(ADMIT)
        self._finish = client.register_script(FINISH)

    async def admit(
        self, now: float, limits: LimitCall | None, budget: BudgetCall | None
    ) -> AdmitRefusal | None:
        keys: list[str] = []
        nl = limits.count if limits else 0
        nb = budget.count if budget else 0
        argv: list[str | int | float] = [
            repr(now),
            nl,
            nb,
            limits.member if limits else "",
            repr(limits.expires) if limits else "0",
            limits.tokens if limits else 0,
            budget.member if budget else "",
            repr(budget.expires) if budget else "0",
            budget.usd_nano if budget else 0,
            budget.tokens if budget else 0,
        ]
        if limits:
            keys.extend(limits.keys)
            argv.extend(limits.args)
        if budget:
            keys.extend(budget.keys)
            argv.extend(budget.args)
        result = await self._admit(keys=keys, args=argv)
        if int(result[0]) == 1:
            return None
        return AdmitRefusal(
            part=_text(result[1]),
            index=int(result[2]) - 1,
            what=_text(result[3]),
            values=tuple(_text(v) for v in result[4:]),
        )

    async def finish(self, lease: LeaseFinish | None, reservation: ReservationFinish | None) -> None:
        nl = len(lease.keys) // 2 if lease else 0
        res = reservation or ReservationFinish()
        argv: list[str | int] = [
            nl,
            len(res.hold_keys),
            len(res.spend_keys),
            lease.member if lease else "",
            res.member,
            res.usd_nano,
            res.tokens,
            res.actual_usd_nano,
            res.actual_tokens,
            *(lease.corrections if lease else ()),
            *res.spend_expiries,
        ]
        keys = [*(lease.keys if lease else ()), *res.hold_keys, *res.hold_zkeys, *res.spend_keys]
        await self._finish(keys=keys, args=argv)
