"""L1 embedded: an in-process LRU with a time to live per entry."""

from __future__ import annotations

import time
from collections import OrderedDict

#: expired entries at the cold end dropped per write at most (bounded work on every write)
SWEEP_PER_WRITE = 8


class LruHotTier:
    """Bounded LRU; an entry past its TTL reads as missing and is dropped.

    Guarantee: at most ``max_items`` entries; never blocks the event loop. Each write also drops
    up to :data:`SWEEP_PER_WRITE` expired entries from the least recently used end, so entries
    nobody reads again leave as they expire instead of staying until the cap evicts them.
    """

    name = "lru"

    def __init__(self, max_items: int = 10_000) -> None:
        self.max_items = max_items
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._counters: dict[str, int] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

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
        self._data[key] = (now + ttl_s, value)
        self._data.move_to_end(key)
        self._drop_expired_coldest(now)
        while len(self._data) > self.max_items:
            self._data.popitem(last=False)

    def _drop_expired_coldest(self, now: float) -> None:
        for _ in range(SWEEP_PER_WRITE):
            coldest = next(iter(self._data.values()), None)
            if coldest is None or coldest[0] >= now:
                return
            self._data.popitem(last=False)

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
