"""Circuit breakers, one per provider (the server a model is reached on).

Guarantee: after ``failures`` failures in a row a breaker opens and its provider is skipped
for ``cooldown_s``; then it half-opens and lets exactly one call through as a probe. The
probe's success closes it; its failure opens it again for another cooldown. A breaker only
counts what says something about the provider (5xx, 429, timeouts, dropped connections, cut
streams), never a caller's bad request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bus.schemas.llm import CircuitState


@dataclass(slots=True)
class Breaker:
    failures: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    _consecutive: int = 0
    _opened_at: float | None = None
    _probing: bool = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    def allow(self) -> bool:
        """Whether a call may go now; in half-open state only the first caller gets through."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._probing:
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def failed(self) -> None:
        self._consecutive += 1
        if self._probing or self._consecutive >= self.failures:
            self._opened_at = self.clock()
        self._probing = False

    def abandoned(self) -> None:
        """The call that was let through ended without a verdict (cancelled, a bad request):
        the next caller may probe."""
        self._probing = False


@dataclass(slots=True)
class Breakers:
    failures: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    _by_key: dict[str, Breaker] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Breaker:
        breaker = self._by_key.get(key)
        if breaker is None:
            breaker = self._by_key[key] = Breaker(self.failures, self.cooldown_s, self.clock)
        return breaker
