"""Rate limits by key: a token bucket each, in this process's memory (the edge's per-token
limits, an outside-service adapter's client-side limits).

Guarantee: a principal gets at most ``burst`` calls at once and ``rate`` calls per second on
average through one replica; a refused call learns how many seconds to wait. The table is
bounded: buckets idle long enough to be full again are forgotten first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets keyed by name (a principal, an endpoint class)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``; return 0 when allowed, else the seconds until one is free."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The ``Retry-After`` header value (whole seconds, at least 1) for a wait."""
        return str(max(1, math.ceil(wait_s)))

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.stamp >= full_after]:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:  # all busy: drop the oldest half
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k].stamp)
            for key in by_age[: len(by_age) // 2]:
                del self._buckets[key]
