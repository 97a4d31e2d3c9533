"""Which upstream created a Responses API object, so GET/DELETE /v1/responses/{id} reach it.

Bounded and in memory; a response id belongs to the gateway key that created it, and another key
gets 404 rather than a hint that the id exists.
"""

from __future__ import annotations

from collections import OrderedDict

from isthmus.providers.base import UpstreamTarget


class ResponseOwners:
    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._owners: OrderedDict[str, tuple[int, UpstreamTarget]] = OrderedDict()

    def remember(self, response_id: str, key_id: int, target: UpstreamTarget) -> None:
        self._owners[response_id] = (key_id, target)
        self._owners.move_to_end(response_id)
        while len(self._owners) > self._capacity:
            self._owners.popitem(last=False)

    def lookup(self, response_id: str, key_id: int) -> UpstreamTarget | None:
        found = self._owners.get(response_id)
        if found is None or found[0] != key_id:
            return None
        return found[1]

    def forget(self, response_id: str) -> None:
        self._owners.pop(response_id, None)
