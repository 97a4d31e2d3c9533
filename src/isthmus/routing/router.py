"""From a public model name to an ordered list of upstream candidates.

Work is split by how often its inputs change:

- per snapshot (``RoutingTable``): expand each model's routes × keys, apply the static filters
  (disabled, key restrictions), sort by the scheduling mode and cut the order into tie groups;
- per (model, client protocol, converter), memoized: pick each candidate's upstream protocol and
  split the candidates by the capability filters (context_1m × cache_1h, four variants);
- per request (``Router.plan``): order each tie group by a rendezvous hash of the caller (so one
  gateway key sticks to one upstream key while callers spread evenly), drop unhealthy keys, apply
  the fallbacks, and move the caller's cache-affinity key to the front.

``cache_1h`` keys are reserved for requests that need a one-hour prompt cache: other requests use
them only when no other candidate is usable, and requests that need one fall back to other keys
(the 1h mark then just degrades) only when no cache_1h key is usable. Both are noted in the plan.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from types import MappingProxyType

from isthmus.config.schema import SchedulingMode
from isthmus.errors import NotFoundError
from isthmus.ir.protocol import Protocol
from isthmus.routing.affinity import AffinityCache
from isthmus.routing.failover import Decision
from isthmus.routing.health import HealthBackend, KeyStatus
from isthmus.routing.model import (
    CAPABILITY_CACHE_1H,
    CAPABILITY_CONTEXT_1M,
    Candidate,
    ModelEntry,
    ProviderKey,
    Requirements,
    Route,
    Skipped,
)

ConvertCheck = Callable[[Protocol, Protocol], bool]

# Conversion targets in order of preference when the endpoint does not speak the client's protocol
# (after the client protocol's own family).
_PROTOCOL_PREFERENCE = (Protocol.ANTHROPIC, Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES, Protocol.GEMINI)
_PROTOCOL_SIBLING = {
    Protocol.OPENAI_CHAT: Protocol.OPENAI_RESPONSES,
    Protocol.OPENAI_RESPONSES: Protocol.OPENAI_CHAT,
}

# A key's weight in weighted mode is scaled by (1 - error rate), but never below this share.
_MIN_HEALTH_FACTOR = 0.05
_MAX_VIEWS_PER_MODEL = 32

NOTE_CACHE_1H_DEGRADED = "cache_1h:degraded"  # needed a 1h cache; no cache_1h key was usable
NOTE_CACHE_1H_RESERVED_USED = "cache_1h:reserved_used"  # only reserved cache_1h keys were usable
NOTE_LAST_RESORT = "last_resort"  # every candidate was unhealthy; trying the least recently failed

_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a cheap, well-spread 64-bit mix."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stable_hash(value: int | str) -> int:
    """64-bit hash that is the same in every process and every run (unlike ``hash()`` of a str)."""
    if isinstance(value, int):
        return _mix64(value & _MASK64)
    data = value.encode()
    return _mix64(zlib.crc32(data) | (zlib.adler32(data) << 32))


def implicit_key_id(provider_id: int) -> int:
    """Id of the key a keyless mock provider gets, negative so it never meets a stored key's id."""
    return -1 - provider_id


def choose_protocol(
    client: Protocol, offered: Iterable[Protocol], can_convert: ConvertCheck
) -> Protocol | None:
    """The upstream protocol for a client protocol: passthrough if offered, else a convertible one."""
    offered = frozenset(offered)
    if client in offered:
        return client
    sibling = _PROTOCOL_SIBLING.get(client)
    if sibling is not None and sibling in offered and can_convert(client, sibling):
        return sibling
    for proto in _PROTOCOL_PREFERENCE:
        if proto in offered and can_convert(client, proto):
            return proto
    return None


@dataclass(slots=True)
class RoutePlan:
    candidates: list[Candidate]
    skipped: list[Skipped]
    last_resort: bool = False  # the one candidate is unhealthy, tried because nothing else was left
    affinity: bool = False  # the caller's cache-affinity key was found and put first
    notes: list[str] = field(default_factory=list)


# (rendezvous seed, candidate); a tie group is ordered per caller by the seeds.
_Slot = tuple[int, Candidate]
_Group = tuple[_Slot, ...]


@dataclass(frozen=True, slots=True)
class _Variant:
    """Candidates for one (needs_context_1m, needs_cache_1h) combination."""

    primary: tuple[_Group, ...]
    fallback: tuple[_Group, ...]  # used only when no primary candidate is usable
    skipped: tuple[Skipped, ...]  # statically excluded
    fallback_skipped: tuple[Skipped, ...]  # how the fallback shows up when the primary is used
    fallback_note: str


@dataclass(frozen=True, slots=True)
class _Expansion:
    """One route × key pair of a model, before the client's protocol is known."""

    route: Route
    key: ProviderKey
    static_reason: str | None


class _ModelRoutes:
    __slots__ = ("entry", "expansions", "views")

    def __init__(self, entry: ModelEntry, expansions: tuple[_Expansion, ...]) -> None:
        self.entry = entry
        self.expansions = expansions
        self.views: dict[tuple[Protocol, ConvertCheck], tuple[_Variant, ...]] = {}


class RoutingTable:
    """Everything ``plan`` needs, precomputed from one snapshot. Immutable once built."""

    def __init__(
        self,
        models: Iterable[ModelEntry],
        keys_by_provider: Mapping[int, Sequence[ProviderKey]],
        mode: SchedulingMode,
    ) -> None:
        self.mode: SchedulingMode = mode
        self._models: dict[str, _ModelRoutes] = {}
        for entry in models:
            self._models[entry.name] = _ModelRoutes(entry, _expand(entry, keys_by_provider))
        self.models: Mapping[str, ModelEntry] = MappingProxyType(
            {name: routes.entry for name, routes in self._models.items()}
        )

    def model(self, name: str) -> ModelEntry | None:
        routes = self._models.get(name)
        return routes.entry if routes else None

    def _variants(self, model: str, req: Requirements) -> tuple[_Variant, ...]:
        routes = self._models.get(model)
        if routes is None:
            raise NotFoundError(f"model {model!r} not found", code="model_not_found", param="model")
        if not routes.entry.enabled:
            raise NotFoundError(f"model {model!r} is disabled", code="model_not_found", param="model")
        view_key = (req.client_protocol, req.can_convert)
        variants = routes.views.get(view_key)
        if variants is None:
            if len(routes.views) >= _MAX_VIEWS_PER_MODEL:
                routes.views.clear()  # converters created per request; keep memory bounded
            variants = routes.views[view_key] = self._build_variants(routes, req)
        return variants

    def _build_variants(self, routes: _ModelRoutes, req: Requirements) -> tuple[_Variant, ...]:
        static_skipped: list[Skipped] = []
        eligible: list[_Slot] = []
        for exp in routes.expansions:
            endpoint = exp.route.endpoint
            proto = choose_protocol(req.client_protocol, endpoint.protocols, req.can_convert)
            shown = proto or _placeholder_protocol(req.client_protocol, endpoint.protocols)
            cand = Candidate(
                endpoint=endpoint,
                key=exp.key,
                upstream_model=exp.route.upstream_model,
                protocol=shown,
                route_priority=exp.route.effective_priority,
                weight=exp.route.weight * exp.key.weight,
            )
            if exp.static_reason is not None:
                static_skipped.append(Skipped(cand, exp.static_reason))
            elif proto is None:
                static_skipped.append(Skipped(cand, "protocol"))
            else:
                seed = stable_hash(f"{endpoint.provider_id}/{exp.key.id}/{exp.route.upstream_model}")
                eligible.append((seed, cand))
        # Index = needs_context_1m * 2 + needs_cache_1h.
        return tuple(
            self._variant(eligible, static_skipped, needs_1m, needs_1h)
            for needs_1m in (False, True)
            for needs_1h in (False, True)
        )

    def _variant(
        self, eligible: list[_Slot], static_skipped: list[Skipped], needs_1m: bool, needs_1h: bool
    ) -> _Variant:
        skipped = list(static_skipped)
        primary: list[_Slot] = []
        fallback: list[_Slot] = []
        fallback_reason = "capability:cache_1h" if needs_1h else "reserved:cache_1h"
        for slot in eligible:
            caps = slot[1].key.capabilities
            if needs_1m and CAPABILITY_CONTEXT_1M not in caps:
                skipped.append(Skipped(slot[1], "capability:context_1m"))
            elif (CAPABILITY_CACHE_1H in caps) == needs_1h:
                primary.append(slot)
            else:
                fallback.append(slot)
        return _Variant(
            primary=self._groups(primary),
            fallback=self._groups(fallback),
            skipped=tuple(skipped),
            fallback_skipped=tuple(Skipped(c, fallback_reason) for _, c in fallback),
            fallback_note=NOTE_CACHE_1H_DEGRADED if needs_1h else NOTE_CACHE_1H_RESERVED_USED,
        )

    def _groups(self, slots: list[_Slot]) -> tuple[_Group, ...]:
        if not slots:
            return ()
        if self.mode == "weighted":
            return (tuple(slots),)  # ordered per request by weighted sampling
        rank: Callable[[_Slot], tuple[int, int]]
        if self.mode == "global_key_priority":
            rank = _global_key_rank
        else:
            rank = _provider_rank
        ordered = sorted(slots, key=rank)  # stable: route order, then key order, within a rank
        return tuple(tuple(group) for _, group in groupby(ordered, key=rank))


def _provider_rank(slot: _Slot) -> tuple[int, int]:
    return (slot[1].route_priority, slot[1].key.priority)


def _global_key_rank(slot: _Slot) -> tuple[int, int]:
    return (slot[1].key.priority, slot[1].route_priority)


def _placeholder_protocol(client: Protocol, offered: frozenset[Protocol]) -> Protocol:
    """Protocol shown on a candidate that is skipped anyway (what the endpoint speaks)."""
    for proto in _PROTOCOL_PREFERENCE:
        if proto in offered:
            return proto
    return client


def _expand(
    entry: ModelEntry, keys_by_provider: Mapping[int, Sequence[ProviderKey]]
) -> tuple[_Expansion, ...]:
    out: list[_Expansion] = []
    seen: set[tuple[int, int, str]] = set()
    for route in sorted(entry.routes, key=lambda r: r.position):
        endpoint = route.endpoint
        keys: Sequence[ProviderKey] = keys_by_provider.get(endpoint.provider_id, ())
        if not keys and endpoint.provider_type == "mock":
            keys = (
                ProviderKey(
                    id=implicit_key_id(endpoint.provider_id), provider_id=endpoint.provider_id, name="mock"
                ),
            )
        for key in keys:
            if route.key_names is not None and key.name not in route.key_names:
                continue
            ident = (endpoint.provider_id, key.id, route.upstream_model)
            if ident in seen:
                continue  # the same upstream twice gains nothing and would be tried twice
            seen.add(ident)
            reason = None
            if not endpoint.enabled:
                reason = "disabled:provider"
            elif not key.enabled:
                reason = "disabled:key"
            out.append(_Expansion(route, key, reason))
    return tuple(out)


def _health_reason(status: KeyStatus, now: float) -> str:
    reason = status.reason or "unavailable"
    if status.until is None:
        return reason
    return f"{reason} ({max(0.0, status.until - now):.1f}s left)"


class Router:
    """Plans candidates for requests and takes back their outcomes. Cheap to rebuild per snapshot:
    use :meth:`with_table` so health and affinity state carry over."""

    __slots__ = ("affinity", "health", "rng", "table")

    def __init__(
        self,
        table: RoutingTable,
        health: HealthBackend,
        affinity: AffinityCache | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.table = table
        self.health = health
        self.affinity = affinity if affinity is not None else AffinityCache()
        self.rng = rng if rng is not None else random.Random()

    def with_table(self, table: RoutingTable) -> Router:
        return Router(table, self.health, self.affinity, self.rng)

    def plan(self, model: str, req: Requirements, principal_hash: int | str, now: float) -> RoutePlan:
        """Ordered candidates for one request. Raises ``NotFoundError`` for an unknown or disabled
        model; an empty ``candidates`` list means nothing is usable (see ``skipped`` for why)."""
        variant = self.table._variants(model, req)[(req.needs_context_1m << 1) | req.needs_cache_1h]
        plan = RoutePlan([], list(variant.skipped))
        unhealthy: list[tuple[Candidate, KeyStatus]] = []
        caller = stable_hash(principal_hash)
        self._fill(plan, variant.primary, caller, now, unhealthy)
        primary_unhealthy = len(unhealthy)
        if variant.fallback:
            if plan.candidates:
                plan.skipped.extend(variant.fallback_skipped)
            else:
                self._fill(plan, variant.fallback, caller, now, unhealthy)
                if plan.candidates:
                    plan.notes.append(variant.fallback_note)
        if not plan.candidates:
            if unhealthy:
                self._last_resort(plan, unhealthy, primary_unhealthy, variant.fallback_note)
            return plan
        if len(plan.candidates) > 1:
            self._apply_affinity(plan, principal_hash, model, now)
        return plan

    def _fill(
        self,
        plan: RoutePlan,
        groups: tuple[_Group, ...],
        caller: int,
        now: float,
        unhealthy: list[tuple[Candidate, KeyStatus]],
    ) -> None:
        if self.table.mode == "weighted":
            self._fill_weighted(plan, groups, now, unhealthy)
            return
        status_of = self.health.status
        out = plan.candidates
        for group in groups:
            slots = group if len(group) == 1 else sorted(group, key=lambda s: _mix64(caller ^ s[0]))
            for _, cand in slots:
                status = status_of(cand.key.id, now)
                if status.available:
                    out.append(cand)
                else:
                    plan.skipped.append(Skipped(cand, _health_reason(status, now)))
                    unhealthy.append((cand, status))

    def _fill_weighted(
        self,
        plan: RoutePlan,
        groups: tuple[_Group, ...],
        now: float,
        unhealthy: list[tuple[Candidate, KeyStatus]],
    ) -> None:
        # Exponential clocks (equivalent to Efraimidis–Spirakis): sorting by Exp(weight) samples
        # gives a weighted random order without replacement.
        draw = self.rng.expovariate
        timed: list[tuple[float, int, Candidate]] = []
        for group in groups:
            for _, cand in group:
                status = self.health.status(cand.key.id, now)
                if not status.available:
                    plan.skipped.append(Skipped(cand, _health_reason(status, now)))
                    unhealthy.append((cand, status))
                    continue
                weight = cand.weight * max(1.0 - status.error_rate, _MIN_HEALTH_FACTOR)
                clock = draw(weight) if weight > 0 else float("inf")
                timed.append((clock, len(timed), cand))
        timed.sort()
        plan.candidates.extend(cand for _, _, cand in timed)

    def _last_resort(
        self,
        plan: RoutePlan,
        unhealthy: list[tuple[Candidate, KeyStatus]],
        primary_count: int,
        fallback_note: str,
    ) -> None:
        # Failing outright is certain; an unhealthy key may have recovered. Prefer keys that are not
        # flagged (bad credentials rarely fix themselves), then keys of the right cache_1h kind (the
        # first ``primary_count`` entries), then the one that failed longest ago.
        def staleness(index: int) -> tuple[bool, bool, float]:
            status = unhealthy[index][1]
            last = status.last_failure if status.last_failure is not None else float("-inf")
            return (status.flagged is not None, index >= primary_count, last)

        index = min(range(len(unhealthy)), key=staleness)
        chosen = unhealthy[index][0]
        plan.candidates.append(chosen)
        plan.skipped = [s for s in plan.skipped if s.candidate is not chosen]
        plan.last_resort = True
        plan.notes.append(NOTE_LAST_RESORT)
        if index >= primary_count:
            plan.notes.append(fallback_note)

    def _apply_affinity(self, plan: RoutePlan, principal: int | str, model: str, now: float) -> None:
        key_id = self.affinity.get(principal, model, now)
        if key_id is None:
            return
        cands = plan.candidates
        for i, cand in enumerate(cands):
            if cand.key.id == key_id:
                if i:
                    cands.insert(0, cands.pop(i))
                plan.affinity = True
                return

    # --- outcomes (called by the relay) --------------------------------------------------------

    def claim(self, plan: RoutePlan, candidate: Candidate, now: float) -> bool:
        """Call right before sending to ``candidate``. False means skip it: its key turned unhealthy
        since the plan, or another request holds its half-open breaker's single probe."""
        if plan.last_resort:
            return True
        return self.health.try_acquire_probe(candidate.key.id, now)

    def release(self, candidate: Candidate) -> None:
        """The attempt was abandoned without an outcome (client went away before the commit point)."""
        self.health.release_probe(candidate.key.id)

    def record_success(
        self,
        candidate: Candidate,
        principal_hash: int | str,
        model: str,
        now: float,
        latency_ms: float | None = None,
    ) -> None:
        """Call at the commit point (first content), not at the end of a long stream."""
        self.health.record_success(candidate.key.id, now, latency_ms)
        self.affinity.remember(principal_hash, model, candidate.key.id, now)

    def record_failure(
        self, candidate: Candidate, decision: Decision, now: float, detail: str | None = None
    ) -> None:
        if decision.failure is None:
            self.health.release_probe(candidate.key.id)  # no verdict on the key; let another probe
            return
        self.health.record_failure(candidate.key.id, now, decision.failure, decision.retry_after, detail)
