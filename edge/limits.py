"""Per-principal rate limits at the edge: :class:`bus.ratelimit.RateLimiter`, one token bucket
per principal in this replica's memory, and the 429 a refused call gets."""

from __future__ import annotations

from bus.errors import OverLimitError
from bus.ratelimit import RateLimiter

__all__ = ["RateLimitedError", "RateLimiter"]


class RateLimitedError(OverLimitError):
    """429 with the seconds to wait, for the ``Retry-After`` header."""

    def __init__(self, wait_s: float) -> None:
        super().__init__("rate limit exceeded")
        self.retry_after = RateLimiter.retry_after(wait_s)
