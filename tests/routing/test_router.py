"""Router plans: ordering per scheduling mode, protocol choice, filters, health, affinity."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from isthmus.config.schema import SchedulingMode
from isthmus.errors import NotFoundError, UpstreamHTTPError
from isthmus.ir.protocol import Protocol
from isthmus.routing.affinity import AffinityCache
from isthmus.routing.failover import classify
from isthmus.routing.health import FailureKind, MemoryHealth
from isthmus.routing.model import (
    CAPABILITY_CACHE_1H,
    CAPABILITY_CONTEXT_1M,
    ModelEntry,
    ProviderKey,
    Requirements,
)
from isthmus.routing.router import (
    NOTE_CACHE_1H_DEGRADED,
    NOTE_CACHE_1H_RESERVED_USED,
    NOTE_LAST_RESORT,
    Router,
    RoutingTable,
    choose_protocol,
    implicit_key_id,
    stable_hash,
)

from .builders import ALL_PROTOCOLS, ANTHROPIC, GEMINI, OPENAI, endpoint, key, model, route

CHAT = Requirements(Protocol.OPENAI_CHAT)
SRC = Path(__file__).resolve().parents[2] / "src"


def any_conversion(client: Protocol, upstream: Protocol) -> bool:
    return True


def make_router(
    models: list[ModelEntry],
    keys: list[ProviderKey],
    mode: SchedulingMode = "provider_priority",
    health: MemoryHealth | None = None,
    rng: random.Random | None = None,
) -> Router:
    by_provider: dict[int, list[ProviderKey]] = {}
    for k in keys:
        by_provider.setdefault(k.provider_id, []).append(k)
    return Router(RoutingTable(models, by_provider, mode), health or MemoryHealth(), AffinityCache(), rng)


def key_ids(router: Router, principal: int | str, req: Requirements = CHAT, name: str = "m") -> list[int]:
    return [c.key.id for c in router.plan(name, req, principal, 0.0).candidates]


# --- provider_priority ----------------------------------------------------------------------------


def test_provider_priority_orders_providers_then_keys() -> None:
    a, b = endpoint(1, priority=1), endpoint(2, priority=0)
    keys = [key(11, 1, priority=0), key(12, 1, priority=1), key(21, 2, priority=5), key(22, 2, priority=2)]
    router = make_router([model("m", route(a), route(b))], keys)
    for principal in range(50):
        assert key_ids(router, principal) == [22, 21, 11, 12]


def test_route_priority_overrides_the_providers() -> None:
    a, b = endpoint(1, priority=0), endpoint(2, priority=1)
    router = make_router([model("m", route(a, priority=9), route(b))], [key(11, 1), key(21, 2)])
    assert key_ids(router, "x") == [21, 11]
    plan = router.plan("m", CHAT, "x", 0.0)
    assert [c.route_priority for c in plan.candidates] == [1, 9]


def test_ties_stick_per_principal_and_spread_across_principals() -> None:
    ep = endpoint(1)
    keys = [key(i, 1) for i in (1, 2, 3)]
    router = make_router([model("m", route(ep))], keys)
    firsts: Counter[int] = Counter()
    for i in range(3000):
        principal = f"gateway-key-{i}"
        order = key_ids(router, principal)
        assert sorted(order) == [1, 2, 3]
        assert key_ids(router, principal) == order  # stable for the same caller
        firsts[order[0]] += 1
    for count in firsts.values():
        assert 850 <= count <= 1150, firsts


def test_ties_spread_the_second_choice_too() -> None:
    ep = endpoint(1)
    router = make_router([model("m", route(ep))], [key(i, 1) for i in (1, 2, 3)])
    seconds = Counter(tuple(key_ids(router, i)[:2]) for i in range(3000))
    assert len(seconds) == 6  # every (first, second) pair occurs
    assert min(seconds.values()) > 350


def test_tie_order_is_the_same_in_every_process() -> None:
    script = (
        "from isthmus.ir.protocol import Protocol\n"
        "from isthmus.routing import *\n"
        "ep = Endpoint(1, 'p', 'openai', frozenset({Protocol.OPENAI_CHAT}))\n"
        "keys = {1: [ProviderKey(i, 1, f'k{i}') for i in range(1, 6)]}\n"
        "table = RoutingTable([ModelEntry(1, 'm', (Route(ep, 'x'),))], keys, 'provider_priority')\n"
        "router = Router(table, MemoryHealth())\n"
        "req = Requirements(Protocol.OPENAI_CHAT)\n"
        "for p in ('alice', 'bob', 'carol', 'dave'):\n"
        "    print([c.key.id for c in router.plan('m', req, p, 0).candidates])\n"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(SRC)}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    ep = endpoint(1, protocols=frozenset({Protocol.OPENAI_CHAT}))
    local = make_router([model("m", route(ep, "x"))], [key(i, 1, name=f"k{i}") for i in range(1, 6)])
    expected = "".join(f"{key_ids(local, p)}\n" for p in ("alice", "bob", "carol", "dave"))
    assert outputs == {expected}


def test_adding_a_key_moves_few_callers() -> None:
    ep = endpoint(1)
    before = make_router([model("m", route(ep))], [key(i, 1) for i in range(1, 5)])
    after = make_router([model("m", route(ep))], [key(i, 1) for i in range(1, 6)])
    moved = 0
    for i in range(2000):
        old, new = key_ids(before, i)[0], key_ids(after, i)[0]
        if old != new:
            moved += 1
            assert new == 5  # rendezvous hashing: callers only move to the new key
    assert 300 <= moved <= 520  # about 1/5


def test_ties_span_providers_with_equal_priority() -> None:
    a, b = endpoint(1), endpoint(2)
    router = make_router([model("m", route(a), route(b))], [key(11, 1), key(21, 2)])
    firsts = Counter(key_ids(router, i)[0] for i in range(1000))
    assert set(firsts) == {11, 21} and min(firsts.values()) > 400


def test_stable_hash_of_int_and_str() -> None:
    assert stable_hash("abc") == stable_hash("abc") != stable_hash("abd")
    assert stable_hash(42) == stable_hash(42) != stable_hash(43)
    assert 0 <= stable_hash(-1) < 2**64


# --- global_key_priority --------------------------------------------------------------------------


def test_global_key_priority_ranks_keys_across_routes() -> None:
    a, b = endpoint(1, priority=0), endpoint(2, priority=1)
    keys = [key(11, 1, priority=2), key(12, 1, priority=0), key(21, 2, priority=1), key(22, 2, priority=0)]
    models = [model("m", route(a), route(b))]
    assert key_ids(make_router(models, keys, "global_key_priority"), "x") == [12, 22, 21, 11]
    assert key_ids(make_router(models, keys, "provider_priority"), "x") == [12, 11, 22, 21]


def test_global_key_priority_ties_are_hashed() -> None:
    a, b = endpoint(1), endpoint(2)
    keys = [key(11, 1), key(21, 2), key(22, 2, priority=1)]
    router = make_router([model("m", route(a), route(b))], keys, "global_key_priority")
    firsts: Counter[int] = Counter()
    for i in range(1000):
        order = key_ids(router, i)
        assert order[2] == 22
        firsts[order[0]] += 1
    assert min(firsts.values()) > 400


# --- weighted -------------------------------------------------------------------------------------


def test_weighted_first_choice_follows_route_times_key_weight() -> None:
    a, b = endpoint(1), endpoint(2)
    keys = [key(11, 1, weight=1.0), key(21, 2, weight=1.5)]
    # Effective weights: 1 × 1 = 1 and 2 × 1.5 = 3.
    router = make_router(
        [model("m", route(a), route(b, weight=2.0))], keys, "weighted", rng=random.Random(1234)
    )
    firsts = Counter(key_ids(router, "same-caller")[0] for _ in range(8000))
    assert firsts[21] / 8000 == pytest.approx(0.75, abs=0.025)


def test_weighted_lowers_keys_with_recent_errors() -> None:
    ep = endpoint(1)
    health = MemoryHealth()
    for t in range(10):  # 40% errors, never 5 in a row: stays available
        if t % 5 in (0, 2):
            health.record_failure(12, float(t), FailureKind.SERVER)
        else:
            health.record_success(12, float(t))
    assert health.status(12, 10.0).error_rate == pytest.approx(0.4)
    router = make_router(
        [model("m", route(ep))], [key(11, 1), key(12, 1)], "weighted", health, random.Random(7)
    )
    firsts = Counter(c.key.id for c in (router.plan("m", CHAT, "p", 10.0).candidates[0] for _ in range(8000)))
    assert firsts[12] / 8000 == pytest.approx(0.6 / 1.6, abs=0.025)


def test_weighted_orders_every_candidate_once() -> None:
    ep = endpoint(1)
    router = make_router([model("m", route(ep))], [key(i, 1, weight=i) for i in range(1, 6)], "weighted")
    for _ in range(200):
        assert sorted(key_ids(router, "p")) == [1, 2, 3, 4, 5]


# --- protocols ------------------------------------------------------------------------------------


def test_passthrough_when_the_endpoint_speaks_the_client_protocol() -> None:
    ep = endpoint(1, protocols=ALL_PROTOCOLS, provider_type="mock")
    router = make_router([model("m", route(ep))], [key(1, 1)])
    for proto in Protocol:
        plan = router.plan("m", Requirements(proto, can_convert=any_conversion), "p", 0.0)
        assert plan.candidates[0].protocol is proto


@pytest.mark.parametrize(
    ("client", "offered", "expected"),
    [
        (Protocol.OPENAI_RESPONSES, {Protocol.OPENAI_CHAT, Protocol.ANTHROPIC}, Protocol.OPENAI_CHAT),
        (Protocol.OPENAI_CHAT, {Protocol.OPENAI_RESPONSES, Protocol.ANTHROPIC}, Protocol.OPENAI_RESPONSES),
        (Protocol.GEMINI, {Protocol.OPENAI_CHAT, Protocol.ANTHROPIC}, Protocol.ANTHROPIC),
        (Protocol.ANTHROPIC, {Protocol.OPENAI_RESPONSES, Protocol.OPENAI_CHAT}, Protocol.OPENAI_CHAT),
        (Protocol.ANTHROPIC, {Protocol.GEMINI, Protocol.OPENAI_RESPONSES}, Protocol.OPENAI_RESPONSES),
        (Protocol.ANTHROPIC, {Protocol.GEMINI}, Protocol.GEMINI),
    ],
)
def test_conversion_preference(client: Protocol, offered: set[Protocol], expected: Protocol) -> None:
    assert choose_protocol(client, offered, any_conversion) is expected


def test_conversion_only_where_the_converter_allows() -> None:
    def only_to_gemini(client: Protocol, upstream: Protocol) -> bool:
        return upstream is Protocol.GEMINI

    offered = {Protocol.OPENAI_CHAT, Protocol.GEMINI}
    assert choose_protocol(Protocol.ANTHROPIC, offered, only_to_gemini) is Protocol.GEMINI


def test_no_common_protocol_is_skipped_with_a_reason() -> None:
    router = make_router([model("m", route(endpoint(1, protocols=ANTHROPIC)))], [key(1, 1)])
    plan = router.plan("m", CHAT, "p", 0.0)
    assert plan.candidates == []
    assert [s.reason for s in plan.skipped] == ["protocol"]


def test_converter_is_part_of_the_memo_key() -> None:
    router = make_router([model("m", route(endpoint(1, protocols=GEMINI)))], [key(1, 1)])
    assert router.plan("m", Requirements(Protocol.ANTHROPIC), "p", 0.0).candidates == []
    converted = router.plan("m", Requirements(Protocol.ANTHROPIC, can_convert=any_conversion), "p", 0.0)
    assert [c.protocol for c in converted.candidates] == [Protocol.GEMINI]
    assert converted.candidates[0].base_url == "https://p1.example/gemini"
    # Many throwaway converters: still correct, and memory stays bounded.
    for _ in range(100):
        fresh = router.plan("m", Requirements(Protocol.ANTHROPIC, can_convert=lambda a, b: True), "p", 0.0)
        assert len(fresh.candidates) == 1


def test_mixed_endpoints_get_their_own_protocol() -> None:
    oa, an = endpoint(1, protocols=OPENAI), endpoint(2, protocols=ANTHROPIC, priority=1)
    router = make_router([model("m", route(oa), route(an))], [key(1, 1), key(2, 2)])
    plan = router.plan("m", Requirements(Protocol.ANTHROPIC, can_convert=any_conversion), "p", 0.0)
    assert [(c.key.id, c.protocol) for c in plan.candidates] == [
        (1, Protocol.OPENAI_CHAT),
        (2, Protocol.ANTHROPIC),
    ]


# --- static filters -------------------------------------------------------------------------------


def test_unknown_and_disabled_models_are_not_found() -> None:
    router = make_router([model("off", route(endpoint(1)), enabled=False)], [key(1, 1)])
    with pytest.raises(NotFoundError, match="not found"):
        router.plan("nope", CHAT, "p", 0.0)
    with pytest.raises(NotFoundError, match="disabled"):
        router.plan("off", CHAT, "p", 0.0)


def test_disabled_provider_and_key_are_skipped() -> None:
    on, off = endpoint(1), endpoint(2, enabled=False)
    keys = [key(11, 1), key(12, 1, enabled=False), key(21, 2)]
    plan = make_router([model("m", route(on), route(off))], keys).plan("m", CHAT, "p", 0.0)
    assert [c.key.id for c in plan.candidates] == [11]
    assert {(s.candidate.key.id, s.reason) for s in plan.skipped} == {
        (12, "disabled:key"),
        (21, "disabled:provider"),
    }


def test_route_key_restriction() -> None:
    ep = endpoint(1)
    keys = [key(1, 1, name="a"), key(2, 1, name="b"), key(3, 1, name="c")]
    router = make_router([model("m", route(ep, "x", keys=["a", "c"]), route(ep, "y", keys=["b"]))], keys)
    plan = router.plan("m", CHAT, "p", 0.0)
    assert sorted((c.key.name, c.upstream_model) for c in plan.candidates) == [
        ("a", "x"),
        ("b", "y"),
        ("c", "x"),
    ]
    assert plan.skipped == []


def test_duplicate_routes_are_tried_once() -> None:
    ep = endpoint(1)
    router = make_router([model("m", route(ep, "x"), route(ep, "x", priority=3))], [key(1, 1)])
    assert key_ids(router, "p") == [1]


def test_keyless_mock_provider_gets_an_implicit_key() -> None:
    mock = endpoint(5, protocols=ALL_PROTOCOLS, provider_type="mock")
    plan = make_router([model("m", route(mock))], []).plan("m", CHAT, "p", 0.0)
    assert [c.key.id for c in plan.candidates] == [implicit_key_id(5)]
    assert implicit_key_id(5) < 0 and implicit_key_id(0) < 0


def test_keyless_real_provider_has_no_candidates() -> None:
    plan = make_router([model("m", route(endpoint(1)))], []).plan("m", CHAT, "p", 0.0)
    assert plan.candidates == [] and not plan.last_resort


def test_secret_is_not_in_repr() -> None:
    k = key(1, 1)
    assert "sk-test-1" not in repr(k)
    plan = make_router([model("m", route(endpoint(1)))], [k]).plan("m", CHAT, "p", 0.0)
    assert "sk-test-1" not in repr(plan)
    assert plan.candidates[0].label == "p1/k1:up-model"


# --- capabilities ---------------------------------------------------------------------------------

ONE_M = Requirements(Protocol.OPENAI_CHAT, needs_context_1m=True)
ONE_H = Requirements(Protocol.OPENAI_CHAT, needs_cache_1h=True)


def test_context_1m_keeps_only_capable_keys() -> None:
    ep = endpoint(1)
    keys = [key(1, 1), key(2, 1, capabilities=[CAPABILITY_CONTEXT_1M]), key(3, 1)]
    router = make_router([model("m", route(ep))], keys)
    plan = router.plan("m", ONE_M, "p", 0.0)
    assert [c.key.id for c in plan.candidates] == [2]
    assert {s.reason for s in plan.skipped} == {"capability:context_1m"}
    assert sorted(key_ids(router, "p")) == [1, 2, 3]


def test_context_1m_without_capable_keys_leaves_nothing() -> None:
    plan = make_router([model("m", route(endpoint(1)))], [key(1, 1)]).plan("m", ONE_M, "p", 0.0)
    assert plan.candidates == [] and [s.reason for s in plan.skipped] == ["capability:context_1m"]


def test_cache_1h_keys_are_reserved() -> None:
    ep = endpoint(1)
    keys = [key(1, 1), key(2, 1, capabilities=[CAPABILITY_CACHE_1H]), key(3, 1)]
    router = make_router([model("m", route(ep))], keys)
    plan = router.plan("m", CHAT, "p", 0.0)
    assert sorted(c.key.id for c in plan.candidates) == [1, 3]
    assert [(s.candidate.key.id, s.reason) for s in plan.skipped] == [(2, "reserved:cache_1h")]
    needs = router.plan("m", ONE_H, "p", 0.0)
    assert [c.key.id for c in needs.candidates] == [2]
    assert {s.reason for s in needs.skipped} == {"capability:cache_1h"} and needs.notes == []


def test_reserved_cache_1h_keys_serve_others_when_nothing_else_can() -> None:
    ep = endpoint(1)
    health = MemoryHealth()
    keys = [key(1, 1), key(2, 1, capabilities=[CAPABILITY_CACHE_1H, CAPABILITY_CONTEXT_1M])]
    router = make_router([model("m", route(ep))], keys, health=health)
    health.record_failure(1, 0.0, FailureKind.AUTH)
    plan = router.plan("m", CHAT, "p", 1.0)
    assert [c.key.id for c in plan.candidates] == [2]
    assert plan.notes == [NOTE_CACHE_1H_RESERVED_USED]
    only_reserved = make_router([model("m", route(ep))], [keys[1]])
    assert key_ids(only_reserved, "p") == [2]


def test_cache_1h_degrades_to_other_keys() -> None:
    ep = endpoint(1)
    health = MemoryHealth()
    keys = [key(1, 1), key(2, 1, capabilities=[CAPABILITY_CACHE_1H])]
    router = make_router([model("m", route(ep))], keys, health=health)
    health.record_failure(2, 0.0, FailureKind.RATE_LIMITED, retry_after=60.0)
    plan = router.plan("m", ONE_H, "p", 1.0)
    assert [c.key.id for c in plan.candidates] == [1]
    assert plan.notes == [NOTE_CACHE_1H_DEGRADED]
    assert [s.reason.split(" ")[0] for s in plan.skipped] == ["cooling_down:rate_limited"]
    no_1h_at_all = make_router([model("m", route(ep))], [keys[0]]).plan("m", ONE_H, "p", 0.0)
    assert [c.key.id for c in no_1h_at_all.candidates] == [1] and no_1h_at_all.notes == [
        NOTE_CACHE_1H_DEGRADED
    ]


def test_context_1m_and_cache_1h_together() -> None:
    ep = endpoint(1)
    keys = [
        key(1, 1, capabilities=[CAPABILITY_CONTEXT_1M]),
        key(2, 1, capabilities=[CAPABILITY_CONTEXT_1M, CAPABILITY_CACHE_1H]),
        key(3, 1, capabilities=[CAPABILITY_CACHE_1H]),
    ]
    router = make_router([model("m", route(ep))], keys)
    both = Requirements(Protocol.OPENAI_CHAT, needs_context_1m=True, needs_cache_1h=True)
    assert key_ids(router, "p", both) == [2]
    assert key_ids(router, "p", ONE_M) == [1]


# --- health ---------------------------------------------------------------------------------------


def test_unhealthy_keys_are_skipped_with_reasons() -> None:
    ep = endpoint(1)
    health = MemoryHealth()
    keys = [key(1, 1, priority=0), key(2, 1, priority=1), key(3, 1, priority=2)]
    router = make_router([model("m", route(ep))], keys, health=health)
    health.record_failure(1, 0.0, FailureKind.RATE_LIMITED, retry_after=20.0)
    for _ in range(5):
        health.record_failure(2, 0.0, FailureKind.CONNECT)
    plan = router.plan("m", CHAT, "p", 5.0)
    assert [c.key.id for c in plan.candidates] == [3]
    assert [s.reason for s in plan.skipped] == [
        "cooling_down:rate_limited (15.0s left)",
        "circuit_open (5.0s left)",
    ]
    # At 20 s the cool-down is over and key 2's breaker is half-open: offered again for a probe.
    assert [c.key.id for c in router.plan("m", CHAT, "p", 20.0).candidates] == [1, 2, 3]


def test_last_resort_is_the_least_recently_failed_unflagged_key() -> None:
    ep = endpoint(1)
    health = MemoryHealth()
    keys = [key(1, 1), key(2, 1), key(3, 1)]
    router = make_router([model("m", route(ep))], keys, health=health)
    health.record_failure(1, 0.0, FailureKind.AUTH)  # oldest failure, but flagged
    health.record_failure(2, 5.0, FailureKind.RATE_LIMITED, retry_after=100.0)
    health.record_failure(3, 8.0, FailureKind.RATE_LIMITED, retry_after=100.0)
    plan = router.plan("m", CHAT, "p", 10.0)
    assert [c.key.id for c in plan.candidates] == [2]
    assert plan.last_resort and plan.notes == [NOTE_LAST_RESORT]
    assert sorted(s.candidate.key.id for s in plan.skipped) == [1, 3]
    assert router.claim(plan, plan.candidates[0], 10.0)  # sent although it is cooling down
    assert not health.try_acquire_probe(2, 10.0)


def test_half_open_key_is_offered_but_only_one_request_probes() -> None:
    ep = endpoint(1)
    health = MemoryHealth()
    router = make_router([model("m", route(ep))], [key(1, 1), key(2, 1, priority=1)], health=health)
    for _ in range(5):
        health.record_failure(1, 0.0, FailureKind.SERVER)
    first = router.plan("m", CHAT, "a", 10.0)
    second = router.plan("m", CHAT, "b", 10.0)
    assert [c.key.id for c in first.candidates] == [1, 2] == [c.key.id for c in second.candidates]
    assert router.claim(first, first.candidates[0], 10.0)
    assert not router.claim(second, second.candidates[0], 10.0)
    assert router.claim(second, second.candidates[1], 10.0)
    router.record_success(first.candidates[0], "a", "m", 10.5, latency_ms=300.0)
    assert router.claim(second, second.candidates[0], 11.0)


def test_released_probe_goes_to_the_next_request() -> None:
    health = MemoryHealth()
    router = make_router([model("m", route(endpoint(1)))], [key(1, 1)], health=health)
    for _ in range(5):
        health.record_failure(1, 0.0, FailureKind.SERVER)
    plan = router.plan("m", CHAT, "a", 10.0)
    assert router.claim(plan, plan.candidates[0], 10.0)
    router.release(plan.candidates[0])
    again = router.plan("m", CHAT, "b", 10.1)
    assert router.claim(again, again.candidates[0], 10.1)


def test_record_failure_applies_the_decision() -> None:
    health = MemoryHealth()
    router = make_router([model("m", route(endpoint(1)))], [key(1, 1), key(2, 1, priority=1)], health=health)
    plan = router.plan("m", CHAT, "p", 0.0)
    limited = UpstreamHTTPError("429", upstream_status=429, retry_after=30.0)
    router.record_failure(plan.candidates[0], classify(limited), 0.0, detail="slow down")
    assert key_ids(router, "p") == [2]
    not_found = classify(UpstreamHTTPError("404", upstream_status=404))
    router.record_failure(plan.candidates[1], not_found, 0.0)
    assert health.status(2, 0.0).available and health.status(2, 0.0).error_rate == 0.0
    assert [c.key.id for c in router.plan("m", CHAT, "p", 30.0).candidates] == [1, 2]


def test_with_table_keeps_health_and_affinity() -> None:
    health = MemoryHealth()
    router = make_router([model("m", route(endpoint(1)))], [key(1, 1), key(2, 1)], health=health)
    health.record_failure(1, 0.0, FailureKind.AUTH)
    rebuilt = router.with_table(
        RoutingTable([model("m", route(endpoint(1)))], {1: [key(1, 1), key(2, 1)]}, "weighted")
    )
    assert rebuilt.health is health and rebuilt.affinity is router.affinity
    assert [c.key.id for c in rebuilt.plan("m", CHAT, "p", 1.0).candidates] == [2]


# --- affinity -------------------------------------------------------------------------------------


def test_affinity_puts_the_last_successful_key_first() -> None:
    ep = endpoint(1)
    router = make_router([model("m", route(ep))], [key(i, 1) for i in (1, 2, 3)])
    natural = key_ids(router, "alice")
    last = router.plan("m", CHAT, "alice", 0.0).candidates[-1]
    router.record_success(last, "alice", "m", 0.0)
    plan = router.plan("m", CHAT, "alice", 1.0)
    assert plan.affinity
    assert [c.key.id for c in plan.candidates] == [last.key.id, *natural[:-1]]
    assert key_ids(router, "bob") == key_ids(
        make_router([model("m", route(ep))], [key(i, 1) for i in (1, 2, 3)]), "bob"
    )
    expired = router.plan("m", CHAT, "alice", 301.0)
    assert not expired.affinity and [c.key.id for c in expired.candidates] == natural


def test_affinity_ignores_a_key_that_is_no_longer_usable() -> None:
    ep = endpoint(1)
    health = MemoryHealth()
    router = make_router([model("m", route(ep))], [key(1, 1), key(2, 1, priority=1)], health=health)
    fallback = router.plan("m", CHAT, "alice", 0.0).candidates[1]
    router.record_success(fallback, "alice", "m", 0.0)
    health.record_failure(2, 1.0, FailureKind.RATE_LIMITED, retry_after=10.0)
    plan = router.plan("m", CHAT, "alice", 2.0)
    assert [c.key.id for c in plan.candidates] == [1] and not plan.affinity
    # A context_1m request cannot use the remembered key either: its plan is untouched.
    assert key_ids(router, "alice", ONE_M) == []


def test_affinity_is_per_model() -> None:
    ep = endpoint(1)
    keys = [key(1, 1), key(2, 1, priority=1)]
    router = make_router([model("m", route(ep)), model("n", route(ep), model_id=2)], keys)
    second = router.plan("m", CHAT, "alice", 0.0).candidates[1]
    router.record_success(second, "alice", "m", 0.0)
    assert key_ids(router, "alice", name="m") == [2, 1]
    assert key_ids(router, "alice", name="n") == [1, 2]
