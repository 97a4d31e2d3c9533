"""The cache-affinity map: remember, expire, bound."""

from __future__ import annotations

import pytest

from isthmus.routing.affinity import AffinityCache


def test_remembers_per_principal_and_model() -> None:
    cache = AffinityCache()
    cache.remember("alice", "gpt-4o", 11, now=0.0)
    cache.remember("alice", "claude", 22, now=0.0)
    cache.remember(1234, "gpt-4o", 33, now=0.0)
    assert cache.get("alice", "gpt-4o", 1.0) == 11
    assert cache.get("alice", "claude", 1.0) == 22
    assert cache.get(1234, "gpt-4o", 1.0) == 33
    assert cache.get("bob", "gpt-4o", 1.0) is None


def test_entries_expire_after_the_ttl_and_are_renewed_by_remember() -> None:
    cache = AffinityCache(ttl_s=300.0)
    cache.remember("alice", "m", 1, now=0.0)
    assert cache.get("alice", "m", 299.9) == 1
    assert cache.get("alice", "m", 300.0) is None
    assert len(cache) == 0  # expired entries are dropped when seen
    cache.remember("alice", "m", 2, now=400.0)
    cache.remember("alice", "m", 2, now=600.0)
    assert cache.get("alice", "m", 850.0) == 2


def test_later_success_overwrites() -> None:
    cache = AffinityCache()
    cache.remember("alice", "m", 1, now=0.0)
    cache.remember("alice", "m", 2, now=1.0)
    assert cache.get("alice", "m", 2.0) == 2


def test_bounded_size_evicts_least_recently_written() -> None:
    cache = AffinityCache(max_entries=3)
    for i in range(3):
        cache.remember(f"p{i}", "m", i, now=0.0)
    cache.remember("p0", "m", 100, now=1.0)  # p0 written again: now the newest
    cache.remember("p3", "m", 3, now=2.0)
    assert len(cache) == 3
    assert cache.get("p1", "m", 3.0) is None
    assert cache.get("p0", "m", 3.0) == 100
    assert cache.get("p3", "m", 3.0) == 3


def test_forget() -> None:
    cache = AffinityCache()
    cache.remember("alice", "m", 1, now=0.0)
    cache.forget("alice", "m")
    cache.forget("nobody", "m")
    assert cache.get("alice", "m", 0.0) is None


def test_rejects_empty_bound() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        AffinityCache(max_entries=0)
