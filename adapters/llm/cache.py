"""The gateway's caches: exact in process, exact and by meaning in the memory agent.

What may be cached and served, and nothing else:

- only answers that completed (``finish_reason`` ``stop``, the stream's final chunk seen,
  a 2xx, valid against the schema when one was asked for): a 429, a cut stream or a
  truncated answer never reaches :meth:`CallCache.put`;
- only calls at temperature 0 (the caller asked for the one answer, not a sample);
- exact: the key is a hash of the model, every message, the schema and the sampling
  parameters (``max_tokens``, ``temperature``);
- by meaning (the memory agent's ``cache.lookup``): only for ``chat`` and ``summarize``,
  never ``code`` or ``review``, only within the same model and the same *partition* (a hash
  of everything but the last user message: system prompt, earlier turns, schema, sampling
  parameters, project), and only when the memory agent's threshold and its same-question
  check both agree.

The memory agent being slow or away is a miss, never an error: a lookup waits at most
``cache_lookup_timeout_s``. A put runs after the reply, so it may wait the bus's request
timeout (a memory agent still loading its model stores the entry instead of losing it).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from bus.client import Bus
from bus.errors import SophiaError
from bus.schemas.llm import Cached, CompleteRequest
from bus.schemas.memory import (
    CacheLookupRequest,
    CacheLookupResult,
    CachePutRequest,
    CachePutResult,
)

log = logging.getLogger("sophia.llm")
T = TypeVar("T")

SEMANTIC_TASKS = frozenset({"chat", "summarize"})


@dataclass(frozen=True, slots=True)
class CacheKey:
    model: str
    partition: str  # hex digest of everything but the last message
    prompt: str  # the last message's content
    semantic: bool  # whether a paraphrase may share the answer

    @property
    def exact(self) -> str:
        digest = hashlib.sha256(f"{self.model}\0{self.partition}\0".encode())
        digest.update(self.prompt.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()


def key_for(req: CompleteRequest, model: str) -> CacheKey | None:
    """The cache key of this call on ``model``, or None when it must not be cached."""
    if req.temperature != 0 or req.messages[-1].role != "user":
        return None
    context = {
        "messages": [(m.role, m.content) for m in req.messages[:-1]],
        "schema": req.response_schema,
        "schema_name": req.schema_name if req.response_schema is not None else "",
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "project": req.scope.project,
    }
    partition = hashlib.sha256(msgspec.json.encode(context, order="sorted")).hexdigest()
    return CacheKey(model, partition, req.messages[-1].content, req.task in SEMANTIC_TASKS)


class ExactLru:
    """Answers by exact key, in this process, bounded in items and age."""

    def __init__(self, max_items: int, ttl_s: float) -> None:
        self.max_items, self.ttl_s = max_items, ttl_s
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, key: str) -> str | None:
        found = self._items.get(key)
        if found is None:
            return None
        if found[0] < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return found[1]

    def put(self, key: str, text: str) -> None:
        if self.max_items == 0:
            return
        self._items[key] = (time.monotonic() + self.ttl_s, text)
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)


class CallCache:
    """Lookups and puts over the in-process LRU and the memory agent's cache."""

    def __init__(self, bus: Bus, *, lru: ExactLru, lookup_timeout_s: float, ttl_s: float) -> None:
        self.bus, self.lru = bus, lru
        self.lookup_timeout_s, self.ttl_s = lookup_timeout_s, ttl_s
        self._memory_down_logged = False

    async def lookup(self, key: CacheKey) -> tuple[str, Cached] | None:
        text = self.lru.get(key.exact)
        if text is not None:
            return text, "exact"
        request = CacheLookupRequest(
            model=key.model, prompt=key.prompt, scope=key.partition, semantic=key.semantic
        )
        found = await self._ask(
            "cache.lookup", request, CacheLookupResult, timeout=self.lookup_timeout_s
        )
        if found is None or not found.hit:
            return None
        if found.exact:
            self.lru.put(key.exact, found.response)
        return found.response, "exact" if found.exact else "semantic"

    def put(self, key: CacheKey, text: str) -> Awaitable[None]:
        """Remember ``text`` here at once; returns the memory agent's put, to run later."""
        self.lru.put(key.exact, text)
        return self._share(key, text)

    async def _share(self, key: CacheKey, text: str) -> None:
        request = CachePutRequest(
            model=key.model,
            prompt=key.prompt,
            response=text,
            scope=key.partition,
            ttl_s=self.ttl_s,
            semantic=key.semantic,  # plan, code, review: exact only, nothing to embed
        )
        # Off the reply path: the put may wait the bus's request timeout, not the lookup's.
        await self._ask("cache.put", request, CachePutResult, timeout=None)

    async def _ask(
        self,
        endpoint: str,
        body: msgspec.Struct,
        reply: type[T],
        *,
        timeout: float | None,
    ) -> T | None:
        try:
            return await self.bus.request(
                "memory",
                endpoint,
                body,
                reply,
                timeout=timeout,
            )
        except SophiaError as exc:
            if not self._memory_down_logged:
                log.warning("llm_cache_unavailable", extra={"endpoint": endpoint, "code": exc.code})
                self._memory_down_logged = True
            return None
