"""The routing policy: redact, deduplicate, place writes; read through the tiers, fused.

Writes: redaction first, then an id from the content hash (the same item twice is the same
id and changes nothing), then placement — the record and its keyword text in L3 (the source
of truth), its vector in L2 unless it is a session, a body over ``archive_bytes`` in L4 with
only its head in L3. Reads: L1, else L2 vectors and L3 keywords fused by reciprocal rank,
L4 only for an archived body; whatever was read fills L1. A search answers with the best
hits that fit one reply (:class:`memory.budget.ReplyBudget`).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import numpy as np

from bus.schemas.memory import Hit, Item, SearchRequest, SearchResult
from memory import keys, keywords
from memory.batcher import BatchingEmbedder
from memory.budget import ReplyBudget
from memory.redact import redact, redact_value
from memory.tiers.base import (
    ArchiveTier,
    HotTier,
    Query,
    Record,
    RecordStore,
    VectorPoint,
    VectorTier,
)
from memory.views import item_vectors

RRF_K = 60
UNEMBEDDED_KINDS = frozenset({"session"})


@dataclass(slots=True)
class Prepared:
    """A write after redaction, with the full body kept aside when it goes to L4."""

    record: Record
    full_text: str
    redactions: int


def item_id(namespace: str, kind: str, text: str, metadata: dict[str, Any]) -> tuple[str, str]:
    """(id, content hash): one item is its namespace, kind, place and text."""
    h = hashlib.sha256()
    for part in (
        namespace,
        kind,
        str(metadata.get("path", "")),
        str(metadata.get("start_line", "")),
        text,
    ):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    digest = h.hexdigest()
    return str(uuid.UUID(digest[:32])), digest


def payload(record: Record) -> dict[str, Any]:
    """The L2 payload of a record: what filters need, and the model that made the vector."""
    path = record.path or ""
    parts = path.split("/")[:-1]
    dirs = ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]
    return {
        "ns": record.namespace,
        "kind": record.kind,
        "path": path,
        "dirs": dirs,
        "language": record.language or "",
        "tags": record.tags,
        "created_at": record.created_at,
        "model": record.model,
    }


def as_item(record: Record, text: str, tier: str) -> Item:
    """The ``get`` reply for ``record`` whose whole body is ``text`` (from ``tier``)."""
    return Item(
        id=record.id,
        text=text,
        namespace=record.namespace,
        kind=record.kind,
        metadata=record.metadata,
        created_at=record.created_at,
        tier=tier,
        model=record.model,
    )


def as_hit(record: Record, score: float, tier: str) -> Hit:
    """``record`` as a search hit (the text L3 holds: the head of an archived body)."""
    return Hit(
        id=record.id,
        text=record.text,
        score=score,
        tier=tier,
        kind=record.kind,
        namespace=record.namespace,
        metadata=record.metadata,
    )


def rrf(*rankings: list[tuple[str, float]], k0: int = RRF_K) -> list[tuple[str, float, int]]:
    """Reciprocal-rank fusion: (id, fused score, bitmask of the rankings that had it)."""
    scores: dict[str, float] = {}
    seen: dict[str, int] = {}
    for index, ranking in enumerate(rankings):
        for rank, (doc, _) in enumerate(ranking):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k0 + rank + 1)
            seen[doc] = seen.get(doc, 0) | (1 << index)
    return sorted(((d, s, seen[d]) for d, s in scores.items()), key=lambda x: -x[1])


class Router:
    """Places writes and answers reads across the four tiers (see the module docstring)."""

    def __init__(
        self,
        *,
        hot: HotTier,
        vectors: VectorTier,
        facts: RecordStore,
        archive: ArchiveTier,
        embedder: BatchingEmbedder,
        archive_bytes: int,
        l1_ttl_s: float,
        budget: ReplyBudget,
    ) -> None:
        self.hot, self.vectors, self.facts, self.archive = hot, vectors, facts, archive
        self.embedder = embedder
        self.budget = budget
        self.archive_bytes = archive_bytes
        self.l1_ttl_s = l1_ttl_s
        self.l1_hits = 0
        self.l1_misses = 0

    def prepare(
        self,
        text: str,
        namespace: str,
        kind: str,
        metadata: dict[str, Any],
        now: float | None = None,
    ) -> Prepared:
        """Redact, identify and shape one write (no I/O)."""
        clean, n_text = redact(text)
        meta, n_meta = redact_value(metadata)
        ident, digest = item_id(namespace, kind, clean, meta)
        archived = len(clean.encode("utf-8", "surrogatepass")) > self.archive_bytes
        stored = clean[: self.archive_bytes // 2] if archived else clean
        record = Record(
            id=ident,
            namespace=namespace,
            kind=kind,
            text=stored,
            metadata=meta,
            created_at=time.time() if now is None else now,
            content_hash=digest,
            model="" if kind in UNEMBEDDED_KINDS else self.embedder.model_id,
            archived=archived,
            head=keywords.head_text(meta),
            body=keywords.body_text(clean),
        )
        return Prepared(record, clean, n_text + n_meta)

    async def write(self, items: list[Prepared]) -> list[bool]:
        """Store what is new; return, per item, whether it was created (False: already there)."""
        existing = await self.facts.get_many([p.record.id for p in items])
        fresh: dict[str, Prepared] = {}
        for p in items:
            if p.record.id not in existing:
                fresh.setdefault(p.record.id, p)
        created_ids = await self._place(list(fresh.values())) if fresh else set()
        result = []
        for p in items:
            result.append(p.record.id in created_ids)
            created_ids.discard(p.record.id)
        return result

    async def _place(self, items: list[Prepared]) -> set[str]:
        """Write new items to their tiers; returns the ids L3 took (a racing twin loses)."""
        await self.stage(items, await self.embed(items))
        taken = await self.facts.insert_many([p.record for p in items])
        await self._changed({p.record.namespace for p in items})
        return {p.record.id for p, ok in zip(items, taken, strict=True) if ok}

    async def embed(self, items: list[Prepared]) -> np.ndarray:
        """The vectors of the items that are embedded (``record.model`` set), in order."""
        embedded = [p.record for p in items if p.record.model]
        return await item_vectors(self.embedder.embed, [(r.text, r.metadata) for r in embedded])

    async def stage(self, items: list[Prepared], vectors: np.ndarray) -> None:
        """Store what must be there before the items' L3 records: archived bodies in L4,
        vectors in L2 (one upsert; idempotent, so a racing twin writes the same points).
        ``vectors`` are :meth:`embed`'s for these items."""
        for p in items:
            if p.record.archived:
                await self.archive.put(
                    keys.archived_item(p.record.id), p.full_text.encode("utf-8", "surrogatepass")
                )
        embedded = [p.record for p in items if p.record.model]
        points = [VectorPoint(r.id, v, payload(r)) for r, v in zip(embedded, vectors, strict=True)]
        await self.vectors.upsert(points)

    async def get(self, ident: str) -> Item | None:
        """L1, else L3 (and L4 for an archived body); fills L1."""
        cached = await self.hot.get(keys.item(ident))
        if cached is not None:
            self.l1_hits += 1
            return msgspec.json.decode(cached, type=Item)
        self.l1_misses += 1
        record = (await self.facts.get_many([ident])).get(ident)
        if record is None:
            return None
        item = await self.item(record)
        await self.hot.set(keys.item(ident), msgspec.json.encode(item), self.l1_ttl_s)
        return item

    async def item(self, record: Record) -> Item:
        text, tier = record.text, "l3"
        if record.archived:
            body = await self.archive.get(keys.archived_item(record.id))
            if body is not None:
                text, tier = body.decode("utf-8", "surrogatepass"), "l4"
        return as_item(record, text, tier)

    async def delete(self, ident: str) -> bool:
        record = (await self.facts.get_many([ident])).get(ident)
        if record is None:
            return False
        await self.vectors.delete([ident])
        await self.facts.delete([ident])
        if record.archived:
            await self.archive.delete(keys.archived_item(ident))
        await self.hot.delete(keys.item(ident))
        await self._changed({record.namespace})
        return True

    async def forget(
        self, ids: list[str], namespace: str, kept: frozenset[str] = frozenset()
    ) -> None:
        """Drop ids already removed from L3 from the other tiers (a re-indexed file's chunks);
        the vectors of ``kept`` ids stay (their records were just written again)."""
        await self.vectors.delete([i for i in ids if i not in kept])
        await self.hot.delete_many([keys.item(i) for i in ids])
        await self._changed({namespace})

    async def _changed(self, namespaces: set[str]) -> None:
        """Make cached searches over these namespaces, and over every namespace, stale."""
        for namespace in [*namespaces, None]:
            await self.hot.incr(keys.generation(namespace))

    async def search(self, req: SearchRequest, query: Query) -> SearchResult:
        """Hybrid search (or one side of it when ``req.mode`` says so), through L1: the best
        hits that fit one reply, ``truncated`` when more matched."""
        generation = await self.hot.counter(keys.generation(req.namespace))
        key = keys.search(generation, self.budget.max_bytes, req)
        cached = await self.hot.get(key)
        if cached is not None:
            self.l1_hits += 1
            return msgspec.json.decode(cached, type=SearchResult)
        self.l1_misses += 1
        result = self.budget.best_hits(await self._search(req, query))
        await self.hot.set(key, msgspec.json.encode(result), self.l1_ttl_s)
        return result

    async def _search(self, req: SearchRequest, query: Query) -> list[Hit]:
        depth = max(4 * req.k, 40)
        found: dict[str, list[tuple[str, float]]] = {"l2": [], "l3": []}

        async def vector_side() -> None:
            vector = await self.embedder.embed_one(req.query)
            found["l2"] = await self.vectors.search(vector, query, depth)

        async def keyword_side() -> None:
            terms = keywords.query_terms(req.query)
            found["l3"] = await self.facts.keyword_search(terms, query, depth)

        async with anyio.create_task_group() as tg:
            if req.mode in ("hybrid", "vector"):
                tg.start_soon(vector_side)
            if req.mode in ("hybrid", "keyword"):
                tg.start_soon(keyword_side)
        if req.mode == "hybrid":
            ranked = [
                (d, s, ("l2", "l3", "hybrid")[mask - 1])
                for d, s, mask in rrf(found["l2"], found["l3"])
            ]
        else:
            tier = "l2" if req.mode == "vector" else "l3"
            ranked = [(d, s, tier) for d, s in found[tier]]
        ranked = ranked[: req.k]
        records = await self.facts.get_many([d for d, _, _ in ranked])
        return [as_hit(records[d], round(s, 6), tier) for d, s, tier in ranked if d in records]
