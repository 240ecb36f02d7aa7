"""Semantic cache for model calls, partitioned by model and scope.

A lookup sees only entries put with the same model and the same scope (an opaque digest of
whatever else decides the answer: system prompt, earlier turns, sampling, project). It tries
the exact prompt first (L1, then L3); then, unless it asked for exact matches only, the
nearest cached prompts by meaning, in order, taking the first that is at least ``threshold``
similar, unexpired, and asks the same question by :func:`memory.sameness.same_question`.
Guarantee: a hit by meaning never answers a prompt that the check tells apart from the cached
one; an entry cached before prompts were kept (its prompt is "") can only hit exactly.
Prompts and responses are redacted before anything is stored or compared, and a response is
refused (413) when a lookup's reply could not carry it.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import anyio.to_thread
import msgspec

from bus import metrics
from bus.schemas.memory import CacheLookupResult, CachePutResult
from memory import keys
from memory.batcher import BatchingEmbedder
from memory.budget import ReplyBudget
from memory.redact import redact
from memory.sameness import Question, asks_same, read
from memory.tiers.base import CachedCall, CacheStore, HotTier, Query, VectorPoint, VectorTier

#: nearest cached prompts a lookup by meaning weighs: the nearest may be a near-miss that the
#: check refuses while a paraphrase is next
CANDIDATES = 5
_HIT = {"result": "hit"}
_MISS = {"result": "miss"}


def _lookup_reply(response: str) -> CacheLookupResult:
    """The largest lookup reply that carries ``response`` (a similarity of the most digits)."""
    return CacheLookupResult(hit=True, response=response, similarity=-0.123456, exact=False)


def entry_id(model: str, scope: str, prompt: str) -> str:
    """The id of a cache entry: a digest of model, scope and prompt, encoded so that no two
    different triples meet (a JSON array, not a joined string)."""
    material = msgspec.json.encode([model, scope, prompt])
    return str(uuid.UUID(hashlib.sha256(material).hexdigest()[:32]))


def space(model: str, scope: str) -> str:
    """The L2 namespace of the prompts cached for one model and scope; unambiguous, as a
    scope never holds ``#`` (its schema allows letters, digits and ``._:-``)."""
    return keys.cached_calls(f"{scope}#{model}")


class SemanticCache:
    """Model-call cache over L1 (exact), L2 (by meaning) and L3 (entries, expiry)."""

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
        self,
        model: str,
        prompt: str,
        response: str,
        ttl_s: float | None,
        scope: str = "",
        *,
        semantic: bool = True,
    ) -> CachePutResult:
        """Remember ``response`` for ``prompt`` on ``model`` in ``scope`` for ``ttl_s`` seconds.

        ``semantic`` False: only exact lookups will ask for it, so it is not embedded (no
        vector: a lookup by meaning never finds it).

        Raises PayloadTooLargeError naming ``response`` when no lookup reply could carry it.
        """
        prompt, _ = redact(prompt)
        response, _ = redact(response)
        self.budget.require(_lookup_reply(response), "response")
        ttl = self.ttl_s if ttl_s is None else ttl_s
        now = time.time()
        ident = entry_id(model, scope, prompt)
        await self.facts.cache_put(ident, CachedCall(model, scope, prompt, response), now + ttl)
        if semantic:
            vector = await self.embedder.embed_one(prompt)
            payload = {
                "ns": space(model, scope),
                "kind": "cache",
                "created_at": now,
                "model": self.embedder.model_id,
            }
            await self.vectors.upsert([VectorPoint(ident, vector, payload)])
        await self.hot.set(keys.cache_entry(ident), response.encode(), min(ttl, self.ttl_s))
        return CachePutResult(id=ident, expires_at=now + ttl)

    async def lookup(
        self,
        model: str,
        prompt: str,
        threshold: float | None,
        *,
        scope: str = "",
        semantic: bool = True,
    ) -> CacheLookupResult:
        """The cached response for this prompt, or for one that asks the same thing."""
        prompt, _ = redact(prompt)
        result = await self._exact(model, scope, prompt)
        if result is None and semantic:
            limit = self.threshold if threshold is None else threshold
            result = await self._by_meaning(model, scope, prompt, limit)
        if result is None:
            self.misses += 1
            metrics.memory_cache_lookups.add(1, _MISS)
            return CacheLookupResult(hit=False)
        self.hits += 1
        metrics.memory_cache_lookups.add(1, _HIT)
        return result

    async def _exact(self, model: str, scope: str, prompt: str) -> CacheLookupResult | None:
        ident = entry_id(model, scope, prompt)
        hot = await self.hot.get(keys.cache_entry(ident))
        if hot is not None:
            return CacheLookupResult(hit=True, response=hot.decode(), similarity=1.0, exact=True)
        call = await self.facts.cache_get(ident, time.time())
        if call is None or (call.model, call.scope, call.prompt) != (model, scope, prompt):
            return None
        return CacheLookupResult(hit=True, response=call.response, similarity=1.0, exact=True)

    async def _by_meaning(
        self, model: str, scope: str, prompt: str, limit: float
    ) -> CacheLookupResult | None:
        vector = await self.embedder.embed_one(prompt)
        query = Query(namespace=space(model, scope))
        now = time.time()
        asked: Question | None = None
        for other, score in await self.vectors.search(vector, query, CANDIDATES):
            if score < limit:
                break
            call = await self.facts.cache_get(other, now)
            # the namespace is only an index: the entry itself must be this model and scope
            if call is None or (call.model, call.scope) != (model, scope) or not call.prompt:
                continue
            # off the event loop: reading a prompt is linear in its length
            if asked is None:
                asked = await anyio.to_thread.run_sync(read, prompt)
            if await anyio.to_thread.run_sync(asks_same, asked, call.prompt):
                similarity = round(score, 6)
                return CacheLookupResult(hit=True, response=call.response, similarity=similarity)
        return None
