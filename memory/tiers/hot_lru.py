"""L1 embedded: an in-process LRU with a time to live per entry."""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict

#: expiry records looked at per write at most (bounded work on every write)
SWEEP_PER_WRITE = 8


class LruHotTier:
    """Bounded LRU; an entry past its TTL reads as missing and is dropped.

    Guarantee: at most ``max_items`` entries; never blocks the event loop. Each write also drops
    up to :data:`SWEEP_PER_WRITE` entries whose TTL has passed, soonest expiry first, so entries
    nobody reads again leave as they expire instead of staying until the cap evicts them, however
    long-lived the entries beside them (a cached model answer keeps a day, a search ten minutes).

    Expiry order is a min-heap of ``(expires, key)`` records beside the LRU order. A record is
    current while its key still holds that expiry; records left by a rewrite, a delete or an
    eviction are dropped when they come up, and the heap is rebuilt from the live entries when
    it holds more than twice :attr:`max_items` records, so it stays bounded too.
    """

    name = "lru"

    def __init__(self, max_items: int = 10_000) -> None:
        self.max_items = max_items
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._expiries: list[tuple[float, str]] = []
        self._counters: dict[str, int] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self._expiries.clear()

    async def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        now = time.monotonic()
        expires = now + ttl_s
        self._data[key] = (expires, value)
        self._data.move_to_end(key)
        heapq.heappush(self._expiries, (expires, key))
        self._drop_expired(now)
        while len(self._data) > self.max_items:
            self._data.popitem(last=False)
        if len(self._expiries) > 2 * self.max_items:
            self._expiries = [(entry[0], k) for k, entry in self._data.items()]
            heapq.heapify(self._expiries)

    def _drop_expired(self, now: float) -> None:
        for _ in range(SWEEP_PER_WRITE):
            if not self._expiries or self._expiries[0][0] >= now:
                return
            expires, key = heapq.heappop(self._expiries)
            entry = self._data.get(key)
            if entry is not None and entry[0] == expires:
                del self._data[key]

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def incr(self, key: str) -> int:
        self._counters[key] = self._counters.get(key, 0) + 1
        return self._counters[key]

    async def counter(self, key: str) -> int:
        return self._counters.get(key, 0)

    async def count(self) -> int:
        return len(self._data)
