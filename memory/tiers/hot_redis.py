"""L1 production: Redis through redis.asyncio, every call bounded by a timeout."""

from __future__ import annotations

import redis.asyncio as aioredis

from bus.errors import UnavailableError

_PREFIX = "sophia:mem:"


class RedisHotTier:
    """Keys live under ``sophia:mem:``; values expire with Redis' own TTL.

    Raises UnavailableError when Redis cannot be reached at open.
    """

    name = "redis"

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._redis: aioredis.Redis | None = None

    @property
    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            raise UnavailableError("l1: redis is not open")
        return self._redis

    async def open(self) -> None:
        self._redis = aioredis.from_url(
            self._url,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
        )
        try:
            await self._redis.ping()
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            await self._redis.aclose()
            self._redis = None
            raise UnavailableError("l1: redis does not answer") from None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def get(self, key: str) -> bytes | None:
        return await self._r.get(_PREFIX + key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._r.set(_PREFIX + key, value, px=max(1, int(ttl_s * 1000)))

    async def delete(self, key: str) -> None:
        await self._r.delete(_PREFIX + key)

    async def delete_many(self, keys: list[str]) -> None:
        if keys:
            await self._r.delete(*(_PREFIX + key for key in keys))

    async def incr(self, key: str) -> int:
        return int(await self._r.incr(_PREFIX + key))

    async def counter(self, key: str) -> int:
        raw = await self._r.get(_PREFIX + key)
        return int(raw) if raw else 0

    async def count(self) -> int:
        n = 0
        async for _ in self._r.scan_iter(match=_PREFIX + "*", count=1000):
            n += 1
        return n
