"""Cache affinity: send a caller back to the upstream key that last served it.

Prompt caches live per upstream account, so a conversation that moved to another key after a failover
keeps hitting the cache only if it stays there. The router puts the remembered key first while it is
still healthy and allowed; entries expire after ``ttl_s`` (about a prompt cache's lifetime) and the
least recently written ones go first when the cache is full.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_TTL_S = 300.0
DEFAULT_MAX_ENTRIES = 100_000


class AffinityCache:
    """In-memory, bounded, per process. Not thread-safe: it lives on the event loop."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int | str, str], tuple[int, float]] = OrderedDict()

    def get(self, principal: int | str, model: str, now: float) -> int | None:
        """The provider key id remembered for this caller and model, if not expired."""
        entry = self._entries.get((principal, model))
        if entry is None:
            return None
        key_id, expires = entry
        if expires <= now:
            del self._entries[(principal, model)]
            return None
        return key_id

    def remember(self, principal: int | str, model: str, key_id: int, now: float) -> None:
        slot = (principal, model)
        entries = self._entries
        entries[slot] = (key_id, now + self.ttl_s)
        entries.move_to_end(slot)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def forget(self, principal: int | str, model: str) -> None:
        self._entries.pop((principal, model), None)

    def __len__(self) -> int:
        return len(self._entries)
