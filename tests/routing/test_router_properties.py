"""Properties of plans over random configurations, health states and requests."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.config.schema import SchedulingMode
from isthmus.ir.protocol import Protocol
from isthmus.routing.affinity import AffinityCache
from isthmus.routing.health import FailureKind, MemoryHealth
from isthmus.routing.model import (
    CAPABILITY_CACHE_1H,
    CAPABILITY_CONTEXT_1M,
    Candidate,
    Endpoint,
    ModelEntry,
    ProviderKey,
    Requirements,
    Route,
    passthrough_only,
)
from isthmus.routing.router import (
    NOTE_CACHE_1H_DEGRADED,
    NOTE_CACHE_1H_RESERVED_USED,
    Router,
    RoutingTable,
)

from .builders import endpoint, key, model

NOW = 1.0
MODES: tuple[SchedulingMode, ...] = ("provider_priority", "global_key_priority", "weighted")
HEALTH_PREFIXES = ("cooling_down", "circuit_open", "probe_in_flight")


def any_conversion(client: Protocol, upstream: Protocol) -> bool:
    return True


def never_to_gemini(client: Protocol, upstream: Protocol) -> bool:
    return upstream is not Protocol.GEMINI


@dataclass
class Scenario:
    entry: ModelEntry
    keys: list[ProviderKey]
    mode: SchedulingMode
    req: Requirements
    rate_limited: set[int]
    broken: set[int]
    remembered: int | None


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    endpoints: list[Endpoint] = []
    keys: list[ProviderKey] = []
    next_key = 1
    for pid in range(1, draw(st.integers(1, 4)) + 1):
        protocols = draw(st.frozensets(st.sampled_from(list(Protocol)), min_size=1))
        enabled = draw(st.sampled_from([True, True, True, False]))
        endpoints.append(
            endpoint(pid, protocols=protocols, priority=draw(st.integers(0, 2)), enabled=enabled)
        )
        for _ in range(draw(st.integers(0, 4))):
            caps = draw(st.frozensets(st.sampled_from([CAPABILITY_CONTEXT_1M, CAPABILITY_CACHE_1H])))
            keys.append(
                key(
                    next_key,
                    pid,
                    priority=draw(st.integers(0, 2)),
                    weight=draw(st.floats(0.1, 5.0)),
                    capabilities=caps,
                    enabled=draw(st.sampled_from([True, True, True, False])),
                )
            )
            next_key += 1
    routes: list[Route] = []
    for _ in range(draw(st.integers(1, 5))):
        ep = draw(st.sampled_from(endpoints))
        names = [k.name for k in keys if k.provider_id == ep.provider_id]
        restrict = draw(st.none() | st.frozensets(st.sampled_from(names)) if names else st.none())
        routes.append(
            Route(
                ep,
                draw(st.sampled_from(["up-a", "up-b"])),
                draw(st.none() | st.integers(0, 3)),
                draw(st.floats(0.1, 5.0)),
                restrict,
            )
        )
    req = Requirements(
        draw(st.sampled_from(list(Protocol))),
        needs_context_1m=draw(st.booleans()),
        needs_cache_1h=draw(st.booleans()),
        can_convert=draw(st.sampled_from([passthrough_only, any_conversion, never_to_gemini])),
    )
    ids = [k.id for k in keys]
    rate_limited = draw(st.sets(st.sampled_from(ids))) if ids else set()
    broken = draw(st.sets(st.sampled_from(ids))) if ids else set()
    remembered = draw(st.none() | st.sampled_from(ids)) if ids else None
    return Scenario(
        model("m", *routes), keys, draw(st.sampled_from(MODES)), req, rate_limited, broken, remembered
    )


def build(s: Scenario) -> tuple[Router, MemoryHealth]:
    health = MemoryHealth()
    for key_id in s.rate_limited:
        health.record_failure(key_id, 0.0, FailureKind.RATE_LIMITED, retry_after=100.0)
    for key_id in s.broken:
        for _ in range(5):
            health.record_failure(key_id, 0.5, FailureKind.CONNECT)
    by_provider: dict[int, list[ProviderKey]] = {}
    for k in s.keys:
        by_provider.setdefault(k.provider_id, []).append(k)
    affinity = AffinityCache()
    if s.remembered is not None:
        affinity.remember("caller", "m", s.remembered, 0.0)
    table = RoutingTable([s.entry], by_provider, s.mode)
    return Router(table, health, affinity, random.Random(0)), health


def expected_expansions(s: Scenario) -> Counter[tuple[int, int, str]]:
    seen: Counter[tuple[int, int, str]] = Counter()
    for r in s.entry.routes:
        for k in s.keys:
            if k.provider_id != r.endpoint.provider_id:
                continue
            if r.key_names is not None and k.name not in r.key_names:
                continue
            seen[(r.endpoint.provider_id, k.id, r.upstream_model)] = 1
    return seen


def ident(c: Candidate) -> tuple[int, int, str]:
    return (c.endpoint.provider_id, c.key.id, c.upstream_model)


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_plan_invariants(s: Scenario) -> None:
    router, health = build(s)
    plan = router.plan("m", s.req, "caller", NOW)
    cands = plan.candidates

    # Every route × key pair shows up exactly once: tried or skipped with a reason.
    accounted = Counter(ident(c) for c in cands) + Counter(ident(x.candidate) for x in plan.skipped)
    assert accounted == expected_expansions(s)
    assert all(x.reason for x in plan.skipped)

    for c in cands:
        assert c.key.enabled and c.endpoint.enabled
        assert c.protocol in c.endpoint.protocols
        assert c.protocol == s.req.client_protocol or s.req.can_convert(s.req.client_protocol, c.protocol)
        if s.req.needs_context_1m:
            assert CAPABILITY_CONTEXT_1M in c.key.capabilities

    with_1h = {CAPABILITY_CACHE_1H in c.key.capabilities for c in cands}
    assert len(with_1h) <= 1  # never a mix of reserved and ordinary keys
    if with_1h and with_1h != {s.req.needs_cache_1h}:
        assert (NOTE_CACHE_1H_DEGRADED if s.req.needs_cache_1h else NOTE_CACHE_1H_RESERVED_USED) in plan.notes

    if plan.last_resort:
        assert len(cands) == 1 and not health.status(cands[0].key.id, NOW).available
    else:
        assert all(health.status(c.key.id, NOW).available for c in cands)
    if not cands:
        assert not any(x.reason.startswith(HEALTH_PREFIXES) for x in plan.skipped)

    if s.mode != "weighted":
        ordered = cands[1:] if plan.affinity else cands
        if s.mode == "provider_priority":
            ranks = [(c.route_priority, c.key.priority) for c in ordered]
        else:
            ranks = [(c.key.priority, c.route_priority) for c in ordered]
        assert ranks == sorted(ranks)
        assert [ident(c) for c in router.plan("m", s.req, "caller", NOW).candidates] == [
            ident(c) for c in cands
        ]
    if plan.affinity:
        assert cands[0].key.id == s.remembered
