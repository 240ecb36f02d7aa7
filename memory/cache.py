"""Semantic cache for model calls, keyed by model and prompt embedding.

A lookup tries the exact prompt first (L1, then L3), then the nearest cached prompt of the
same model by meaning; it hits when that is at least ``threshold`` similar and unexpired.
Prompts and responses are redacted before anything is stored or compared, and a response
is refused (413) when a lookup's reply could not carry it.
"""

from __future__ import annotations

import hashlib
import time
import uuid

from bus.schemas.memory import CacheLookupResult, CachePutResult
from memory import keys
from memory.batcher import BatchingEmbedder
from memory.budget import ReplyBudget
from memory.redact import redact
from memory.tiers.base import CacheStore, HotTier, Query, VectorPoint, VectorTier


def _lookup_reply(response: str) -> CacheLookupResult:
    """The largest lookup reply that carries ``response`` (a similarity of the most digits)."""
    return CacheLookupResult(hit=True, response=response, similarity=-0.123456, exact=False)


def entry_id(model: str, prompt: str) -> str:
    digest = hashlib.sha256(f"{model}\0{prompt}".encode("utf-8", "surrogatepass")).hexdigest()
    return str(uuid.UUID(digest[:32]))


class SemanticCache:
    """Model-call cache over L1 (exact), L2 (by meaning) and L3 (responses, expiry)."""

    def __init__(
        self,
        *,
        hot: HotTier,
        vectors: VectorTier,
        facts: CacheStore,
        embedder: BatchingEmbedder,
        threshold: float,
        ttl_s: float,
        budget: ReplyBudget,
    ) -> None:
        self.hot, self.vectors, self.facts, self.embedder = hot, vectors, facts, embedder
        self.budget = budget
        self.threshold = threshold
        self.ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    async def put(
        self, model: str, prompt: str, response: str, ttl_s: float | None
    ) -> CachePutResult:
        """Remember ``response`` for ``prompt`` on ``model`` for ``ttl_s`` seconds.

        Raises PayloadTooLargeError naming ``response`` when no lookup reply could carry it.
        """
        prompt, _ = redact(prompt)
        response, _ = redact(response)
        self.budget.require(_lookup_reply(response), "response")
        ttl = self.ttl_s if ttl_s is None else ttl_s
        now = time.time()
        ident = entry_id(model, prompt)
        vector = await self.embedder.embed_one(prompt)
        await self.facts.cache_put(ident, model, response, now + ttl)
        payload = {
            "ns": keys.cached_calls(model),
            "kind": "cache",
            "created_at": now,
            "model": self.embedder.model_id,
        }
        await self.vectors.upsert([VectorPoint(ident, vector, payload)])
        await self.hot.set(keys.cache_entry(ident), response.encode(), min(ttl, self.ttl_s))
        return CachePutResult(id=ident, expires_at=now + ttl)

    async def lookup(self, model: str, prompt: str, threshold: float | None) -> CacheLookupResult:
        """The cached response for this prompt or one that means the same, if any."""
        prompt, _ = redact(prompt)
        ident = entry_id(model, prompt)
        now = time.time()
        hot = await self.hot.get(keys.cache_entry(ident))
        exact = hot.decode() if hot is not None else await self.facts.cache_get(ident, now)
        if exact is not None:
            self.hits += 1
            return CacheLookupResult(hit=True, response=exact, similarity=1.0, exact=True)
        vector = await self.embedder.embed_one(prompt)
        nearest = await self.vectors.search(vector, Query(namespace=keys.cached_calls(model)), 3)
        limit = self.threshold if threshold is None else threshold
        for other, score in nearest:
            if score < limit:
                break
            response = await self.facts.cache_get(other, now)
            if response is not None:
                self.hits += 1
                return CacheLookupResult(hit=True, response=response, similarity=round(score, 6))
        self.misses += 1
        return CacheLookupResult(hit=False)
