"""The memory engine: one async facade over embedder, tiers, router, indexer and cache.

``async with MemoryEngine(settings) as engine:`` opens every tier, checks the vector
space against the embedding model (re-embedding from L3 when the model changed, so spaces
never mix) and closes everything on exit. Methods take and return the wire Structs of
``bus.schemas.memory`` as msgspec decoded them (so within their schemas' limits); what a
schema cannot say is checked here: a BadRequestError (400) or PayloadTooLargeError (413)
names the field. Guarantee: whatever is accepted can be read, searched and deleted again,
its reply within ``reply_bytes`` (the bus's max_payload less room for headers).
"""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from types import TracebackType

import anyio.to_thread

from bus import metrics
from bus.errors import BadRequestError, NotFoundError
from bus.schemas import memory as s
from memory import listing
from memory import validation as v
from memory.batcher import BatchingEmbedder
from memory.budget import DEFAULT_REPLY_BYTES, ReplyBudget, encoded_size
from memory.cache import SemanticCache
from memory.config import MemorySettings, load_settings
from memory.embedder import Embedder
from memory.indexer import Indexer, Progress
from memory.redact import redact_identifier
from memory.router import Prepared, Router, as_hit, as_item
from memory.sessions import Sessions
from memory.spaces import ensure_space
from memory.tiers.base import Query, VectorTier
from memory.tiers.select import Tiers, select

log = logging.getLogger("sophia.memory.engine")


class MemoryEngine:
    """Coding memory across four tiers (see DESIGN.md §4). Not usable before ``open``."""

    def __init__(
        self,
        settings: MemorySettings | None = None,
        *,
        embedder: Embedder | None = None,
        reply_bytes: int = DEFAULT_REPLY_BYTES,
    ) -> None:
        self.settings = settings or load_settings()
        self._embedder = embedder
        self.budget = ReplyBudget(reply_bytes)
        self._stack: AsyncExitStack | None = None
        self.reembedded = 0

    async def __aenter__(self) -> MemoryEngine:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open every tier and the embedder. Raises UnavailableError or ConfigError."""
        cfg = self.settings
        self._stack = stack = AsyncExitStack()
        try:
            if self._embedder is None:
                self._embedder = await anyio.to_thread.run_sync(self._make_embedder)
            self.embedder = BatchingEmbedder(
                self._embedder, max_batch=cfg.embed_max_batch, max_wait_ms=cfg.embed_max_wait_ms
            )
            self.tiers = tiers = select(cfg)
            for tier in (tiers.hot, tiers.facts, tiers.archive):
                await tier.open()
                stack.push_async_callback(tier.close)
            self.vectors, self.reembedded = await ensure_space(tiers, self.embedder, "items")
            stack.push_async_callback(self.vectors.close)
            cache_vectors, _ = await ensure_space(tiers, self.embedder, "cache")
            stack.push_async_callback(cache_vectors.close)
        except BaseException:
            await stack.aclose()
            raise
        self._wire(tiers, cache_vectors)
        log.info(
            "memory_open", extra={"model": self.embedder.model_id, "reembedded": self.reembedded}
        )

    def _make_embedder(self) -> Embedder:
        cfg = self.settings
        return Embedder(
            device=cfg.embed_device,
            threads=cfg.embed_threads,
            run_batch=cfg.embed_run_batch,
            quantize_dir=cfg.model_cache_path if cfg.embed_quantize else None,
            max_tokens=cfg.embed_max_tokens,
        )

    def _wire(self, tiers: Tiers, cache_vectors: VectorTier) -> None:
        cfg = self.settings
        self.router = Router(
            hot=tiers.hot,
            vectors=self.vectors,
            facts=tiers.facts,
            archive=tiers.archive,
            embedder=self.embedder,
            archive_bytes=cfg.archive_bytes,
            l1_ttl_s=cfg.l1_ttl_s,
            budget=self.budget,
        )
        self.indexer = Indexer(
            self.router, tiers.facts, lines=cfg.chunk_lines, overlap=cfg.chunk_overlap
        )
        self.cache = SemanticCache(
            hot=tiers.hot,
            vectors=cache_vectors,
            facts=tiers.facts,
            embedder=self.embedder,
            threshold=cfg.cache_threshold,
            ttl_s=cfg.cache_ttl_s,
            budget=self.budget,
        )
        self.sessions = Sessions(
            store=tiers.facts,
            hot=tiers.hot,
            archive=tiers.archive,
            budget=self.budget,
            ttl_s=cfg.l1_ttl_s,
            max_text_bytes=cfg.max_text_bytes,
        )

    async def close(self) -> None:
        """Flush and close every tier (idempotent)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    # -- items ---------------------------------------------------------------

    async def store(self, req: s.StoreRequest) -> s.StoreResult:
        """Remember one item.

        Raises BadRequestError (text over max_text_bytes, metadata nested too deep to come back
        in a search, nothing left after redaction, a namespace holding a secret's shape) and
        PayloadTooLargeError (its ``get`` or ``search`` reply would not fit).
        """
        v.identifiers(namespace=req.namespace)
        text = v.within_bytes(req.text, "text", self.settings.max_text_bytes)
        metadata = v.hit_metadata(req.metadata)
        prepared = self.router.prepare(text, req.namespace, req.kind, metadata)
        if not prepared.record.text.strip():
            raise BadRequestError("text: nothing left after secret redaction")
        self._require_readable(prepared)
        [created] = await self.router.write([prepared])
        record = prepared.record
        tiers = ["l3"] + (["l2"] if record.model else []) + (["l4"] if record.archived else [])
        return s.StoreResult(
            id=record.id, created=created, tiers=tiers, redactions=prepared.redactions
        )

    def _require_readable(self, prepared: Prepared) -> None:
        """Raise PayloadTooLargeError unless the item's ``get`` reply and a search reply with
        it as the only hit fit the budget; it names the larger of text and metadata."""
        r = prepared.record
        item = as_item(r, prepared.full_text, "l4")
        hit = as_hit(r, -999_999.999999, "hybrid")  # a score of as many digits as one has
        if not (self.budget.fits(item) and self.budget.fits_hit(hit)):
            bigger = "text" if encoded_size(item.text) >= encoded_size(r.metadata) else "metadata"
            raise self.budget.refusal(bigger)

    async def search(self, req: s.SearchRequest) -> s.SearchResult:
        """Hybrid search over one namespace (or every one): the best hits that fit one reply,
        ``truncated`` when more matched."""
        v.identifiers(namespace=req.namespace)
        f = req.filters
        query = Query(
            namespace=req.namespace,
            kinds=list(req.kinds),
            path=f.path,
            language=f.language,
            tags=list(f.tags),
            since=f.since,
            until=f.until,
        )
        started = time.perf_counter()
        result = await self.router.search(req, query)
        metrics.memory_search_duration.record(time.perf_counter() - started)
        return result

    async def context(self, req: s.ContextRequest) -> s.ContextPack:
        """One ranked pack of what matters at a place in the code (:mod:`memory.context`):
        at most ``budget_tokens`` tokens, in one reply. Raises BadRequestError naming path,
        symbol and query when none is given."""
        from memory.context import ContextLoader  # kept out of this module's start-up imports

        return await ContextLoader(self.search, self.sessions, self.budget).load(req)

    async def get(self, req: s.GetRequest) -> s.Item:
        """One item by id (its whole body). Raises NotFoundError."""
        item = await self.router.get(req.id)
        if item is None:
            raise NotFoundError("id: no such item")
        return item

    async def list_items(self, req: s.ListRequest) -> s.ListResult:
        """Items most recent first, a page at a time (:mod:`memory.listing`), each page within
        one reply. Raises BadRequestError naming ``cursor`` when it is not one a page gave."""
        v.identifiers(namespace=req.namespace)
        return await listing.page(self.tiers.facts, req, self.budget)

    async def delete(self, req: s.DeleteRequest) -> s.DeleteResult:
        """Forget one item in every tier; deleting a missing id is not an error."""
        return s.DeleteResult(id=req.id, deleted=await self.router.delete(req.id))

    async def index(self, req: s.IndexRequest, progress: Progress | None = None) -> s.IndexResult:
        """Index a directory on this machine. Raises BadRequestError naming ``path`` when it
        is not one, or ``namespace`` when none was given and the directory's name is not one."""
        root = await anyio.to_thread.run_sync(v.directory, req.path)
        namespace = v.index_namespace(req.namespace, root)
        return await self.indexer.index(root, namespace, progress)

    async def stats(self, req: s.StatsRequest | None = None) -> s.Stats:
        """Counts per kind and tier, model and device, hit counters."""
        namespace = req.namespace if req else ""
        v.identifiers(namespace=namespace)
        counts = await self.tiers.facts.counts(namespace)
        by_kind: dict[str, int] = {}
        for (_, kind), n in counts.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        t = self.tiers
        return s.Stats(
            model=self.embedder.model_id,
            device=self.embedder.embedder.device,
            dim=self.embedder.dim,
            items=sum(by_kind.values()),
            by_kind=by_kind,
            namespaces=sorted({redact_identifier(ns) for ns, _ in counts}),  # stored before checks
            tiers=[
                s.TierStats(name="l1", backend=t.hot.name, items=await t.hot.count()),
                s.TierStats(name="l2", backend=self.vectors.name, items=await self.vectors.count()),
                s.TierStats(name="l3", backend=t.facts.name, items=sum(counts.values())),
                s.TierStats(name="l4", backend=t.archive.name, items=await t.archive.count()),
            ],
            cache_hits=self.cache.hits,
            cache_misses=self.cache.misses,
            l1_hits=self.router.l1_hits,
            l1_misses=self.router.l1_misses,
        )

    # -- sessions ------------------------------------------------------------

    async def session_save(self, req: s.SessionSaveRequest) -> s.SessionSaveResult:
        """Save a session's context (redacted); the version it replaces goes to L4.

        Raises BadRequestError and PayloadTooLargeError (its ``session.load`` would not fit).
        """
        v.identifiers(namespace=req.namespace, session_id=req.session_id)
        return await self.sessions.save(req)

    async def session_load(self, req: s.SessionLoadRequest) -> s.Session:
        """The latest saved context of a session, or ``found=False``."""
        v.identifiers(namespace=req.namespace, session_id=req.session_id)
        return await self.sessions.load(req)

    # -- model-call cache ----------------------------------------------------

    async def cache_lookup(self, req: s.CacheLookupRequest) -> s.CacheLookupResult:
        """A cached response for this prompt in this model and scope, exact or (unless
        ``semantic`` is off) by meaning."""
        v.identifiers(model=req.model, scope=req.scope)
        prompt = v.within_bytes(req.prompt, "prompt", self.settings.max_text_bytes)
        return await self.cache.lookup(
            req.model, prompt, req.threshold, scope=req.scope, semantic=req.semantic
        )

    async def cache_put(self, req: s.CachePutRequest) -> s.CachePutResult:
        """Cache a model's response to a prompt.

        Raises BadRequestError and PayloadTooLargeError (no lookup reply could carry it).
        """
        v.identifiers(model=req.model, scope=req.scope)
        max_bytes = self.settings.max_text_bytes
        prompt = v.within_bytes(req.prompt, "prompt", max_bytes)
        response = v.within_bytes(req.response, "response", max_bytes)
        return await self.cache.put(
            req.model, prompt, response, req.ttl_s, req.scope, semantic=req.semantic
        )
